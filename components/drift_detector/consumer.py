"""Kafka in, windows out: the aiokafka half of the drift detector service.

:class:`DriftConsumer` drives a :class:`~drift_detector.windows.WindowProcessor` (the windows and the
offset bookkeeping, no I/O) with aiokafka: ``getmany`` batches, dead-letter sends (awaited before their
offsets count as processed), manual commits of what the processor calls committable, the rebalance
listener, a broker probe for readiness, and reconnection with exponential backoff. It also keeps the
window verdicts in the state topic (:mod:`drift_detector.state`): read once before consuming, written
before every commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from service_kit.kafka import start_client

from .metrics import DriftMetrics
from .settings import Settings
from .state import newest
from .windows import Rejection, WindowProcessor

log = logging.getLogger("drift_detector.consumer")

DLQ_REASON_HEADER = "reason"


class _NoStateTopic(Exception):
    """The state topic is not in the cluster's metadata."""


class _StateUnreadable(Exception):
    """The state topic could not be read to its end (broker away, timeout)."""


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


#: Event-loop turns that aiokafka's fetch task needs, once ``getmany`` drained a partition, to send the
#: next fetch request: its consume future wakes the routine, which starts a request task, which writes
#: the request (three turns with aiokafka 0.14, one more for margin). aiokafka fetches a partition only
#: when its buffer is empty, so without these turns the request left after the batch was processed and
#: the service waited on every round trip (the bench's service was busy 72 % of its wall time, 94 %
#: with them); with them the broker prepares the next batch while this one is scored.
_FETCH_TURNS = 4


async def _let_fetcher_run() -> None:
    """Give aiokafka's background fetch task the turns it needs to send its next fetch request."""
    for _ in range(_FETCH_TURNS):
        await asyncio.sleep(0)


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
        self.state_ok = True
        self._restored = not settings.state_topic
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._commit_waiting = False  # offsets moved since the last commit attempt
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
        if not self.state_ok:
            return False, "state topic does not accept records"
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
                # Before the group consumer exists, so nothing is scored (and /readyz is not 200) until
                # the kept verdicts are shown.
                if not self._restored:
                    await self._restore_state()
                await self._start_clients()
            except (KafkaError, OSError, _StateUnreadable) as exc:
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
                  "request_timeout_ms": int(max(s.broker_timeout_seconds * 2, 10) * 1000),
                  **s.kafka_client_options()}
        self._producer = AIOKafkaProducer(acks="all", linger_ms=5, **common)
        await start_client(self._producer)
        self._consumer = AIOKafkaConsumer(
            group_id=s.group_id, enable_auto_commit=False, auto_offset_reset=s.auto_offset_reset,
            max_poll_records=s.batch_max_records, session_timeout_ms=int(s.session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_seconds * 1000),
            **common)
        self._consumer.subscribe([s.topic], listener=self._listener)
        await start_client(self._consumer)
        self.broker_ok = True
        log.info("connected to Kafka at %s (%s); consuming %s as group %s", s.kafka_bootstrap_servers,
                 s.kafka_identity(), s.topic, s.group_id)

    async def _close_clients(self) -> None:
        self.joined = False
        self.broker_ok = False
        for client in (self._consumer, self._producer):
            if client is not None:
                await self._stop_client(client)
        self._consumer = self._producer = None

    async def _stop_client(self, client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
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

    # window verdicts ------------------------------------------------------------------------------

    async def _restore_state(self) -> None:
        """Read the state topic to its end and show the newest verdict of every watched predictor.

        Raises :class:`_StateUnreadable` when the topic could not be read (:meth:`run` tries again with
        backoff). A missing topic is logged and not retried: consuming matters more than kept verdicts.
        """
        s = self.settings
        reader = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers, client_id=f"{s.client_id}-state",
                                  group_id=None, enable_auto_commit=False,
                                  request_timeout_ms=int(max(s.broker_timeout_seconds * 2, 10) * 1000),
                                  **s.kafka_client_options())
        records: list[tuple[bytes | None, bytes | None]] = []
        try:
            await asyncio.wait_for(self._read_state(reader, records), self._time_left(s.state_restore_timeout_seconds))
        except _NoStateTopic:
            log.warning("the state topic %s does not exist: no verdict restored, and none kept until it does",
                        s.state_topic)
            self._restored = True
            return
        except (TimeoutError, KafkaError, OSError) as exc:
            raise _StateUnreadable(f"reading the state topic {s.state_topic}: {exc or type(exc).__name__}") from exc
        finally:
            await self._stop_client(reader)
        self._restored = True
        restored = self.processor.restore(newest(records, self.processor.model).values())
        log.info("restored %d window verdicts from %s (%d records): %s", len(restored), s.state_topic, len(records),
                 ", ".join(f"{v.predictor} v{v.version} drift={int(v.drift)}" for v in restored) or "none")

    async def _read_state(self, reader: AIOKafkaConsumer, records: list) -> None:
        topic = self.settings.state_topic
        await start_client(reader)
        if topic not in await reader.topics():
            raise _NoStateTopic
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        reader.assign(partitions)
        ends = await reader.end_offsets(partitions)
        await reader.seek_to_beginning(*partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batch = await reader.getmany(*pending, timeout_ms=500)
            for messages in batch.values():
                records.extend((m.key, m.value) for m in messages)
            pending = {tp for tp in pending if await reader.position(tp) < ends[tp]}

    async def _save_state(self) -> bool:
        """Write the verdicts scored since the last save; False (nothing may be committed) if it failed."""
        verdicts = self.processor.unsaved()
        if not verdicts or not self.settings.state_topic or self._producer is None:
            return True
        try:
            futures = [await self._producer.send(self.settings.state_topic, value=v.encode(), key=v.record_key())
                       for v in verdicts]
            await asyncio.wait_for(asyncio.gather(*futures), self._time_left(self.settings.broker_timeout_seconds * 2))
        except (TimeoutError, KafkaError) as exc:
            if self.state_ok:
                log.warning("writing window verdicts to the state topic %s failed (%s); their offsets stay "
                            "uncommitted until it works", self.settings.state_topic, exc or type(exc).__name__)
            self.state_ok = False
            return False
        self.processor.saved(verdicts)
        self.state_ok = True
        return True

    # consuming -----------------------------------------------------------------------------------

    async def _consume(self) -> bool:
        """The main loop; returns True when the clients must be re-created."""
        assert self._consumer is not None
        s = self.settings
        failures = 0
        while not self.stopping:
            try:
                batch = await self._consumer.getmany(timeout_ms=self._poll_timeout_ms(),
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
                await _let_fetcher_run()
                outcome = self.processor.process(batch)
                if outcome.rejections and not await self._dead_letter(outcome.rejections):
                    continue  # stopping before the dead-letter topic took them: leave them uncommitted
                self.processor.advance(outcome.next_offsets)
                self._commit_waiting = True
                self._backoff.reset()
            self._update_lag()
            await self._commit()
        return False

    def _poll_timeout_ms(self) -> int:
        """How long ``getmany`` may wait: the poll timeout, or less when processed offsets wait for the
        commit interval to pass, so that they are committed when it has, not when the next batch (or
        the poll timeout, once the topic is drained) ends the wait."""
        timeout = self.settings.poll_timeout_ms
        if self._commit_waiting:
            due = self.settings.commit_interval_seconds - (time.monotonic() - self._last_commit)
            timeout = min(timeout, max(0, math.ceil(due * 1000)))
        return timeout

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
        self._commit_waiting = False  # tried now; a failed commit is tried again after the next poll
        # A window's verdict is kept before the offsets of its records are: a restart never loses it.
        if not await self._save_state():
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
