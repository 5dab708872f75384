"""``python -m model_server [seldon options]``: the image's entry point.

It runs Seldon's ``seldon-core-microservice model_server.server.ModelServer`` in this process (so
SIGTERM and the exit status are gunicorn's, as before), after one fix to the environment: the
prometheus-client that seldon-core 1.17.1 allows (< 0.9) reads its multiprocess directory only from
the lower-case ``prometheus_multiproc_dir``, and only when it is first imported. Without that name the
gunicorn workers would count in memory and our ``/metrics`` would add up nothing. The rendered
SeldonDeployment and the image set ``PROMETHEUS_MULTIPROC_DIR`` (what newer prometheus-client reads), so
it is copied to the old name here, before Seldon imports prometheus-client. The value is read through
the settings (:func:`model_server.settings.legacy_prometheus_variables`); writing it into ``os.environ``
is a hand-off to that library, which reads nothing else.
"""

from __future__ import annotations

import os
import sys

from model_server.settings import legacy_prometheus_variables  # imports no prometheus-client

SERVER_CLASS = "model_server.server.ModelServer"


def main(argv: list[str]) -> None:
    """Run Seldon's microservice with our class; ``argv`` are further ``seldon-core-microservice`` options."""
    os.environ.update(legacy_prometheus_variables())
    from seldon_core.microservice import main as microservice

    sys.argv = ["seldon-core-microservice", SERVER_CLASS, *argv]
    microservice()


if __name__ == "__main__":
    main(sys.argv[1:])
