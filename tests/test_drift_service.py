"""The drift detector service, run as a real process against a real Kafka broker (tansu).

Every test starts ``python -m drift_detector`` with ``PYTHONPATH=components`` and talks to it the way
the cluster does: records into the inference-log topic, ``/metrics``, ``/readyz``, the dead-letter
topic, the committed offsets of its consumer group, and signals. Detectors are fitted and persisted
with the core (``detector.fit``, ``persistence.save``, built-in backend) before the service starts,
exactly as the retrain flow does.

Timing: each service start is about 1-2 s (imports, group join); the whole file stays well under three
minutes. Every wait has a deadline and reports the service's output when it runs out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from imagebuild import ImageEnv, build_image
from services import KafkaBroker, ManagedProcess, S3Server, free_port, require_module, run_service

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ROOT / "components"
if str(COMPONENTS) not in sys.path:
    sys.path.insert(0, str(COMPONENTS))

RENDERED = ROOT / "environments" / "dev" / "rendered" / "models" / "fraud-detector"
MODEL = "fraud-test"
WINDOW = 200
FEATURES = [
    {"name": "amount", "type": "numeric", "categories": None},
    {"name": "hour", "type": "numeric", "categories": None},
    {"name": "distance_km", "type": "numeric", "categories": None},
    {"name": "channel", "type": "categorical", "categories": ["web", "app", "store"]},
]
CHANNEL_P = [0.5, 0.3, 0.2]
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def _service_dependencies() -> None:
    """The service's own packages; missing ones skip here and fail under CI (services.py's rule)."""
    for module, package in (("aiokafka", "aiokafka"), ("prometheus_client", "prometheus-client"),
                            ("pydantic_settings", "pydantic-settings"), ("orjson", "orjson")):
        require_module(module, package)


# --- data, detectors, config ----------------------------------------------------------------------


def sample(n: int, seed: int, shift: float = 0.0) -> list[list[Any]]:
    """``n`` feature rows; ``shift`` moves the mean of ``amount`` by that many standard deviations."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 3))
    numeric[:, 0] += shift
    channels = rng.choice(["web", "app", "store"], size=n, p=CHANNEL_P)
    return [[float(a), float(b), float(c), str(ch)] for (a, b, c), ch in zip(numeric, channels, strict=True)]


def encode_rows(rows: Sequence[Sequence[Any]]) -> np.ndarray:
    codes = {"web": 0.0, "app": 1.0, "store": 2.0}
    return np.array([[r[0], r[1], r[2], codes[r[3]]] for r in rows], dtype=np.float64)


def fit_artifact(path: Path, seed: int = 1) -> str:
    """Fit a tabular detector on 2,000 reference rows, persist it at ``path``; return its sha256."""
    from drift_detector import persistence
    from drift_detector.detector import FeatureSpec, fit

    specs = [FeatureSpec(f["name"], f["type"], f["categories"]) for f in FEATURES]
    detector = fit(encode_rows(sample(2000, seed)), specs, "tabular", p_value=0.01, correction="bonferroni",
                   window=WINDOW, ert=1000, backend="builtin")
    return persistence.save(detector, path)


def payload(version: str, predictor: str, features: Sequence[Any], model: str = MODEL) -> bytes:
    import inference_log

    return inference_log.encode(inference_log.InferenceRecord(
        model=model, version=version, predictor=predictor, request_id=uuid.uuid4().hex,
        timestamp=time.time(), features=list(features), prediction=0.5))


@dataclass
class Deployment:
    """What one test deploys: topics, group, config file and the service's environment."""

    broker: KafkaBroker
    topic: str
    dead_letter_topic: str
    group_id: str
    config_file: Path
    http_port: int
    work: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("DRIFT_")}
        env.update({
            "PYTHONPATH": str(COMPONENTS),
            "DRIFT_MODEL": MODEL,
            "DRIFT_ENVIRONMENT": "test",
            "DRIFT_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "DRIFT_TOPIC": self.topic,
            "DRIFT_DEAD_LETTER_TOPIC": self.dead_letter_topic,
            "DRIFT_GROUP_ID": self.group_id,
            "DRIFT_CONFIG_FILE": str(self.config_file),
            "DRIFT_HTTP_PORT": str(self.http_port),
            "DRIFT_HTTP_HOST": "127.0.0.1",
            "DRIFT_ARTIFACT_DIR": str(self.work / "artifacts"),
            "DRIFT_COMMIT_INTERVAL_SECONDS": "0.2",
            "DRIFT_BROKER_CHECK_INTERVAL_SECONDS": "0.5",
            "DRIFT_BROKER_TIMEOUT_SECONDS": "2",
            "DRIFT_SESSION_TIMEOUT_SECONDS": "6",
            "DRIFT_HEARTBEAT_INTERVAL_SECONDS": "1",
        })
        env.update(extra)
        return env


