"""The background shipper: one per gunicorn worker, draining the buffer into the model's Kafka topic.

It runs its own asyncio loop in a daemon thread, so the request path never awaits Kafka. Records are
encoded with the shared inference-log schema (:mod:`inference_log`) and sent in batches straight to a
partition (round robin), acknowledged by the leader. When the broker is unreachable the shipper
stops draining, backs off (doubling up to ``reconnect_max_seconds``) and reconnects; meanwhile the
buffer fills and drops its oldest records, which the request path counts. A batch whose send fails is
counted as dropped (``send_failed``): logging is at most once, predictions never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from inference_log import encode_fields
from service_kit.kafka import KafkaAuthenticationError, start_client

from model_server.buffer import InferenceBuffer, LoggedRequest
from model_server.metrics import ServerMetrics
from model_server.settings import Settings

log = logging.getLogger(__name__)

INITIAL_BACKOFF_SECONDS = 0.2
STOP_FLUSH_SECONDS = 2.0
"""On worker exit, how long the shipper may spend sending what is still buffered."""


def encode_requests(settings: Settings, entries: list[LoggedRequest]) -> list[bytes]:
    """One inference-log record per row of every request, in order."""
    # The rows and predictions were built by this server (payload.py, server._as_list): plain Python
    # values of the contract's types, so the unvalidated encoder is safe; tests decode what it writes.
    model, version, predictor = settings.model_name, settings.model_version, settings.predictor
    payloads = []
    for entry in entries:
        many = len(entry.rows) > 1
        for number, (row, prediction) in enumerate(zip(entry.rows, entry.predictions, strict=True)):
            request_id = f"{entry.request_id}:{number}" if many else entry.request_id
            payloads.append(encode_fields(model, version, predictor, request_id, entry.timestamp, row, prediction))
    return payloads


class InferenceLogShipper:
    """Owns the producer thread of one worker. ``start`` once after fork; ``stop`` at worker exit."""

    def __init__(self, settings: Settings, buffer: InferenceBuffer, metrics: ServerMetrics,
                 encoder: Callable[[Settings, list[LoggedRequest]], list[bytes]] = encode_requests) -> None:
        self.settings = settings
        self.buffer = buffer
        self.metrics = metrics
        self.encoder = encoder
        self.connected = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Set when the loop starts: stop() wakes a sleeping shipper through it instead of the shipper
        # polling the flag (each wake-up costs the worker CPU and a GIL hand-off).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._partition_cursor = 0
        self._last_refusal = ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference-log-shipper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_FLUSH_SECONDS + 1.0) -> None:
        """Ask the thread to flush what it can and exit; wait at most ``timeout`` seconds."""
        self._stopping.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(wake.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # the thread must never take the worker down; predictions go on unlogged
            log.exception("inference-log shipper stopped unexpectedly; inferences are no longer logged")
            self._set_connected(False)

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stopping.is_set():  # stop() ran before the loop existed
            self._wake.set()
        backoff = INITIAL_BACKOFF_SECONDS
        while not self._stopping.is_set():
            producer = self._producer()
            try:
                await asyncio.wait_for(start_client(producer), self.settings.send_timeout_seconds * 2)
                self._set_connected(True)
                log.info("inference log: connected to %s (%s), topic %s", self.settings.kafka_bootstrap_servers,
                         self.settings.kafka_identity(), self.settings.kafka_topic)
                backoff = INITIAL_BACKOFF_SECONDS
                await self._drain(producer)
            except (TimeoutError, KafkaError, OSError) as exc:
                if self.connected:
                    log.warning("inference log: Kafka unavailable (%s); buffering, reconnecting", exc)
                elif isinstance(exc, KafkaAuthenticationError) and str(exc) != self._last_refusal:
                    # Said once per distinct refusal: a wrong password or a KafkaUser not there yet must show
                    # in the log although the shipper never connected.
                    log.warning("inference log: Kafka refused %s (%s); buffering, retrying",
                                self.settings.kafka_identity(), exc)
                self._last_refusal = str(exc) if isinstance(exc, KafkaAuthenticationError) else ""
                self._set_connected(False)
            finally:
                await self._close(producer)
            if not self._stopping.is_set():
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_seconds)

    def _producer(self) -> AIOKafkaProducer:
        timeout_ms = int(self.settings.send_timeout_seconds * 1000)
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, acks=1, linger_ms=0,
            request_timeout_ms=timeout_ms, retry_backoff_ms=100, max_batch_size=1_048_576,
            client_id=f"model-server-{self.settings.model_name}-{self.settings.predictor}",
            **self.settings.kafka_client_options())

    async def _drain(self, producer: AIOKafkaProducer) -> None:
        """Ship batches until stopped; a failed send raises to the reconnect loop."""
        partitions = sorted(await producer.partitions_for(self.settings.kafka_topic) or [])
        if not partitions:
            raise KafkaError(f"topic {self.settings.kafka_topic!r} has no partitions (does it exist, and may "
                             f"{self.settings.kafka_username or 'this client'} describe it?)")
        while True:
            buffered = len(self.buffer)
            self.metrics.buffered.set(buffered)
            if buffered < self.settings.batch_records:
                # Let a batch build up: a produce request costs about as much CPU as encoding a few
                # hundred records, so few large ones are cheaper than many small ones.
                await self._sleep(self.settings.flush_interval_seconds)
            entries = self.buffer.take(self.settings.batch_records)
            if not entries:
                if self._stopping.is_set():
                    return
                continue
            payloads = self.encoder(self.settings, entries)
            try:
                await asyncio.wait_for(self._send(producer, partitions, payloads), self.settings.send_timeout_seconds)
            except BaseException:
                self.metrics.dropped_send_failed.inc(len(payloads))
                raise
            self.metrics.logged.inc(len(payloads))

    async def _send(self, producer: AIOKafkaProducer, partitions: list[int], payloads: list[bytes]) -> None:
        partition = partitions[self._partition_cursor % len(partitions)]
        self._partition_cursor += 1
        pending = []
        batch = producer.create_batch()
        for payload in payloads:
            if batch.append(key=None, value=payload, timestamp=None) is None:
                batch.close()
                pending.append(await producer.send_batch(batch, self.settings.kafka_topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=None, value=payload, timestamp=None)
        batch.close()
        pending.append(await producer.send_batch(batch, self.settings.kafka_topic, partition=partition))
        await asyncio.gather(*pending)

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if :meth:`stop` is called meanwhile."""
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _close(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), STOP_FLUSH_SECONDS)
        except (TimeoutError, KafkaError, OSError):
            pass

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self.metrics.connected.set(1 if connected else 0)
