"""The drift detector keeps each predictor's last window verdict in its state topic and restores it on
start, so a restart (a rollout) does not clear ``mlops_drift_detected`` and the gauges beside it.

The record and the processor's bookkeeping are tested in-process with a real fitted detector; the
service is tested as a process against a real broker (tansu): a drifted window, SIGTERM, a restart
whose ``/metrics`` shows the verdict before any new record, and newer evidence replacing it.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import pytest
from driftservice import (
    FEATURES,
    MODEL,
    WINDOW,
    Deployment,
    committed,
    deploy,
    drift_service,
    fit_artifact,
    payload,
    produce,
    read_topic,
    require_service_modules,
    sample,
    scrape,
    wait_metric,
    wait_until,
    write_config,
)

from services import KafkaBroker, ManagedProcess

GAUGES = ("mlops_drift_detected", "mlops_drift_p_value", "mlops_drift_test_statistic", "mlops_drift_threshold",
          "mlops_drift_last_window_timestamp_seconds")


@pytest.fixture(autouse=True)
def _service_dependencies() -> None:
    require_service_modules()


def verdict(**changes):
    from drift_detector.state import WindowVerdict

    values = {"model": MODEL, "version": "2", "predictor": "candidate", "drift": True, "p_value": 1e-9,
              "statistic": 0.41, "threshold": 0.0025, "feature_p_values": {"amount": 1e-9, "hour": 0.4},
              "timestamp": 1767225600.5}
    return WindowVerdict(**{**values, **changes})


def test_a_verdict_round_trips_exactly_and_keeps_nan():
    from drift_detector.state import WindowVerdict

    kept = verdict(p_value=math.nan, feature_p_values={})  # cvm_online has no p-value
    back = WindowVerdict.model_validate_json(kept.encode())
    assert math.isnan(back.p_value) and back.model_dump(exclude={"p_value"}) == kept.model_dump(exclude={"p_value"})
    assert verdict().record_key() == b'["fraud-test", "2", "candidate"]'


def test_the_newest_record_of_each_predictor_wins_and_junk_is_skipped():
    from drift_detector.state import newest

    old, new, main = verdict(drift=True, timestamp=1.0), verdict(drift=False, timestamp=2.0), verdict(predictor="main")
    records = [(old.record_key(), old.encode()), (b"x", b"not json"), (main.record_key(), None),
               (main.record_key(), main.encode()), (b"y", verdict(model="other-model").encode()),
               (b"z", b'{"model": "fraud-test", "surprise": 1}'), (new.record_key(), new.encode())]
    assert newest(records, MODEL) == {("2", "candidate"): new, ("2", "main"): main}


def processor(tmp_path: Path):
    """A real WindowProcessor: config file as rendered, detectors fitted, persisted and loaded."""
    from drift_detector import artifacts
    from drift_detector.metrics import DriftMetrics
    from drift_detector.settings import DriftConfig
    from drift_detector.windows import WindowProcessor
    from prometheus_client import CollectorRegistry

    sha = fit_artifact(tmp_path / "detector.npz")
    config = DriftConfig.from_file(write_config(tmp_path / "config.yaml", [
        ("main", "1", str(tmp_path / "detector.npz"), sha), ("candidate", "2", str(tmp_path / "detector.npz"), sha)]))
    detector = artifacts.load(tmp_path / "detector.npz", sha)
    metrics = DriftMetrics(MODEL, CollectorRegistry())
    return WindowProcessor(config, {("1", "main"): detector, ("2", "candidate"): detector}, metrics), metrics


def sample_value(metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"model": MODEL, **labels})


def test_restore_sets_the_gauges_not_the_counters_and_never_overrides_a_newer_window(tmp_path):
    from aiokafka import TopicPartition

    work, metrics = processor(tmp_path)
    candidate = {"version": "2", "predictor": "candidate"}
    kept = verdict()
    restored = work.restore([kept, verdict(version="9"), verdict(model="other-model"),
                             verdict(predictor="main", version="1", feature_p_values={"gone": 0.5})])
    assert [v.key for v in restored] == [("2", "candidate"), ("1", "main")]
    assert sample_value(metrics, "mlops_drift_detected", **candidate) == 1
    assert sample_value(metrics, "mlops_drift_p_value", **candidate) == kept.p_value
    assert sample_value(metrics, "mlops_drift_last_window_timestamp_seconds", **candidate) == kept.timestamp
    assert sample_value(metrics, "mlops_drift_feature_p_value", feature="hour", **candidate) == 0.4
    assert sample_value(metrics, "mlops_drift_feature_p_value", feature="gone", version="1", predictor="main") is None
    assert sample_value(metrics, "mlops_drift_windows_evaluated_total", **candidate) == 0  # this process scored none
    assert work.unsaved() == []  # restored verdicts are already kept

    # A clean window scored here replaces the restored verdict and is the one to save.
    tp = TopicPartition("log", 0)
    work.assign([tp])

    class Record:
        def __init__(self, offset: int, value: bytes) -> None:
            self.offset, self.value, self.key = offset, value, None

    rows = sample(WINDOW, seed=71)
    work.process({tp: [Record(i, payload("2", "candidate", row)) for i, row in enumerate(rows)]})
    assert sample_value(metrics, "mlops_drift_detected", **candidate) == 0
    (scored,) = work.unsaved()
    assert scored.key == ("2", "candidate") and not scored.drift
    assert work.restore([kept]) == []  # a late restore never overrides newer evidence
    assert sample_value(metrics, "mlops_drift_detected", **candidate) == 0
    work.saved([kept])  # saving another verdict of the same predictor leaves the new one unsaved
    assert work.unsaved() == [scored]
    work.saved([scored])
    assert work.unsaved() == []


# --- the service ----------------------------------------------------------------------------------


def sigterm(service: ManagedProcess) -> float:
    """SIGTERM the service; it must exit 0. Returns the seconds it took."""
    started = time.monotonic()
    os.kill(service.pid, signal.SIGTERM)
    code = service.process.wait(timeout=15)
    took = time.monotonic() - started
    assert code == 0, service.output()
    return took


def gauges(port: int) -> dict[tuple[str, str], float]:
    m = scrape(port)
    values = {(name, predictor): m.value(name, predictor=predictor) for name in GAUGES
              for predictor in ("main", "candidate")}
    values.update({("feature_p_value", f["name"]): m.value("mlops_drift_feature_p_value", predictor="candidate",
                                                            feature=f["name"]) for f in FEATURES})
    return values


def test_a_restart_shows_the_last_verdict_before_any_new_window(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    d: Deployment = deploy(kafka_broker, tmp_path, [("main", "1"), ("candidate", "2")], partitions=1)
    bootstrap, port = kafka_broker.bootstrap_servers, d.http_port
    shifted = [payload("2", "candidate", r) for r in sample(WINDOW, seed=61, shift=1.0)]
    clean = [payload("1", "main", r) for r in sample(WINDOW, seed=62)]
    ends = produce(bootstrap, d.topic, shifted + clean)

    with drift_service(d, name="drift-detector-1") as first:
        wait_metric(port, first, "mlops_drift_windows_evaluated_total", 2)
        before = gauges(port)
        assert before["mlops_drift_detected", "candidate"] == 1 and before["mlops_drift_detected", "main"] == 0
        wait_until(lambda: committed(bootstrap, d.group_id, d.topic, 1) == ends, 10, "the windows to be committed",
                   first)
        assert sigterm(first) < 5  # a rollout's SIGTERM: prompt, and nothing left to keep
    kept = read_topic(bootstrap, d.state_topic, 2)
    assert sorted(r.key for r in kept) == [b'["fraud-test", "1", "main"]', b'["fraud-test", "2", "candidate"]']

    # Restarted with no new record: the verdicts are back as soon as it is ready, before any window.
    with drift_service(d, name="drift-detector-2") as second:
        restored = scrape(port)
        assert restored.value("mlops_drift_windows_evaluated_total") == 0
        assert gauges(port) == before
        assert "restored 2 window verdicts" in second.output()

        # New evidence replaces the restored verdict, and is what the next start restores.
        later = produce(bootstrap, d.topic, [payload("2", "candidate", r) for r in sample(WINDOW, seed=63)])
        wait_metric(port, second, "mlops_drift_windows_evaluated_total", 1, predictor="candidate")
        assert scrape(port).value("mlops_drift_detected", predictor="candidate") == 0
        newer = gauges(port)
        assert newer["mlops_drift_last_window_timestamp_seconds", "candidate"] > \
            before["mlops_drift_last_window_timestamp_seconds", "candidate"]
        wait_until(lambda: committed(bootstrap, d.group_id, d.topic, 1) == later, 10, "the window to be committed",
                   second)
        assert sigterm(second) < 5

    with drift_service(d, name="drift-detector-3") as third:
        assert gauges(port) == newer
        assert sigterm(third) < 5


def test_sigterm_stops_an_idle_detector_within_five_seconds(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    """The promise behind a prompt rollout: nothing to finish, so SIGTERM to exit 0 well inside 5 s."""
    d = deploy(kafka_broker, tmp_path, [("main", "1")], partitions=3)
    with drift_service(d) as service:
        produce(kafka_broker.bootstrap_servers, d.topic, [payload("1", "main", r) for r in sample(WINDOW // 2, seed=64)])
        wait_metric(d.http_port, service, "mlops_drift_records_consumed_total", WINDOW // 2)
        took = sigterm(service)
    assert took < 5, f"stopping took {took:.1f}s"
