"""Each predictor's last window verdict, kept in Kafka so that a restarted detector restores it.

Why: ``mlops_drift_detected`` and its companion gauges describe the last window. A restarted detector (a
rollout, for instance when a retrain proposal merges) would show 0 until its next window, which at low
traffic is many minutes away, and anything reading the gauge would see the drift vanish. The pod has no
volume, so the verdicts live where the detector already writes: a compacted topic (``DRIFT_STATE_TOPIC``,
rendered as ``kafkatopic-drift-state.yaml``) with one record per ``(model, version, predictor)``; the
newest record of a key wins, and compaction keeps the topic at about one record per key.

Why not the consumer group's commit metadata, which would travel with the offsets: the Kafka-API broker
the tests and ``make demo`` run (tansu 0.6) accepts it and returns it empty, so it could not be tested
against a real broker; a topic works the same on both.

The consumer writes every new verdict before it commits the offsets of the records that produced it, so
a committed window's verdict is never lost, and reads the topic once at start, before it consumes.
This module holds the record and the choice of the newest; ``consumer.py`` does the Kafka I/O.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger("drift_detector.state")


class WindowVerdict(BaseModel):
    """What the gauges said after one window of one predictor (``metrics.DriftMetrics.last_window``)."""

    # NaN is a real value here (cvm_online has no p-value): keep it as NaN, not as null.
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    schema_version: Literal[1] = 1
    model: str
    version: str
    predictor: str
    drift: bool
    p_value: float
    statistic: float
    threshold: float
    feature_p_values: dict[str, float] = {}
    timestamp: float
    """Unix time the window was scored (``mlops_drift_last_window_timestamp_seconds``)."""

    @property
    def key(self) -> tuple[str, str]:
        """``(version, predictor)``, the processor's key of a window."""
        return self.version, self.predictor

    def record_key(self) -> bytes:
        """The Kafka key: compaction keeps the newest record per model, version and predictor."""
        return json.dumps([self.model, self.version, self.predictor]).encode()

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


def newest(records: Iterable[tuple[bytes | None, bytes | None]], model: str) -> dict[tuple[str, str], WindowVerdict]:
    """The newest verdict of each ``(version, predictor)`` of ``model`` among ``(key, value)`` records in
    topic order; a record that is not a verdict is skipped with a warning, never fatal at start."""
    found: dict[tuple[str, str], WindowVerdict] = {}
    for key, value in records:
        if value is None:  # a tombstone: the key was deleted on purpose
            continue
        try:
            verdict = WindowVerdict.model_validate_json(value)
        except ValidationError as exc:
            log.warning("skipping a state record that is not a window verdict (key %r): %s", key,
                        exc.errors()[0].get("msg", exc))
            continue
        if verdict.model != model:
            continue
        found[verdict.key] = verdict
    return found
