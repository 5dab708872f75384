"""Pipeline versioning: components/retrain/prefect.yaml, the rendered PostSync Job that deploys it, and
``python -m retrain.deploy`` run exactly as rendered against a real Prefect server and a real Git remote.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from click.testing import CliRunner

from generator.cli import cli
from generator.render import retrain_pipeline
from helpers import REPO, copy_example_repo
from services import PrefectServer

PREFECT_FILE = "components/retrain/prefect.yaml"
ENVIRONMENTS = ("dev", "staging", "prod")


def rendered(root: Path, env: str, name: str) -> dict:
    return yaml.safe_load((root / f"environments/{env}/rendered/platform/retrain-pipeline/{name}").read_text())


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def prefect_document() -> dict:
    return yaml.safe_load((REPO / PREFECT_FILE).read_text())


# --- prefect.yaml ------------------------------------------------------------------------------------


def test_prefect_yaml_has_one_pinned_deployment_per_model_on_the_kubernetes_pool() -> None:
    from retrain.settings import RetrainSettings

    document = prefect_document()
    deployments = {d["name"]: d for d in document["deployments"]}
    models = {p.stem for env in ENVIRONMENTS for p in (REPO / f"environments/{env}/models").glob("*.yaml")}
    assert set(deployments) == models == {"fraud-detector"}
    for name, deployment in deployments.items():
        assert deployment["entrypoint"] == "retrain/flow.py:retrain"
        assert deployment["parameters"]["model"] == name
        assert deployment["version"] == "{{ $MLOPS_GIT_SHA }}"
        assert "git-sha:{{ $MLOPS_GIT_SHA }}" in deployment["tags"]
        pool = deployment["work_pool"]
        # The deploy step fills the pool (and the code folder): by default the pool apps/prefect-worker
        # creates, of type kubernetes, and the image's /app.
        assert pool["name"] == "{{ $RETRAIN_WORK_POOL }}"
        assert pool["job_variables"]["env"]["PYTHONPATH"] == "{{ $RETRAIN_CODE_DIR }}"
        assert document["pull"] == [{"prefect.deployments.steps.set_working_directory": {
            "directory": "{{ $RETRAIN_CODE_DIR }}"}}]
        assert pool["job_variables"]["env"]["MLOPS_GIT_API_URL"] == "{{ $MLOPS_GIT_API_URL }}"
        defaults = RetrainSettings.load({})
        assert (defaults.work_pool, str(defaults.code_dir)) == ("mlops-kubernetes", "/app")
        assert pool["job_variables"]["image"].split("@sha256:")[1].isalnum()
        assert len(pool["job_variables"]["image"].split("@sha256:")[1]) == 64
    worker = yaml.safe_load((REPO / "apps/prefect-worker/values.yaml").read_text())["worker"]["config"]
    assert (worker["workPool"], worker["type"]) == ("mlops-kubernetes", "kubernetes")


# --- the rendered manifests ------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_renders_a_postsync_job_that_deploys_the_committed_file(env: str) -> None:
    text = (REPO / PREFECT_FILE).read_text()
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    environment = yaml.safe_load((REPO / f"environments/{env}/environment.yaml").read_text())
    job = rendered(REPO, env, "job-prefect-deploy.yaml")
    configmap = rendered(REPO, env, "configmap.yaml")

    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PostSync"
    assert job["metadata"]["annotations"][retrain_pipeline.SHA256_ANNOTATION] == sha256
    assert configmap["data"]["prefect-file-sha256"] == sha256 and configmap["data"]["prefect-file"] == PREFECT_FILE
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    image = prefect_document()["deployments"][0]["work_pool"]["job_variables"]["image"]
    assert container["image"] == image == configmap["data"]["image"]
    assert container["command"] == ["python", "-m", "retrain.deploy"]
    assert container["args"] == ["--repo-url", environment["argocd"]["repo_url"],
                                 "--revision", environment["argocd"].get("target_revision", "main"),
                                 "--prefect-file", PREFECT_FILE, "--expected-sha256", sha256]
    variables = {v["name"]: v.get("value") for v in container["env"]}
    assert variables["MLFLOW_TRACKING_URI"] == environment["mlflow"]["tracking_uri"]
    assert variables["AWS_ENDPOINT_URL_S3"] == environment["s3"]["endpoint"]
    assert variables["MLOPS_GIT_REPO"] == "acme/mlops-gitops"
    # Nothing here may reach the Kubernetes API, run as root or keep running after the deploy.
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["limits"] and container["resources"]["requests"]
    policy = rendered(REPO, env, "networkpolicy.yaml")
    assert policy["spec"]["ingress"] == []
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    application = yaml.safe_load((REPO / f"environments/{env}/rendered/apps/platform-retrain-pipeline.yaml").read_text())
    assert application["spec"]["source"]["path"] == f"environments/{env}/rendered/platform/retrain-pipeline"


def _policy_allows(policy: dict, url: str) -> bool:
    """Whether an egress rule of ``policy`` admits a TCP connection to ``url`` (in-cluster service URLs
    match the namespace's selector, other hosts an ipBlock)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    labels = (parts.hostname or "").split(".")
    namespace = labels[1] if len(labels) >= 3 and labels[2] == "svc" else None
    for rule in policy["spec"]["egress"]:
        if {"protocol": "TCP", "port": port} not in rule.get("ports", []):
            continue
        for peer in rule.get("to", []):
            selected = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            if (namespace and selected == namespace) or (not namespace and "ipBlock" in peer):
                return True
    return False


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_flow_runs_may_reach_only_the_services_they_use(env: str) -> None:
    """The flow-run pods' policy admits the Prefect API, MLflow, S3, the Git host and the GitHub API
    (every endpoint the flow's environment names), nothing inbound, and no other in-cluster namespace."""
    policy = rendered(REPO, env, "networkpolicy-flow-runs.yaml")
    job = rendered(REPO, env, "job-prefect-deploy.yaml")
    variables = {v["name"]: v.get("value") for v in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert policy["spec"]["ingress"] == [] and policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"mlops-gitops.io/workload": "retrain-flow-run"}}
    used = [variables["PREFECT_API_URL"], variables["MLFLOW_TRACKING_URI"], variables["AWS_ENDPOINT_URL_S3"],
            variables["RETRAIN_GIT_URL"], retrain_pipeline.GITHUB_API]
    for url in used:
        assert _policy_allows(policy, url), url
    assert not _policy_allows(policy, "http://kafka-bootstrap.kafka.svc:9092")
    assert not _policy_allows(policy, "http://prometheus.monitoring.svc:9090")
    assert not _policy_allows(policy, "http://example.com:8080")


