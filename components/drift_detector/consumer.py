"""Kafka in, windows out: the consuming half of the drift detector service.

Two layers:

* :class:`WindowProcessor` is synchronous and knows nothing about Kafka's network: it decodes and
  validates a batch of records, appends valid rows to the window of their ``(version, predictor)``,
  scores every window that fills up, exports its metrics, and keeps the offset bookkeeping that makes
  delivery at-least-once: per partition, the committable offset is the lowest offset still waiting in
  an unfinished window, or else the offset after the last processed record.
* :class:`DriftConsumer` drives it with aiokafka: ``getmany`` batches, dead-letter sends (awaited
  before their offsets count as processed), manual commits, the rebalance listener, a broker probe
  for readiness, and reconnection with exponential backoff.

A record is *processed* once it was either scored in a window whose metrics are exported, or
acknowledged by the dead-letter topic. Only processed offsets are ever committed, so a crash, a
broker outage or a rebalance can repeat records but never skip one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import inference_log
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from .metrics import UNKNOWN, DriftMetrics
from .settings import DriftConfig, Settings

log = logging.getLogger("drift_detector.consumer")

DLQ_REASON_HEADER = "reason"

_REASON_TEXT = {
    "not_json": "the payload is not JSON",
    "schema": "the payload is not an inference-log record (fields or field types)",
    "unsupported_version": "the record's schema_version is not supported",
    "feature_count": "the record has the wrong number of features",
    "feature_type": "a feature has the wrong type (numeric features must be numbers, categorical ones scalars)",
}


# --- windows and offsets ----------------------------------------------------------------------------


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
        decoded = self._decode_batch([m.value for m in messages], self.n_features, self.categories)

        for position, reason in decoded.errors:
            self.metrics.consumed(UNKNOWN, UNKNOWN, 1)
            outcome.rejections.append(self._rejection(tps[tp_index[position]], messages[position], reason,
                                                      _REASON_TEXT.get(reason, reason)))
        if not decoded.keys:
            return outcome
        offsets = np.fromiter((m.offset for m in messages), dtype=np.int64, count=len(messages))
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
            start = 0
            while start < len(rows):
                take = min(window.size - window.n, len(rows) - start)
                chunk = rows[start:start + take]
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
        self.metrics.window(
            version, predictor, drift=bool(result.drift), p_value=float(result.p_value),
            statistic=float(result.statistic), threshold=float(result.threshold),
            feature_p_values=_per_feature(result.feature_p_values, self.feature_names),
            seconds=seconds, timestamp=self._clock())
        window.n = 0
        self.windows_evaluated += 1
        if result.drift:
            log.info("drift detected: version %s predictor %s p=%.3g", version, predictor, result.p_value)

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


# --- Kafka ------------------------------------------------------------------------------------------


class Backoff:
    """Exponential backoff with full jitter between ``initial`` and ``maximum`` seconds."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: DriftConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owner._on_assigned(set(assigned))


