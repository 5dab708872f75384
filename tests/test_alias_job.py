"""The generic Job template (templates/job.yaml.j2 through generator.render.jobs) and the MLflow alias Job.

The alias Job's script is run exactly as rendered (its command, arguments and environment taken from
the rendered manifest) against a real MLflow server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from generator.check.manifest import Manifest
from generator.check.validate import Validator
from generator.cli import cli
from generator.render.jobs import job_context
from generator.render.renderer import Renderer
from generator.spec.layout import RepoLayout
from helpers import REPO, digest, environment, make_repo, model_spec, release
from services import MlflowServer, free_port

IMAGE = f"ghcr.io/acme/retrain@sha256:{digest('retrain')}"
RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}}
LABELS = {"app.kubernetes.io/name": "churn", "app.kubernetes.io/component": "prefect-deploy"}


def render_job(context: dict) -> dict:
    return Renderer(RepoLayout(REPO)).render_document("job.yaml.j2", {"jobs": {"x": context}, "job": "x"}, "test")


def test_generic_job_renders_a_hook_with_configmap_volumes_and_passes_policies() -> None:
    context = job_context(
        name="churn-prefect-deploy", namespace="prefect", labels=LABELS, image=IMAGE, resources=RESOURCES,
        command=["prefect"], args=["deploy", "--all"], working_dir="/flows",
        env=[{"name": "PREFECT_API_URL", "value": "http://prefect-server.prefect.svc:4200/api"},
             {"name": "PREFECT_API_KEY", "valueFrom": {"secretKeyRef": {"name": "prefect-api", "key": "key"}}}],
        hook="PostSync", volumes=[{"name": "flow", "config_map": "churn-flow", "mount_path": "/flows",
                                   "items": [{"key": "prefect.yaml", "path": "prefect.yaml"}]}])
    doc = render_job(context)

    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "Job"
    assert doc["metadata"]["annotations"] == {"argocd.argoproj.io/hook": "PostSync",
                                              "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation"}
    pod = doc["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["prefect"] and container["args"] == ["deploy", "--all"]
    assert container["workingDir"] == "/flows"
    assert container["volumeMounts"] == [{"name": "flow", "mountPath": "/flows", "readOnly": True},
                                         {"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0] == {"name": "flow", "configMap": {
        "name": "churn-flow", "items": [{"key": "prefect.yaml", "path": "prefect.yaml"}]}}
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert doc["spec"]["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    # Kubernetes' own schema (strict) and every platform policy, as prod applies them.
    assert Validator(RepoLayout(REPO).schemas_dir).validate([Manifest("job.yaml", doc, "prod")]) == []


def test_generic_job_without_hook_or_volumes_is_a_plain_job() -> None:
    doc = render_job(job_context(name="once", namespace="ns", labels=LABELS, image=IMAGE, resources=RESOURCES,
                                 args=["--help"], service_account="runner", ttl_seconds_after_finished=3600))
    assert "annotations" not in doc["metadata"]
    assert doc["spec"]["ttlSecondsAfterFinished"] == 3600
    pod = doc["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "runner" and pod["automountServiceAccountToken"] is True
    assert "command" not in pod["containers"][0] and pod["containers"][0]["args"] == ["--help"]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert Validator(RepoLayout(REPO).schemas_dir).validate([Manifest("job.yaml", doc, "prod")]) == []


def test_tag_pinned_job_image_fails_validation_in_prod() -> None:
    doc = render_job(job_context(name="once", namespace="ns", labels=LABELS, image="ghcr.io/acme/retrain:1.0",
                                 resources=RESOURCES))
    problems = Validator(RepoLayout(REPO).schemas_dir).validate([Manifest("job.yaml", doc, "prod")])
    assert [p.field for p in problems] == ["spec.template.spec.containers[0].image"]
    assert "not pinned by digest in prod" in problems[0].message


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"hook": "AfterSync"}, "unknown Argo CD hook"),
    ({"hook": "PostSync", "hook_delete_policy": "Never"}, "unknown hook delete policy"),
    ({"volumes": [{"name": "flow"}]}, "lacks config_map, mount_path"),
])
def test_job_context_refuses_mistakes(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        job_context(name="x", namespace="ns", labels=LABELS, image=IMAGE, resources=RESOURCES, **kwargs)


# --- the MLflow alias Job ----------------------------------------------------------------------


def render_model_files(tmp_path: Path, env: str, version: int, tracking_uri: str = "http://mlflow.mlflow.svc:5000",
                       registered_name: str = "churn") -> dict[str, dict]:
    """Render one model with ``mlops render`` and return its rendered documents by file name."""
    spec_release = release(version)
    spec_release["registry"]["name"] = registered_name
    root = make_repo(tmp_path / f"{env}-{version}", envs={env: environment(env, mlflow={"tracking_uri": tracking_uri})},
                     models={env: {"churn": model_spec(release=spec_release)}})
    result = CliRunner().invoke(cli, ["render", "--repo-root", str(root)])
    assert result.exit_code == 0, result.output
    folder = root / "environments" / env / "rendered" / "models" / "churn"
    return {p.name: yaml.safe_load(p.read_text()) for p in folder.glob("*.yaml")}


def run_rendered_job(job: dict, **extra_env: str) -> subprocess.CompletedProcess:
    """Run the Job's container command here, with exactly the Job's environment (plus PATH)."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    command = [sys.executable if part == "python" else part for part in container["command"]]
    env = {item["name"]: item["value"] for item in container["env"]}
    return subprocess.run(command, env={**env, "PATH": os.environ["PATH"], **extra_env}, capture_output=True,
                          text=True, timeout=120)


