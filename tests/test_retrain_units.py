"""The retrain flow's parts on their own: dataset versions, the decision rule, model modules, the flow's
refusals, and the image's contents. No MLflow or Git remote here (tests/test_retrain_flow.py has them).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from retrain import data as datasets
from retrain.evaluation import binary_metrics, decide
from retrain.models import FeatureInfo, ModelModuleError, load_model_module, read_csv_dataset
from retrain.propose import auth_header, branch_name

from generator.spec.errors import GitHostError
from helpers import REPO
from imagebuild import build_image
from services import PrefectServer, free_port, run_service

FEATURES = [FeatureInfo("amount", "numeric"), FeatureInfo("card_present", "categorical", (0, 1)),
            FeatureInfo("merchant_category", "categorical", ("grocery", "online"))]


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(["amount,card_present,merchant_category,is_fraud", *rows]) + "\n")
    return path


# --- dataset versions ------------------------------------------------------------------------------


def test_a_published_dataset_is_fetched_and_verified_by_its_sidecar(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "data.csv", ["12.5,1,grocery,0", "99.0,0,online,1"])
    uri = (tmp_path / "published" / "v1.csv").as_uri()
    digest = datasets.publish_dataset(source, uri)
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (tmp_path / "published" / "v1.csv.sha256").read_text() == f"{digest}  v1.csv\n"

    version = datasets.fetch_dataset(uri, tmp_path / "download")
    assert (version.uri, version.sha256) == (uri, digest)
    assert version.path.read_bytes() == source.read_bytes() and version.path.parent == tmp_path / "download"


def test_bytes_that_do_not_match_the_pinned_hash_are_refused(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "data.csv", ["12.5,1,grocery,0"])
    expected = datasets.publish_dataset(source, str(source))
    source.write_text(source.read_text() + "13.0,1,grocery,1\n")  # changed after publishing
    with pytest.raises(datasets.DataError, match=rf"has sha256 [0-9a-f]{{64}}, expected {expected}: refusing"):
        datasets.fetch_dataset(str(source), tmp_path / "download")
    # An explicit hash wins over the sidecar.
    actual = hashlib.sha256(source.read_bytes()).hexdigest()
    assert datasets.fetch_dataset(str(source), tmp_path / "download", sha256=actual).sha256 == actual


@pytest.mark.parametrize(("uri", "sha256", "message"), [
    ("{dir}/unpublished.csv", None, "cannot read the published sha256 .*unpublished.csv.sha256"),
    ("{dir}/data.csv", "not-a-hash", "is not 64 hex characters"),
    ("{dir}/missing.csv", "0" * 64, "missing.csv does not exist"),
    ("ftp://host/data.csv", "0" * 64, "unsupported scheme 'ftp'"),
])
def test_dataset_problems_are_named(tmp_path: Path, uri: str, sha256: str | None, message: str) -> None:
    write_csv(tmp_path / "data.csv", ["1,1,grocery,0"])
    (tmp_path / "unpublished.csv").write_text("x\n")
    with pytest.raises(datasets.DataError, match=message):
        datasets.fetch_dataset(uri.format(dir=tmp_path), tmp_path / "download", sha256)


# --- evaluation --------------------------------------------------------------------------------------


def test_the_candidate_must_beat_the_live_version_by_the_margin() -> None:
    accepted = decide("roc_auc", {"roc_auc": 0.91}, {"roc_auc": 0.85}, 7, margin=0.05)
    assert accepted.accepted and accepted.improvement == pytest.approx(0.06)
    assert accepted.reason == ("candidate roc_auc 0.9100 beats live version 7 (0.8500) by 0.0600, at least the "
                               "margin 0.0500")
    short = decide("roc_auc", {"roc_auc": 0.87}, {"roc_auc": 0.85}, 7, margin=0.05)
    assert not short.accepted
    assert short.reason == ("candidate roc_auc 0.8700 is not better than live version 7 (0.8500) by the margin "
                            "0.0500 (improvement +0.0200)")
    # Equal is not better, even with no margin.
    assert not decide("roc_auc", {"roc_auc": 0.85}, {"roc_auc": 0.85}, 7, margin=0.0).accepted
    assert decide("f1", {"f1": 0.5}, {"f1": 0.4}, 7, margin=0.0).accepted
    with pytest.raises(ValueError, match="retrain.metric 'auc' is not computed"):
        decide("auc", {"roc_auc": 0.9}, {"roc_auc": 0.8}, 7, margin=0.0)


def test_binary_metrics_are_higher_is_better_and_need_both_classes() -> None:
    labels = np.array([0, 0, 1, 1])
    perfect = binary_metrics(labels, np.array([0.1, 0.2, 0.8, 0.9]))
    inverted = binary_metrics(labels, np.array([0.9, 0.8, 0.2, 0.1]))
    assert perfect == {"roc_auc": 1.0, "average_precision": 1.0, "accuracy": 1.0, "f1": 1.0, "precision": 1.0,
                       "recall": 1.0}
    assert all(inverted[name] < perfect[name] for name in perfect)
    with pytest.raises(ValueError, match="single class"):
        binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]))


# --- model modules -----------------------------------------------------------------------------------


def test_the_example_module_reads_the_spec_features_in_order_and_trains(tmp_path: Path) -> None:
    module = load_model_module("fraud-detector")
    path = write_csv(tmp_path / "data.csv", [f"{10 + i},{i % 2},{'online' if i % 3 else 'grocery'},{i % 2}"
                                             for i in range(40)])
    frame, labels = module.load_data(path, FEATURES)
    assert list(frame.columns) == ["amount", "card_present", "merchant_category"]
    assert frame["card_present"].tolist()[:2] == [0, 1]  # YAML 0/1, not the strings of the file
    model = module.train(frame, labels, params=module.default_params, seed=0, feature_info=FEATURES)
    scores = module.score(model, frame)
    assert scores.shape == (40,) and ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize(("row", "message"), [
    ("12,2,grocery,0", r"column 'card_present' row 2: '2' is not one of the spec's categories \['0', '1'\]"),
    ("12,1,travel,0", r"column 'merchant_category' row 2: 'travel' is not one of"),
    ("twelve,1,grocery,0", r"column 'amount' row 2: 'twelve' is not a number"),
    ("12,1,grocery,", r"column 'is_fraud' row 2: '' is not a number"),
])
def test_bad_training_data_names_file_column_and_row(tmp_path: Path, row: str, message: str) -> None:
    path = write_csv(tmp_path / "data.csv", [row])
    with pytest.raises(ValueError, match=message):
        read_csv_dataset(path, FEATURES, "is_fraud")


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("amount,is_fraud\n1,0\n")
    with pytest.raises(ValueError, match="missing column\\(s\\) card_present, merchant_category"):
        read_csv_dataset(path, FEATURES, "is_fraud")


def test_a_model_without_a_module_or_with_an_incomplete_one_is_a_clear_error(monkeypatch) -> None:
    with pytest.raises(ModelModuleError, match=r"has no retrain module retrain.models.churn_model; add "
                                               r"components/retrain/models/churn_model.py"):
        load_model_module("churn-model")
    incomplete = types.ModuleType("retrain.models.half_done")
    incomplete.LABEL = "y"
    monkeypatch.setitem(sys.modules, "retrain.models.half_done", incomplete)
    with pytest.raises(ModelModuleError, match="lacks DEFAULT_PARAMS, SEARCH_SPACE, load_data, train"):
        load_model_module("half-done")


def test_load_data_must_return_the_spec_columns_in_order(monkeypatch, tmp_path: Path) -> None:
    shuffled = types.ModuleType("retrain.models.shuffled")
    shuffled.LABEL, shuffled.DEFAULT_PARAMS, shuffled.SEARCH_SPACE = "y", {}, [{}]
    shuffled.train = lambda *args, **kwargs: None
    shuffled.load_data = lambda path, features: (pd.DataFrame({"b": [1], "a": [2]}), pd.Series([0]))
    monkeypatch.setitem(sys.modules, "retrain.models.shuffled", shuffled)
    module = load_model_module("shuffled")
    with pytest.raises(ModelModuleError, match=r"returned columns \['b', 'a'\], expected the spec's features \['a', 'b'\]"):
        module.load_data(tmp_path, [FeatureInfo("a", "numeric"), FeatureInfo("b", "numeric")])


# --- Git details -------------------------------------------------------------------------------------


def test_git_credentials_only_go_to_https_hosts() -> None:
    header = auth_header("https://github.com/acme/mlops-gitops.git", "s3cr3t")
    assert header == "Authorization: Basic eC1hY2Nlc3MtdG9rZW46czNjcjN0"  # x-access-token:s3cr3t
    assert auth_header("http://git.internal/acme.git", "s3cr3t") is None
    assert auth_header("/srv/git/acme.git", "s3cr3t") is None
    assert auth_header("https://github.com/acme/mlops-gitops.git", None) is None
    assert branch_name("fraud-detector", 12) == "retrain/fraud-detector-v12"


# --- the flow's refusals (on the real Prefect server) ------------------------------------------------


@pytest.mark.parametrize(("parameters", "message"), [
    ({"data_uri": "file:///data.csv"}, "no GitOps repository to read the live release from: set RETRAIN_GIT_URL"),
    ({"git_url": "/srv/git/x.git"}, "no training data for fraud-detector: pass data_uri"),
    ({"git_url": "/srv/git/x.git", "data_uri": "file:///d.csv", "propose_as": "ab"}, "propose_as must be canary or shadow"),
    ({"model": "churn", "git_url": "/srv/git/x.git", "data_uri": "file:///d.csv"}, "has no retrain module"),
])
def test_the_flow_fails_fast_with_a_reason(prefect_server: PrefectServer, monkeypatch, parameters: dict,
                                           message: str) -> None:
    from retrain.flow import retrain

    monkeypatch.delenv("RETRAIN_GIT_URL", raising=False)
    with prefect_server.client_settings():
        state = retrain(**{"model": "fraud-detector", **parameters}, return_state=True)
    assert state.is_failed()
    assert message in state.message


# --- the image ---------------------------------------------------------------------------------------


DOCKERFILE = (REPO / "components/retrain/Dockerfile").read_text()


def test_the_image_runs_as_non_root_on_a_pinned_base() -> None:
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", DOCKERFILE, re.M)
    users = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert users and all(u.split(":")[0] not in ("0", "root") for u in users)
    assert users[-1] == "10001:10001"


def test_requirements_pin_exactly_the_versions_the_tests_run_with() -> None:
    pins = [line.split("#")[0].strip() for line in (REPO / "components/retrain/requirements.txt").read_text().splitlines()]
    pins = [pin for pin in pins if pin]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", pin) for pin in pins)
    mismatched = {name: (version, metadata.version(name)) for name, version in (pin.split("==") for pin in pins)
                  if metadata.version(name) != version}
    assert mismatched == {}


def test_what_the_image_installs_and_copies_runs_the_flow_the_deploy_step_and_the_trigger(tmp_path: Path) -> None:
    """The Dockerfile's venv (its pinned requirements, wheels only, ``pip check``) and /app as its COPY
    lines lay it out: every entry point imports from there, with the image's ENV and nothing else, and
    its CMD, the trigger, starts and answers its health check."""
    image = build_image("retrain", tmp_path / "image")
    code = ("import generator.cli, retrain, retrain.flow, retrain.deploy, retrain_trigger.app, retrain.models.fraud_detector, "
            "drift_detector.fit, prefect, mlflow; print(retrain.__file__); print(generator.cli.__file__); "
            "print(prefect.__file__); print(mlflow.__file__)")
    done = subprocess.run([image.python, "-c", code], cwd=image.workdir, capture_output=True, text=True, timeout=300,
                          env=image.env)
    assert done.returncode == 0, done.stderr
    ours, libraries = done.stdout.split()[:1], done.stdout.split()[1:]
    assert all(line.startswith(str(image.app)) for line in ours)
    # The generator is an installed package (every layer of it), not a folder copied into /app.
    assert all(line.startswith(str(image.venv)) for line in libraries)
    assert not (image.app / "generator").exists()
    mlops = subprocess.run([str(image.venv / "bin" / "mlops"), "generate-model", "--help"], capture_output=True,
                           text=True, timeout=120, env=image.env, cwd=image.workdir)
    assert mlops.returncode == 0 and "--registry-version" in mlops.stdout, mlops.stderr
    # The CMD: the trigger, from the image alone, answers its health check.
    assert image.command()[1:] == ["-m", "retrain_trigger"]
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"environment": "dev", "default": {"on_drift": True, "max_runs_per_day": 2},
                                  "models": {}}))
    port = free_port()
    env = {**image.env, "RETRAIN_TRIGGER_PREFECT_API_URL": "http://127.0.0.1:4200/api",
           "RETRAIN_TRIGGER_POLICY_FILE": str(policy), "RETRAIN_TRIGGER_TOKEN": "image-test-token-0123456789",
           "RETRAIN_TRIGGER_HTTP_HOST": "127.0.0.1", "RETRAIN_TRIGGER_HTTP_PORT": str(port),
           "RETRAIN_TRIGGER_PLAIN_HTTP": "true"}  # on 127.0.0.1; HTTPS is tests/test_trigger_tls.py's
    with run_service("retrain-image-trigger", image.command(), url=f"http://127.0.0.1:{port}/healthz", env=env,
                     cwd=image.workdir, timeout=120, log_dir=tmp_path) as service:
        assert str(image.venv) in Path(f"/proc/{service.pid}/maps").read_text()


def test_settings_read_the_retrain_variables_and_the_other_tools_ones() -> None:
    from retrain.settings import load_settings

    settings = load_settings({"RETRAIN_GIT_URL": "https://git.example/gitops.git", "RETRAIN_SEED": "3",
                              "MLFLOW_TRACKING_URI": "http://mlflow:5000", "AWS_ENDPOINT_URL_S3": "",
                              "MLFLOW_S3_ENDPOINT_URL": "http://s3:8333", "PREFECT_API_URL": "http://prefect/api"})
    assert (settings.git_url, settings.seed, settings.environment) == ("https://git.example/gitops.git", 3, "dev")
    assert settings.mlflow_tracking_uri == "http://mlflow:5000" and settings.prefect_api_url == "http://prefect/api"
    assert settings.s3_endpoint_url == "http://s3:8333"  # an empty AWS_ENDPOINT_URL_S3 falls through
    assert load_settings({}).s3_endpoint_url is None


def test_the_git_host_and_its_token_come_from_the_settings_with_githubs_names_as_fallbacks() -> None:
    from retrain.propose import git_host
    from retrain.settings import load_settings

    settings = load_settings({"MLOPS_GIT_TOKEN": "mlops-token", "GITHUB_TOKEN": "actions-token",
                              "MLOPS_GIT_REPO": "acme/gitops", "GITHUB_REPOSITORY": "other/repo",
                              "MLOPS_GIT_API_URL": "https://git.example/api/v3"})
    assert settings.git_token == "mlops-token"
    assert "mlops-token" not in repr(settings) and "actions-token" not in repr(settings)
    host = git_host(settings)
    assert (host.repo, host.api_url, host._token) == ("acme/gitops", "https://git.example/api/v3", "mlops-token")

    actions = git_host(load_settings({"GITHUB_TOKEN": "actions-token", "GITHUB_REPOSITORY": "other/repo"}))
    assert (actions.repo, actions.api_url, actions._token) == ("other/repo", "https://api.github.com", "actions-token")
    # An empty MLOPS_GIT_TOKEN (the Secret key present but blank) falls through like an unset one.
    assert load_settings({"MLOPS_GIT_TOKEN": "", "GITHUB_TOKEN": "t"}).git_token == "t"
    # No token: the branch is pushed without a pull request; a token without a repository likewise.
    assert git_host(load_settings({"MLOPS_GIT_REPO": "acme/gitops"})) is None
    assert git_host(load_settings({"MLOPS_GIT_TOKEN": "t"})) is None
    with pytest.raises(GitHostError, match="not supported"):
        git_host(load_settings({"MLOPS_GIT_TOKEN": "t", "MLOPS_GIT_REPO": "acme/gitops", "MLOPS_GIT_HOST": "gitea"}))


def test_the_retrain_package_reads_the_git_host_only_through_its_settings(monkeypatch) -> None:
    """The process environment alone no longer reaches the proposal: the settings the flow loaded decide."""
    from retrain.propose import git_host
    from retrain.settings import load_settings

    monkeypatch.setenv("MLOPS_GIT_TOKEN", "from-the-process")
    monkeypatch.setenv("MLOPS_GIT_REPO", "acme/gitops")
    assert git_host(load_settings({})) is None
    assert git_host(load_settings())._token == "from-the-process"


def test_the_deploy_step_exits_with_the_config_code_on_bad_arguments(capsys) -> None:
    from retrain import deploy
    from retrain.settings import ExitCode

    with pytest.raises(SystemExit) as stopped:
        deploy.main([])
    assert stopped.value.code == ExitCode.CONFIG == 2
    assert "--repo-url" in capsys.readouterr().err


def test_the_deploy_step_owns_the_pool_and_code_folder_and_refuses_a_relative_folder(monkeypatch, capsys,
                                                                                   tmp_path: Path) -> None:
    from retrain import deploy
    from retrain.settings import ExitCode, load_settings

    settings = load_settings({"RETRAIN_WORK_POOL": "local", "RETRAIN_WORK_POOL_TYPE": "process",
                              "RETRAIN_CODE_DIR": "/srv/checkout/components"})
    environment = deploy.deploy_environment(settings, "abc123")
    assert (environment["RETRAIN_WORK_POOL"], environment["RETRAIN_CODE_DIR"]) == ("local", "/srv/checkout/components")
    assert (environment["RETRAIN_ENVIRONMENT"], environment["MLOPS_GIT_SHA"]) == ("dev", "abc123")
    prefect_file = REPO / "components/retrain/prefect.yaml"
    assert deploy.work_pools(prefect_file, environment) == ["local"]
    assert deploy.work_pools(prefect_file, {}) == ["{{ $RETRAIN_WORK_POOL }}"]
    # Placeholders in values count, the ones the file's comments show as examples do not.
    assert "VARIABLE" not in deploy.unset_placeholders(prefect_file, {})
    assert deploy.unset_placeholders(prefect_file, {**environment, "RETRAIN_GIT_URL": "x"}) == [
        "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "MLFLOW_TRACKING_URI", "RETRAIN_GIT_BRANCH"]

    monkeypatch.setenv("RETRAIN_CODE_DIR", "components")
    assert deploy.main(["--repo-url", str(tmp_path)]) == ExitCode.CONFIG
    assert "must be an absolute path" in capsys.readouterr().err


def test_the_synthetic_data_is_deterministic_and_its_shift_moves_features_and_the_fraud_relation(
        tmp_path: Path) -> None:
    from retrain.flow import split
    from retrain.models import fraud_detector as module

    original = module.synthetic_dataset()
    # shift=0 is the data every earlier version trained on, byte for byte.
    assert hashlib.sha256(original.to_csv(index=False).encode()).hexdigest() == (
        "4e0cecc6c5bdf6f2e42e3d8ad85a7f7f11500e54fa10d478f58bb03ca7e5332b")
    shifted = module.synthetic_dataset(shift=1.0)
    assert shifted.equals(module.synthetic_dataset(shift=1.0))
    assert shifted["amount"].median() > 1.8 * original["amount"].median()
    assert shifted["distance_km"].mean() > 2 * original["distance_km"].mean()
    assert (shifted["merchant_category"] == "online").mean() > (original["merchant_category"] == "online").mean() + 0.1
    with pytest.raises(ValueError, match="between 0 and 1"):
        module.synthetic_dataset(shift=1.5)

    # A model trained on the shifted world beats one trained on the original on shifted held-out rows;
    # on the original world a retrain on fresh rows does not beat it (the gate's case).
    names = ["amount", "hour", "distance_km", "merchant_category", "card_present"]
    features = [FeatureInfo("amount", "numeric"), FeatureInfo("hour", "numeric"), FeatureInfo("distance_km", "numeric"),
                FeatureInfo("merchant_category", "categorical", module.MERCHANT_CATEGORIES),
                FeatureInfo("card_present", "categorical", (0, 1))]

    def fit(data: pd.DataFrame):
        splits = split(data[names], data[module.LABEL], seed=0)
        return module.train(*splits.train, params=module.DEFAULT_PARAMS, seed=0, feature_info=features), splits

    v1, _ = fit(module.synthetic_dataset(seed=7))
    v2, drifted = fit(module.synthetic_dataset(seed=11, shift=1.0))
    x, y = drifted.holdout
    auc = {name: binary_metrics(y.to_numpy(), model.predict_proba(x)[:, 1])["roc_auc"] for name, model in
           (("v1", v1), ("v2", v2))}
    assert auc["v2"] > auc["v1"] + 0.2, auc
    v3, fresh = fit(module.synthetic_dataset(seed=11))
    x, y = fresh.holdout
    assert binary_metrics(y.to_numpy(), v3.predict_proba(x)[:, 1])["roc_auc"] <= \
        binary_metrics(y.to_numpy(), v1.predict_proba(x)[:, 1])["roc_auc"]

    # Published as a dataset version: the file and its sha256 sidecar, as the flow fetches it.
    uri = str(tmp_path / "published" / "transactions.csv")
    assert module.main(["--uri", uri, "--rows", "300", "--seed", "3", "--shift", "0.5"]) == 0
    fetched = datasets.fetch_dataset(uri, tmp_path / "fetched")
    assert pd.read_csv(fetched.path).equals(pd.read_csv(io.StringIO(
        module.synthetic_dataset(300, 3, 0.5).to_csv(index=False))))
