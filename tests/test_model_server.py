"""The model server (components/model_server) under the real ``seldon-core-microservice``.

Real parts: sklearn models registered on a real ``mlflow server`` (PostgreSQL, artifacts on moto S3) by
this venv's MLflow 3 (one by the retrain flow's own code, in skops format), the server started from
its *image's* environment (``tests/imagebuild.py``: the Dockerfile's Python 3.11 venv with seldon-core
1.17.1, and ``/app``; never the dev venv) with the env of the *rendered* SeldonDeployment, and a real
broker (tansu). The server's own metrics are read from its ``/metrics`` endpoint; the inference log
from the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from generator.cli import cli
from helpers import environment, make_repo, model_spec, release
from imagebuild import ImageEnv, build_image
from services import (
    LOCALHOST,
    KafkaBroker,
    MlflowServer,
    free_port,
    run_kafka_broker,
    run_service,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = "fraud-detector"
TOPIC_PARTITIONS = 2
CATEGORIES = ["grocery", "travel", "online", "fuel", "other"]
FEATURES = [
    {"name": "amount", "type": "numeric"},
    {"name": "hour", "type": "numeric"},
    {"name": "distance_km", "type": "numeric"},
    {"name": "merchant_category", "type": "categorical", "categories": CATEGORIES},
    {"name": "card_present", "type": "categorical", "categories": [0, 1]},
]
NAMES = [f["name"] for f in FEATURES]


# --- the model --------------------------------------------------------------------------------------


def transactions(seed: int, rows: int):
    """A synthetic card-transaction frame with the example model's five features."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "amount": rng.gamma(2.0, 50.0, rows), "hour": rng.integers(0, 24, rows),
        "distance_km": rng.exponential(10.0, rows), "merchant_category": rng.choice(CATEGORIES, rows),
        "card_present": rng.integers(0, 2, rows)})


def fit_classifier(seed: int, threshold: float):
    """A one-hot + logistic-regression pipeline; ``threshold`` moves its decision so versions differ."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = transactions(seed, 600)
    labels = ((frame.amount > threshold) & (frame.card_present == 0)).astype(int)
    encode = ColumnTransformer([("categories", OneHotEncoder(handle_unknown="ignore"),
                                 ["merchant_category", "card_present"])], remainder="passthrough")
    return Pipeline([("encode", encode), ("classify", LogisticRegression(max_iter=2000))]).fit(frame, labels)


class Registered:
    """A registered model version: its number, the artifact URI and digest a release pins, and the fitted object."""

    def __init__(self, version: int, uri: str, model: Any, sha256: str) -> None:
        self.version, self.uri, self.model, self.sha256 = version, uri, model, sha256


def stored_digest(server: MlflowServer, uri: str) -> str:
    """The artifact digest of what the store holds at ``uri`` (downloaded, as the model server does)."""
    import tempfile

    import mlflow
    from service_kit.artifact_digest import artifact_sha256

    with server.client_environment(), tempfile.TemporaryDirectory() as folder:
        return artifact_sha256(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))


def register(server: MlflowServer, model: Any) -> Registered:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    sample = transactions(99, 50)
    with server.client_environment():
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(model, name="model", registered_model_name=MODEL,
                                            signature=infer_signature(sample, model.predict(sample)),
                                            pip_requirements=["scikit-learn"])
    version = int(info.registered_model_version)
    uri = server.client().get_model_version_download_uri(MODEL, str(version))
    assert uri.startswith("s3://"), uri
    return Registered(version, uri, model, stored_digest(server, uri))


@pytest.fixture(scope="module")
def versions(mlflow_server: MlflowServer) -> dict[str, Registered]:
    """Two versions of the model: ``main`` and a ``candidate`` that decides differently."""
    return {"main": register(mlflow_server, fit_classifier(0, 150.0)),
            "candidate": register(mlflow_server, fit_classifier(1, 60.0))}


# --- the rendered manifest -----------------------------------------------------------------------------


def render_containers(root: Path, versions: dict[str, Registered]) -> dict[str, Any]:
    """Render a canary release of the two versions; returns the SeldonDeployment, PodMonitor and the
    model container of each predictor."""
    def pinned(registered: Registered) -> dict:
        block = release(registered.version)
        block["registry"]["name"] = MODEL
        block["artifact_uri"] = registered.uri
        block["artifact_sha256"] = registered.sha256
        return block

    spec = model_spec(MODEL, release=pinned(versions["main"]),
                      rollout={"strategy": "canary", "candidates": [
                          {"name": "candidate", "traffic": 20, "release": pinned(versions["candidate"])}]},
                      drift={"method": "tabular", "features": FEATURES})
    # dev as make demo runs it: the local broker (tansu) authenticates no one, so Kafka is PLAINTEXT and the
    # server keeps its default Kafka settings (test_kafka_auth.py covers SASL_SSL and the refusals).
    local_kafka = {"bootstrap_servers": "mlops-kafka-bootstrap.kafka.svc:9092", "cluster": "mlops",
                   "security_protocol": "PLAINTEXT"}
    make_repo(root, envs={"dev": environment("dev", kafka=local_kafka)}, models={"dev": {MODEL: spec}})
    result = CliRunner().invoke(cli, ["render", "--repo-root", str(root)])
    assert result.exit_code == 0, result.output
    folder = root / "environments/dev/rendered/models" / MODEL
    sdep = yaml.safe_load((folder / "seldondeployment.yaml").read_text())
    monitor = yaml.safe_load((folder / "model-server-podmonitor.yaml").read_text())
    containers = {p["name"]: p["componentSpecs"][0]["spec"]["containers"][0] for p in sdep["spec"]["predictors"]}
    return {"sdep": sdep, "monitor": monitor, "containers": containers, "spec": spec}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, versions: dict[str, Registered]) -> dict[str, Any]:
    return render_containers(tmp_path_factory.mktemp("repo"), versions)


def container_env(container: dict, secrets: dict[str, str]) -> dict[str, str]:
    """The container's environment as Kubernetes would set it (secretKeyRefs resolved from ``secrets``)."""
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = secrets[item["valueFrom"]["secretKeyRef"]["key"]]
    return env


