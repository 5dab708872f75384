"""The retrain pipeline outside Kubernetes: the same prefect.yaml on a local process work pool.

``python -m retrain.deploy`` creates the process pool (``RETRAIN_WORK_POOL_TYPE=process``) and deploys
the committed file with runs starting in this checkout's ``components`` folder; a real ``prefect worker
start --type process`` runs them with the dev venv against a real Prefect server, a real MLflow
(PostgreSQL, moto S3) and a bare Git repository as ``origin`` with no Git host API. The example model's
dev spec names a registered model this MLflow has never seen, so the run trains and proposes its first
version. A run that crashes before training (its working directory does not exist) is left out of the
trigger's daily count, computed by the trigger's own code against the same server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from generator.cli import cli
from helpers import REPO, copy_example_repo
from services import MlflowServer, PrefectServer, free_port, run_service, start_service

MODEL = "fraud-detector"
SPEC = f"environments/dev/models/{MODEL}.yaml"
CODE_DIR = REPO / "components"
TRIGGER_TAG = "retrain-trigger"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class LocalPipeline:
    remote: Path
    pool: str
    registered_name: str
    data_uri: str
    deployment: dict
    deploy_env: dict[str, str]
    api: httpx.Client


def seed_remote(root: Path, registered_name: str) -> Path:
    """A bare repository holding this checkout's specs, rendered output and prefect.yaml, with the dev spec
    naming ``registered_name`` (versions 7 and 8, which the registry does not have)."""
    work = copy_example_repo(root / "seed")
    spec = work / SPEC
    spec.write_text(spec.read_text().replace(f"name: {MODEL},", f"name: {registered_name},"))
    assert CliRunner().invoke(cli, ["render", "--repo-root", str(work)]).exit_code == 0
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "add", "--all")
    git(work, "-c", "user.name=seed", "-c", "user.email=seed@example.com", "commit", "--quiet", "-m", "seed")
    bare = root / "remote.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(work), str(bare)], check=True)
    return bare


def run_deploy(env: dict[str, str], remote: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "retrain.deploy", "--repo-url", str(remote), "--revision", "main"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=CODE_DIR)


@pytest.fixture(scope="module")
def pipeline(prefect_server: PrefectServer, mlflow_server: MlflowServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPipeline]:
    from retrain.models.fraud_detector import publish_synthetic

    root = tmp_path_factory.mktemp("local-pipeline")
    registered_name = f"{MODEL}-{uuid.uuid4().hex[:8]}"
    remote = seed_remote(root, registered_name)
    bucket = mlflow_server.s3.create_bucket(f"datasets-{uuid.uuid4().hex[:8]}")
    with mlflow_server.client_environment():
        data_uri, _ = publish_synthetic(f"s3://{bucket}/{MODEL}/v1/transactions.csv", rows=2000, directory=root)
    pool = f"local-{uuid.uuid4().hex[:8]}"
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("PREFECT_", "RETRAIN_", "MLOPS_GIT_", "GITHUB_", "AWS_", "MLFLOW_"))}
    services = {**prefect_server.env, **mlflow_server.env, "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # What the rendered Job sets in the cluster, pointed at the local services, plus the local pool.
    deploy_env = {**inherited, **services, "PYTHONPATH": os.pathsep.join([str(CODE_DIR), str(REPO)]),
                  "RETRAIN_GIT_URL": str(remote), "RETRAIN_GIT_BRANCH": "main",
                  "AWS_ENDPOINT_URL_S3": mlflow_server.s3.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1",
                  "RETRAIN_WORK_POOL": pool, "RETRAIN_WORK_POOL_TYPE": "process", "RETRAIN_CODE_DIR": str(CODE_DIR)}
    done = run_deploy(deploy_env, remote)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"created work pool {pool} (type process)" in done.stderr
    api = httpx.Client(base_url=prefect_server.api_url, timeout=30, trust_env=False)
    deployment = api.get(f"/deployments/name/retrain/{MODEL}").json()
    # The worker's own environment reaches its flow runs (S3 keys, the Prefect API); the deployment adds
    # the rest. It polls every second so the test does not wait for the default ten.
    worker_env = {**inherited, **services, "PREFECT_WORKER_QUERY_SECONDS": "1",
                  "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    health = free_port()
    worker_env.update({"PREFECT_WORKER_WEBSERVER_PORT": str(health), "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1"})
    with run_service("prefect worker (process)", [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                                                   "--type", "process", "--with-healthcheck"],
                     url=f"http://127.0.0.1:{health}/health", env=worker_env, cwd=root, timeout=120, log_dir=root):
        yield LocalPipeline(remote, pool, registered_name, data_uri, deployment, deploy_env, api)
    # The server is the session's: leave no runs of retrain/fraud-detector (other tests count them), no
    # deployment on this pool, no pool.
    runs = api.post("/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}).json()
    for run in runs:
        api.delete(f"/flow_runs/{run['id']}").raise_for_status()
    api.delete(f"/deployments/{deployment['id']}").raise_for_status()
    api.delete(f"/work_pools/{pool}").raise_for_status()
    api.close()


def start_run(pipeline: LocalPipeline, **body) -> str:
    installed = subprocess.run([sys.executable, "-c", "import generator; print(generator.__file__)"], cwd="/",
                               capture_output=True, text=True, check=True).stdout.strip()
    if Path(installed).resolve().parent.parent != REPO:
        # A second working tree of this repository (its generator is not the installed one): its runs
        # must import this tree's generator, whose templates the flow renders with.
        env = {**pipeline.deployment["job_variables"]["env"], "PYTHONPATH": os.pathsep.join([str(CODE_DIR), str(REPO)])}
        body["job_variables"] = {"env": env, **body.get("job_variables", {})}
    response = pipeline.api.post(f"/deployments/{pipeline.deployment['id']}/create_flow_run",
                                 json={"tags": [TRIGGER_TAG], **body})
    response.raise_for_status()
    return response.json()["id"]


def wait_for(pipeline: LocalPipeline, run_id: str, timeout: float = 420) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = pipeline.api.get(f"/flow_runs/{run_id}").json()
        if run["state"] and run["state"]["type"] in FINAL:
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} did not finish in {timeout}s: {run['state']}")


def counted_by_trigger(api_url: str, deployment_id: str) -> int:
    """What the retrain trigger counts against max_runs_per_day for the deployment, by its own code."""
    from retrain_trigger.prefect_api import PrefectAPI
    from retrain_trigger.service import RetrainTrigger

    async def count() -> int:
        prefect = PrefectAPI(api_url)
        try:
            trigger = RetrainTrigger(None, prefect, None, str)  # type: ignore[arg-type]  # only the count is used
            return await trigger.runs_counted(deployment_id)
        finally:
            await prefect.aclose()

    return asyncio.run(count())


def test_the_deploy_step_creates_the_process_pool_and_runs_start_in_the_checkout(pipeline: LocalPipeline) -> None:
    pool = pipeline.api.get(f"/work_pools/{pipeline.pool}").json()
    assert pool["type"] == "process"
    deployment = pipeline.deployment
    assert deployment["work_pool_name"] == pipeline.pool
    assert deployment["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {
        "directory": str(CODE_DIR)}}]
    env = deployment["job_variables"]["env"]
    assert env["PYTHONPATH"] == str(CODE_DIR) and env["RETRAIN_GIT_URL"] == str(pipeline.remote)
    assert env["MLOPS_GIT_API_URL"] == "" and env["MLOPS_GIT_REPO"] == "" and env["RETRAIN_ENVIRONMENT"] == "dev"
    # Deploying again finds the pool; a pool of another type than asked for is refused, naming both.
    again = run_deploy(pipeline.deploy_env, pipeline.remote)
    assert again.returncode == 0 and "created work pool" not in again.stderr, again.stderr
    wrong = run_deploy({**pipeline.deploy_env, "RETRAIN_WORK_POOL_TYPE": "kubernetes"}, pipeline.remote)
    assert wrong.returncode == 1
    assert f"work pool {pipeline.pool} is of type process, but RETRAIN_WORK_POOL_TYPE is kubernetes" in wrong.stderr
    unset = {k: v for k, v in pipeline.deploy_env.items() if k != "MLFLOW_TRACKING_URI"}
    refused = run_deploy(unset, pipeline.remote)
    assert refused.returncode == 1 and "reads MLFLOW_TRACKING_URI, which this step's environment does not set" \
        in refused.stderr


def test_the_process_worker_runs_a_first_version_and_a_crash_before_training_is_not_counted(
        pipeline: LocalPipeline, prefect_server: PrefectServer, mlflow_server: MlflowServer) -> None:
    from retrain.records import TRAINING_STARTED_TAG

    since = datetime.now(UTC) - timedelta(seconds=1)  # runs other tests left here are older
    # Other tests of the session may have left runs of this deployment; only the difference is this test's.
    counted_before = counted_by_trigger(prefect_server.api_url, pipeline.deployment["id"])
    crashed_id = start_run(pipeline, parameters={"model": MODEL, "reason": "bad folder"},
                           job_variables={"working_dir": "/nonexistent/retrain-code"})
    run_id = start_run(pipeline, parameters={"model": MODEL, "reason": "first version", "data_uri": pipeline.data_uri,
                                             "search": False})

    run = wait_for(pipeline, run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert TRAINING_STARTED_TAG in run["tags"]
    # MLflow: the first version of the registered name the spec names.
    version = mlflow_server.client().get_model_version(pipeline.registered_name, "1")
    assert version.tags["mlops.data_uri"] == pipeline.data_uri and version.tags["mlops.compared_with"] == "none"
    # Git: the proposal branch is on origin; it replaces the release with version 1.
    branch = f"retrain/{MODEL}-v1"
    spec = yaml.safe_load(git(pipeline.remote, "show", f"{branch}:{SPEC}"))
    assert spec["release"]["registry"] == {"name": pipeline.registered_name, "version": 1} and "rollout" not in spec
    # Prefect: the proposal is the run's artifact, with its compare ref.
    artifacts = pipeline.api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
    [artifact] = [a for a in artifacts if a["key"] == f"retrain-proposal-{MODEL}"]
    assert f"`main...{branch}`" in artifact["data"] and "none opened (no Git host API configured)" in artifact["data"]

    crashed = wait_for(pipeline, crashed_id, timeout=120)
    assert crashed["state"]["type"] in ("CRASHED", "FAILED"), crashed["state"]
    assert TRAINING_STARTED_TAG not in crashed["tags"]
    runs = pipeline.api.post("/flow_runs/filter", json={"flow_runs": {
        "deployment_id": {"any_": [pipeline.deployment["id"]]}, "expected_start_time": {"after_": since.isoformat()}}}
    ).json()
    assert {r["id"] for r in runs} == {run_id, crashed_id}
    # Both carry the trigger's tag; only the run that trained uses up a slot of the daily limit.
    assert counted_by_trigger(prefect_server.api_url, pipeline.deployment["id"]) == counted_before + 1


def test_the_process_worker_stops_on_sigterm_even_when_started_from_a_background_shell(
        prefect_server: PrefectServer, tmp_path: Path) -> None:
    """Prefect's worker stops by turning SIGTERM into a SIGINT to itself. A shell's background job (how CI
    and many terminals start things) ignores SIGINT, and an ignored signal stays ignored across exec: the
    worker then never stopped. Started through the supervisor from such a parent, it stops on SIGTERM."""
    pool = f"stop-{uuid.uuid4().hex[:8]}"
    health = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({**prefect_server.env, "PREFECT_HOME": str(tmp_path), "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_WORKER_WEBSERVER_PORT": str(health), "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1"})
    ignored = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGQUIT)}
    try:
        worker = start_service("prefect worker (stop)", [sys.executable, "-m", "prefect", "worker", "start", "--pool",
                                                          pool, "--type", "process", "--with-healthcheck"],
                               url=f"http://127.0.0.1:{health}/health", env=env, timeout=120, log_dir=tmp_path)
    finally:
        for number, handler in ignored.items():
            signal.signal(number, handler)
    try:
        # Its health endpoint answers before it installs its signal handlers: wait for the loop itself.
        deadline = time.monotonic() + 60
        while "started!" not in worker.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "started!" in worker.output(), worker.output()
        assert worker.stop(timeout=10) is True, worker.output()
        assert worker.stop_seconds < 5, worker.stop_seconds
        assert worker.process.returncode == 0 and "stopped!" in worker.output(), worker.output()
    finally:
        worker.stop()  # a no-op after the stop above; stops it when an assertion before that failed
        httpx.delete(f"{prefect_server.api_url}/work_pools/{pool}", trust_env=False, timeout=30)
