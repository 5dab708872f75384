"""Windows and offsets: the synchronous half of the drift detector's consumer. No Kafka I/O here.

:class:`WindowProcessor` decodes and validates a batch of records, appends valid rows to the window
of their ``(version, predictor)``, scores every window that fills up, exports its metrics, and keeps
the offset bookkeeping that makes delivery at-least-once: per partition, the committable offset is
the lowest offset still waiting in an unfinished window, or else the offset after the last processed
record. :mod:`drift_detector.consumer` drives it with aiokafka.

A record is *processed* once it was either scored in a window whose metrics are exported, or
acknowledged by the dead-letter topic. Only processed offsets are ever committed, so a crash, a
broker outage or a rebalance can repeat records but never skip one.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import inference_log
import numpy as np

from .metrics import UNKNOWN, DriftMetrics
from .settings import DriftConfig
from .state import WindowVerdict

if TYPE_CHECKING:  # partitions are only dictionary keys here: any hashable with topic and partition
    from aiokafka import TopicPartition

log = logging.getLogger("drift_detector.consumer")  # the name operators know from the logs

# A message's payload and offset, read in C over a whole batch (a comprehension costs a Python step each).
_VALUE = operator.attrgetter("value")
_OFFSET = operator.attrgetter("offset")

_REASON_TEXT = {
    "not_json": "the payload is not JSON",
    "schema": "the payload is not an inference-log record (fields or field types)",
    "unsupported_version": "the record's schema_version is not supported",
    "feature_count": "the record has the wrong number of features",
    "feature_type": "a feature has the wrong type (numeric features must be numbers, categorical ones scalars)",
}



class Window:
    """Rows of one ``(version, predictor)`` waiting to be scored, with where each row came from."""

    __slots__ = ("n", "offsets", "partitions", "rows", "size")

    def __init__(self, size: int, width: int) -> None:
        self.size = size
        self.rows = np.empty((size, width), dtype=np.float64)
        self.partitions = np.empty(size, dtype=np.int32)
        self.offsets = np.empty(size, dtype=np.int64)
        self.n = 0

    def lowest_offsets(self) -> dict[int, int]:
        """Per partition id, the lowest offset waiting in this window."""
        if self.n == 0:
            return {}
        parts, offs = self.partitions[:self.n], self.offsets[:self.n]
        result: dict[int, int] = {}
        for pid in np.unique(parts):
            result[int(pid)] = int(offs[parts == pid].min())
        return result

    def drop(self, partition_ids: Iterable[int]) -> int:
        """Remove the rows of ``partition_ids`` (revoked partitions will be read again); return how many."""
        if self.n == 0:
            return 0
        keep = ~np.isin(self.partitions[:self.n], np.fromiter(partition_ids, dtype=np.int32))
        kept = int(keep.sum())
        dropped = self.n - kept
        if dropped:
            self.rows[:kept] = self.rows[:self.n][keep]
            self.partitions[:kept] = self.partitions[:self.n][keep]
            self.offsets[:kept] = self.offsets[:self.n][keep]
            self.n = kept
        return dropped


@dataclass(frozen=True)
class Rejection:
    """A record bound for the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    message: str
    version: str = UNKNOWN
    predictor: str = UNKNOWN


@dataclass
class BatchOutcome:
    """What processing one batch produced: rejections to dead-letter, then offsets to mark processed."""

    rejections: list[Rejection] = field(default_factory=list)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0
    windows: int = 0