def write_config(path: Path, predictors: Sequence[tuple[str, str, str, str]]) -> Path:
    """A config file like the rendered ConfigMap's; ``predictors`` are (name, version, uri, sha256)."""
    config = {
        "model": MODEL, "environment": "test", "method": "tabular", "p_value": 0.01,
        "correction": "bonferroni", "window": WINDOW, "ert": 1000, "features": FEATURES,
        "predictors": [{"name": name, "version": version, "release_id": f"rel{version}",
                        "detector": {"uri": uri, "sha256": sha}} for name, version, uri, sha in predictors],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def deploy(broker: KafkaBroker, work: Path, predictors: Sequence[tuple[str, str]], partitions: int = 3,
           uris: dict[str, tuple[str, str]] | None = None) -> Deployment:
    """Topics, fitted artifacts (one per predictor, same reference) and the config file."""
    name = uuid.uuid4().hex[:8]
    topic, dlq = f"{MODEL}-{name}-inference-log", f"{MODEL}-{name}-inference-log-dlq"
    broker.create_topic(topic, partitions)
    broker.create_topic(dlq, 1)
    entries = []
    for predictor, version in predictors:
        if uris and predictor in uris:
            uri, sha = uris[predictor]
        else:
            artifact = work / f"detector-{predictor}-{version}.npz"
            sha = fit_artifact(artifact)
            uri = str(artifact)
        entries.append((predictor, version, uri, sha))
    config = write_config(work / "config.yaml", entries)
    return Deployment(broker, topic, dlq, f"{MODEL}-{name}-drift", config, free_port(), work)


# --- the service process --------------------------------------------------------------------------


@contextmanager
def drift_service(deployment: Deployment, name: str = "drift-detector", ready: bool = True,
                  **extra: str) -> Iterator[ManagedProcess]:
    """``python -m drift_detector`` for ``deployment``; yields once ``/readyz`` answers 200 (or, with
    ``ready=False``, once ``/healthz`` does)."""
    port = deployment.http_port
    with run_service(name, [sys.executable, "-m", "drift_detector"], url=f"http://127.0.0.1:{port}/healthz",
                     env=deployment.env(**extra), cwd=ROOT, timeout=60, log_dir=deployment.work) as service:
        if ready:
            wait_until(lambda: http_get(port, "/readyz")[0] == 200, 60, "the service to be ready", service)
        yield service


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with _DIRECT.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


class Metrics:
    """One scrape of ``/metrics``."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.samples = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
                        for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(v for n, lab, v in self.samples
                   if n == name and all(lab.get(k) == want for k, want in labels.items()))

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.samples)


def scrape(port: int) -> Metrics:
    status, text = http_get(port, "/metrics")
    assert status == 200, f"/metrics answered {status}: {text}"
    return Metrics(text)


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               service: ManagedProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if service is not None and service.process.poll() is not None:
            raise AssertionError(f"the service exited ({service.process.returncode}) while waiting for "
                                 f"{what}:\n{service.output()}")
        if time.monotonic() > deadline:
            detail = f"\nservice output:\n{service.output()}" if service is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(0.1)


def wait_metric(port: int, service: ManagedProcess, name: str, at_least: float, timeout: float = 30,
                **labels: str) -> Metrics:
    def reached() -> Metrics | None:
        metrics = scrape(port)
        return metrics if metrics.value(name, **labels) >= at_least else None

    return wait_until(reached, timeout, f"{name}{labels} >= {at_least}", service)


# --- Kafka clients (the test's side) --------------------------------------------------------------


def produce(bootstrap: str, topic: str, payloads: Sequence[bytes | None], keys: Sequence[bytes] | None = None,
            partition: int | None = None) -> dict[int, int]:
    """Send ``payloads`` (acks=all) and return, per partition, the offset after the last one written."""
    from aiokafka import AIOKafkaProducer

    async def run() -> dict[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
        await producer.start()
        try:
            futures = [await producer.send(topic, value, key=keys[i] if keys else None, partition=partition)
                       for i, value in enumerate(payloads)]
            ends: dict[int, int] = {}
            for metadata in await asyncio.gather(*futures):
                ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)
            return ends
        finally:
            await producer.stop()

    return asyncio.run(run())


def merge_ends(*ends: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in ends:
        for p, o in part.items():
            out[p] = max(out.get(p, 0), o)
    return out


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The consumer group's committed offsets per partition (0 where nothing is committed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
        finally:
            await consumer.stop()

    return asyncio.run(run())


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 20) -> list[Any]:
    """Every record of partition 0 of ``topic`` from the beginning, once ``expected`` are there."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while len(records) < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=500)
                records.extend(batch.get(tp, []))
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())