PLACEHOLDER_SECRETS = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret"}
"""Stand-ins for the S3 Secret where only the rendered literal values matter."""


def rendered_value(container: dict, name: str) -> str:
    """One literal env value of the rendered container."""
    return container_env(container, PLACEHOLDER_SECRETS)[name]


class RunningServer:
    """A started model server: its ports and a client for predictions and metrics."""

    def __init__(self, http_port: int, app_metrics_port: int, process: Any) -> None:
        self.http_port, self.app_metrics_port, self.process = http_port, app_metrics_port, process

    def url(self, path: str) -> str:
        return f"http://{LOCALHOST}:{self.http_port}{path}"

    def post(self, payload: Any) -> tuple[int, dict]:
        request = urllib.request.Request(self.url("/api/v1.0/predictions"), data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Our /metrics, as {(sample name, sorted labels without pid): summed value}."""
        with urllib.request.urlopen(f"http://{LOCALHOST}:{self.app_metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        values: dict[tuple[str, tuple], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid")))
                values[key] = values.get(key, 0.0) + sample.value
        return values

    def metric(self, name: str, **labels: str) -> float:
        """Sum of ``name`` over the series that carry ``labels``."""
        return sum(v for (n, ls), v in self.metrics().items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    """components/model_server/Dockerfile's venv (Python 3.11, seldon-core 1.17.1) and /app."""
    return build_image("model_server", tmp_path_factory.mktemp("model-server-image"))


def server_environment(image: ImageEnv, container: dict, predictor: str, mlflow_server: MlflowServer,
                       kafka: str, workdir: Path, **overrides: str) -> tuple[dict[str, str], int, int]:
    """The image's ENV and the rendered env, with what the cluster would provide replaced by this
    machine's services: Seldon's operator (PREDICTOR_ID, port variables), the Secret, the in-cluster
    endpoints, and the pod's emptyDir at /tmp (``workdir``, one per server)."""
    env = {**image.env, **container_env(container, mlflow_server.env)}
    # The rendered endpoints are cluster DNS names; point them at the test's services.
    env["MODEL_SERVER_KAFKA_BOOTSTRAP_SERVERS"] = kafka
    env["MLFLOW_TRACKING_URI"] = mlflow_server.tracking_uri
    env["MLFLOW_S3_ENDPOINT_URL"] = mlflow_server.s3.endpoint_url
    http_port, seldon_metrics_port, app_metrics_port = free_port(), free_port(), free_port()
    env.update({
        "PREDICTOR_ID": predictor,  # what Seldon's operator sets
        "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(http_port),
        "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(seldon_metrics_port),
        "MODEL_SERVER_APP_METRICS_PORT": str(app_metrics_port),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),  # an emptyDir in the pod
        "HOME": str(workdir), "TMPDIR": str(workdir), "DO_NOT_TRACK": "true",
    })
    env.update(overrides)
    return env, http_port, app_metrics_port


@contextlib.contextmanager
def model_server(image: ImageEnv, env: dict[str, str], http_port: int, app_metrics_port: int, workdir: Path,
                 name: str) -> Iterator[RunningServer]:
    """The image's entry point (``python -m model_server``) from its venv, until it answers its liveness path."""
    workdir.mkdir(parents=True, exist_ok=True)
    with run_service(name, image.command(), url=f"http://{LOCALHOST}:{http_port}/health/ping", env=env,
                     cwd=image.workdir, timeout=180, log_dir=workdir) as process:
        yield RunningServer(http_port, app_metrics_port, process)


