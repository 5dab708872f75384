"""The drift detector service: load the persisted detectors, serve health and metrics, consume.

Start-up order: settings and config file (exit 2 when invalid), HTTP server (``/healthz`` answers from
here on), detector artifacts downloaded and verified against their sha256 (exit 3 on a mismatch or a
missing artifact; detectors are never refitted here), then the Kafka consumer. ``/readyz`` is 200 only
once every detector is loaded, the consumer has joined its group and the broker answers.

This module is the only owner of SIGTERM and SIGINT: the first one stops consumption after the
current batch, commits the processed offsets (an unfinished window stays uncommitted and is read
again) and exits 0 within ``DRIFT_SHUTDOWN_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Mapping, Sequence

from service_kit.http import HealthServer, text_metrics

from . import ExitCode
from .artifacts import ArtifactError, load_detectors
from .consumer import DriftConsumer
from .metrics import DriftMetrics
from .settings import ConfigError, DriftConfig, Settings, load_settings
from .windows import WindowProcessor

log = logging.getLogger("drift_detector")


class Service:
    """One running drift detector: HTTP server, detectors, consumer, and the shutdown sequence."""

    def __init__(self, settings: Settings, config: DriftConfig, metrics: DriftMetrics | None = None) -> None:
        self.settings = settings
        self.config = config
        self.metrics = metrics or DriftMetrics(config.model)
        self.detectors_loaded = False
        self.consumer: DriftConsumer | None = None
        self._stop = asyncio.Event()
        self.http = HealthServer(settings.http_host, settings.http_port, self.readiness,
                                 text_metrics(self.metrics.registry))
        self.metrics.track_ready(lambda: self.readiness()[0])

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)`` for ``/readyz``."""
        if self._stop.is_set():
            return False, "shutting down"
        if not self.detectors_loaded or self.consumer is None:
            return False, "loading detectors"
        return self.consumer.readiness()

    def request_stop(self, signame: str = "stop") -> None:
        """Stop after the current batch (the signal handler)."""
        if not self._stop.is_set():
            log.info("%s received: stopping after the current batch", signame)
        self._stop.set()
        if self.consumer is not None:
            self.consumer.stop()

    async def run(self) -> ExitCode:
        """Serve until stopped; the exit code says how it ended."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            await self.http.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.settings.http_host, self.settings.http_port, exc)
            return ExitCode.FAILURE
        try:
            return await self._serve()
        finally:
            await self.http.close()

    async def _serve(self) -> ExitCode:
        try:
            detectors = await asyncio.to_thread(load_detectors, self.config, self.settings)
        except ArtifactError as exc:
            log.error("%s", exc)
            return ExitCode.ARTIFACT
        if self._stop.is_set():
            return ExitCode.OK
        processor = WindowProcessor(self.config, detectors, self.metrics)
        self.consumer = DriftConsumer(self.settings, processor, self.metrics)
        settle_heap()
        self.detectors_loaded = True
        task = asyncio.create_task(self.consumer.run(), name="consumer")
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        self.consumer.stop()
        stop.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.settings.shutdown_timeout_seconds)
        except TimeoutError:
            log.warning("the consumer did not stop within %.0fs; exiting without its last commit",
                        self.settings.shutdown_timeout_seconds)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 1.0)
            return ExitCode.OK
        except Exception:
            log.exception("the consumer failed")
            return ExitCode.FAILURE
        log.info("stopped: %d windows evaluated, processed up to offsets %s", processor.windows_evaluated,
                 {f"{tp.topic}[{tp.partition}]": o for tp, o in sorted(processor.committable().items())})
        return ExitCode.OK


#: Allocations of tracked objects between two young-generation collections (CPython's default: 700).
#: A batch allocates one record object and one feature list per record; at 700 a 10,000-record batch
#: triggered 15 collections, and their promotions the older ones.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once start-up is done: move what it allocated (modules, detectors, settings: about 100,000
    tracked objects) out of the collector's sight and collect the young generation less often.

    The objects of a batch are freed by reference counting; the cyclic collector found nothing to free
    in them but traversed the start-up heap in every older collection: about 0.5 µs a record of
    decoding went to it (in-process, 20 features; 0.1 µs with the heap frozen, nothing measurable with
    the higher threshold too). Garbage cycles are still collected, just in larger steps.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def configure_logging(level: str) -> None:
    """Log to stderr at ``level``; aiokafka's own log only at DEBUG (callable again once settings are read)."""
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))
    quiet = logging.getLogger().level > logging.DEBUG
    logging.getLogger("aiokafka").setLevel(logging.ERROR if quiet else logging.NOTSET)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ExitCode:
    """Run the service until SIGTERM/SIGINT; return the process exit code (``environ``: for tests)."""
    if argv:
        print(f"drift_detector: unexpected arguments {list(argv)}; the service is configured by DRIFT_* "
              "variables (or run 'python -m drift_detector fit --help')", file=sys.stderr)
        return ExitCode.CONFIG
    configure_logging("INFO")
    try:
        settings = load_settings(environ)
        config = settings.load_config()
    except ConfigError as exc:
        log.error("refusing to start: %s", exc)
        return ExitCode.CONFIG
    configure_logging(settings.log_level)
    log.info("drift detector for model %s in %s: method %s, window %d, %d predictors", config.model,
             config.environment, config.method, config.window, len(config.predictors))
    return asyncio.run(Service(settings, config).run())
