"""``mlops validate`` as a library: every check on the committed rendered tree, all problems at once."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from generator.check.appgraph import graph_problems, kustomize_problems
from generator.check.charts import chart_problems
from generator.check.kafka import kafka_problems
from generator.check.manifest import load_rendered_tree
from generator.check.network import network_problems
from generator.check.secrets import committed_secret_problems
from generator.check.validate import Validator
from generator.spec.errors import Problem, ValidationError
from generator.spec.layout import RepoLayout

DEFAULT_KUBERNETES_VERSION = "1.33"


def validate_environments(layout: RepoLayout, envs: Iterable[str],
                          kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> int:
    """Validate everything under ``environments/<env>/rendered/`` and the app-of-apps graph; returns the
    number of manifests checked.

    Checks: schemas (built-in kinds strict, vendored CRDs made strict), Grafana's provisioning format,
    Seldon's admission rules, platform policies, and the graph from each root app (projects,
    destinations, pinned charts, prod sync policy), plus the offline kustomize build of bootstrap/argocd,
    every platform Application rendered with its vendored chart (:mod:`generator.check.charts`), and every
    Secret an environment needs provided by what is committed (:mod:`generator.check.secrets`).

    Raises:
        ValidationError: with every problem found.
    """
    envs = list(envs)
    # kubectl kustomize is another process: it builds while this one checks (cold, ~1 s off the wall time).
    with ThreadPoolExecutor(1) as background:
        kustomize = background.submit(kustomize_problems, layout) if (layout.bootstrap_dir / "argocd").is_dir() \
            else None
        checked, problems = _checks(layout, envs, kubernetes_version)
        if kustomize is not None:
            problems += kustomize.result()
    if problems:
        raise ValidationError(problems)
    return checked


def _checks(layout: RepoLayout, envs: list[str], kubernetes_version: str) -> tuple[int, list[Problem]]:
    """Every check but the kustomize build: the number of manifests checked, and the problems."""
    manifests, problems = load_rendered_tree(layout.root, envs)
    problems += Validator(layout.schemas_dir, kubernetes_version).validate(manifests)
    problems += network_problems(manifests)
    problems += kafka_problems(manifests)
    problems += graph_problems(layout, envs)
    problems += committed_secret_problems(layout, envs)
    problems += chart_problems(layout, manifests, envs, kubernetes_version)
    return len(manifests), problems
