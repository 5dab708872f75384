"""The retrain flow end to end on the example model fraud-detector, against real services.

Real Prefect server (the flow run is recorded there), real MLflow on PostgreSQL with artifacts on a
moto S3 server, real git with a bare "remote" in tmp_path that plays the GitOps repository, and a local
server answering like GitHub's pull-request API. The remote starts as a copy of this repository's
specs and rendered output, with dev serving a version registered by the test.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fakegithub import FakeGitHub, github  # noqa: F401 (the fixture)
from generator.cli import cli
from generator.commands.generate import GenerateRequest, ReleaseOptions, generate_model
from generator.spec.layout import RepoLayout
from helpers import copy_example_repo
from services import MlflowServer, PrefectServer

MODEL = "fraud-detector"
WEAK_PARAMS = {"learning_rate": 0.01, "max_iter": 1, "max_depth": 1, "min_samples_leaf": 20}
"""One decision stump: clearly worse than what the search finds on the same data."""
SPEC = f"environments/dev/models/{MODEL}.yaml"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class LiveVersions:
    registered_name: str
    weak: int
    strong: int


@dataclass(frozen=True)
class Dataset:
    uri: str
    sha256: str


@pytest.fixture(scope="module")
def dataset(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The example's synthetic training data, published on the S3 server with its sha256 sidecar."""
    from retrain.data import publish_dataset
    from retrain.models.fraud_detector import synthetic_dataset

    path = tmp_path_factory.mktemp("data") / "transactions.csv"
    synthetic_dataset().to_csv(path, index=False)
    bucket = mlflow_server.s3.create_bucket(f"datasets-{uuid.uuid4().hex[:8]}")
    uri = f"s3://{bucket}/fraud-detector/2026-11-01/transactions.csv"
    with mlflow_server.client_environment():
        sha256 = publish_dataset(path, uri)
    return Dataset(uri, sha256)


@pytest.fixture(scope="module")
def live_versions(mlflow_server: MlflowServer, dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> LiveVersions:
    """Two registered versions that dev may serve: a weak one (a stump) and a strong one (default params)."""
    import mlflow
    from retrain.data import fetch_dataset
    from retrain.flow import split
    from retrain.models import FeatureInfo, load_model_module
    from retrain.models.fraud_detector import DEFAULT_PARAMS, MERCHANT_CATEGORIES

    features = [FeatureInfo("amount", "numeric"), FeatureInfo("hour", "numeric"), FeatureInfo("distance_km", "numeric"),
                FeatureInfo("merchant_category", "categorical", MERCHANT_CATEGORIES),
                FeatureInfo("card_present", "categorical", (0, 1))]
    name = f"{MODEL}-{uuid.uuid4().hex[:8]}"
    plugin = load_model_module(MODEL)
    versions = {}
    with mlflow_server.client_environment():
        local = fetch_dataset(dataset.uri, tmp_path_factory.mktemp("live"), dataset.sha256)
        splits = split(*plugin.load_data(local.path, features), seed=0)
        for label, params in (("weak", WEAK_PARAMS), ("strong", DEFAULT_PARAMS)):
            model = plugin.train(*splits.train, params=params, seed=0, feature_info=features)
            with mlflow.start_run(run_name=f"live-{label}"):
                versions[label] = int(plugin.log_model(model, splits.train[0], name).registered_model_version)
    return LiveVersions(name, versions["weak"], versions["strong"])


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository holding a copy of this checkout's specs and rendered output (branch main)."""
    work = copy_example_repo(tmp_path / "seed")
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "config", "user.name", "seed")
    git(work, "config", "user.email", "seed@example.com")
    # Render first so the remote starts consistent, whatever the checkout's working tree holds.
    assert CliRunner().invoke(cli, ["render", "--repo-root", str(work)]).exit_code == 0
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "-m", "seed")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(work), str(bare)], check=True)
    return bare


def serve_in_dev(remote: Path, tmp_path: Path, mlflow_server: MlflowServer, name: str, version: int) -> None:
    """Commit, on the remote's main, a dev spec whose main release is ``name`` version ``version`` (no rollout)."""
    work = tmp_path / "admin"
    subprocess.run(["git", "clone", "--quiet", str(remote), str(work)], check=True)
    git(work, "config", "user.name", "admin")
    git(work, "config", "user.email", "admin@example.com")
    with mlflow_server.client_environment():
        generate_model(RepoLayout(work), GenerateRequest(
            model=MODEL, env="dev", strategy="replace", mlflow_uri=mlflow_server.tracking_uri,
            release=ReleaseOptions(registered_name=name, registry_version=version)))
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "-m", f"dev serves {name} v{version}")
    git(work, "push", "--quiet", "origin", "main")


