"""service_kit: the health/metrics answers every service gives, the server, and settings loaded one way."""

from __future__ import annotations

import asyncio
import gzip
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic_settings import SettingsConfigDict
from service_kit.http import HealthServer, Probes, Request, negotiated_metrics, text_metrics
from service_kit.settings import ServiceSettings


def registry_with_a_counter() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("kit_things", "Things.", registry=registry).inc(3)
    return registry


def test_probes_answer_health_readiness_and_metrics() -> None:
    ready = [False, "loading detectors"]
    probes = Probes(lambda: tuple(ready), text_metrics(registry_with_a_counter()))
    assert probes.reply(Request("GET", "/healthz"))[:2] == (200, b"ok\n")
    assert probes.reply(Request("GET", "/readyz"))[:2] == (503, b"loading detectors\n")
    ready[:] = [True, "ready"]
    assert probes.reply(Request("HEAD", "/readyz"))[:2] == (200, b"ready\n")
    assert probes.reply(Request("GET", "/readyz"), ready=(False, "asked elsewhere"))[:2] == (503, b"asked elsewhere\n")
    metrics = probes.reply(Request("GET", "/metrics"))
    assert metrics.status == 200 and b"kit_things_total 3.0" in metrics.body
    assert metrics.content_type == CONTENT_TYPE_LATEST  # what the services always answered
    assert probes.reply(Request("GET", "/other")).status == 404
    assert probes.reply(Request("POST", "/healthz")).status == 405


def test_negotiated_metrics_answer_what_the_scraper_asks_for() -> None:
    answer = negotiated_metrics(registry_with_a_counter())
    plain = answer(Request("GET", "/metrics"))
    assert plain.content_type.startswith("text/plain") and b"kit_things_total 3.0" in plain.body
    openmetrics = answer(Request("GET", "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}))
    assert openmetrics.content_type.startswith("application/openmetrics-text") and openmetrics.body.endswith(b"# EOF\n")
    zipped = answer(Request("GET", "/metrics", headers={"accept-encoding": "gzip"}))
    assert ("Content-Encoding", "gzip") in zipped.headers and gzip.decompress(zipped.body) == plain.body
    for header, zips in (("deflate, GZip;q=0.5", True), ("gzip;q=0", False), ("identity", False)):
        reply = answer(Request("GET", "/metrics", headers={"accept-encoding": header}))
        assert (("Content-Encoding", "gzip") in reply.headers) is zips, header
    assert answer(Request("GET", "/metrics", "name[]=absent")).body == b""


def test_the_server_answers_over_http() -> None:
    async def scenario() -> tuple[int, bytes, str]:
        server = HealthServer("127.0.0.1", 0, lambda: (True, "ready"), text_metrics(registry_with_a_counter()))
        await server.start()
        port = server._server.sockets[0].getsockname()[1]

        def get() -> tuple[int, bytes, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return response.status, response.read(), response.headers["Content-Type"]

        try:
            return await asyncio.to_thread(get)
        finally:
            await server.close()

    status, body, content_type = asyncio.run(scenario())
    assert status == 200 and b"kit_things_total 3.0" in body and content_type.startswith("text/plain")


class KitSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KIT_", extra="ignore", frozen=True)

    name: str
    port: int = 8080
    items: list[int] = []


def test_settings_load_from_the_environment_or_a_mapping_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"KIT_NAME": "a", "KIT_PORT": "9", "KIT_ITEMS": "[1, 2]", "OTHER": "x"}
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    from_process = KitSettings.load()
    assert from_process == KitSettings.load(environ) == KitSettings(name="a", port=9, items=[1, 2])
    monkeypatch.delenv("KIT_NAME")
    assert KitSettings.load({"KIT_NAME": "b"}).port == 8080  # only the mapping is read
    with pytest.raises(ValueError, match="name"):
        KitSettings.load()
