"""The drift detector's per-record costs that have no behaviour of their own to show: the KS p-value
memo, the heap settled after start-up, and the consumer letting aiokafka's fetch task run before it
processes a batch (``benchmarks/drift.py`` measures what they save)."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from drift_detector import app
from drift_detector.consumer import DriftConsumer
from drift_detector.methods import ks
from drift_detector.settings import Settings
from scipy import stats as st


def _two_roundings(n1: int, n2: int) -> tuple[float, float, int]:
    """Two different floats ``r/n1 - c/n2`` of one distance ``k / (n1 n2)``."""
    seen: dict[int, float] = {}
    for r in range(1, n1):
        for c in range(max(0, r * n2 // n1 - 40), r * n2 // n1):
            value = r / n1 - c / n2
            k = r * n2 - c * n1
            if k in seen and seen[k] != value:
                return seen[k], value, k
            seen.setdefault(k, value)
    raise AssertionError("no two roundings found")


def test_ks_p_values_are_remembered_per_distance_not_per_float(monkeypatch):
    n1, n2 = 5000, 1000
    first, second, k = _two_roundings(n1, n2)
    en = float(np.round(n1 * n2 / (n1 + n2)))
    monkeypatch.setattr(ks, "_KS_SF_CACHE", {})
    p = ks._ks_p_values(np.array([first, second]), n1, n2, en)
    assert first != second and p[0] == p[1]
    assert len(ks._KS_SF_CACHE) == 1  # one scipy evaluation for both roundings
    for value, got in zip((first, second), p, strict=True):
        assert got == pytest.approx(st.kstwo.sf(value, en), rel=1e-12)
    assert p[0] == st.kstwo.sf(k / (n1 * n2), en)


def test_settle_heap_freezes_the_start_up_heap_and_collects_the_young_less_often():
    before = gc.get_threshold()
    try:
        app.settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (app.GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _settings(tmp_path) -> Settings:
    return Settings(model="m", environment="test", kafka_bootstrap_servers="127.0.0.1:1", topic="t",
                    dead_letter_topic="t-dlq", group_id="g", config_file=tmp_path / "config.yaml")


def test_the_service_settles_the_heap_once_the_detectors_are_loaded(tmp_path, monkeypatch):
    events: list[str] = []

    class Consumer:
        def __init__(self, *args: Any) -> None:
            events.append("consumer")

        async def run(self) -> None:
            events.append("run")

        def stop(self) -> None:
            pass

    monkeypatch.setattr(app, "load_detectors", lambda config, settings: events.append("loaded") or {})
    monkeypatch.setattr(app, "WindowProcessor", lambda *args: SimpleNamespace(windows_evaluated=0,
                                                                              committable=dict))
    monkeypatch.setattr(app, "DriftConsumer", Consumer)
    monkeypatch.setattr(app, "settle_heap", lambda: events.append("settled"))
    service = app.Service(_settings(tmp_path), SimpleNamespace(model="m"))
    assert asyncio.run(service._serve()) == app.ExitCode.OK
    assert events == ["loaded", "consumer", "settled", "run"]


class _Fetcher:
    """aiokafka's fetch machinery in miniature: ``getmany`` drains the buffer and wakes the background
    routine, which starts a request task, which sends the next fetch request."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches
        self.sent = 0
        self._wake: asyncio.Future | None = None

    async def routine(self) -> None:
        while True:
            self._wake = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._wake])
            asyncio.create_task(self._request())

    async def _request(self) -> None:
        self.sent += 1

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        await asyncio.sleep(0)
        batch = self.batches.pop(0)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        return batch

    def assignment(self) -> set:
        return set()


def test_the_next_fetch_request_leaves_before_a_batch_is_processed(tmp_path):
    """aiokafka fetches a partition again only once its buffer is drained, from a background task: the
    consumer gives that task its turns before the (synchronous) processing, so the broker prepares the
    next batch meanwhile instead of after it."""
    seen: list[int] = []

    async def scenario() -> None:
        fetcher = _Fetcher([{"tp": ["m1"]}, {"tp": ["m2"]}])
        routine = asyncio.create_task(fetcher.routine())
        await asyncio.sleep(0)

        def process(batch: dict) -> SimpleNamespace:
            seen.append(fetcher.sent)
            if len(seen) == 2:
                consumer.stop()
            return SimpleNamespace(rejections=[], next_offsets={})

        processor = SimpleNamespace(process=process, advance=lambda offsets: None, next_offsets={},
                                    committable=dict, unsaved=list)
        consumer = DriftConsumer(_settings(tmp_path), processor, metrics=None)  # type: ignore[arg-type]
        consumer._consumer = fetcher  # type: ignore[assignment]
        assert await consumer._consume() is False
        routine.cancel()

    asyncio.run(scenario())
    assert seen == [1, 2]