def read_records(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    """Every record value on ``topic`` (all partitions, from the start) once ``expected`` are there."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            values: list[bytes] = []
            deadline = time.monotonic() + timeout
            while len(values) < expected and time.monotonic() < deadline:
                for messages in (await consumer.getmany(*parts, timeout_ms=300)).values():
                    values.extend(m.value for m in messages)
            return values
        finally:
            await consumer.stop()

    return asyncio.run(run())


async def _partitions(consumer: Any, topic: str) -> set[int]:
    """The topic's partitions, once the broker's metadata lists them."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await consumer.topics()  # refreshes the cluster metadata
        if found := consumer.partitions_for_topic(topic):
            return found
        await asyncio.sleep(0.1)
    return set()


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def named(frame) -> dict:
    """The Seldon request for ``frame``: ndarray rows with feature names."""
    return {"data": {"names": list(frame.columns), "ndarray": frame.astype(object).values.tolist()}}


# --- the running servers (main and candidate, two gunicorn workers each) ------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    with run_kafka_broker("memory://tansu/", log_dir=tmp_path_factory.mktemp("tansu")) as kafka:
        yield kafka


@pytest.fixture(scope="module")
def topic(rendered: dict[str, Any], broker: KafkaBroker) -> str:
    name = rendered_value(rendered["containers"]["main"], "MODEL_SERVER_KAFKA_TOPIC")
    broker.create_topic(name, partitions=TOPIC_PARTITIONS)
    return name


@pytest.fixture(scope="module")
def servers(image: ImageEnv, rendered: dict[str, Any], mlflow_server: MlflowServer, broker: KafkaBroker,
            topic: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningServer]]:
    """The canary's two predictors, each started from its rendered container spec."""
    with contextlib.ExitStack() as stack:
        started = {}
        for predictor, container in rendered["containers"].items():
            workdir = tmp_path_factory.mktemp(f"server-{predictor}")
            env, http_port, metrics_port = server_environment(
                image, container, predictor, mlflow_server, broker.bootstrap_servers, workdir, GUNICORN_WORKERS="2")
            started[predictor] = stack.enter_context(
                model_server(image, env, http_port, metrics_port, workdir, f"model-server-{predictor}"))
        yield started


# --- tests: fit with the rendered manifest ------------------------------------------------------------


def test_rendered_container_matches_what_the_server_uses(rendered: dict[str, Any], image: ImageEnv) -> None:
    """Ports, probes, env names and the image of the rendered predictors are the ones the server reads."""
    from model_server.settings import Settings, load_settings

    DEFAULT_HTTP_PORT, DEFAULT_METRICS_PORT = json.loads(image_python(  # noqa: N806 - Seldon's names
        image, "import json; from seldon_core.microservice import DEFAULT_HTTP_PORT as h, DEFAULT_METRICS_PORT as m; "
               "print(json.dumps([h, m]))"))

    for predictor, container in rendered["containers"].items():
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = container_env(container, PLACEHOLDER_SECRETS)
        assert ports == {"http": DEFAULT_HTTP_PORT, "metrics": DEFAULT_METRICS_PORT,
                         "app-metrics": int(env["MODEL_SERVER_APP_METRICS_PORT"])}
        assert container["readinessProbe"]["httpGet"] == {"path": "/health/status", "port": DEFAULT_HTTP_PORT}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health/ping", "port": DEFAULT_HTTP_PORT}
        assert env["GRPC_WORKERS"] == "0"  # REST only: no gRPC process loading a second copy of the model
        assert env["PROMETHEUS_MULTIPROC_DIR"] in {m["mountPath"] + "/prometheus" for m in container["volumeMounts"]}
        # Every MODEL_SERVER_* variable the manifest sets is a setting (a typo would be silently ignored).
        fields = {f"MODEL_SERVER_{name.upper()}" for name in Settings.model_fields}
        assert {k for k in env if k.startswith("MODEL_SERVER_")} <= fields
        settings = load_settings({**env, "PREDICTOR_ID": predictor})
        spec_release = rendered["spec"]["release"] if predictor == "main" else \
            rendered["spec"]["rollout"]["candidates"][0]["release"]
        assert container["image"] == spec_release["server_image"]
        assert settings.model_uri == spec_release["artifact_uri"]
        assert settings.model_version == str(spec_release["registry"]["version"])
        assert [f.model_dump(exclude_none=True) for f in settings.features] == FEATURES
        assert settings.logging_enabled and settings.kafka_topic
    endpoints = rendered["monitor"]["spec"]["podMetricsEndpoints"]
    assert [(e["port"], e["path"]) for e in endpoints] == [("app-metrics", "/metrics")]


def test_probes_answer_once_the_model_is_loaded(servers: dict[str, RunningServer],
                                               versions: dict[str, Registered]) -> None:
    for predictor, server in servers.items():
        status, body = server.get("/health/status")
        assert status == 200, body
        assert json.loads(body)["jsonData"]["version"] == str(versions[predictor].version)
        # Ready does not wait for Kafka: each worker's shipper connects in the background (slowly on a
        # busy machine), and either worker may answer, so wait until two answers in a row say connected.
        expected = {"model": MODEL, "version": str(versions[predictor].version), "predictor": predictor,
                    "inference_log": "connected"}
        wait_for(lambda s=server, e=expected: all(json.loads(s.get("/health/status")[1])["jsonData"] == e
                                                  for _ in range(2)),
                 what=f"{predictor}'s producers to connect")
        assert server.get("/health/ping") == (200, "pong")


# --- tests: serving -----------------------------------------------------------------------------------


def test_predictions_match_the_models_own(servers: dict[str, RunningServer], versions: dict[str, Registered]) -> None:
    frame = transactions(7, 40)
    for predictor, server in servers.items():
        expected = versions[predictor].model.predict(frame).tolist()
        status, body = server.post(named(frame))
        assert status == 200, body
        assert body["data"]["ndarray"] == expected
        assert body["meta"]["tags"]["model_version"] == str(versions[predictor].version)
        # Columns in another order, DataFrame-shaped jsonData (records and split), unnamed rows.
        shuffled = frame[list(reversed(NAMES))]
        assert server.post(named(shuffled))[1]["data"]["ndarray"] == expected
        records = json.loads(frame.to_json(orient="records"))
        assert _values(server.post({"jsonData": records})) == expected
        split = json.loads(frame.to_json(orient="split", index=False))
        assert _values(server.post({"jsonData": split})) == expected
        rows = frame.astype(object).values.tolist()
        assert server.post({"data": {"ndarray": rows}})[1]["data"]["ndarray"] == expected
    # The two versions really differ on this data, so the canary test below tells them apart.
    assert versions["main"].model.predict(frame).tolist() != versions["candidate"].model.predict(frame).tolist()


