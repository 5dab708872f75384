"""``/healthz``, ``/readyz`` and ``/metrics``: answered the same way by every service, and served.

* ``GET /healthz``: 200 ``ok`` while the process serves (liveness and start-up probes);
* ``GET /readyz``: 200 with the reason when ready, else 503 with the reason (readiness probe);
* ``GET /metrics``: the Prometheus exposition (scraped by the rendered ServiceMonitor or PodMonitor).

:class:`Probes` answers them, whatever serves the port: :class:`HealthServer` (asyncio, one request per
connection: the drift detector's port, the model server's metrics process) or another framework's
route (the retrain trigger's Starlette app, which also takes webhooks). How ``/metrics`` is encoded is
the service's choice: :func:`text_metrics` always writes Prometheus' text format,
:func:`negotiated_metrics` answers what the scraper asks for (``Accept``, gzip, ``name[]``), as
prometheus-client's own WSGI app does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest

log = logging.getLogger("service_kit.http")

TEXT = "text/plain; charset=utf-8"
PATHS = ("/healthz", "/readyz", "/metrics")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


class Reply(NamedTuple):
    """An HTTP answer: status, body, content type and any further headers."""

    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Request:
    """What the answers depend on: method, path, query string and headers (names in lower case)."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, method: str, target: str, headers: Mapping[str, str] | None = None) -> Request:
        """A request from its method and request target (``/path?query``)."""
        path, _, query = target.partition("?")
        return cls(method, path, query, headers or {})


Readiness = Callable[[], tuple[bool, str]]
Metrics = Callable[[Request], Reply]


def text_metrics(registry: CollectorRegistry) -> Metrics:
    """``/metrics`` in Prometheus' text format, whatever the scraper accepts."""

    def answer(request: Request) -> Reply:
        return Reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    return answer


def negotiated_metrics(registry: CollectorRegistry) -> Metrics:
    """``/metrics`` in the format the scraper's ``Accept`` asks for (OpenMetrics or text), gzip-compressed
    when it accepts gzip, restricted to the ``name[]`` series when the query names some."""

    def answer(request: Request) -> Reply:
        encoder, content_type = choose_encoder(request.headers.get("accept"))
        names = parse_qs(request.query).get("name[]")
        body = encoder(registry.restricted_registry(names) if names else registry)
        if _accepts_gzip(request.headers.get("accept-encoding")):
            return Reply(200, gzip.compress(body), content_type, (("Content-Encoding", "gzip"),))
        return Reply(200, body, content_type)

    return answer


def _accepts_gzip(header: str | None) -> bool:
    """Whether ``Accept-Encoding`` lists gzip (without ``q=0``). Ours, not prometheus-client's
    ``gzip_accepted``: the model server image has prometheus-client 0.8 (seldon-core 1.17.1), which lacks it."""
    for item in (header or "").split(","):
        coding, *params = (part.strip().lower() for part in item.split(";"))
        if coding == "gzip":
            return not any(param.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for param in params)
    return False


class Probes:
    """The answers of ``/healthz``, ``/readyz`` and ``/metrics``.

    Args:
        readiness: returns ``(ready, reason)``; asked on each ``/readyz`` unless the caller already knows.
        metrics: answers ``/metrics`` (:func:`text_metrics` or :func:`negotiated_metrics`).
    """

    def __init__(self, readiness: Readiness, metrics: Metrics) -> None:
        self.readiness, self.metrics = readiness, metrics

    def reply(self, request: Request, ready: tuple[bool, str] | None = None) -> Reply:
        """The answer to ``request``: one of the three endpoints, 404 for another path, 405 for a method
        other than GET and HEAD. ``ready`` is the readiness when the caller checked it itself."""
        if request.method not in ("GET", "HEAD"):
            return Reply(405, b"method not allowed\n")
        if request.path == "/healthz":
            return Reply(200, b"ok\n")
        if request.path == "/readyz":
            ok, reason = ready if ready is not None else self.readiness()
            return Reply(200 if ok else 503, f"{reason}\n".encode())
        if request.path == "/metrics":
            return self.metrics(request)
        return Reply(404, b"not found\n")


class HealthServer:
    """A tiny HTTP/1.1 server for the three endpoints of :class:`Probes`, one request per connection.

    Args:
        readiness: returns ``(ready, reason)``.
        metrics: answers ``/metrics``.
    """

    READ_TIMEOUT_SECONDS = 5.0

    def __init__(self, host: str, port: int, readiness: Readiness, metrics: Metrics) -> None:
        self.host, self.port = host, port
        self.probes = Probes(readiness, metrics)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the address is taken."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        log.info("HTTP server on %s:%d (/healthz, /readyz, /metrics)", self.host, self.port)

    async def close(self) -> None:
        """Stop listening (connections in flight get a second to finish)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def serve_forever(self) -> None:
        """Listen and answer until cancelled."""
        await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.close()

    def route(self, method: str, target: str, headers: Mapping[str, str] | None = None) -> Reply:
        """The answer to ``method`` ``target`` (``/path?query``)."""
        return self.probes.reply(Request.parse(method, target, headers))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.READ_TIMEOUT_SECONDS)
            first, *lines = head.decode("latin-1").split("\r\n")
            parts = first.split()
            method = parts[0] if parts else "GET"
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                reply = Reply(400, b"bad request\n")
            else:
                headers = {}
                for line in lines:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                reply = self.route(method, parts[1], headers)
            extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers)
            header = (f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, '')}\r\n"
                      f"Content-Type: {reply.content_type}\r\n{extra}"
                      f"Content-Length: {len(reply.body)}\r\nConnection: close\r\n\r\n").encode("latin-1")
            writer.write(header if method == "HEAD" else header + reply.body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:  # one bad request must not take the server down
            log.exception("error while answering an HTTP request")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
