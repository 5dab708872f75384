"""Template context of the ``retrain-pipeline`` platform component (``apps/retrain-pipeline/``).

The retrain flow's Prefect deployments are defined once, in ``components/retrain/prefect.yaml``. Per
environment this component renders, into the Prefect namespace:

* a ConfigMap recording that file's sha256: when the file changes, ``mlops render`` changes the
  ConfigMap, so Argo CD sees the Application out of sync and syncs it;
* an Argo CD **PostSync** Job (``templates/job.yaml.j2``) that runs ``python -m retrain.deploy``: it
  fetches the synced branch, runs ``prefect deploy --all`` on the committed ``prefect.yaml`` and
  records the commit SHA as each deployment's version (``components/retrain/deploy.py``);
* a NetworkPolicy letting that Job reach only DNS, the Prefect API and the Git host;
* a NetworkPolicy for the flow runs' pods (label ``mlops-gitops.io/workload: retrain-flow-run``, set by
  the work pool's base job template in ``apps/prefect-worker/values.yaml``): no ingress; egress to DNS,
  the Prefect API, MLflow, S3, the Git host and the GitHub API. The deployments must run their flows in
  this namespace, where that policy and the Secret ``retrain-credentials`` are.

The Job's image is the one ``prefect.yaml`` pins for the flow runs, so the deploy step and the runs use
the same code; staging and prod require it pinned by digest (``mlops validate``). Environment-specific
values (repository, MLflow, S3) reach ``prefect.yaml``'s ``{{ $VARIABLE }}`` placeholders through the
Job's environment, written here from ``environment.yaml``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from generator.render.jobs import job_context
from generator.spec import naming
from generator.spec.errors import Problem, RenderError, SpecError
from generator.spec.layout import RepoLayout
from generator.spec.loader import LoadedEnvironment

COMPONENT = "retrain-pipeline"
JOB_KEY = "prefect_deploy"
POLICY_KEY = "prefect_deploy"
FLOW_RUN_POLICY_KEY = "flow_runs"
FLOW_RUN_POLICY_NAME = "retrain-flow-runs"
FLOW_RUN_SELECTOR = {f"{naming.LABEL_PREFIX}/workload": "retrain-flow-run"}
"""The pod label apps/prefect-worker/values.yaml's base job template puts on every flow run."""
GITHUB_API = "https://api.github.com"
"""Where the flow opens pull requests (generator.external.githost's default; the flow runs set no other)."""
JOB_NAME = "retrain-prefect-deploy"
CODE_DIR = "/app"
"""Where the retrain image keeps the flow code (components/retrain/Dockerfile)."""
SHA256_ANNOTATION = f"{naming.LABEL_PREFIX}/prefect-file-sha256"
_GITHUB_REPO = re.compile(r"^/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$")


def repository_root(loaded: LoadedEnvironment) -> Path:
    """The repository holding ``loaded``: its ``environment.yaml`` is ``environments/<env>/environment.yaml``."""
    return loaded.path.parent.parent.parent


def read_prefect_file(root: Path, relative: str) -> tuple[str, dict]:
    """The text and the parsed document of the committed ``prefect.yaml``.

    Raises:
        RenderError: the file is missing, not YAML, or has no deployments.
    """
    path = root / relative
    where = f"apps/{COMPONENT}/component.yaml"
    try:
        text = RepoLayout(root).read_text(path)
    except SpecError as exc:  # a path out of the repository, not UTF-8, too large
        raise RenderError(exc.problems) from None
    except OSError:
        raise RenderError([Problem(where, f"{relative} does not exist", field="settings.prefect_file",
                                   fix="point it at the retrain flow's prefect.yaml (components/retrain/prefect.yaml)")]
                          ) from None
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RenderError([Problem(relative, f"not valid YAML: {exc}", fix="fix the YAML syntax")]) from None
    if not isinstance(document, dict) or not document.get("deployments"):
        raise RenderError([Problem(relative, "has no deployments", field="deployments",
                                   fix="add one deployment per model (components/retrain/README.md)")])
    return text, document


def flow_image(document: dict, relative: str) -> str:
    """The one image every deployment's flow runs use (``work_pool.job_variables.image``).

    Raises:
        RenderError: a deployment names no image, or deployments name different ones.
    """
    images = {}
    for index, deployment in enumerate(document["deployments"]):
        image = ((deployment.get("work_pool") or {}).get("job_variables") or {}).get("image")
        if not image:
            raise RenderError([Problem(relative, f"deployment {deployment.get('name')!r} names no image",
                                       field=f"deployments[{index}].work_pool.job_variables.image",
                                       fix="pin the retrain image by digest (image@sha256:...)")])
        images[image] = deployment.get("name")
    if len(images) != 1:
        raise RenderError([Problem(relative, f"deployments use different images {sorted(images)}",
                                   field="deployments[].work_pool.job_variables.image",
                                   fix="use the one retrain image for every deployment: the deploy Job loads each "
                                       "flow from it")])
    return next(iter(images))