def _values(response: tuple[int, dict]) -> list:
    status, body = response
    assert status == 200, body
    data = body["data"]
    return data["ndarray"] if "ndarray" in data else data["tensor"]["values"]


@pytest.mark.parametrize("payload, fragment", [
    ({"data": {"names": NAMES[:4], "ndarray": [[1.0, 2, 3.0, "online"]]}}, "missing card_present"),
    ({"data": {"names": [*NAMES[:4], "colour"], "ndarray": [[1.0, 2, 3.0, "online", 1]]}}, "unknown colour"),
    ({"data": {"names": NAMES, "ndarray": [["lots", 2, 3.0, "online", 1]]}}, "amount='lots'"),
    ({"data": {"names": NAMES, "ndarray": [[1.0, 2.5, 3.0, "online", 1]]}}, "hour='2.5' is not valid for hour (numeric) (not an integer)"),
    ({"data": {"ndarray": [[1.0, 2, 3.0]]}}, "row 0 has 3 values"),
    ({"jsonData": [{"amount": 1.0}]}, "missing hour"),
    ({"data": {"ndarray": []}}, "no rows"),
    ({"strData": "amount=1"}, "unsupported payload"),
])
def test_bad_payloads_get_400_naming_the_features(servers: dict[str, RunningServer], payload: dict,
                                                  fragment: str) -> None:
    server = servers["main"]
    before = server.metric("mlops_model_server_predictions_total", outcome="bad_request")
    status, body = server.post(payload)
    assert status == 400, body
    message = body["status"]["info"]
    assert fragment in message
    assert "5 features [amount (numeric), hour (numeric)" in message
    assert body["status"]["reason"] == "BAD_PAYLOAD"
    assert server.metric("mlops_model_server_predictions_total", outcome="bad_request") == before + 1


# --- tests: the inference log ---------------------------------------------------------------------------


def test_records_follow_the_drift_detectors_schema_and_tell_predictors_apart(
        servers: dict[str, RunningServer], versions: dict[str, Registered], broker: KafkaBroker,
        topic: str) -> None:
    from inference_log import decode, decode_batch

    frame = transactions(11, 25)
    sent = {}
    for predictor, server in servers.items():
        before = server.metric("mlops_model_server_inference_records_logged_total")
        status, body = server.post(named(frame))
        assert status == 200
        sent[predictor] = body["data"]["ndarray"]
        wait_for(lambda s=server, b=before: s.metric("mlops_model_server_inference_records_logged_total") >= b + 25,
                 what=f"{predictor}'s 25 records acknowledged")
    values = read_records(broker.bootstrap_servers, topic, expected=10**9, timeout=5)
    records = [decode(v) for v in values]  # the drift detector's own parser: raises on any schema problem
    batch = decode_batch(values, len(FEATURES), [f.get("categories") for f in FEATURES])
    assert batch.errors == []
    expected_rows = frame.astype(object).values.tolist()
    for predictor in servers:
        mine = [r for r in records if r.predictor == predictor and r.features in expected_rows]
        assert len(mine) >= 25
        assert {r.version for r in mine} == {str(versions[predictor].version)}
        assert {r.model for r in mine} == {MODEL}
        by_row = {json.dumps(r.features): r.prediction for r in mine}
        assert [by_row[json.dumps(row)] for row in expected_rows] == sent[predictor]
    assert len({r.request_id for r in records}) == len(records)


def test_metrics_add_up_over_both_workers(servers: dict[str, RunningServer]) -> None:
    server = servers["candidate"]
    before_ok = server.metric("mlops_model_server_predictions_total", outcome="ok")
    before_classes = server.metric("mlops_model_server_predicted_class_total")
    for seed in range(12):
        assert server.post(named(transactions(100 + seed, 3)))[0] == 200
    assert server.metric("mlops_model_server_predictions_total", outcome="ok") == before_ok + 12
    assert server.metric("mlops_model_server_predicted_class_total") == before_classes + 36
    assert server.metric("mlops_model_server_prediction_seconds_count") >= 12
    # One producer per worker: two gunicorn workers, two connected producers.
    def both_connected() -> bool:
        connected = list(_per_pid(server, "mlops_model_server_inference_log_connected").values())
        return len(connected) == 2 and all(v == 1.0 for v in connected)

    wait_for(both_connected, what="a connected producer in each of the two workers")


