"""What the drift detector's process tests share: data, persisted detectors, configs, the service
process, its HTTP endpoints and the test's own Kafka clients.

The service is started as ``python -m drift_detector`` with ``PYTHONPATH=components`` and talked to the
way the cluster does: records into the inference-log topic, ``/metrics``, ``/readyz``, the dead-letter
topic, the committed offsets of its consumer group, and signals. Detectors are fitted and persisted
with the core (``detector.fit``, ``artifacts.save``, built-in backend) before the service starts,
exactly as the retrain flow does.
"""

from __future__ import annotations

import asyncio
import os
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
import yaml

from services import KafkaBroker, ManagedProcess, free_port, require_module, run_service

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

def require_service_modules() -> None:
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
    from drift_detector import artifacts
    from drift_detector.detector import FeatureSpec, fit

    specs = [FeatureSpec(f["name"], f["type"], f["categories"]) for f in FEATURES]
    detector = fit(encode_rows(sample(2000, seed)), specs, "tabular", p_value=0.01, correction="bonferroni",
                   window=WINDOW, ert=1000, backend="builtin")
    return artifacts.save(detector, path)


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
    state_topic: str
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
            "DRIFT_STATE_TOPIC": self.state_topic,
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
    """Topics (as rendered: inference log, dead letters, drift state), fitted artifacts (one per predictor,
    same reference) and the config file."""
    name = uuid.uuid4().hex[:8]
    topic, dlq, state = f"{MODEL}-{name}-inference-log", f"{MODEL}-{name}-inference-log-dlq", f"{MODEL}-{name}-drift-state"
    broker.create_topic(topic, partitions)
    broker.create_topic(dlq, 1)
    broker.create_topic(state, 1)
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
    return Deployment(broker, topic, dlq, state, f"{MODEL}-{name}-drift", config, free_port(), work)


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


def start_and_fail(env: dict[str, str], timeout: float = 60) -> tuple[int, str, float]:
    """Run the service until it exits: its exit code, output and how long it took."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "drift_detector"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def offline_env(work: Path, config: Path) -> dict[str, str]:
    """The service's environment without a reachable broker (for start-up refusals)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DRIFT_")}
    env.update({"PYTHONPATH": str(COMPONENTS), "DRIFT_MODEL": MODEL, "DRIFT_ENVIRONMENT": "test",
                "DRIFT_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "DRIFT_TOPIC": "t", "DRIFT_DEAD_LETTER_TOPIC": "d",
                "DRIFT_GROUP_ID": "g", "DRIFT_CONFIG_FILE": str(config), "DRIFT_HTTP_HOST": "127.0.0.1",
                "DRIFT_HTTP_PORT": str(free_port()), "DRIFT_ARTIFACT_DIR": str(work / "artifacts")})
    return env