class BackgroundProducer(threading.Thread):
    """Produces ``payloads`` in chunks with a pause between them, so the service is mid-stream."""

    def __init__(self, bootstrap: str, topic: str, payloads: Sequence[bytes], chunk: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.payloads = bootstrap, topic, payloads
        self.chunk, self.pause = chunk, pause
        self.ends: dict[int, int] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for start in range(0, len(self.payloads), self.chunk):
                part = self.payloads[start:start + self.chunk]
                keys = [str(start + i).encode() for i in range(len(part))]
                self.ends = merge_ends(self.ends, produce(self.bootstrap, self.topic, part, keys))
                time.sleep(self.pause)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finish(self, timeout: float = 60) -> dict[int, int]:
        self.join(timeout)
        assert not self.is_alive(), "the background producer did not finish"
        if self.error is not None:
            raise self.error
        return self.ends


# --- settings from the rendered manifests -----------------------------------------------------------


def _rendered(name: str) -> dict[str, Any]:
    return yaml.safe_load((RENDERED / name).read_text())


def test_settings_load_from_rendered_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drift_detector.app import HealthServer
    from drift_detector.metrics import DriftMetrics
    from drift_detector.settings import Settings

    from generator.naming import DRIFT_HTTP_PORT, METRICS

    deployment = _rendered("drift-detector-deployment.yaml")
    configmap = _rendered("drift-detector-configmap.yaml")
    service = _rendered("drift-detector-service.yaml")
    monitor = _rendered("drift-detector-servicemonitor.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item.get("value", "from-a-secret") for item in container["env"]}
    drift_env = {name for name in env if name.startswith("DRIFT_")}
    assert drift_env == {"DRIFT_MODEL", "DRIFT_ENVIRONMENT", "DRIFT_KAFKA_BOOTSTRAP_SERVERS", "DRIFT_TOPIC",
                         "DRIFT_DEAD_LETTER_TOPIC", "DRIFT_GROUP_ID", "DRIFT_CONFIG_FILE", "DRIFT_HTTP_PORT",
                         "DRIFT_S3_ENDPOINT_URL"}
    assert drift_env <= {f"DRIFT_{name.upper()}" for name in Settings.model_fields}

    # The config file is the ConfigMap's config.yaml, mounted where DRIFT_CONFIG_FILE points.
    mount = next(m for m in container["volumeMounts"] if env["DRIFT_CONFIG_FILE"].startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    key = env["DRIFT_CONFIG_FILE"][len(mount["mountPath"]) + 1:]
    config_file = tmp_path / key
    config_file.write_text(configmap["data"][key])
    env["DRIFT_CONFIG_FILE"] = str(config_file)

    # Exactly what the process sees: the real environment, read by pydantic-settings.
    for name in list(os.environ):
        if name.startswith("DRIFT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings == Settings.from_env(env)
    assert settings.model == "fraud-detector" and settings.environment == "dev"
    assert settings.kafka_bootstrap_servers == "mlops-kafka-bootstrap.kafka.svc:9092"
    assert settings.topic == "fraud-detector-dev-inference-log"
    assert settings.dead_letter_topic == "fraud-detector-dev-inference-log-dlq"
    assert settings.group_id == "fraud-detector-dev-drift-detector"
    assert settings.s3_endpoint_url == "http://seaweedfs-s3.storage.svc:8333"
    assert settings.http_port == DRIFT_HTTP_PORT == 8080
    assert str(settings.artifact_dir).startswith("/tmp/")  # the only writable path (emptyDir on /tmp)
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])

    config = settings.load_config()
    assert (config.model, config.environment, config.method, config.window) == ("fraud-detector", "dev",
                                                                                 "tabular", 1000)
    assert [f.name for f in config.features] == ["amount", "hour", "distance_km", "merchant_category",
                                                 "card_present"]
    assert config.features[4].categories == [0, 1]
    assert [(p.name, p.version) for p in config.predictors] == [("main", "7"), ("candidate", "8")]
    assert config.predictors[0].detector.uri.startswith("s3://")

    # Ports and probes: port 8080 named http, the probe paths and the scrape path are served.
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert port["containerPort"] == settings.http_port
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    metrics = DriftMetrics(config.model)
    server = HealthServer("127.0.0.1", 0, lambda: (False, "loading"), metrics.exposition)
    for probe, status in (("readinessProbe", 503), ("livenessProbe", 200), ("startupProbe", 200)):
        assert container[probe]["httpGet"]["port"] == "http"
        assert server.route("GET", container[probe]["httpGet"]["path"])[0] == status
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server.route("GET", monitor["spec"]["endpoints"][0]["path"])[0] == 200

    # Every series the rendered alerts and dashboard query exists (one predictor declared).
    metrics.declare_predictor("7", "main", [f.name for f in config.features])
    metrics.rejected("7", "main", "schema")
    metrics.lag(settings.topic, 0, 0)
    metrics.window("7", "main", drift=False, p_value=0.5, statistic=0.1, threshold=0.002,
                   feature_p_values={"amount": 0.5}, seconds=0.001, timestamp=1.0)
    exposed = Metrics(metrics.exposition()[0].decode())
    for key, name in METRICS.items():
        if key.startswith("drift_"):
            assert exposed.has(name), name
    for name in ("mlops_drift_test_statistic", "mlops_drift_threshold", "mlops_drift_windows_evaluated_total",
                 "mlops_drift_last_window_timestamp_seconds", "mlops_drift_processing_seconds_bucket"):
        assert exposed.has(name), name


def test_readme_documents_every_setting_metric_and_config_key() -> None:
    """The component README is the service's manual: every ``DRIFT_`` variable, every exported series,
    every key of the config file and every record field is named there."""
    from drift_detector.metrics import DriftMetrics
    from drift_detector.settings import DriftConfig, Settings
    from inference_log import InferenceRecord

    readme = (COMPONENTS / "drift_detector" / "README.md").read_text()
    missing = [f"DRIFT_{name.upper()}" for name in Settings.model_fields if f"`DRIFT_{name.upper()}`" not in readme]
    missing += [family.name for family in DriftMetrics("m").registry.collect() if f"`{family.name}" not in readme]
    missing += [f"{key}:" for key in DriftConfig.model_fields if f"\n{key}:" not in readme]
    missing += [f'"{key}"' for key in InferenceRecord.model_fields if f'"{key}"' not in readme]
    assert not missing, f"components/drift_detector/README.md does not document: {', '.join(missing)}"


# --- tampered artifacts ---------------------------------------------------------------------------


def _start_and_fail(env: dict[str, str], timeout: float = 60) -> tuple[int, str, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "drift_detector"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def _offline_env(work: Path, config: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DRIFT_")}
    env.update({"PYTHONPATH": str(COMPONENTS), "DRIFT_MODEL": MODEL, "DRIFT_ENVIRONMENT": "test",
                "DRIFT_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "DRIFT_TOPIC": "t", "DRIFT_DEAD_LETTER_TOPIC": "d",
                "DRIFT_GROUP_ID": "g", "DRIFT_CONFIG_FILE": str(config), "DRIFT_HTTP_HOST": "127.0.0.1",
                "DRIFT_HTTP_PORT": str(free_port()), "DRIFT_ARTIFACT_DIR": str(work / "artifacts")})
    return env


def test_tampered_local_artifact_refuses_to_start(tmp_path: Path) -> None:
    artifact = tmp_path / "detector.npz"
    sha = fit_artifact(artifact)
    config = write_config(tmp_path / "config.yaml", [("main", "1", str(artifact), sha)])
    with artifact.open("ab") as handle:
        handle.write(b"\0")

    code, output, seconds = _start_and_fail(_offline_env(tmp_path, config))

    assert code == 3, output
    assert "refusing to start" in output and "predictor 'main'" in output, output
    assert f"expects {sha}" in output, output
    assert "Traceback" not in output, output
    assert seconds < 30


def test_tampered_s3_artifact_refuses_to_start(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    uris = {}
    for predictor in ("main", "candidate"):
        artifact = tmp_path / f"{predictor}.npz"
        sha = fit_artifact(artifact)
        body = artifact.read_bytes()
        if predictor == "candidate":
            body = body[:-1] + bytes([body[-1] ^ 1])  # one bit flipped after fitting
        client.put_object(Bucket=bucket, Key=f"1/{predictor}/drift/detector.npz", Body=body)
        uris[predictor] = (f"s3://{bucket}/1/{predictor}/drift/detector.npz", sha)
    config = write_config(tmp_path / "config.yaml", [("main", "1", *uris["main"]), ("candidate", "2", *uris["candidate"])])
    env = {**_offline_env(tmp_path, config), **s3_server.env, "DRIFT_S3_ENDPOINT_URL": s3_server.endpoint_url}
    env.pop("AWS_ENDPOINT_URL_S3", None)  # the service must use DRIFT_S3_ENDPOINT_URL

    code, output, _ = _start_and_fail(env)

    assert code == 3, output
    assert "refusing to start" in output and "predictor 'candidate'" in output, output
    assert uris["candidate"][1] in output and uris["candidate"][0] in output, output
    assert "loaded detector of predictor 'main'" in output, output  # the intact one loaded from S3


# --- detection ------------------------------------------------------------------------------------


def test_no_drift_over_many_windows_then_drift_within_one_window(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    d = deploy(kafka_broker, tmp_path, [("main", "1"), ("candidate", "2")], partitions=1)
    main_windows, candidate_windows = 30, 10
    main_rows = sample(main_windows * WINDOW, seed=11)
    candidate_rows = sample(candidate_windows * WINDOW, seed=12)
    payloads = [payload("1", "main", r) for r in main_rows] + [payload("2", "candidate", r) for r in candidate_rows]
    order = np.random.default_rng(0).permutation(len(payloads))  # interleave the two predictors
    payloads = [payloads[i] for i in order]
    ends = produce(kafka_broker.bootstrap_servers, d.topic, payloads)

    with drift_service(d) as service:
        port = d.http_port
        m = wait_metric(port, service, "mlops_drift_windows_evaluated_total", main_windows, predictor="main")
        m = wait_metric(port, service, "mlops_drift_windows_evaluated_total", candidate_windows, predictor="candidate")
        for predictor, version, windows in (("main", "1", main_windows), ("candidate", "2", candidate_windows)):
            labels = {"model": MODEL, "version": version, "predictor": predictor}
            assert m.value("mlops_drift_windows_evaluated_total", **labels) == windows
            assert m.value("mlops_drift_records_consumed_total", **labels) == windows * WINDOW
            assert m.value("mlops_drift_windows_drifted_total", **labels) == 0  # no false alarm in any window
            assert m.value("mlops_drift_detected", **labels) == 0
            assert m.value("mlops_drift_p_value", **labels) >= m.value("mlops_drift_threshold", **labels) > 0
            assert m.value("mlops_drift_last_window_timestamp_seconds", **labels) > time.time() - 60
            assert m.value("mlops_drift_processing_seconds_count", **labels) == windows
            assert m.value("mlops_drift_feature_p_value", feature="channel", **labels) > 0
        assert m.value("mlops_drift_records_rejected_total") == 0
        assert m.value("mlops_drift_ready") == 1
        wait_until(lambda: committed(kafka_broker.bootstrap_servers, d.group_id, d.topic, 1) == ends, 10,
                   "every offset to be committed", service)
        wait_until(lambda: scrape(port).value("mlops_drift_consumer_lag", topic=d.topic, partition="0") == 0
                   and scrape(port).has("mlops_drift_consumer_lag"), 10, "zero lag", service)

        # One window of shifted data on the candidate: drift within that window; main stays clean.
        shifted = [payload("2", "candidate", r) for r in sample(WINDOW, seed=13, shift=1.0)]
        clean = [payload("1", "main", r) for r in sample(WINDOW, seed=14)]
        middle = produce(kafka_broker.bootstrap_servers, d.topic, shifted + clean)
        m = wait_metric(port, service, "mlops_drift_windows_evaluated_total", candidate_windows + 1,
                        predictor="candidate")
        m = wait_metric(port, service, "mlops_drift_windows_evaluated_total", main_windows + 1, predictor="main")
        assert m.value("mlops_drift_detected", predictor="candidate") == 1
        assert m.value("mlops_drift_windows_drifted_total", predictor="candidate") == 1
        assert m.value("mlops_drift_feature_p_value", predictor="candidate", feature="amount") < \
            m.value("mlops_drift_threshold", predictor="candidate")
        assert m.value("mlops_drift_detected", predictor="main") == 0

        # SIGTERM with half a window pending: exit 0 within 10 s, the half window stays uncommitted.
        half = [payload("1", "main", r) for r in sample(WINDOW // 2, seed=15)]
        wait_until(lambda: committed(kafka_broker.bootstrap_servers, d.group_id, d.topic, 1) == middle, 10,
                   "the drift windows to be committed", service)
        tail = produce(kafka_broker.bootstrap_servers, d.topic, half)
        wait_metric(port, service, "mlops_drift_records_consumed_total",
                    (main_windows + 1) * WINDOW + WINDOW // 2, predictor="main")
        started = time.monotonic()
        os.kill(service.pid, signal.SIGTERM)
        code = service.process.wait(timeout=10)
        stop_seconds = time.monotonic() - started
        assert code == 0, service.output()
        assert stop_seconds < 10
        assert "SIGTERM received" in service.output()
    final = committed(kafka_broker.bootstrap_servers, d.group_id, d.topic, 1)
    assert final == middle == {0: tail[0] - WINDOW // 2}, (final, middle, tail)


# --- the image -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drift_image(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    """components/drift_detector/Dockerfile's venv and /app, built without a container engine."""
    return build_image("drift_detector", tmp_path_factory.mktemp("drift-image"))


def test_the_service_runs_from_what_its_image_installs_and_copies(kafka_broker: KafkaBroker, tmp_path: Path,
                                                                  drift_image: ImageEnv) -> None:
    """The image's pinned requirements install from wheels alone and pass ``pip check`` (in the
    fixture), and the service started from that venv and /app only, with the image's ENV and none
    of this machine's, scores windows, exports them and stops with 0 on SIGTERM."""
    d = deploy(kafka_broker, tmp_path, [("main", "1")], partitions=1)
    settings = {key: value for key, value in d.env().items() if key.startswith("DRIFT_")}
    env = {**settings, **drift_image.env, "HOME": str(tmp_path)}
    produce(kafka_broker.bootstrap_servers, d.topic, [payload("1", "main", r) for r in sample(2 * WINDOW, seed=21)])
    port = d.http_port
    with run_service("drift-image", drift_image.command(), url=f"http://127.0.0.1:{port}/healthz", env=env,
                     cwd=drift_image.workdir, timeout=60, log_dir=tmp_path) as service:
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 60, "the service to be ready", service)
        m = wait_metric(port, service, "mlops_drift_windows_evaluated_total", 2, predictor="main")
        assert m.value("mlops_drift_records_consumed_total", predictor="main") == 2 * WINDOW
        # Its compiled modules (numpy, orjson, msgspec, ...) were loaded from the image's venv only.
        mapped = Path(f"/proc/{service.pid}/maps").read_text()
        assert str(drift_image.venv) in mapped and str(ROOT / ".venv") not in mapped
        for module in ("orjson", "msgspec"):  # optional in inference_log, but the image must have them
            assert f"{drift_image.venv}/lib/python3.12/site-packages/{module}/" in mapped, module
        os.kill(service.pid, signal.SIGTERM)
        assert service.process.wait(timeout=10) == 0, service.output()


# --- poison messages ------------------------------------------------------------------------------


def test_poison_messages_go_to_the_dead_letter_topic(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    d = deploy(kafka_broker, tmp_path, [("main", "1")], partitions=3)
    good = [payload("1", "main", r) for r in sample(3 * WINDOW, seed=21)]
    record = {"model": MODEL, "version": "1", "predictor": "main", "request_id": "r", "timestamp": 1.0,
              "features": [1.0, 2.0, 3.0, "web"], "prediction": 0}

    def json_with(**changes: Any) -> bytes:
        import json

        return json.dumps({**record, **changes}).encode()

    poison: list[tuple[bytes | None, str]] = [
        (b"\x00\xffnot json at all", "not_json"),
        (None, "not_json"),  # a tombstone
        (b"[1, 2, 3]", "schema"),
        (json_with(extra_field=1), "schema"),
        (json_with(schema_version=99), "unsupported_version"),
        (json_with(features=[1.0, 2.0, "web"]), "feature_count"),
        (json_with(features=["high", 2.0, 3.0, "web"]), "feature_type"),
        (json_with(features=[1.0, 2.0, 3.0, ["web"]]), "feature_type"),
        (json_with(version="9"), "unknown_predictor"),
        (json_with(model="another-model"), "wrong_model"),
    ]
    with drift_service(d) as service:
        port = d.http_port
        ends_a = produce(kafka_broker.bootstrap_servers, d.topic, good[:WINDOW + 50])
        ends_b = produce(kafka_broker.bootstrap_servers, d.topic, [p for p, _ in poison],
                         keys=[f"poison-{i}".encode() for i in range(len(poison))])
        ends_c = produce(kafka_broker.bootstrap_servers, d.topic, good[WINDOW + 50:])
        ends = merge_ends(ends_a, ends_b, ends_c)

        m = wait_metric(port, service, "mlops_drift_records_rejected_total", len(poison))
        m = wait_metric(port, service, "mlops_drift_windows_evaluated_total", 3)  # kept going after poison
        assert service.process.poll() is None
        for reason in {r for _, r in poison}:
            want = sum(1 for _, r in poison if r == reason)
            assert m.value("mlops_drift_records_rejected_total", model=MODEL, reason=reason) == want, reason
        assert m.value("mlops_drift_records_rejected_total", reason="feature_count", version="unknown") == 1
        assert m.value("mlops_drift_records_consumed_total", predictor="main") == 3 * WINDOW
        assert m.value("mlops_drift_records_consumed_total") == 3 * WINDOW + len(poison)

        dead = read_topic(kafka_broker.bootstrap_servers, d.dead_letter_topic, len(poison))
        assert len(dead) == len(poison)
        got = sorted(((r.value or b""), dict(r.headers)["reason"].decode()) for r in dead)
        assert got == sorted(((p or b""), reason) for p, reason in poison)
        headers = dict(dead[0].headers)
        assert headers["source-topic"].decode() == d.topic and int(headers["source-offset"]) >= 0
        assert headers["error"]

        wait_until(lambda: committed(kafka_broker.bootstrap_servers, d.group_id, d.topic, 3)
                   == {p: ends.get(p, 0) for p in range(3)}, 10, "every offset to be committed", service)
        assert http_get(port, "/readyz")[0] == 200


# --- crash ----------------------------------------------------------------------------------------


def test_kill_9_mid_stream_loses_nothing(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    d = deploy(kafka_broker, tmp_path, [("main", "1")], partitions=3)
    windows = 40
    payloads = [payload("1", "main", r) for r in sample(windows * WINDOW, seed=31)]
    bootstrap = kafka_broker.bootstrap_servers

    fast_rejoin = {"DRIFT_SESSION_TIMEOUT_SECONDS": "3"}  # the killed member is evicted sooner
    with drift_service(d, name="drift-detector-1", **fast_rejoin) as first:
        producer = BackgroundProducer(bootstrap, d.topic, payloads, chunk=100, pause=0.03)
        producer.start()
        wait_metric(d.http_port, first, "mlops_drift_windows_evaluated_total", 8)
        before_kill = committed(bootstrap, d.group_id, d.topic, 3)  # read first, then scrape, then kill
        evaluated_before_kill = scrape(d.http_port).value("mlops_drift_windows_evaluated_total")
        os.killpg(first.pid, signal.SIGKILL)
        first.process.wait(timeout=5)
        assert producer.is_alive(), "the stream should still be running when the service dies"
    # Everything committed by the killed process had been evaluated in exported windows.
    assert sum(before_kill.values()) <= evaluated_before_kill * WINDOW, (before_kill, evaluated_before_kill)
    resume = committed(bootstrap, d.group_id, d.topic, 3)
    assert sum(resume.values()) < windows * WINDOW

    with drift_service(d, name="drift-detector-2", **fast_rejoin) as second:
        ends = producer.finish()
        assert sum(ends.values()) == windows * WINDOW
        wait_until(lambda: committed(bootstrap, d.group_id, d.topic, 3) == ends, 40,
                   "every offset to be committed after the restart", second)
        m = scrape(d.http_port)
        reread = sum(ends[p] - resume[p] for p in range(3))
        # The second process read exactly from the committed offsets to the end: nothing skipped...
        assert m.value("mlops_drift_records_consumed_total") == reread
        # ...and evaluated all of it in complete windows: every record evaluated at least once.
        assert m.value("mlops_drift_windows_evaluated_total") * WINDOW == reread
        assert m.value("mlops_drift_records_rejected_total") == 0


# --- rebalance ------------------------------------------------------------------------------------


def test_rebalance_commits_processed_offsets_and_hands_over(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    d = deploy(kafka_broker, tmp_path, [("main", "1")], partitions=3)
    bootstrap = kafka_broker.bootstrap_servers
    rows = sample(6 * WINDOW, seed=51)
    first, second = rows[:5 * WINDOW // 2], rows[5 * WINDOW // 2:]
    other = Deployment(**{**d.__dict__, "http_port": free_port()})

    with drift_service(d, name="drift-detector-a") as a:
        ends_a = produce(bootstrap, d.topic, [payload("1", "main", r) for r in first])
        wait_metric(d.http_port, a, "mlops_drift_records_consumed_total", len(first))
        assert scrape(d.http_port).value("mlops_drift_windows_evaluated_total") == 2  # half a window pending

        with drift_service(other, name="drift-detector-b") as b:  # scale out: the group rebalances
            wait_until(lambda: "partitions revoked" in a.output(), 20, "the first instance to give up partitions", a)
            assert "unfinished rows dropped, to be read again" in a.output()
            ends_b = produce(bootstrap, d.topic, [payload("1", "main", r) for r in second])
            ends = merge_ends(ends_a, ends_b)
            wait_until(lambda: scrape(d.http_port).value("mlops_drift_records_consumed_total")
                       + scrape(other.http_port).value("mlops_drift_records_consumed_total") >= len(rows),
                       20, "both instances to read their partitions", b)
            windows_b = scrape(other.http_port).value("mlops_drift_windows_evaluated_total")
            os.kill(b.pid, signal.SIGTERM)  # scale in: b commits what it processed and leaves
            assert b.process.wait(timeout=10) == 0, b.output()
        # a takes every partition back, re-reads what nobody committed and completes the windows.
        wait_until(lambda: committed(bootstrap, d.group_id, d.topic, 3) == ends, 40,
                   "every offset to be committed", a)
        windows_a = scrape(d.http_port).value("mlops_drift_windows_evaluated_total")
        assert windows_a + windows_b >= len(rows) // WINDOW
        assert scrape(d.http_port).value("mlops_drift_records_rejected_total") == 0


# --- broker restart -------------------------------------------------------------------------------


def test_broker_restart_mid_stream_recovers_without_loss(kafka_broker_s3: KafkaBroker, s3_server: S3Server,
                                                         tmp_path: Path) -> None:
    broker = kafka_broker_s3
    bucket = s3_server.create_bucket()
    artifact = tmp_path / "main.npz"
    sha = fit_artifact(artifact)
    s3_server.client().upload_file(str(artifact), bucket, "drift/main.npz")
    d = deploy(broker, tmp_path, [("main", "1")], partitions=3,
               uris={"main": (f"s3://{bucket}/drift/main.npz", sha)})
    rows = sample(5 * WINDOW, seed=41)
    first, second = rows[:5 * WINDOW // 2], rows[5 * WINDOW // 2:]
    s3_env = {**s3_server.env, "DRIFT_S3_ENDPOINT_URL": s3_server.endpoint_url}

    broker.stop()  # the service starts before the broker: it must wait and retry, not fail
    with drift_service(d, ready=False, DRIFT_SESSION_TIMEOUT_SECONDS="3", **s3_env) as service:
        port = d.http_port
        # Detectors load first (from S3: seconds on a busy machine), then the broker probe fails.
        wait_until(lambda: http_get(port, "/readyz") == (503, "broker unreachable\n"), 30,
                   "readiness to report the broker unreachable", service)
        broker.start()
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 60, "readiness once the broker is up", service)
        assert "cannot connect to Kafka" in service.output()

        ends_a = produce(broker.bootstrap_servers, d.topic, [payload("1", "main", r) for r in first])
        wait_metric(port, service, "mlops_drift_records_consumed_total", len(first))
        assert scrape(port).value("mlops_drift_windows_evaluated_total") == 2  # half a window pending
        wait_until(lambda: sum(committed(broker.bootstrap_servers, d.group_id, d.topic, 3).values())
                   == 2 * WINDOW, 10, "the two complete windows to be committed", service)

        # Down for longer than the consumer's session timeout, then back on the same storage.
        broker.stop()
        wait_until(lambda: http_get(port, "/readyz")[0] == 503, 20, "readiness to go false", service)
        time.sleep(3.5)
        assert service.process.poll() is None
        broker.start()
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 60, "readiness after the restart", service)

        ends_b = produce(broker.bootstrap_servers, d.topic, [payload("1", "main", r) for r in second])
        ends = merge_ends(ends_a, ends_b)
        assert sum(ends.values()) == len(rows)
        wait_until(lambda: committed(broker.bootstrap_servers, d.group_id, d.topic, 3) == ends, 60,
                   "every offset to be committed after the broker restart", service)
        m = scrape(port)
        assert m.value("mlops_drift_windows_evaluated_total") == 5  # the pending half window: not lost
        assert m.value("mlops_drift_records_consumed_total") >= len(rows)
        assert m.value("mlops_drift_records_rejected_total") == 0

        # SIGTERM while the broker is away: still exits 0 within 10 s.
        broker.stop()
        wait_until(lambda: http_get(port, "/readyz")[0] == 503, 20, "readiness to go false", service)
        started = time.monotonic()
        os.kill(service.pid, signal.SIGTERM)
        assert service.process.wait(timeout=10) == 0, service.output()
        assert time.monotonic() - started < 10