def test_alias_job_and_policy_render_per_model(tmp_path: Path) -> None:
    files = render_model_files(tmp_path, "prod", 7)
    job, policy = files["mlflow-alias-job.yaml"], files["networkpolicy-mlflow-alias.yaml"]
    sdep = files["seldondeployment.yaml"]
    release_id = sdep["metadata"]["labels"]["mlops-gitops.io/release-id"]

    assert job["metadata"]["name"] == "churn-mlflow-alias" and job["metadata"]["namespace"] == "models-prod"
    assert job["metadata"]["annotations"] == {"argocd.argoproj.io/hook": "PostSync",
                                              "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation"}
    assert job["metadata"]["labels"]["mlops-gitops.io/release-id"] == release_id
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == release(7)["drift_image"]
    assert container["command"][:2] == ["python", "-c"]
    assert container["command"][2] == (REPO / "templates" / "payloads" / "mlflow-alias.py").read_text()
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "MLFLOW_TRACKING_URI": "http://mlflow.mlflow.svc:5000", "MLOPS_REGISTERED_MODEL": "churn",
        "MLOPS_MODEL_VERSION": "7", "MLOPS_ALIAS": "prod", "MLOPS_RELEASE_ID": release_id}
    # The pod reaches DNS and MLflow only; nothing reaches it.
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["ingress"] == []
    assert policy["spec"]["egress"][1:] == [{"to": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "mlflow"}}}], "ports": [{"protocol": "TCP", "port": 5000}]}]


@pytest.fixture
def registered(mlflow_server: MlflowServer) -> tuple[str, list[int]]:
    """A registered model with three versions (no training needed: the alias only needs versions)."""
    client = mlflow_server.client()
    name = f"alias-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    versions = [int(client.create_model_version(name, f"s3://{mlflow_server.bucket}/{name}/{i}").version)
                for i in range(3)]
    return name, versions


@pytest.mark.mlflow
def test_rendered_alias_jobs_set_each_environments_alias_on_a_real_mlflow(
        tmp_path: Path, mlflow_server: MlflowServer, registered: tuple[str, list[int]]) -> None:
    name, (v1, v2, v3) = registered
    client = mlflow_server.client()
    for env, version in (("dev", v3), ("staging", v2), ("prod", v1)):
        job = render_model_files(tmp_path, env, version, mlflow_server.tracking_uri, name)["mlflow-alias-job.yaml"]
        done = run_rendered_job(job)
        assert done.returncode == 0, done.stderr
        assert f"{name}@{env} -> version {version}" in done.stdout
    assert {alias: int(client.get_model_version_by_alias(name, alias).version)
            for alias in ("dev", "staging", "prod")} == {"dev": v3, "staging": v2, "prod": v1}

    # The next prod sync deploys v2: the alias moves with Git.
    job = render_model_files(tmp_path / "next", "prod", v2, mlflow_server.tracking_uri, name)["mlflow-alias-job.yaml"]
    assert run_rendered_job(job).returncode == 0
    assert int(client.get_model_version_by_alias(name, "prod").version) == v2


@pytest.mark.mlflow
def test_alias_job_fails_at_once_for_a_missing_version(
        tmp_path: Path, mlflow_server: MlflowServer, registered: tuple[str, list[int]]) -> None:
    name, versions = registered
    job = render_model_files(tmp_path, "dev", max(versions) + 5, mlflow_server.tracking_uri, name)[
        "mlflow-alias-job.yaml"]
    done = run_rendered_job(job)
    assert done.returncode == 1
    assert f"MLflow refused to set {name}@dev -> {max(versions) + 5}" in done.stderr
    assert "retrying" not in done.stderr, "a client error must not be retried"
    assert client_aliases(mlflow_server, name) == {}


def test_alias_job_retries_then_fails_when_mlflow_is_unreachable(tmp_path: Path) -> None:
    job = render_model_files(tmp_path, "dev", 3, f"http://127.0.0.1:{free_port()}")["mlflow-alias-job.yaml"]
    done = run_rendered_job(job, MLOPS_ALIAS_ATTEMPTS="2")
    assert done.returncode == 1
    assert "attempt 1 failed" in done.stderr and "retrying in 2s" in done.stderr
    assert "giving up after 2 attempts" in done.stderr


def client_aliases(server: MlflowServer, name: str) -> dict[str, str]:
    return dict(server.client().get_registered_model(name).aliases)