def run_flow(prefect_server: PrefectServer, mlflow_server: MlflowServer, **parameters):
    from retrain.flow import retrain

    with prefect_server.client_settings(), mlflow_server.client_environment():
        return retrain(**parameters, return_state=True)


def stored_flow_run(prefect_server: PrefectServer, flow_run_id):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    with prefect_server.client_settings():
        return asyncio.run(read())


def test_a_better_candidate_is_registered_and_proposed_as_canary_in_a_pull_request(
        prefect_server: PrefectServer, mlflow_server: MlflowServer, dataset: Dataset, live_versions: LiveVersions,
        remote: Path, tmp_path: Path, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    serve_in_dev(remote, tmp_path, mlflow_server, live_versions.registered_name, live_versions.weak)
    base = git(remote, "rev-parse", "main").strip()
    for key, value in github.environ(repo="acme/mlops-gitops").items():
        monkeypatch.setenv(key, value)

    state = run_flow(prefect_server, mlflow_server, model=MODEL, reason="drift alert FraudDetectorDrift",
                     data_uri=dataset.uri, git_url=str(remote))

    assert state.is_completed(), state.message
    result = state.result()
    assert result["status"] == "proposed", result
    version = result["registered_version"]
    assert version > live_versions.strong
    assert result["decision"]["live_version"] == live_versions.weak
    assert result["decision"]["candidate"] > result["decision"]["live"]
    assert state.message.startswith(f"proposed version {version} as canary")
    # The run is recorded by the Prefect server with its parameters and final state.
    stored = stored_flow_run(prefect_server, state.state_details.flow_run_id)
    assert stored.state.is_completed()
    assert stored.parameters["model"] == MODEL and stored.parameters["reason"] == "drift alert FraudDetectorDrift"

    # MLflow: the new version, its run's dataset input with the digest, the nested trials and the detector.
    client = mlflow_server.client()
    details = client.get_model_version(live_versions.registered_name, str(version))
    assert details.tags["mlops.data_uri"] == dataset.uri and details.tags["mlops.data_sha256"] == dataset.sha256
    assert details.tags["mlops.reason"] == "drift alert FraudDetectorDrift"
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlops.decision"] == "accepted"
    assert run.data.params["data_sha256"] == dataset.sha256 and run.data.params["metric"] == "roc_auc"
    assert {"candidate_roc_auc", "live_roc_auc", "improvement", "validation_roc_auc"} <= set(run.data.metrics)
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == dataset.sha256[:32]
    assert dataset_input.dataset.source and dataset.uri in dataset_input.dataset.source
    assert {t.key: t.value for t in dataset_input.tags}["mlops.sha256"] == dataset.sha256
    from retrain.models.fraud_detector import SEARCH_SPACE

    trials = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(trials) == len(SEARCH_SPACE)
    assert all("validation_roc_auc" in trial.data.metrics for trial in trials)
    detector = result["detector"]
    assert detector["uri"] == f"{run.info.artifact_uri}/drift/detector.npz"
    assert detector["uri"].startswith(f"s3://{mlflow_server.bucket}/")
    bucket, key = detector["uri"].removeprefix("s3://").split("/", 1)
    stored_bytes = mlflow_server.s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(stored_bytes).hexdigest() == detector["sha256"] == details.tags["mlops.detector_sha256"]
    sidecar = mlflow_server.s3.client().get_object(Bucket=bucket, Key=f"{key}.sha256")["Body"].read().decode()
    assert sidecar.split()[0] == detector["sha256"]

    # Git: one new branch on the remote whose diff is the dev spec and its rendered files only.
    branch = result["branch"]
    assert branch == f"retrain/{MODEL}-v{version}"
    assert git(remote, "rev-parse", "main").strip() == base
    changed = git(remote, "diff", "--name-only", f"main...{branch}").split()
    assert SPEC in changed
    assert all(path == SPEC or path.startswith(f"environments/dev/rendered/models/{MODEL}/")
               or path == f"environments/dev/rendered/apps/model-{MODEL}.yaml" for path in changed), changed
    spec = yaml.safe_load(git(remote, "show", f"{branch}:{SPEC}"))
    main = spec["release"]
    assert main["registry"] == {"name": live_versions.registered_name, "version": live_versions.weak}
    assert spec["rollout"]["strategy"] == "canary" and spec["rollout"]["main_traffic"] == 90
    [candidate] = spec["rollout"]["candidates"]
    assert candidate["traffic"] == 10
    proposed = candidate["release"]
    assert proposed["registry"] == {"name": live_versions.registered_name, "version": version}
    assert proposed["artifact_uri"] == client.get_model_version_download_uri(live_versions.registered_name,
                                                                             str(version))
    assert proposed["detector"] == {"uri": detector["uri"], "sha256": detector["sha256"]}
    # The artifact digest: of the files the store holds (downloaded anew here), recorded on the version.
    from service_kit.artifact_digest import artifact_sha256

    with mlflow_server.client_environment():
        import mlflow

        downloaded = mlflow.artifacts.download_artifacts(artifact_uri=proposed["artifact_uri"],
                                                         dst_path=str(tmp_path / "stored-model"))
    assert proposed["artifact_sha256"] == artifact_sha256(downloaded) == result["artifact_sha256"] \
        == details.tags["mlops.artifact_sha256"]
    assert (proposed["server_image"], proposed["drift_image"]) == (main["server_image"], main["drift_image"])

    # The branch is consistent: rendered output is current and every manifest validates.
    checkout = tmp_path / "review"
    subprocess.run(["git", "clone", "--quiet", "--branch", branch, str(remote), str(checkout)], check=True)
    runner = CliRunner()
    checked = runner.invoke(cli, ["render", "--check", "--repo-root", str(checkout)])
    assert checked.exit_code == 0, checked.output
    validated = runner.invoke(cli, ["validate", "--repo-root", str(checkout)])
    assert validated.exit_code == 0, validated.output

    # The pull request went to the configured Git host, from the pushed branch into main.
    [request] = github.requests
    assert request["path"] == "/api/v3/repos/acme/mlops-gitops/pulls"
    assert request["body"]["head"] == branch and request["body"]["base"] == "main"
    assert request["body"]["title"] == f"Retrain {MODEL}: version {version} as canary in dev"
    assert dataset.sha256 in request["body"]["body"] and "drift alert FraudDetectorDrift" in request["body"]["body"]
    assert result["pull_request"] == {"number": 1, "url": "https://github.example.com/acme/gitops/pull/1"}
    # Recorded in the run as well, with the pull request's link.
    assert result["proposal"]["artifact"] == f"retrain-proposal-{MODEL}"
    assert result["proposal"]["compare"] == f"main...{branch}" and result["first_version"] is False


def test_a_worse_candidate_is_rejected_with_its_reason_and_proposes_nothing(
        prefect_server: PrefectServer, mlflow_server: MlflowServer, dataset: Dataset, live_versions: LiveVersions,
        remote: Path, tmp_path: Path) -> None:
    serve_in_dev(remote, tmp_path, mlflow_server, live_versions.registered_name, live_versions.strong)
    branches_before = git(remote, "branch", "--list").split()
    versions_before = {int(v.version) for v in mlflow_server.client().search_model_versions(
        f"name = '{live_versions.registered_name}'")}

    state = run_flow(prefect_server, mlflow_server, model=MODEL, reason="drift alert", data_uri=dataset.uri,
                     git_url=str(remote), params=WEAK_PARAMS)

    assert state.is_completed(), state.message
    result = state.result()
    assert result["status"] == "rejected"
    assert result["decision"]["candidate"] < result["decision"]["live"]
    assert result["reason"].startswith("candidate roc_auc ")
    assert f"is not better than live version {live_versions.strong}" in result["reason"]
    assert state.message == f"rejected: {result['reason']}"
    assert "branch" not in result
    # The reason is on the MLflow run; no version was registered, no branch pushed.
    run = mlflow_server.client().get_run(result["mlflow_run_id"])
    assert run.data.tags["mlops.decision"] == "rejected"
    assert run.data.tags["mlops.decision_reason"] == result["reason"]
    assert run.data.metrics["improvement"] < 0
    assert {int(v.version) for v in mlflow_server.client().search_model_versions(
        f"name = '{live_versions.registered_name}'")} == versions_before
    assert git(remote, "branch", "--list").split() == branches_before
    # It trained: the trigger's daily limit counts it.
    from retrain.records import TRAINING_STARTED_TAG

    assert TRAINING_STARTED_TAG in stored_flow_run(prefect_server, state.state_details.flow_run_id).tags


def point_dev_at_unregistered(remote: Path, tmp_path: Path, name: str) -> None:
    """Commit, on the remote's main, the committed dev spec with its registered name changed to ``name``,
    which this MLflow has never seen: the environment names versions (7, 8) the registry does not have."""
    work = tmp_path / "admin"
    subprocess.run(["git", "clone", "--quiet", str(remote), str(work)], check=True)
    spec = work / SPEC
    text = spec.read_text()
    assert text.count(f"name: {MODEL},") == 2  # the main release and the canary
    spec.write_text(text.replace(f"name: {MODEL},", f"name: {name},"))
    assert CliRunner().invoke(cli, ["render", "--repo-root", str(work)]).exit_code == 0
    git(work, "-c", "user.name=admin", "-c", "user.email=admin@example.com", "commit", "--quiet", "-am",
        f"dev names {name}, not registered yet")
    git(work, "push", "--quiet", "origin", "main")


def test_a_model_without_a_live_version_gets_its_first_version_proposed_without_a_git_host(
        prefect_server: PrefectServer, mlflow_server: MlflowServer, dataset: Dataset, remote: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    from retrain.records import TRAINING_STARTED_TAG

    name = f"{MODEL}-{uuid.uuid4().hex[:8]}"
    point_dev_at_unregistered(remote, tmp_path, name)
    base = git(remote, "rev-parse", "main").strip()
    for variable in ("MLOPS_GIT_REPO", "GITHUB_REPOSITORY", "MLOPS_GIT_TOKEN", "GITHUB_TOKEN", "MLOPS_GIT_API_URL"):
        monkeypatch.delenv(variable, raising=False)  # no Git host API: no pull request can be opened

    state = run_flow(prefect_server, mlflow_server, model=MODEL, reason="first version", data_uri=dataset.uri,
                     git_url=str(remote))

    assert state.is_completed(), state.message
    result = state.result()
    assert result["status"] == "proposed" and result["first_version"] is True and result["decision"] is None
    assert result["strategy"] == "replace" and result["registered_version"] == 1
    assert result["reason"].startswith(f"no live version to compare with: dev names {name} version 7")
    assert state.message.startswith(f"proposed version 1 as replace on retrain/{MODEL}-v1")

    # MLflow: version 1 with its dataset and detector; the run says why nothing was compared.
    client = mlflow_server.client()
    version = client.get_model_version(name, "1")
    assert version.tags["mlops.data_sha256"] == dataset.sha256
    assert version.tags["mlops.detector_sha256"] == result["detector"]["sha256"]
    assert version.tags["mlops.compared_with"] == "none"
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.tags["mlops.decision"] == "first_version"
    assert run.data.tags["mlops.decision_reason"] == result["reason"]
    assert run.data.tags["mlops.live_version"] == "none"
    assert "candidate_roc_auc" in run.data.metrics and "live_roc_auc" not in run.data.metrics
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == dataset.sha256[:32]

    # Git: the branch is pushed; it replaces the release (no rollout left) and is valid as committed.
    branch = result["branch"]
    assert git(remote, "rev-parse", branch).strip() == result["commit"]
    assert git(remote, "rev-parse", "main").strip() == base
    spec = yaml.safe_load(git(remote, "show", f"{branch}:{SPEC}"))
    assert spec["release"]["registry"] == {"name": name, "version": 1}
    assert spec["release"]["detector"] == result["detector"]
    assert spec["release"]["artifact_sha256"] == result["artifact_sha256"]
    assert "rollout" not in spec
    checkout = tmp_path / "review"
    subprocess.run(["git", "clone", "--quiet", "--branch", branch, str(remote), str(checkout)], check=True)
    for command in (["render", "--check"], ["validate"]):
        done = CliRunner().invoke(cli, [*command, "--repo-root", str(checkout)])
        assert done.exit_code == 0, done.output

    # The proposal, without a pull request: in the result, and as a markdown artifact of the flow run.
    proposal = result["proposal"]
    assert result["pull_request"] is None
    assert (proposal["base"], proposal["base_commit"], proposal["branch"]) == ("main", base, branch)
    assert proposal["compare"] == f"main...{branch}"
    assert proposal["title"] == f"Retrain {MODEL}: version 1 as replace in dev"
    assert dataset.sha256 in proposal["body"] and result["reason"] in proposal["body"]
    assert SPEC in proposal["diff_stat"] and "files changed" in proposal["diff_stat"]
    assert proposal["diff_stat"] == git(remote, "diff", "--stat", base, result["commit"]).rstrip()
    flow_run_id = str(state.state_details.flow_run_id)
    with httpx.Client(base_url=prefect_server.api_url, timeout=30) as api:
        artifacts = api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}).json()
    [artifact] = [a for a in artifacts if a["key"] == proposal["artifact"]]
    assert artifact["key"] == f"retrain-proposal-{MODEL}" and artifact["type"] == "markdown"
    assert f"`main...{branch}`" in artifact["data"] and proposal["diff_stat"] in artifact["data"]
    assert f"# {proposal['title']}" in artifact["data"]
    # The run reached training, so the trigger's daily limit counts it whatever happens after.
    assert TRAINING_STARTED_TAG in stored_flow_run(prefect_server, state.state_details.flow_run_id).tags
