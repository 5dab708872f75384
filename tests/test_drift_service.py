"""The drift detector service, run as a real process against a real Kafka broker (tansu).

Every test starts ``python -m drift_detector`` with ``PYTHONPATH=components`` and talks to it the way
the cluster does: records into the inference-log topic, ``/metrics``, ``/readyz``, the dead-letter
topic, the committed offsets of its consumer group, and signals. Detectors are fitted and persisted
with the core (``detector.fit``, ``artifacts.save``, built-in backend) before the service starts,
exactly as the retrain flow does.

Timing: each service start is about 1-2 s (imports, group join); the whole file stays well under three
minutes. Every wait has a deadline and reports the service's output when it runs out.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from driftservice import (
    MODEL,
    ROOT,
    WINDOW,
    BackgroundProducer,
    Deployment,
    committed,
    deploy,
    drift_service,
    fit_artifact,
    http_get,
    merge_ends,
    payload,
    produce,
    read_topic,
    require_service_modules,
    sample,
    scrape,
    wait_metric,
    wait_until,
)

from imagebuild import ImageEnv, build_image
from services import KafkaBroker, S3Server, free_port, run_service


@pytest.fixture(autouse=True)
def _service_dependencies() -> None:
    require_service_modules()


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