def test_a_changed_prefect_yaml_makes_the_rendered_output_stale_so_argo_cd_syncs_and_redeploys(tmp_path: Path) -> None:
    root = copy_example_repo(tmp_path)
    assert CliRunner().invoke(cli, ["render", "--repo-root", str(root)]).exit_code == 0
    before = rendered(root, "dev", "configmap.yaml")
    prefect_file = root / PREFECT_FILE
    prefect_file.write_text(prefect_file.read_text().replace("concurrency_limit: 1", "concurrency_limit: 2"))

    stale = CliRunner().invoke(cli, ["render", "--check", "--repo-root", str(root)])
    assert stale.exit_code == 1
    assert "retrain-pipeline/configmap.yaml" in stale.output and "retrain-pipeline/job-prefect-deploy.yaml" in stale.output
    assert CliRunner().invoke(cli, ["render", "--repo-root", str(root)]).exit_code == 0
    after = rendered(root, "dev", "configmap.yaml")
    assert after["data"]["prefect-file-sha256"] == hashlib.sha256(prefect_file.read_bytes()).hexdigest()
    assert after["data"]["prefect-file-sha256"] != before["data"]["prefect-file-sha256"]


def test_a_tag_pinned_flow_image_is_refused_in_staging_and_prod(tmp_path: Path) -> None:
    root = copy_example_repo(tmp_path)
    prefect_file = root / PREFECT_FILE
    text = prefect_file.read_text()
    image = prefect_document()["deployments"][0]["work_pool"]["job_variables"]["image"]
    prefect_file.write_text(text.replace(image, "ghcr.io/acme/retrain:0.1.0"))

    result = CliRunner().invoke(cli, ["render", "--repo-root", str(root)])
    assert result.exit_code == 5, result.output
    assert "environments/staging/rendered/platform/retrain-pipeline/job-prefect-deploy.yaml" in result.output
    assert "environments/prod/rendered/platform/retrain-pipeline/job-prefect-deploy.yaml" in result.output
    assert "environments/dev/rendered/platform/retrain-pipeline" not in result.output
    assert "not pinned by digest" in result.output


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: None, "components/retrain/prefect.yaml does not exist"),
    (lambda text: "deployments: []\n", "has no deployments"),
    (lambda text: text.replace("    work_pool: *kubernetes\n",
                               "    work_pool: {name: mlops-kubernetes, job_variables: {image: ghcr.io/acme/other@sha256:"
                               + "0" * 64 + "}}\n") + "  - name: second\n    entrypoint: retrain/flow.py:retrain\n"
                               "    work_pool: *kubernetes\n", "deployments use different images"),
    (lambda text: text.replace("        namespace: prefect\n", "        namespace: default\n"),
     "deployments[0].work_pool.job_variables.namespace"),
    (lambda text: text.replace("        namespace: prefect\n", ""), "no namespace (Prefect's default: 'default')"),
])
def test_a_broken_prefect_yaml_is_a_render_error_naming_the_file(tmp_path: Path, edit, message: str) -> None:
    root = copy_example_repo(tmp_path)
    prefect_file = root / PREFECT_FILE
    changed = edit(prefect_file.read_text())
    if changed is None:
        prefect_file.unlink()
    else:
        prefect_file.write_text(changed)
    result = CliRunner().invoke(cli, ["render", "--repo-root", str(root)])
    assert result.exit_code == 4, result.output
    assert message in result.output


