"""HTTP wiring of the retrain trigger (Starlette on uvicorn) and ``main``.

Routes:

* ``POST /v1/alerts/grafana`` and ``POST /v1/alerts/alertmanager``: a webhook notification. The body
  is read up to ``max_body_bytes`` (413 beyond), authenticated before it is parsed (401), then parsed
  (415 not JSON by content type, 400 not JSON, 422 not a webhook payload). Every 4xx is logged with
  the sender's address and the reason, and starts nothing. 200 returns one result per alert; 503 (with
  ``Retry-After``) when Prefect failed, so the sender retries and earlier alerts come back as duplicates.
* ``GET /healthz`` (the process serves), ``GET /readyz`` (the Prefect API answers), ``GET /metrics``:
  answered by :class:`service_kit.http.Probes`, as in every service.

Start-up: settings, token, serving certificate and policy file are read first (``ExitCode.CONFIG`` when
invalid), then uvicorn serves HTTPS with the certificate (TLS 1.2 or newer; a plain-HTTP request on the
port fails the handshake and gets no answer), or plain HTTP where the settings explicitly allow it
(:func:`retrain_trigger.settings.transport`).
:func:`serve` is the only owner of SIGTERM and SIGINT (uvicorn's own handlers are switched off): the
first one makes uvicorn stop accepting connections, let requests in flight finish (at most
``shutdown_timeout_seconds``) and run the shutdown that closes the Prefect client; the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterator

from prometheus_client import CollectorRegistry
from service_kit.http import PATHS as PROBE_PATHS
from service_kit.http import Probes, Reply, text_metrics
from service_kit.http import Request as ProbeRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import ExitCode, payloads
from .auth import Authenticator
from .metrics import TriggerMetrics
from .policy import Policy
from .prefect_api import PrefectAPI, PrefectUnavailable
from .service import RetrainTrigger
from .settings import ConfigError, Settings, Transport, load_settings, transport

log = logging.getLogger("retrain_trigger")

RETRY_AFTER_SECONDS = 30


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings, registry: CollectorRegistry | None = None,
               prefect: PrefectAPI | None = None) -> Starlette:
    """The ASGI app; reads the policy file now.

    Raises:
        ConfigError: the policy file is missing or invalid.
    """
    policy = Policy.from_file(settings.policy_file)
    authenticator = Authenticator(settings.secret, settings.hmac_signature_header,
                                  settings.hmac_timestamp_header, settings.hmac_max_age_seconds)
    metrics = TriggerMetrics(registry)
    auth = settings.prefect_auth_string.get_secret_value() if settings.prefect_auth_string else None
    prefect = prefect or PrefectAPI(settings.prefect_api_url, timeout=settings.prefect_timeout_seconds,
                                    auth_string=auth)
    trigger = RetrainTrigger(policy, prefect, metrics, settings.deployment_for, settings.dedupe_capacity)

    def refuse(source: str, request: Request, result: str, status: int, message: str) -> JSONResponse:
        client = request.client.host if request.client else "?"
        log.warning("refused %s webhook from %s: HTTP %d %s: %s", source, client, status, result, message)
        metrics.requests.labels(source, result).inc()
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def receive(request: Request) -> Response:
        source = request.path_params["source"]
        if source not in payloads.SOURCES:
            return JSONResponse({"error": f"unknown sender; use one of {', '.join(payloads.SOURCES)}"},
                                status_code=404)
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except _TooLarge:
            return refuse(source, request, "too_large", 413, f"body larger than {settings.max_body_bytes} bytes")
        if reason := authenticator.reject_reason(request.headers, body):
            return refuse(source, request, "unauthorized", 401, reason)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return refuse(source, request, "unsupported_media_type", 415,
                          f"content type {content_type or 'none'!r}, expected application/json")
        try:
            payload = payloads.parse(body)
        except payloads.PayloadError as exc:
            if exc.not_json:
                return refuse(source, request, "bad_request", 400, f"body is not JSON: {exc}")
            return refuse(source, request, "invalid", 422, f"not a webhook payload: {exc}")
        try:
            results = await trigger.handle(payload, source)
        except PrefectUnavailable as exc:
            log.error("Prefect API failed while handling a %s webhook: %s", source, exc)
            metrics.prefect_errors.inc()
            metrics.requests.labels(source, "unavailable").inc()
            return JSONResponse({"error": "the Prefect API is unavailable; retry later"}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        metrics.requests.labels(source, "accepted").inc()
        return JSONResponse({"results": [r.as_dict() for r in results]})

    probes = Probes(lambda: (True, "ready"), text_metrics(metrics.registry))

    async def probe(request: Request) -> Response:
        ready = None
        if request.url.path == "/readyz":  # asked here: the Prefect check is a network call
            ok = await prefect.healthy()
            metrics.ready.set(1 if ok else 0)
            ready = (ok, "ready" if ok else "the Prefect API does not answer")
        reply = probes.reply(ProbeRequest(request.method, request.url.path, request.url.query, request.headers),
                             ready)
        return _response(reply)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("retrain trigger for environment %s: deployments %s on %s", policy.environment,
                 settings.deployment_name, settings.prefect_api_url)
        try:
            yield
        finally:
            await prefect.aclose()

    app = Starlette(routes=[
        Route("/v1/alerts/{source}", receive, methods=["POST"]),
        *(Route(path, probe, methods=["GET"]) for path in PROBE_PATHS),
    ], lifespan=lifespan)
    app.state.trigger = trigger
    app.state.metrics = metrics
    return app


def _response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type, headers=dict(reply.headers))


def main(argv: list[str] | None = None) -> ExitCode:
    """Run the service until SIGTERM/SIGINT; ``ExitCode.CONFIG`` on invalid configuration."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        log.error("refusing to start: %s", exc)
        return ExitCode.CONFIG
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        served = transport(settings)
        app = create_app(settings)
    except ConfigError as exc:
        log.error("refusing to start: %s", exc)
        return ExitCode.CONFIG

    try:
        asyncio.run(serve(app, settings, served))
    except SystemExit as exc:
        if not exc.code:
            return ExitCode.OK
        # uvicorn exits with its own code (3) when it cannot start, the port being taken; 3 means a
        # missing artifact in this repository's services, so it becomes the runtime failure it is.
        log.error("the HTTP server did not start (uvicorn exit status %s)", exc.code)
        return ExitCode.FAILURE
    return ExitCode.OK


async def serve(app: Starlette, settings: Settings, served: Transport) -> None:
    """Serve ``app`` (HTTPS with ``served``'s certificate, or plain HTTP when it has none) until the first
    SIGTERM or SIGINT, then shut down gracefully (a second one forces it)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # This function owns the signals (below); uvicorn would re-raise them after shutdown, so the
            # process would die by SIGTERM instead of exiting 0.
            yield

    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, lifespan="on",
                            access_log=False, server_header=False, log_config=None,
                            timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_seconds)),
                            ssl_certfile=served.cert_file, ssl_keyfile=served.key_file)
    if served.cert_file is None:
        log.warning("serving plain HTTP on %s:%d (RETRAIN_TRIGGER_PLAIN_HTTP=true): a local run only",
                    settings.http_host, settings.http_port)
    server = Server(config)

    def stop(signum: signal.Signals) -> None:
        if server.should_exit:
            server.force_exit = True
        log.info("%s: shutting down", signum.name)
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        await server.serve()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