class WindowProcessor:
    """Decode, validate, window and score records; track which offsets are safe to commit.

    Args:
        config: the detector config (model, window size, features, predictors).
        detectors: fitted detector per ``(version, predictor)``; each has ``score(window) -> DriftResult``.
        metrics: where windows, consumed and rejected records are exported.
        decode_batch: payloads to a validated feature matrix (default :func:`inference_log.decode_batch`).
    """

    def __init__(self, config: DriftConfig, detectors: Mapping[tuple[str, str], Any], metrics: DriftMetrics,
                 decode_batch: Callable[..., Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.model = config.model
        self.feature_names = [f.name for f in config.features]
        self.n_features = len(config.features)
        self.categories = [f.categories if f.type == "categorical" else None for f in config.features]
        self.detectors = dict(detectors)
        self.metrics = metrics
        self._decode_batch = decode_batch or inference_log.decode_batch
        self._clock = clock
        self.windows = {key: Window(config.window, self.n_features) for key in self.detectors}
        self._partition_ids: dict[TopicPartition, int] = {}
        self._assigned: set[TopicPartition] = set()
        self.next_offsets: dict[TopicPartition, int] = {}
        """Per assigned partition, the offset after the last processed record."""
        self.windows_evaluated = 0
        self.verdicts: dict[tuple[str, str], WindowVerdict] = {}
        """The last window's verdict per ``(version, predictor)``: scored here or restored at start."""
        self._unsaved: dict[tuple[str, str], WindowVerdict] = {}
        for version, predictor in self.detectors:
            metrics.declare_predictor(version, predictor, self.feature_names)

    # assignment ----------------------------------------------------------------------------------

    def _pid(self, tp: TopicPartition) -> int:
        pid = self._partition_ids.get(tp)
        if pid is None:
            pid = self._partition_ids[tp] = len(self._partition_ids)
        return pid

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._assigned.add(tp)
            self._pid(tp)

    def revoke(self, tps: Iterable[TopicPartition]) -> int:
        """Forget ``tps``: their unfinished rows are dropped (the next owner reads them again)."""
        tps = set(tps)
        pids = [self._partition_ids[tp] for tp in tps if tp in self._partition_ids]
        dropped = sum(window.drop(pids) for window in self.windows.values()) if pids else 0
        for tp in tps:
            self._assigned.discard(tp)
            self.next_offsets.pop(tp, None)
        return dropped

    def reset(self) -> None:
        """Forget every partition and unfinished window (after the consumer was re-created)."""
        self.revoke(list(self._assigned) + list(self.next_offsets))
        for window in self.windows.values():
            window.n = 0

    @property
    def assigned(self) -> frozenset[TopicPartition]:
        return frozenset(self._assigned)

    # processing ----------------------------------------------------------------------------------

    def process(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> BatchOutcome:
        """Process one ``getmany`` batch. Offsets are not marked processed until :meth:`advance`.

        The whole batch is decoded and validated by one :func:`inference_log.decode_batch` call; rows
        are then appended, per ``(version, predictor)`` and in arrival order, to their window, and every
        window that fills up is scored and exported at once.
        """
        outcome = BatchOutcome()
        messages: list[Any] = []
        tps: list[TopicPartition] = []
        pids: list[int] = []
        counts: list[int] = []
        for tp, records in batch.items():
            if not records or tp not in self._assigned:  # fetched before a revoke: the next owner reads it
                continue
            messages.extend(records)
            tps.append(tp)
            pids.append(self._pid(tp))
            counts.append(len(records))
            outcome.next_offsets[tp] = records[-1].offset + 1
        if not messages:
            return outcome
        outcome.records = len(messages)
        partition_of = np.repeat(np.asarray(pids, dtype=np.int32), counts)
        tp_index = np.repeat(np.arange(len(tps)), counts)
        decoded = self._decode_batch(list(map(_VALUE, messages)), self.n_features, self.categories)

        for position, reason in decoded.errors:
            self.metrics.consumed(UNKNOWN, UNKNOWN, 1)
            outcome.rejections.append(self._rejection(tps[tp_index[position]], messages[position], reason,
                                                      _REASON_TEXT.get(reason, reason)))
        if not decoded.keys:
            return outcome
        offsets = np.fromiter(map(_OFFSET, messages), dtype=np.int64, count=len(messages))
        row_partitions = partition_of[decoded.positions]
        row_offsets = offsets[decoded.positions]
        for (model, version, predictor), rows in decoded.groups().items():
            window = self.windows.get((version, predictor)) if model == self.model else None
            if window is None:
                self.metrics.consumed(UNKNOWN, UNKNOWN, len(rows))
                reason = "wrong_model" if model != self.model else "unknown_predictor"
                text = (f"no detector for model {model!r} version {version!r} predictor {predictor!r} "
                        f"(this service watches model {self.model!r})")
                for row in rows:
                    position = int(decoded.positions[row])
                    outcome.rejections.append(self._rejection(tps[tp_index[position]], messages[position],
                                                              reason, text))
                continue
            self.metrics.consumed(version, predictor, len(rows))
            # Rows of one group in one run (the common batch: one predictor, nothing rejected) are
            # copied from slices; fancy indexing would copy every chunk once more.
            first = int(rows[0]) if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows) else None
            start = 0
            while start < len(rows):
                take = min(window.size - window.n, len(rows) - start)
                chunk = rows[start:start + take] if first is None else slice(first + start, first + start + take)
                window.rows[window.n:window.n + take] = decoded.rows[chunk]
                window.partitions[window.n:window.n + take] = row_partitions[chunk]
                window.offsets[window.n:window.n + take] = row_offsets[chunk]
                window.n += take
                start += take
                if window.n == window.size:
                    self._evaluate((version, predictor), window)
                    outcome.windows += 1
        return outcome

    def _rejection(self, tp: TopicPartition, message: Any, reason: str, text: str,
                   version: str = UNKNOWN, predictor: str = UNKNOWN) -> Rejection:
        return Rejection(tp.topic, tp.partition, message.offset, message.key, message.value, reason, text,
                         version, predictor)

    def _evaluate(self, key: tuple[str, str], window: Window) -> None:
        version, predictor = key
        started = time.perf_counter()
        try:
            result = self.detectors[key].score(window.rows)
        except Exception:
            log.exception("detector of version %s predictor %s failed on a window of %d rows; "
                          "the window is skipped", version, predictor, window.n)
            self.metrics.rejected(version, predictor, "detector_error", window.n)
            window.n = 0
            return
        seconds = time.perf_counter() - started
        verdict = WindowVerdict(
            model=self.model, version=version, predictor=predictor, drift=bool(result.drift),
            p_value=float(result.p_value), statistic=float(result.statistic), threshold=float(result.threshold),
            feature_p_values=_per_feature(result.feature_p_values, self.feature_names), timestamp=self._clock())
        self.metrics.window(
            version, predictor, drift=verdict.drift, p_value=verdict.p_value, statistic=verdict.statistic,
            threshold=verdict.threshold, feature_p_values=verdict.feature_p_values, seconds=seconds,
            timestamp=verdict.timestamp)
        self.verdicts[key] = self._unsaved[key] = verdict
        window.n = 0
        self.windows_evaluated += 1
        if result.drift:
            log.info("drift detected: version %s predictor %s p=%.3g", version, predictor, result.p_value)

    # verdicts ------------------------------------------------------------------------------------

    def unsaved(self) -> list[WindowVerdict]:
        """Verdicts scored since they were last saved; the consumer saves them before committing."""
        return list(self._unsaved.values())

    def saved(self, verdicts: Iterable[WindowVerdict]) -> None:
        """``verdicts`` are stored; a newer verdict of the same predictor stays unsaved."""
        for verdict in verdicts:
            if self._unsaved.get(verdict.key) is verdict:
                del self._unsaved[verdict.key]

    def restore(self, verdicts: Iterable[WindowVerdict]) -> list[WindowVerdict]:
        """Show the verdicts a previous instance kept, for predictors this config watches and that have
        not scored a window here yet (a newer verdict wins); return the ones restored."""
        restored = []
        for verdict in verdicts:
            if verdict.model != self.model or verdict.key not in self.detectors or verdict.key in self.verdicts:
                continue
            self.metrics.last_window(
                verdict.version, verdict.predictor, drift=verdict.drift, p_value=verdict.p_value,
                statistic=verdict.statistic, threshold=verdict.threshold,
                feature_p_values={f: v for f, v in verdict.feature_p_values.items() if f in self.feature_names},
                timestamp=verdict.timestamp)
            self.verdicts[verdict.key] = verdict
            restored.append(verdict)
        return restored

    def advance(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """Mark a batch's records processed (after its dead-letter sends were acknowledged)."""
        for tp, offset in next_offsets.items():
            if tp in self._assigned and offset > self.next_offsets.get(tp, -1):
                self.next_offsets[tp] = offset

    def committable(self) -> dict[TopicPartition, int]:
        """Per assigned partition, the offset to commit: nothing below it is unprocessed."""
        lowest: dict[int, int] = {}
        for window in self.windows.values():
            for pid, offset in window.lowest_offsets().items():
                if offset < lowest.get(pid, offset + 1):
                    lowest[pid] = offset
        result = {}
        for tp, offset in self.next_offsets.items():
            if tp in self._assigned:
                result[tp] = min(offset, lowest.get(self._partition_ids[tp], offset))
        return result

    def pending_rows(self) -> int:
        return sum(window.n for window in self.windows.values())


def _per_feature(values: Any, names: Sequence[str]) -> dict[str, float]:
    """Feature p-values as ``{name: value}``, whether the detector gives a mapping or a sequence."""
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return {str(k): float(v) for k, v in values.items()}
    flat = np.asarray(values, dtype=np.float64).ravel()
    if len(flat) != len(names):
        return {}
    return dict(zip(names, (float(v) for v in flat), strict=True))