def check_flow_run_namespace(document: dict, relative: str, namespace: str) -> None:
    """Every deployment must run its flows in ``namespace``: the flow runs' NetworkPolicy and Secret are there.

    Raises:
        RenderError: a deployment names another namespace or none (Prefect's default is ``default``).
    """
    for index, deployment in enumerate(document["deployments"]):
        value = ((deployment.get("work_pool") or {}).get("job_variables") or {}).get("namespace")
        if value != namespace:
            shown = "no namespace (Prefect's default: 'default')" if value is None else f"namespace {value!r}"
            raise RenderError([Problem(relative, f"deployment {deployment.get('name')!r} runs its flows in {shown}",
                                       field=f"deployments[{index}].work_pool.job_variables.namespace",
                                       fix=f"set it to {namespace!r}: the flow runs' NetworkPolicy and their Secret "
                                           "retrain-credentials are there")])


def _distinct(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for target in targets:
        if target not in out:
            out.append(target)
    return out


def github_repository(repo_url: str) -> str:
    """``owner/name`` of a github.com clone URL (pull requests go there); empty for other hosts."""
    parts = urlsplit(repo_url)
    match = _GITHUB_REPO.match(parts.path) if parts.hostname == "github.com" else None
    return match.group(1) if match else ""


def component_context(loaded: LoadedEnvironment, namespace: str, settings: dict[str, Any],
                      components: object = None) -> dict[str, Any]:
    """Everything ``apps/retrain-pipeline/manifests/*.yaml.j2`` print, for the component in ``namespace``."""
    env = loaded.env
    relative = settings["prefect_file"]
    text, document = read_prefect_file(repository_root(loaded), relative)
    digest = hashlib.sha256(text.encode()).hexdigest()
    labels = {"app.kubernetes.io/name": COMPONENT, "app.kubernetes.io/component": "prefect-deploy",
              "app.kubernetes.io/part-of": "mlops-gitops", "app.kubernetes.io/managed-by": "mlops-gitops",
              f"{naming.LABEL_PREFIX}/environment": env.name}
    selector = {"app.kubernetes.io/name": COMPONENT, "app.kubernetes.io/component": "prefect-deploy"}
    git_repo = settings["pull_request_repo"] or github_repository(env.argocd.repo_url)
    variables = [
        {"name": "PREFECT_API_URL", "value": settings["prefect_api_url"]},
        # The server's basic auth (apps/prefect-server/values.yaml); Prefect clients read only the variable.
        {"name": "PREFECT_API_AUTH_STRING", "valueFrom": {"secretKeyRef": {"name": "prefect-api-auth",
                                                                           "key": "auth-string"}}},
        # Read by prefect.yaml's {{ $VARIABLE }} placeholders: this environment's services.
        {"name": "RETRAIN_GIT_URL", "value": env.argocd.repo_url},
        {"name": "RETRAIN_GIT_BRANCH", "value": env.argocd.target_revision},
        {"name": "MLFLOW_TRACKING_URI", "value": env.mlflow.tracking_uri},
        {"name": "AWS_ENDPOINT_URL_S3", "value": env.s3.endpoint},
        {"name": "AWS_DEFAULT_REGION", "value": env.s3.region},
        {"name": "MLOPS_GIT_REPO", "value": git_repo},
    ]
    if settings["git_token_secret"]:
        # Only for a private repository; optional so a public one needs no Secret.
        variables.append({"name": "MLOPS_GIT_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": settings["git_token_secret"], "key": "token", "optional": True}}})
    job = job_context(
        name=JOB_NAME, namespace=namespace, labels=labels,
        image=flow_image(document, relative), resources=settings["resources"],
        command=["python", "-m", "retrain.deploy"],
        args=["--repo-url", env.argocd.repo_url, "--revision", env.argocd.target_revision,
              "--prefect-file", relative, "--expected-sha256", digest],
        env=variables, working_dir=CODE_DIR, hook="PostSync", annotations={SHA256_ANNOTATION: digest},
        # Retries cover a worker that has not created its work pool yet (wave order is not readiness).
        backoff_limit=6, active_deadline_seconds=900)
    check_flow_run_namespace(document, relative, namespace)
    prefect = naming.endpoint_of(settings["prefect_api_url"])
    git_host = naming.endpoint_of(env.argocd.repo_url)
    flow_run_targets = [naming.endpoint_of(url) for url in (
        settings["prefect_api_url"], env.mlflow.tracking_uri, env.s3.endpoint, env.argocd.repo_url, GITHUB_API)]
    return {
        "pipeline": {"name": COMPONENT, "namespace": namespace, "labels": labels, "prefect_file": relative,
                     "sha256": digest, "image": job["container"]["image"]},
        "jobs": {JOB_KEY: job},
        "job": JOB_KEY,
        # For templates/networkpolicy.yaml.j2: no ingress; egress to the Prefect API and the Git host.
        "network_policies": {POLICY_KEY: {
            "name": JOB_NAME, "namespace": namespace, "labels": labels, "pod_selector": selector, "ingress": [],
            "egress": [{"namespace": prefect.namespace, "port": prefect.port},
                       {"namespace": git_host.namespace, "port": git_host.port}],
        }, FLOW_RUN_POLICY_KEY: {
            "name": FLOW_RUN_POLICY_NAME, "namespace": namespace,
            "labels": {**labels, "app.kubernetes.io/component": "flow-run"},
            "pod_selector": FLOW_RUN_SELECTOR, "ingress": [],
            "egress": _distinct([{"namespace": t.namespace, "port": t.port} for t in flow_run_targets]),
        }},
        "policy": POLICY_KEY,
    }
