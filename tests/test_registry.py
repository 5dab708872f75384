"""generator.external.registry against a real MLflow server (PostgreSQL backend, s3:// artifacts on moto).

Also drives ``mlops generate-model --registry-version`` end to end: the version is resolved through
the server and its storage URI lands in the spec and in the rendered SeldonDeployment.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from generator.cli import cli
from generator.external.registry import resolve_version
from generator.spec.errors import RegistryError
from services import MlflowServer, free_port, register_sklearn_model

pytestmark = pytest.mark.mlflow

REPO = Path(__file__).resolve().parents[1]
REGISTERED_NAME = "fraud-detector"  # the registry name of environments/dev/models/fraud-detector.yaml


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


# --- resolve_version ------------------------------------------------------------------------------


def test_resolves_each_version_to_its_s3_download_uri(mlflow_server: MlflowServer) -> None:
    name = unique_name("resolve")
    first = register_sklearn_model(mlflow_server, name, seed=0)
    second = register_sklearn_model(mlflow_server, name, seed=1)
    # The premise: MLflow 3 registers logged models with a models:/ source that Seldon cannot read.
    assert first.source.startswith("models:/")

    for registered in (first, second):
        resolved = resolve_version(mlflow_server.tracking_uri, name, registered.version)
        assert resolved.name == name
        assert resolved.version == registered.version
        assert resolved.artifact_uri == registered.download_uri
        assert resolved.artifact_uri.startswith(f"s3://{mlflow_server.bucket}/")
        assert resolved.run_id == registered.run_id
        bucket, key = split_s3(resolved.artifact_uri)
        assert f"{key.rstrip('/')}/MLmodel" in mlflow_server.s3.keys(bucket, key), \
            "the resolved URI must point at the stored model files"
    assert (first.version, second.version) == (1, 2)
    assert first.download_uri != second.download_uri


def test_missing_version_names_model_and_version(mlflow_server: MlflowServer) -> None:
    name = unique_name("missing-version")
    registered = register_sklearn_model(mlflow_server, name)
    absent = registered.version + 41
    with pytest.raises(RegistryError) as caught:
        resolve_version(mlflow_server.tracking_uri, name, absent)
    message = str(caught.value)
    assert repr(name) in message
    assert f"version {absent}" in message
    assert "--registry-version" in message


def test_missing_model_names_model_and_version(mlflow_server: MlflowServer) -> None:
    name = unique_name("never-registered")
    with pytest.raises(RegistryError) as caught:
        resolve_version(mlflow_server.tracking_uri, name, 3)
    message = str(caught.value)
    assert repr(name) in message
    assert "version 3" in message


def test_unreachable_mlflow_points_to_artifact_uri() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError) as caught:
        resolve_version(url, REGISTERED_NAME, 1)
    message = str(caught.value)
    assert url in message
    assert "--artifact-uri" in message
    assert caught.value.exit_code == 6


# --- generate-model through the CLI ---------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the repository's environments, templates and schemas."""
    for folder in ("environments", "templates", "schemas"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def predictor_env(seldon: dict, predictor: str) -> dict[str, str]:
    [found] = [p for p in seldon["spec"]["predictors"] if p["name"] == predictor]
    [container] = [c for c in found["componentSpecs"][0]["spec"]["containers"] if c["name"] == "model"]
    return {item["name"]: item.get("value") for item in container["env"]}


def test_generate_model_canary_resolves_version_through_mlflow(mlflow_server: MlflowServer,
                                                                repo: Path) -> None:
    spec_path = repo / "environments/dev/models/fraud-detector.yaml"
    seldon_path = repo / "environments/dev/rendered/models/fraud-detector/seldondeployment.yaml"
    original = load_yaml(spec_path)
    assert original["release"]["registry"]["name"] == REGISTERED_NAME
    # Release an older version while a newer one exists, so "latest" would be the wrong answer.
    wanted = register_sklearn_model(mlflow_server, REGISTERED_NAME, seed=3)
    newer = register_sklearn_model(mlflow_server, REGISTERED_NAME, seed=4)
    assert wanted.download_uri != newer.download_uri

    result = CliRunner().invoke(cli, [
        "generate-model", "fraud-detector", "--env", "dev", "--registry-version", str(wanted.version),
        "--strategy", "canary", "--traffic", "20", "--mlflow-uri", mlflow_server.tracking_uri,
        "--repo-root", str(repo),
    ])
    assert result.exit_code == 0, result.output

    spec = load_yaml(spec_path)
    [candidate] = spec["rollout"]["candidates"]
    assert candidate["release"]["artifact_uri"] == wanted.download_uri
    assert candidate["release"]["artifact_uri"].startswith("s3://")
    assert candidate["release"]["registry"] == {"name": REGISTERED_NAME, "version": wanted.version}
    assert candidate["traffic"] == 20
    assert spec["rollout"]["strategy"] == "canary"
    assert spec["rollout"]["main_traffic"] == 80
    assert spec["release"] == original["release"], "the main release must not change"
    # The version carries no digest tag (registered by hand): the old candidate's digest, which pinned
    # another artifact and would stop the server, is dropped rather than kept.
    assert "artifact_sha256" not in candidate["release"]

    seldon = load_yaml(seldon_path)
    assert predictor_env(seldon, "candidate")["MODEL_SERVER_MODEL_URI"] == wanted.download_uri
    assert predictor_env(seldon, "candidate")["MODEL_SERVER_MODEL_VERSION"] == str(wanted.version)
    assert predictor_env(seldon, "main")["MODEL_SERVER_MODEL_URI"] == original["release"]["artifact_uri"]
    assert {p["name"]: p["traffic"] for p in seldon["spec"]["predictors"]} == {"main": 80, "candidate": 20}


def test_generate_model_pins_the_digest_recorded_on_the_version(mlflow_server: MlflowServer, repo: Path) -> None:
    """The version's ``mlops.artifact_sha256`` tag (the retrain flow sets it) lands in the release and in
    the rendered predictor; ``--artifact-sha256`` overrides it."""
    from generator.external.registry import ARTIFACT_DIGEST_TAG

    registered = register_sklearn_model(mlflow_server, REGISTERED_NAME, seed=5)
    recorded = "ab" * 32
    mlflow_server.client().set_model_version_tag(REGISTERED_NAME, str(registered.version), ARTIFACT_DIGEST_TAG,
                                                 recorded)
    assert resolve_version(mlflow_server.tracking_uri, REGISTERED_NAME, registered.version).artifact_sha256 == recorded

    def generate(*extra: str) -> dict:
        result = CliRunner().invoke(cli, [
            "generate-model", "fraud-detector", "--env", "dev", "--registry-version", str(registered.version),
            "--strategy", "replace", "--mlflow-uri", mlflow_server.tracking_uri, "--repo-root", str(repo), *extra])
        assert result.exit_code == 0, result.output
        return load_yaml(repo / "environments/dev/models/fraud-detector.yaml")["release"]

    release = generate()
    assert (release["artifact_uri"], release["artifact_sha256"]) == (registered.download_uri, recorded)
    seldon = load_yaml(repo / "environments/dev/rendered/models/fraud-detector/seldondeployment.yaml")
    assert predictor_env(seldon, "main")["MODEL_SERVER_ARTIFACT_SHA256"] == recorded
    assert generate("--artifact-sha256", "cd" * 32)["artifact_sha256"] == "cd" * 32


def test_generate_model_with_unreachable_mlflow_writes_nothing(repo: Path) -> None:
    before = snapshot(repo)
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, [
        "generate-model", "fraud-detector", "--env", "dev", "--registry-version", "9",
        "--strategy", "canary", "--traffic", "20", "--mlflow-uri", url, "--repo-root", str(repo),
    ])
    assert result.exit_code == RegistryError.exit_code, result.output
    assert "--artifact-uri" in result.output
    assert url in result.output
    assert snapshot(repo) == before