class DriftConsumer:
    """Consume the inference log with at-least-once delivery; see the module docstring."""

    def __init__(self, settings: Settings, processor: WindowProcessor, metrics: DriftMetrics) -> None:
        self.settings = settings
        self.processor = processor
        self.metrics = metrics
        self.joined = False
        self.broker_ok = False
        self.dead_letter_ok = True
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._backoff = Backoff(settings.backoff_initial_seconds, settings.backoff_max_seconds)
        self._listener = _Rebalance(self)
        self._deadline: float | None = None

    # state ---------------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self.broker_ok:
            return False, "broker unreachable"
        if not self.joined:
            return False, "consumer has not joined its group"
        if not self.dead_letter_ok:
            return False, "dead-letter topic does not accept records"
        return True, "ready"

    def stop(self) -> None:
        """Ask :meth:`run` to stop after the current batch, commit and close within the shutdown budget."""
        if not self._stopping.is_set():
            # Leave a second of the budget for the process to exit.
            self._deadline = time.monotonic() + max(1.0, self.settings.shutdown_timeout_seconds - 1.0)
        self._stopping.set()

    def _time_left(self, wanted: float) -> float:
        """``wanted`` seconds, or less once stopping: what is left of the shutdown budget (at least 0.1)."""
        if self._deadline is None:
            return wanted
        return max(0.1, min(wanted, self._deadline - time.monotonic()))

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # lifecycle -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :meth:`stop`; reconnect with backoff whenever the broker cannot be reached."""
        while not self.stopping:
            try:
                await self._start_clients()
            except (KafkaError, OSError) as exc:
                await self._close_clients()
                delay = self._backoff.next()
                log.warning("cannot connect to Kafka at %s (%s); retrying in %.1fs",
                            self.settings.kafka_bootstrap_servers, exc, delay)
                await self._sleep(delay)
                continue
            self._backoff.reset()
            probe = asyncio.create_task(self._probe_broker(), name="broker-probe")
            try:
                restart = await self._consume()
            finally:
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
                if self.stopping:
                    await self._commit(force=True)
                await self._close_clients()
            if restart and not self.stopping:
                # A fresh consumer starts from the committed offsets: unfinished windows are read again.
                self.processor.reset()
                self._committed.clear()
                await self._sleep(self._backoff.next())

    async def _start_clients(self) -> None:
        s = self.settings
        common = {"bootstrap_servers": s.kafka_bootstrap_servers, "client_id": s.client_id,
                  "retry_backoff_ms": int(s.backoff_initial_seconds * 1000),
                  "request_timeout_ms": int(max(s.broker_timeout_seconds * 2, 10) * 1000)}
        self._producer = AIOKafkaProducer(acks="all", linger_ms=5, **common)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            group_id=s.group_id, enable_auto_commit=False, auto_offset_reset=s.auto_offset_reset,
            max_poll_records=s.batch_max_records, session_timeout_ms=int(s.session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_seconds * 1000),
            **common)
        self._consumer.subscribe([s.topic], listener=self._listener)
        await self._consumer.start()
        self.broker_ok = True
        log.info("connected to Kafka at %s; consuming %s as group %s", s.kafka_bootstrap_servers, s.topic,
                 s.group_id)

    async def _close_clients(self) -> None:
        self.joined = False
        self.broker_ok = False
        for client in (self._consumer, self._producer):
            if client is None:
                continue
            try:
                await asyncio.wait_for(client.stop(), self._time_left(self.settings.broker_timeout_seconds))
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("closing a Kafka client failed (%s)", exc or type(exc).__name__)
            except asyncio.CancelledError:
                # aiokafka's consumer.stop() lets the cancellation of its own fetch task escape when the
                # broker is away; only a cancellation aimed at this task may propagate.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                log.warning("closing a Kafka client was interrupted by its own fetch task; continuing")
        self._consumer = self._producer = None

    async def _probe_broker(self) -> None:
        """Keep :attr:`broker_ok` current, so readiness goes false while the broker is away."""
        assert self._consumer is not None
        while True:
            try:
                await asyncio.wait_for(self._consumer.topics(), self.settings.broker_timeout_seconds)
            except (TimeoutError, KafkaError, OSError) as exc:
                if self.broker_ok:
                    log.warning("Kafka broker unreachable (%s); not ready until it answers", exc or type(exc))
                self.broker_ok = False
            else:
                if not self.broker_ok:
                    log.info("Kafka broker reachable again")
                self.broker_ok = True
            await asyncio.sleep(self.settings.broker_check_interval_seconds)

    # consuming -----------------------------------------------------------------------------------

    async def _consume(self) -> bool:
        """The main loop; returns True when the clients must be re-created."""
        assert self._consumer is not None
        s = self.settings
        failures = 0
        while not self.stopping:
            try:
                batch = await self._consumer.getmany(timeout_ms=s.poll_timeout_ms,
                                                     max_records=s.batch_max_records)
            except KafkaError as exc:
                failures += 1
                self.broker_ok = False
                delay = self._backoff.next()
                log.warning("fetching from Kafka failed (%s); retrying in %.1fs", exc, delay)
                if failures >= 5:
                    log.warning("fetching failed %d times in a row; reconnecting", failures)
                    return True
                await self._sleep(delay)
                continue
            failures = 0
            if batch:
                outcome = self.processor.process(batch)
                if outcome.rejections and not await self._dead_letter(outcome.rejections):
                    continue  # stopping before the dead-letter topic took them: leave them uncommitted
                self.processor.advance(outcome.next_offsets)
                self._backoff.reset()
            self._update_lag()
            await self._commit()
        return False

    async def _dead_letter(self, rejections: list[Rejection]) -> bool:
        """Send ``rejections`` to the dead-letter topic and count them; retry until acknowledged.

        Returns False only if the service is stopping before every record was acknowledged.
        """
        pending = rejections
        while pending:
            assert self._producer is not None
            futures = []
            for rejection in pending:
                headers = [
                    (DLQ_REASON_HEADER, rejection.reason.encode()),
                    ("error", rejection.message.encode("utf-8", "replace")[:1000]),
                    ("source-topic", rejection.topic.encode()),
                    ("source-partition", str(rejection.partition).encode()),
                    ("source-offset", str(rejection.offset).encode()),
                    ("model", self.processor.model.encode()),
                ]
                value = rejection.value
                if value is None and rejection.key is None:  # Kafka needs a key or a value
                    value = b""
                    headers.append(("null-value", b"true"))
                try:
                    futures.append(await self._producer.send(
                        self.settings.dead_letter_topic, value=value, key=rejection.key, headers=headers))
                except KafkaError as exc:
                    futures.append(exc)
            failed = []
            for rejection, future in zip(pending, futures, strict=True):
                error = future
                if not isinstance(future, BaseException):
                    try:
                        await future
                        error = None
                    except KafkaError as exc:
                        error = exc
                if error is None:
                    self.metrics.rejected(rejection.version, rejection.predictor, rejection.reason)
                    log.debug("dead-lettered %s[%d]@%d: %s", rejection.topic, rejection.partition,
                              rejection.offset, rejection.reason)
                else:
                    failed.append(rejection)
            self.dead_letter_ok = not failed
            if failed:
                delay = self._backoff.next()
                log.warning("%d records could not be sent to the dead-letter topic %s; retrying in %.1fs",
                            len(failed), self.settings.dead_letter_topic, delay)
                if self.stopping:
                    return False
                await self._sleep(delay)
                if self.stopping:
                    return False
            pending = failed
        return True

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = self.processor.next_offsets.get(tp)
            if highwater is not None and position is not None:
                self.metrics.lag(tp.topic, tp.partition, highwater - position)

    async def _commit(self, force: bool = False, only: set[TopicPartition] | None = None) -> None:
        """Commit every processed offset that moved, at most once per commit interval unless ``force``."""
        consumer = self._consumer
        if consumer is None:
            return
        if not force and time.monotonic() - self._last_commit < self.settings.commit_interval_seconds:
            return
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in self.processor.committable().items()
                   if tp in assigned and offset > self._committed.get(tp, -1) and (only is None or tp in only)}
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), self._time_left(self.settings.broker_timeout_seconds * 2))
        except (TimeoutError, KafkaError) as exc:
            log.warning("committing offsets failed (%s); they will be committed later", exc or type(exc))
            return
        self._last_commit = time.monotonic()
        for tp, offset in offsets.items():
            self._committed[tp] = max(offset, self._committed.get(tp, -1))
        log.debug("committed %s", {f"{tp.topic}[{tp.partition}]": o for tp, o in offsets.items()})

    # rebalance -----------------------------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.joined = False
        if revoked:
            await self._commit(force=True, only=revoked)
        dropped = self.processor.revoke(revoked)
        for tp in revoked:
            self._committed.pop(tp, None)
            self.metrics.forget_partition(tp.topic, tp.partition)
        if revoked:
            log.info("partitions revoked: %s (%d unfinished rows dropped, to be read again)",
                     sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked), dropped)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.processor.assign(assigned)
        self.joined = True
        log.info("joined group %s with partitions %s", self.settings.group_id,
                 sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