def _per_pid(server: RunningServer, name: str) -> dict:
    with urllib.request.urlopen(f"http://{LOCALHOST}:{server.app_metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, s.labels["pid"]): s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name}


def test_the_server_runs_from_its_image_alone_on_apache_licensed_seldon_core(
        image: ImageEnv, servers: dict[str, RunningServer]) -> None:
    """The image's venv is Python 3.11 with seldon-core 1.17.1 (Apache-2.0), built from the Dockerfile's
    pins with ``pip check`` clean (in the fixture); the running servers map that venv and /app, never the
    dev venv or the repository's components/."""
    facts = json.loads(image_python(image, (
        "import json, sys; from importlib.metadata import metadata; m = metadata('seldon-core'); "
        "print(json.dumps([sys.version_info[:2], m['Version'], m['License']]))")))
    assert facts == [[3, 11], "1.17.1", "Apache 2.0"]
    for server in servers.values():
        mapped = "\n".join(Path(f"/proc/{pid}/maps").read_text() for pid in _process_tree(server.process.pid))
        assert str(image.venv) in mapped and str(REPO / ".venv") not in mapped
        loaded = "\n".join(Path(f"/proc/{pid}/cmdline").read_text() for pid in _process_tree(server.process.pid))
        assert "model_server" in loaded
        # Seldon forks its metrics server and manager from the main process: pandas and aiokafka are the
        # workers' imports, so those forks do not hold them again.
        main = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "/pandas/" not in main and "/aiokafka/" not in main
    assert image.command() == [str(image.venv / "bin" / "python"), "-m", "model_server"]


def image_python(image: ImageEnv, code: str) -> str:
    """Run ``code`` with the image's Python, ENV and /app; its stdout."""
    done = subprocess.run([image.python, "-c", code], env=image.env, cwd=image.workdir, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


SELDON_METRICS_CHECK = """
import json, logging, os
import numpy as np
from seldon_core import seldon_methods
from seldon_core.metrics import SeldonMetrics
import model_server.seldon_patch as patch

original = SeldonMetrics.update
logs = []
logging.basicConfig(level=logging.INFO)
logging.getLogger(patch.__name__).addHandler(type("H", (logging.Handler,), {"emit": lambda h, r: logs.append(r.getMessage())})())
# Any other version: refused, loudly, Seldon untouched.
real_version = patch.version
patch.version = lambda name: "1.19.0"
refused = patch.skip_empty_metrics_updates()
unchanged = SeldonMetrics.update is original
patch.version = real_version
applied = patch.skip_empty_metrics_updates()
again = patch.skip_empty_metrics_updates()


class Model:
    def predict(self, X, features_names=None):
        return X

    def metrics(self):
        return [{"type": "COUNTER", "key": "mycounter", "value": 2},
                {"type": "GAUGE", "key": "mygauge", "value": 7},
                {"type": "TIMER", "key": "mytimer", "value": 20.0}]


class Quiet(Model):
    def metrics(self):
        return []


def run(update):
    SeldonMetrics.update = update
    metrics = SeldonMetrics(worker_id_func=lambda: 1)
    request = {"data": {"ndarray": [[1.0, 2.0]]}}
    seldon_methods.predict(Quiet(), request, metrics)
    after_empty = dict(metrics.data)
    for _ in range(3):
        seldon_methods.predict(Model(), request, metrics)
    seldon_methods.predict(Quiet(), request, metrics)
    text = metrics.generate_metrics()[0]
    samples = sorted(line for line in text.splitlines() if line.startswith("my"))
    return {str(k): v for k, v in after_empty.items()}, samples


patched = SeldonMetrics.update
print(json.dumps({"refused": refused, "unchanged": unchanged, "applied": applied, "again": again, "logs": logs,
                  "patched": run(patched), "seldon": run(original)}))
"""


def test_empty_seldon_metrics_updates_are_skipped_and_custom_metrics_still_counted(image: ImageEnv) -> None:
    """The patch of seldon-core 1.17.1's ``SeldonMetrics.update`` (real Manager, Seldon's own request
    handling): an empty update touches nothing (Seldon's writes an empty entry for the worker, six
    round trips); requests carrying custom metrics give exactly the series Seldon's own code gives;
    another seldon-core version is refused with a warning."""
    result = json.loads(image_python(image, SELDON_METRICS_CHECK))
    assert result["refused"] is False and result["unchanged"] is True
    assert "seldon-core 1.19.0 is not 1.17.1" in result["logs"][0] and "NOT applied" in result["logs"][0]
    assert result["applied"] is True and result["again"] is True
    patched_empty, patched_samples = result["patched"]
    seldon_empty, seldon_samples = result["seldon"]
    assert patched_empty == {} and seldon_empty == {"1": {}}  # Seldon's round trips wrote an empty entry
    assert patched_samples == seldon_samples
    names = {line.split("{")[0]: line.rsplit(" ", 1)[1] for line in patched_samples}
    assert names["mycounter_total"] == "6.0" and names["mygauge"] == "7.0"
    assert names["mytimer_count"] == "3.0" and abs(float(names["mytimer_sum"]) - 0.06) < 1e-9
    assert all('method="predict"' in line for line in patched_samples)


RAW_PATH_CHECK = """
import json, os, sys, tempfile
import numpy as np, pandas as pd
import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from seldon_core import seldon_methods
from seldon_core.metrics import SeldonMetrics
from seldon_core.user_model import SeldonNotImplementedError
from model_server.server import ModelServer

frame = pd.DataFrame({"amount": np.linspace(0, 100, 50), "hour": np.arange(50) % 24})
model = LogisticRegression().fit(frame, (frame.amount > 50).astype(int))
folder = tempfile.mkdtemp()
mlflow.sklearn.save_model(model, folder + "/m", signature=infer_signature(frame, model.predict(frame)))
os.environ["MODEL_SERVER_MODEL_URI"] = folder + "/m"
server = ModelServer()
server.load()


class SeldonOnly(ModelServer):
    def predict_raw(self, request):
        raise SeldonNotImplementedError("not here")


plain = SeldonOnly.__new__(SeldonOnly)
plain.__dict__.update(server.__dict__)
taken = []
original = seldon_methods.extract_request_parts_json
seldon_methods.extract_request_parts_json = lambda request: taken.append(1) or original(request)
metrics = SeldonMetrics(worker_id_func=lambda: 1)
requests = [
    {"data": {"names": ["hour", "amount"], "ndarray": [[3, 80.5], [4, 1.0]]}},
    {"data": {"ndarray": [[80.5, 3]]}},
    {"data": {"names": ["amount", "hour"], "ndarray": [[80.5, 3]]},
     "meta": {"puid": "p-1", "tags": {"client": "x"}, "requestPath": {"router": "img:1"}}},
    {"data": {"names": ["amount", "hour"], "tensor": {"shape": [1, 2], "values": [80.5, 3]}}},
    {"jsonData": [{"amount": 80.5, "hour": 3}]},
    {"data": {"ndarray": [[80.5, 3]]}, "meta": {"metrics": [{"key": "c", "type": "COUNTER", "value": 1}]}},
]
out = []
for request in requests:
    before = len(taken)
    ours = seldon_methods.predict(server, json.loads(json.dumps(request)), metrics)
    raw = len(taken) == before
    seldon = seldon_methods.predict(plain, json.loads(json.dumps(request)), metrics)
    out.append([raw, ours, seldon])
errors = []
for bad in ({"data": {"names": ["amount", "colour"], "ndarray": [[1.0, 2]]}}, {"data": {"ndarray": [[1.0, "x"]]}}):
    for who in (server, plain):
        try:
            seldon_methods.predict(who, bad, metrics)
        except Exception as exc:
            errors.append([type(exc).__name__, getattr(exc, "status_code", None), str(exc)])
from google.protobuf import json_format
from seldon_core.utils import json_to_seldon_message
proto = json_to_seldon_message({"data": {"names": ["amount", "hour"], "ndarray": [[80.5, 3]]}})
grpc = [json_format.MessageToDict(seldon_methods.predict(who, proto, metrics)) for who in (server, plain)]
print(json.dumps({"results": out, "errors": errors, "grpc": grpc}))
"""


def test_the_common_request_skips_seldons_generic_steps_with_the_same_response(image: ImageEnv, tmp_path: Path) -> None:
    """``ModelServer.predict_raw`` answers ``data.ndarray`` requests as Seldon's own handling does (same
    response, same 400s) and hands every other request back to Seldon's handling."""
    env = {"MODEL_SERVER_MODEL_NAME": "m", "MODEL_SERVER_REGISTERED_MODEL": "m", "MODEL_SERVER_MODEL_VERSION": "3",
           "PREDICTOR_ID": "main", "MODEL_SERVER_LOGGING_ENABLED": "false", "RELEASE_ID": "r-1",
           "MODEL_SERVER_FEATURES": '[{"name": "amount", "type": "numeric"}, {"name": "hour", "type": "numeric"}]',
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"), "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
           "PREDICTIVE_UNIT_ID": "fraud-detector", "PREDICTIVE_UNIT_IMAGE": "model-server:1"}
    done = subprocess.run([image.python, "-c", RAW_PATH_CHECK], env={**image.env, **env}, cwd=image.workdir,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [raw for raw, _, _ in result["results"]] == [True, True, True, False, False, False]
    for _, ours, seldon in result["results"]:
        assert ours == seldon
    first = result["results"][0][1]
    assert first["data"] == {"names": [], "ndarray": [1, 0]}
    assert first["meta"]["tags"]["model_version"] == "3"
    assert result["results"][2][1]["meta"]["puid"] == "p-1"
    assert result["results"][2][1]["meta"]["tags"]["client"] == "x"
    assert result["results"][2][1]["meta"]["requestPath"]["router"] == "img:1"
    assert result["grpc"][0] == result["grpc"][1]  # a gRPC message goes to Seldon's handling
    assert result["grpc"][0]["data"]["ndarray"] == [1.0]
    errors = result["errors"]
    assert errors[0] == errors[1] and errors[2] == errors[3]
    assert errors[0][:2] == ["SeldonMicroserviceException", 400] and errors[2][:2] == ["SeldonMicroserviceException", 400]


def test_health_is_503_until_the_model_is_loaded(image: ImageEnv, tmp_path: Path) -> None:
    """Readiness and predict answer 503 before ``load`` (Seldon's exception, from the image's seldon-core)."""
    env = {"MODEL_SERVER_MODEL_NAME": "m", "MODEL_SERVER_REGISTERED_MODEL": "m", "MODEL_SERVER_MODEL_VERSION": "3",
           "MODEL_SERVER_MODEL_URI": "s3://bucket/model", "PREDICTOR_ID": "main", "MODEL_SERVER_LOGGING_ENABLED": "false",
           "MODEL_SERVER_FEATURES": '[{"name": "amount", "type": "numeric"}]',
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    code = ("import json, numpy as np; from model_server.server import ModelServer\n"
            "from seldon_core.flask_utils import SeldonMicroserviceException\n"
            "server = ModelServer(); codes = []\n"
            "for call in (server.health_status, lambda: server.predict(np.array([[1.0]]), ['amount'])):\n"
            "    try: call()\n"
            "    except SeldonMicroserviceException as exc: codes.append([exc.status_code, exc.reason])\n"
            "print(json.dumps(codes))")
    done = subprocess.run([image.python, "-c", code], env={**image.env, **env}, cwd=image.workdir,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[503, "NOT_READY"], [503, "NOT_READY"]]


def test_a_model_logged_by_the_retrain_flow_serves_from_the_image(
        image: ImageEnv, rendered: dict[str, Any], mlflow_server: MlflowServer, broker: KafkaBroker,
        topic: str, tmp_path: Path) -> None:
    """The retrain flow's own ``log_model`` (MLflow 3, skops format, predict_proba) registers a version;
    the image's MLflow loads it and the server answers with the model's probabilities."""
    from retrain.models import FeatureInfo, ModelModule
    from retrain.models import fraud_detector as module

    features = [FeatureInfo(f["name"], f["type"], tuple(f["categories"]) if "categories" in f else None)
                for f in FEATURES]
    data = module.synthetic_dataset(rows=800, seed=3)
    frame, labels = data[NAMES], data[module.LABEL]
    plugin = ModelModule("fraud-detector", module)
    model = plugin.module.train(frame, labels, params=plugin.default_params, seed=3, feature_info=features)
    import mlflow
    with mlflow_server.client_environment(), mlflow.start_run():
        info = plugin.log_model(model, frame, MODEL)
    uri = mlflow_server.client().get_model_version_download_uri(MODEL, str(info.registered_model_version))
    with mlflow_server.client_environment():
        mlmodel = yaml.safe_load(Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"{uri}/MLmodel", dst_path=str(tmp_path / "mlmodel"))).read_text())
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    env, http_port, metrics_port = server_environment(
        image, rendered["containers"]["main"], "main", mlflow_server, broker.bootstrap_servers, tmp_path,
        MODEL_SERVER_MODEL_URI=uri, MODEL_SERVER_MODEL_VERSION=str(info.registered_model_version),
        MODEL_SERVER_ARTIFACT_SHA256=stored_digest(mlflow_server, uri))
    sample = frame.head(8)
    with model_server(image, env, http_port, metrics_port, tmp_path / "server", "model-server-retrained") as server:
        status, body = server.post(named(sample))
        assert status == 200, body
        assert np.allclose(np.asarray(body["data"]["ndarray"]), model.predict_proba(sample))


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (gunicorn's workers)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            queue.extend(int(c) for c in children)
    return found


def test_kafka_down_predictions_go_on_and_drops_are_counted(
        image: ImageEnv, rendered: dict[str, Any], mlflow_server: MlflowServer, tmp_path: Path) -> None:
    container = rendered["containers"]["main"]
    topic = rendered_value(container, "MODEL_SERVER_KAFKA_TOPIC")
    with run_kafka_broker("memory://tansu/", log_dir=tmp_path / "tansu") as kafka:
        kafka.create_topic(topic, partitions=TOPIC_PARTITIONS)
        env, http_port, metrics_port = server_environment(
            image, container, "main", mlflow_server, kafka.bootstrap_servers, tmp_path,
            MODEL_SERVER_BUFFER_RECORDS="30", MODEL_SERVER_RECONNECT_MAX_SECONDS="1",
            MODEL_SERVER_SEND_TIMEOUT_SECONDS="1")
        with model_server(image, env, http_port, metrics_port, tmp_path / "server",
                          "model-server-kafka-down") as server:
            assert server.post(named(transactions(1, 5)))[0] == 200
            wait_for(lambda: server.metric("mlops_model_server_inference_records_logged_total") == 5,
                     what="records logged while the broker is up")

            kafka.stop()
            for seed in range(40):  # 80 records into a 30-record buffer
                status, _ = server.post(named(transactions(200 + seed, 2)))
                assert status == 200  # predictions never wait for Kafka
            wait_for(lambda: server.metric("mlops_model_server_inference_records_dropped_total") >= 50,
                     what="dropped records counted")
            assert server.metric("mlops_model_server_inference_records_buffered") <= 30
            # the shipper notices the outage at its next send (within a flush interval + send timeout)
            wait_for(lambda: server.metric("mlops_model_server_inference_log_connected") == 0,
                     what="the shipper to report the broker unreachable")

            kafka.start()  # an in-memory broker comes back empty: the topic is created again,
            with contextlib.suppress(RuntimeError):  # unless the reconnecting producer's metadata request did
                kafka.create_topic(topic, partitions=TOPIC_PARTITIONS)
            marker = transactions(4242, 3)
            assert server.post(named(marker))[0] == 200
            wanted = marker.astype(object).values.tolist()

            def marker_logged() -> bool:
                from inference_log import decode
                values = read_records(kafka.bootstrap_servers, topic, expected=10**9, timeout=1)
                return sum(decode(v).features in wanted for v in values) == 3

            wait_for(marker_logged, timeout=60, what="logging to resume after the broker restart")
            assert server.metric("mlops_model_server_inference_log_connected") == 1


def test_the_shipper_flushes_at_once_when_stopped_mid_interval(tmp_path: Path) -> None:
    """A worker's exit must not wait out the flush interval, nor lose what is buffered."""
    from inference_log import decode
    from model_server.buffer import InferenceBuffer, LoggedRequest
    from model_server.metrics import ServerMetrics
    from model_server.settings import load_settings
    from model_server.shipper import InferenceLogShipper

    topic = "stop-flush-inference-log"
    with run_kafka_broker("memory://tansu/", log_dir=tmp_path / "tansu") as kafka:
        kafka.create_topic(topic, partitions=1)
        settings = load_settings({
            "MODEL_SERVER_MODEL_NAME": MODEL, "MODEL_SERVER_REGISTERED_MODEL": MODEL,
            "MODEL_SERVER_MODEL_VERSION": "1", "MODEL_SERVER_MODEL_URI": "s3://unused/model", "PREDICTOR_ID": "main",
            "MODEL_SERVER_FEATURES": json.dumps([{"name": "amount", "type": "numeric"}]),
            "MODEL_SERVER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "MODEL_SERVER_KAFKA_TOPIC": topic,
            "MODEL_SERVER_FLUSH_INTERVAL_SECONDS": "600", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")})
        buffer = InferenceBuffer(100)
        metrics = ServerMetrics(MODEL, "1", "main", max_class_labels=10)
        shipper = InferenceLogShipper(settings, buffer, metrics)
        shipper.start()
        wait_for(lambda: shipper.connected, what="the shipper to connect")
        time.sleep(0.5)  # into its 600 s nap
        buffer.put(LoggedRequest("request-1", time.time(), [[12.5]], [1]))

        began = time.monotonic()
        shipper.stop()
        assert time.monotonic() - began < 5
        assert shipper._thread is not None and not shipper._thread.is_alive()
        assert metrics.logged._value.get() == 1
        [value] = read_records(kafka.bootstrap_servers, topic, expected=1, timeout=10)
        record = decode(value)
        assert (record.request_id, record.features, record.prediction) == ("request-1", [12.5], 1)


# --- tests: failures at start-up ------------------------------------------------------------------------


def test_a_model_that_cannot_load_stops_the_server_with_a_clear_message(
        image: ImageEnv, rendered: dict[str, Any], mlflow_server: MlflowServer, tmp_path: Path) -> None:
    from model_server import ExitCode

    container = rendered["containers"]["main"]
    missing = f"s3://{mlflow_server.bucket}/no/such/model"
    env, http_port, _ = server_environment(image, container, "main", mlflow_server, "127.0.0.1:1", tmp_path,
                                           MODEL_SERVER_MODEL_URI=missing)
    result = subprocess.run(image.command(), env=env, cwd=image.workdir, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == ExitCode.ARTIFACT == 3, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert f"could not load model {MODEL} version {rendered_value(container, "MODEL_SERVER_MODEL_VERSION")} from {missing}" in output
    assert "the server will not start" in output


def test_the_rendered_predictors_pin_their_artifacts_digest(rendered: dict[str, Any],
                                                              versions: dict[str, Registered]) -> None:
    """The servers of this module start with the release's digest set: serving with the right one works."""
    for predictor, container in rendered["containers"].items():
        assert rendered_value(container, "MODEL_SERVER_ARTIFACT_SHA256") == versions[predictor].sha256


def test_a_tampered_model_artifact_stops_the_server(image: ImageEnv, rendered: dict[str, Any],
                                                     mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """Someone with the S3 key rewrites one file of a pinned artifact (a comment in ``MLmodel``: the model
    would still load): the server refuses to start, with exit 3 and both digests, and loads nothing."""
    from model_server import ExitCode

    pinned = register(mlflow_server, fit_classifier(2, 100.0))
    bucket, _, prefix = pinned.uri.removeprefix("s3://").partition("/")
    s3 = mlflow_server.s3.client()
    key = f"{prefix.rstrip('/')}/MLmodel"
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=original + b"# swapped by an attacker\n")
    tampered = stored_digest(mlflow_server, pinned.uri)
    assert tampered != pinned.sha256
    env, _, _ = server_environment(image, rendered["containers"]["main"], "main", mlflow_server, "127.0.0.1:1",
                                   tmp_path, MODEL_SERVER_MODEL_URI=pinned.uri,
                                   MODEL_SERVER_MODEL_VERSION=str(pinned.version),
                                   MODEL_SERVER_ARTIFACT_SHA256=pinned.sha256)
    result = subprocess.run(image.command(), env=env, cwd=image.workdir, capture_output=True, text=True,
                            timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == ExitCode.ARTIFACT == 3, output
    assert (f"model artifact {pinned.uri} does not match its release: expected artifact_sha256 {pinned.sha256}, "
            f"actual {tampered}") in output
    assert "the server will not start" in output
    assert "model loaded" not in output


def test_missing_configuration_is_refused_before_anything_listens(image: ImageEnv, rendered: dict[str, Any],
                                                                   tmp_path: Path, mlflow_server: MlflowServer) -> None:
    from model_server import ExitCode

    env, _, _ = server_environment(image, rendered["containers"]["main"], "main", mlflow_server, "127.0.0.1:1",
                                   tmp_path)
    del env["PREDICTOR_ID"]
    env["MODEL_SERVER_FEATURES"] = "[{\"name\": \"amount\", \"type\": \"text\"}]"
    result = subprocess.run(image.command(), env=env, cwd=image.workdir, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == ExitCode.CONFIG == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "invalid model server configuration" in output
    assert "PREDICTOR_ID" in output
    assert "MODEL_SERVER_FEATURES[0].type" in output
