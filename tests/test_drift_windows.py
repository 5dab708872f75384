"""The drift detector's windows and offset bookkeeping, without Kafka (``drift_detector.windows``)."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import inference_log
import numpy as np
import pytest
from drift_detector.detector import DriftResult
from drift_detector.metrics import DriftMetrics
from drift_detector.settings import DriftConfig
from drift_detector.windows import Window, WindowProcessor

Partition = namedtuple("Partition", "topic partition")  # what the processor needs of aiokafka's TopicPartition
Message = namedtuple("Message", "offset key value")
TOPIC = "m-test-inference-log"
P0, P1 = Partition(TOPIC, 0), Partition(TOPIC, 1)


class CountingDetector:
    """Scores every window as drift when its first value is negative; remembers what it saw."""

    def __init__(self) -> None:
        self.windows: list[np.ndarray] = []

    def score(self, window: np.ndarray) -> DriftResult:
        self.windows.append(window.copy())
        drift = bool(window[0, 0] < 0)
        return DriftResult(drift=drift, p_value=0.001 if drift else 0.5, statistic=0.1, threshold=0.005,
                           feature_p_values={"a": 0.5, "b": 0.5})


def config(window: int = 3) -> DriftConfig:
    detector = {"uri": "file:///unused.npz", "sha256": "0" * 64}
    return DriftConfig.model_validate({
        "model": "m", "environment": "test", "method": "ks", "p_value": 0.01, "window": window,
        "features": [{"name": "a", "type": "numeric"}, {"name": "b", "type": "numeric"}],
        "predictors": [{"name": "main", "version": "1", "detector": detector}]})


def record(value: float, version: str = "1", predictor: str = "main", model: str = "m") -> bytes:
    return inference_log.encode_fields(model, version, predictor, "r", 1.0, [value, 1.0], 0)


def messages(start: int, payloads: list[Any]) -> list[Message]:
    return [Message(start + i, None, p) for i, p in enumerate(payloads)]


@pytest.fixture
def processor() -> tuple[WindowProcessor, CountingDetector, DriftMetrics]:
    detector = CountingDetector()
    metrics = DriftMetrics("m")
    proc = WindowProcessor(config(), {("1", "main"): detector}, metrics, clock=lambda: 42.0)
    proc.assign([P0, P1])
    return proc, detector, metrics


def test_a_window_lists_its_lowest_offset_per_partition_and_drops_revoked_rows() -> None:
    window = Window(4, 1)
    for row, (pid, offset) in enumerate([(0, 5), (1, 2), (0, 3)]):
        window.rows[row], window.partitions[row], window.offsets[row] = row, pid, offset
    window.n = 3
    assert window.lowest_offsets() == {0: 3, 1: 2}
    assert window.drop([0]) == 2
    assert window.n == 1 and window.lowest_offsets() == {1: 2}
    assert window.rows[0, 0] == 1


def test_full_windows_are_scored_and_exported_and_commits_stop_at_unfinished_ones(processor) -> None:
    proc, detector, metrics = processor
    outcome = proc.process({P0: messages(10, [record(-1.0), record(2.0), record(3.0), record(4.0)])})
    assert (outcome.records, outcome.windows, outcome.rejections) == (4, 1, [])
    assert [w[:, 0].tolist() for w in detector.windows] == [[-1.0, 2.0, 3.0]]
    assert proc.committable() == {}  # nothing is processed before advance()
    proc.advance(outcome.next_offsets)
    # offset 13 waits in the unfinished window: the commit stops there
    assert proc.committable() == {P0: 13}
    assert proc.pending_rows() == 1
    exposition = metrics.exposition()[0].decode()
    assert 'mlops_drift_detected{model="m",predictor="main",version="1"} 1.0' in exposition
    assert 'mlops_drift_last_window_timestamp_seconds{model="m",predictor="main",version="1"} 42.0' in exposition


def test_bad_records_are_rejected_with_their_reason_and_do_not_hold_commits(processor) -> None:
    proc, detector, _ = processor
    batch = {P1: messages(0, [b"not json", record(1.0, model="other"), record(1.0, version="9"), record(5.0)])}
    outcome = proc.process(batch)
    reasons = [(r.partition, r.offset, r.reason) for r in outcome.rejections]
    assert reasons == [(1, 0, "not_json"), (1, 1, "wrong_model"), (1, 2, "unknown_predictor")]
    assert outcome.rejections[0].value == b"not json"
    proc.advance(outcome.next_offsets)
    assert proc.committable() == {P1: 3}  # the valid record at 3 waits in its window
    assert detector.windows == []


def test_revoked_partitions_forget_their_rows_and_offsets(processor) -> None:
    proc, _, _ = processor
    outcome = proc.process({P0: messages(0, [record(1.0)]), P1: messages(7, [record(2.0)])})
    proc.advance(outcome.next_offsets)
    assert proc.committable() == {P0: 0, P1: 7}
    assert proc.revoke([P1]) == 1
    assert proc.committable() == {P0: 0} and proc.pending_rows() == 1
    # a batch fetched before the revoke is not processed (the next owner reads it)
    late = proc.process({P1: messages(8, [record(3.0)])})
    assert late.records == 0 and proc.pending_rows() == 1
    proc.reset()
    assert proc.committable() == {} and proc.pending_rows() == 0 and proc.assigned == frozenset()
