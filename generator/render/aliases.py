"""MLflow aliases follow Git: the per-model alias Job and the check behind ``mlops status``.

Every model gets a Job that Argo CD runs as a PostSync hook: after a successful sync it points the
MLflow alias named after the environment (``dev``, ``staging``, ``prod``) at the version the main
predictor now serves. Git decides what runs; the alias only mirrors it, so the registry shows which
version runs where. The Job's script is ``templates/payloads/mlflow-alias.py`` (standard library only)
and it runs in the release's drift-detector image: the platform's own Python image, already pinned
by digest in staging and prod, so there is no further image to build, pin or trust.
"""

from __future__ import annotations

from typing import Any

from generator.render.jobs import job_context
from generator.spec import naming
from generator.spec.models import Environment, ModelSpec

ALIAS_SCRIPT = "payloads/mlflow-alias.py"
"""The Job's script, relative to ``templates/``; embedded in the rendered Job (``python -c``)."""
COMPONENT = "mlflow-alias"
JOB_KEY = "mlflow_alias"
"""Key of the Job in the template context's ``jobs`` and ``network_policies``."""
RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}
ACTIVE_DEADLINE_SECONDS = 300
"""Covers the script's retries (about two minutes) while MLflow restarts; then the hook fails."""


def alias_for(env_name: str) -> str:
    """The MLflow alias of an environment: its name."""
    return env_name


def alias_job_context(env: Environment, spec: ModelSpec, script: str) -> dict[str, Any]:
    """The ``jobs`` entry of the model's alias Job (rendered by ``templates/job.yaml.j2``)."""
    names = naming.model_names(spec.model, env.name)
    release = spec.release
    labels = {**naming.common_labels(spec.model, env.name, COMPONENT),
              f"{naming.LABEL_PREFIX}/release-id": release.release_id}
    return job_context(
        name=names.alias_job, namespace=env.namespaces.models, labels=labels, image=release.drift_image,
        container_name=COMPONENT, command=["python", "-c", script], resources=RESOURCES,
        env=[{"name": "MLFLOW_TRACKING_URI", "value": env.mlflow.tracking_uri},
             {"name": "MLOPS_REGISTERED_MODEL", "value": release.registry.name},
             {"name": "MLOPS_MODEL_VERSION", "value": str(release.registry.version)},
             {"name": "MLOPS_ALIAS", "value": alias_for(env.name)},
             {"name": "MLOPS_RELEASE_ID", "value": release.release_id}],
        hook="PostSync", hook_delete_policy="BeforeHookCreation", backoff_limit=2,
        active_deadline_seconds=ACTIVE_DEADLINE_SECONDS)


def alias_network_policy(env: Environment, spec: ModelSpec) -> dict[str, Any]:
    """The Job's NetworkPolicy: no ingress; egress to DNS and MLflow only (the namespace denies the rest)."""
    names = naming.model_names(spec.model, env.name)
    return {
        "name": names.network_policy_alias, "namespace": env.namespaces.models,
        "labels": naming.common_labels(spec.model, env.name, COMPONENT),
        "pod_selector": naming.selector_labels(spec.model, COMPONENT),
        "ingress": [],
        "egress": [vars(naming.endpoint_of(env.mlflow.tracking_uri))],
    }
