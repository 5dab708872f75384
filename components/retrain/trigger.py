"""``python -m retrain.trigger``: the command the rendered retrain-trigger Deployment runs
(``apps/retrain-trigger/manifests/deployment.yaml.j2``). The trigger is the package ``retrain_trigger``
(``components/retrain_trigger``, ``python -m retrain_trigger``); this name stays until the manifest
names that package, so that a rendered Deployment keeps working with a new image."""

import sys

if __name__ == "__main__":
    from retrain_trigger.__main__ import run

    sys.exit(run(sys.argv[1:]))
