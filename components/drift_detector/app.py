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
import hashlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .consumer import DriftConsumer, WindowProcessor
from .metrics import DriftMetrics
from .settings import ConfigError, DriftConfig, PredictorConfig, Settings

log = logging.getLogger("drift_detector")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_ARTIFACT = 3


class ArtifactError(RuntimeError):
    """A detector artifact is missing, unreadable, or not the one the config names (sha256)."""


# --- detector artifacts -------------------------------------------------------------------------


def fetch_artifact(uri: str, directory: Path, sha256: str, s3_endpoint_url: str | None = None) -> Path:
    """A local path holding the artifact at ``uri``: ``s3://bucket/key`` (downloaded with boto3 into
    ``directory``), ``file:///path`` or a plain path (used where it is)."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if not parts.netloc or not parts.path.strip("/"):
            raise ArtifactError(f"detector URI {uri!r} names no bucket and key")
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        directory.mkdir(parents=True, exist_ok=True)
        suffix = "".join(Path(parts.path).suffixes)[-16:]
        target = directory / f"{sha256}{suffix}"
        handle, partial = tempfile.mkstemp(dir=directory, prefix=".download-")
        os.close(handle)
        try:
            client = boto3.client("s3", endpoint_url=s3_endpoint_url)
            client.download_file(parts.netloc, unquote(parts.path.lstrip("/")), partial)
            os.replace(partial, target)
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactError(f"cannot download detector {uri} from "
                                f"{s3_endpoint_url or 'the default S3 endpoint'}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(partial)
        return target
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
    elif parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        path = Path(uri)
    else:
        raise ArtifactError(f"detector URI {uri!r}: unsupported scheme {parts.scheme!r} "
                            "(use s3://, file:// or a path)")
    if not path.is_file():
        raise ArtifactError(f"detector artifact {uri} does not exist")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_detectors(config: DriftConfig, settings: Settings) -> dict[tuple[str, str], Any]:
    """Every predictor's fitted detector, verified against the config's sha256; never refits."""
    from . import persistence

    detectors: dict[tuple[str, str], Any] = {}
    for predictor in config.predictors:
        where = f"predictor {predictor.name!r} (version {predictor.version})"
        path = fetch_artifact(predictor.detector.uri, settings.artifact_dir, predictor.detector.sha256,
                              settings.s3_endpoint_url)
        try:
            detector = persistence.load(path, predictor.detector.sha256)
        except persistence.IntegrityError as exc:
            raise ArtifactError(
                f"refusing to start: the detector artifact of {where} at {predictor.detector.uri} is not "
                f"the configured one: sha256 {_safe_sha256(path)}, but the config expects "
                f"{predictor.detector.sha256}. It was changed after fitting, or the config names the "
                f"wrong artifact: refit and persist it, or fix detector.sha256 in the release spec "
                f"({exc})") from exc
        except (persistence.ArtifactError, OSError, ValueError) as exc:
            raise ArtifactError(f"refusing to start: the detector artifact of {where} at "
                                f"{predictor.detector.uri} cannot be loaded: {exc}") from exc
        _check_compatible(detector, config, predictor)
        detectors[(predictor.version, predictor.name)] = detector
        log.info("loaded detector of %s from %s (sha256 %s)", where, predictor.detector.uri,
                 predictor.detector.sha256)
    return detectors


def _safe_sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError:
        return "<unreadable>"


def _check_compatible(detector: Any, config: DriftConfig, predictor: PredictorConfig) -> None:
    """The detector must have been fitted on the configured features, in the configured order."""
    features = getattr(detector, "features", None)
    if features is None:
        return
    fitted = [(getattr(f, "name", f), getattr(f, "kind", None), _categories(getattr(f, "categories", None)))
              for f in features]
    expected = [(f.name, f.type, _categories(f.categories)) for f in config.features]
    if [entry[0] for entry in fitted] != [entry[0] for entry in expected]:
        raise ArtifactError(
            f"refusing to start: the detector of predictor {predictor.name!r} (version {predictor.version}) "
            f"was fitted on features {[e[0] for e in fitted]}, but the config lists {[e[0] for e in expected]}")
    for (name, kind, categories), (_, want_kind, want_categories) in zip(fitted, expected, strict=True):
        if kind is not None and kind != want_kind:
            raise ArtifactError(f"refusing to start: feature {name!r} is {kind} in the detector of predictor "
                                f"{predictor.name!r} but {want_kind} in the config")
        if kind == "categorical" and categories is not None and categories != want_categories:
            raise ArtifactError(f"refusing to start: feature {name!r} has categories {categories} in the "
                                f"detector of predictor {predictor.name!r} but {want_categories} in the config "
                                "(category codes would not match)")
    method = getattr(detector, "method", None)
    if method is not None and method != config.method:
        raise ArtifactError(f"refusing to start: the detector of predictor {predictor.name!r} (version "
                            f"{predictor.version}) uses method {method!r}, but the config says {config.method!r}")
    for field_name in ("p_value", "correction", "window"):
        fitted_value = getattr(detector, field_name, None)
        if fitted_value is not None and fitted_value != getattr(config, field_name):
            log.warning("the detector of predictor %s was fitted with %s=%r but the config says %r; scoring "
                        "uses the detector's p_value and correction, windows have the config's size",
                        predictor.name, field_name, fitted_value, getattr(config, field_name))


def _categories(values: Sequence[Any] | None) -> list[str] | None:
    return None if values is None else [repr(v) for v in values]


# --- HTTP ---------------------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}
_TEXT = "text/plain; charset=utf-8"


class HealthServer:
    """A tiny HTTP/1.1 server for ``/healthz``, ``/readyz`` and ``/metrics``, one request per connection.

    Args:
        readiness: returns ``(ready, reason)``.
        metrics: returns ``(body, content_type)`` of the Prometheus exposition.
    """

    READ_TIMEOUT_SECONDS = 5.0

    def __init__(self, host: str, port: int, readiness: Callable[[], tuple[bool, str]],
                 metrics: Callable[[], tuple[bytes, str]]) -> None:
        self.host, self.port = host, port
        self._readiness, self._metrics = readiness, metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        log.info("HTTP server on %s:%d (/healthz, /readyz, /metrics)", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    def route(self, method: str, target: str) -> tuple[int, bytes, str]:
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", _TEXT
        if path == "/healthz":
            return 200, b"ok\n", _TEXT
        if path == "/readyz":
            ready, reason = self._readiness()
            return (200 if ready else 503), f"{reason}\n".encode(), _TEXT
        if path == "/metrics":
            body, content_type = self._metrics()
            return 200, body, content_type
        return 404, b"not found\n", _TEXT

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.READ_TIMEOUT_SECONDS)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            method = parts[0] if parts else "GET"
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                status, body, content_type = 400, b"bad request\n", _TEXT
            else:
                status, body, content_type = self.route(method, parts[1])
            header = (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {content_type}\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1")
            writer.write(header if method == "HEAD" else header + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:  # one bad request must not take the server down
            log.exception("error while answering an HTTP request")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# --- the service --------------------------------------------------------------------------------


class Service:
    """One running drift detector: HTTP server, detectors, consumer, and the shutdown sequence."""

    def __init__(self, settings: Settings, config: DriftConfig, metrics: DriftMetrics | None = None) -> None:
        self.settings = settings
        self.config = config
        self.metrics = metrics or DriftMetrics(config.model)
        self.detectors_loaded = False
        self.consumer: DriftConsumer | None = None
        self._stop = asyncio.Event()
        self.http = HealthServer(settings.http_host, settings.http_port, self.readiness, self.metrics.exposition)
        self.metrics.track_ready(lambda: self.readiness()[0])

    def readiness(self) -> tuple[bool, str]:
        if self._stop.is_set():
            return False, "shutting down"
        if not self.detectors_loaded or self.consumer is None:
            return False, "loading detectors"
        return self.consumer.readiness()

    def request_stop(self, signame: str = "stop") -> None:
        if not self._stop.is_set():
            log.info("%s received: stopping after the current batch", signame)
        self._stop.set()
        if self.consumer is not None:
            self.consumer.stop()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            await self.http.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.settings.http_host, self.settings.http_port, exc)
            return EXIT_ERROR
        try:
            return await self._serve()
        finally:
            await self.http.close()

    async def _serve(self) -> int:
        try:
            detectors = await asyncio.to_thread(load_detectors, self.config, self.settings)
        except ArtifactError as exc:
            log.error("%s", exc)
            return EXIT_ARTIFACT
        if self._stop.is_set():
            return EXIT_OK
        processor = WindowProcessor(self.config, detectors, self.metrics)
        self.consumer = DriftConsumer(self.settings, processor, self.metrics)
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
            return EXIT_OK
        except Exception:
            log.exception("the consumer failed")
            return EXIT_ERROR
        log.info("stopped: %d windows evaluated, processed up to offsets %s", processor.windows_evaluated,
                 {f"{tp.topic}[{tp.partition}]": o for tp, o in sorted(processor.committable().items())})
        return EXIT_OK


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the service until SIGTERM/SIGINT; return the process exit status."""
    if argv:
        print(f"drift_detector: unexpected arguments {list(argv)}; the service is configured by DRIFT_* "
              "variables (or run 'python -m drift_detector fit --help')", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging((environ or os.environ).get("DRIFT_LOG_LEVEL", "INFO"))
    try:
        settings = Settings.from_env(dict(environ) if environ is not None else None)
        config = settings.load_config()
    except ConfigError as exc:
        log.error("refusing to start: %s", exc)
        return EXIT_CONFIG
    logging.getLogger().setLevel(getattr(logging, settings.log_level.upper(), logging.INFO))
    log.info("drift detector for model %s in %s: method %s, window %d, %d predictors", config.model,
             config.environment, config.method, config.window, len(config.predictors))
    return asyncio.run(Service(settings, config).run())