@pytest.mark.parametrize(("url", "repo"), [
    ("https://github.com/acme/mlops-gitops.git", "acme/mlops-gitops"),
    ("https://github.com/acme/mlops-gitops", "acme/mlops-gitops"),
    ("https://gitlab.example.com/acme/mlops-gitops.git", ""),
])
def test_pull_requests_go_to_the_github_repository_of_the_clone_url(url: str, repo: str) -> None:
    assert retrain_pipeline.github_repository(url) == repo


# --- python -m retrain.deploy, as rendered, against a real Prefect server -----------------------------


def run_rendered_deploy(job: dict, prefect_server: PrefectServer, repo_url: str) -> subprocess.CompletedProcess:
    """The Job's command with its arguments and environment; only the Git URL and Prefect API are local."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    args = list(container["args"])
    args[args.index("--repo-url") + 1] = repo_url
    env = {v["name"]: v["value"] for v in container["env"] if "value" in v}
    env.update(prefect_server.env)  # PREFECT_API_URL of the test server, its own PREFECT_HOME
    env.update({"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join([str(REPO / "components"), str(REPO)])})
    command = [sys.executable if part == "python" else part for part in container["command"]]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)


def test_the_rendered_job_deploys_every_model_with_the_git_sha_as_version(prefect_server: PrefectServer,
                                                                          tmp_path: Path) -> None:
    job = rendered(REPO, "dev", "job-prefect-deploy.yaml")
    # The GitOps repository: the committed prefect.yaml on main.
    work = tmp_path / "work"
    (work / "components/retrain").mkdir(parents=True)
    (work / PREFECT_FILE).write_bytes((REPO / PREFECT_FILE).read_bytes())
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "--allow-empty", "-m", "root")
    git(work, "add", "--all")
    git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "pipeline")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(work), str(remote)], check=True)
    sha = git(remote, "rev-parse", "main").strip()
    api = httpx.Client(base_url=prefect_server.api_url, timeout=30)

    # Before the worker has created its pool, the Job fails (and Kubernetes retries it).
    pool_name = "mlops-kubernetes"  # RETRAIN_WORK_POOL's default: the Job does not set it
    api.delete(f"/work_pools/{pool_name}")
    early = run_rendered_deploy(job, prefect_server, str(remote))
    assert early.returncode == 1
    assert f"work pool(s) {pool_name} do not exist yet" in early.stderr

    # What the Prefect worker does at start: create its pool, of type kubernetes.
    created = subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", pool_name, "--type", "kubernetes"],
                             env={**os.environ, **prefect_server.env}, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    done = run_rendered_deploy(job, prefect_server, str(remote))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"deployed {PREFECT_FILE} at {sha}" in done.stdout

    deployment = api.get("/deployments/name/retrain/fraud-detector").json()
    assert deployment["version"] == sha
    assert f"git-sha:{sha}" in deployment["tags"] and "model:fraud-detector" in deployment["tags"]
    assert deployment["work_pool_name"] == pool_name
    assert deployment["entrypoint"] == "retrain/flow.py:retrain"
    assert deployment["parameters"]["model"] == "fraud-detector"
    assert {"model", "reason", "data_uri"} <= set(deployment["parameter_openapi_schema"]["properties"])
    variables = deployment["job_variables"]
    assert variables["image"] == job["spec"]["template"]["spec"]["containers"][0]["image"]
    job_env = {v["name"]: v["value"] for v in job["spec"]["template"]["spec"]["containers"][0]["env"]
               if "value" in v}
    # The environment's services, filled in from the rendered Job into prefect.yaml's placeholders.
    assert variables["env"]["RETRAIN_GIT_URL"] == job_env["RETRAIN_GIT_URL"]
    assert variables["env"]["MLFLOW_TRACKING_URI"] == job_env["MLFLOW_TRACKING_URI"]
    assert variables["env"]["MLFLOW_S3_ENDPOINT_URL"] == job_env["AWS_ENDPOINT_URL_S3"]
    assert variables["env"]["RETRAIN_ENVIRONMENT"] == "dev"
    # What the deploy step fills by default: runs start in the image's code folder, GitHub's API.
    assert variables["env"]["PYTHONPATH"] == "/app"
    assert variables["env"]["MLOPS_GIT_API_URL"] == ""
    assert deployment["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}]

    # A new commit of prefect.yaml: the next sync deploys it under the new SHA (the moved-on branch is noted).
    (work / PREFECT_FILE).write_text((work / PREFECT_FILE).read_text().replace(
        "latest/transactions.csv", "2026-12/transactions.csv"))
    git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-am", "new data")
    git(work, "push", "--quiet", str(remote), "main")
    newer = git(remote, "rev-parse", "main").strip()
    again = run_rendered_deploy(job, prefect_server, str(remote))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "moved on since this sync" in again.stderr
    deployment = api.get("/deployments/name/retrain/fraud-detector").json()
    assert deployment["version"] == newer != sha
    assert deployment["parameters"]["data_uri"].endswith("2026-12/transactions.csv")
