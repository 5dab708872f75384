"""The drift detector's per-record costs that have no behaviour of their own to show: the KS p-value
memo, the heap settled after start-up, and the consumer letting aiokafka's fetch task run before it
processes a batch (``benchmarks/drift.py`` measures what they save)."""

from __future__ import annotations

import asyncio
import gc
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from drift_detector import app
from drift_detector.consumer import DriftConsumer
from drift_detector.methods import ks
from drift_detector.methods.refgrid import RefGrid
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


def _ks_cases():
    """Reference and window pairs of several shapes: normal, shifted, heavy tails, values outside the
    reference's range, values equal to reference values, and tiny magnitudes."""
    rng = np.random.default_rng(5)
    for trial in range(120):
        n1, n2, d = int(rng.integers(2, 2000)), int(rng.integers(1, 600)), int(rng.integers(1, 5))
        kind = trial % 6
        if kind == 0:
            ref, win = rng.normal(size=(n1, d)), rng.normal(rng.normal(0, 0.3), 1, size=(n2, d))
        elif kind == 1:
            ref, win = rng.uniform(size=(n1, d)), rng.uniform(-0.5, 1.5, size=(n2, d))
        elif kind == 2:
            ref, win = rng.standard_cauchy(size=(n1, d)), rng.standard_cauchy(size=(n2, d))
        elif kind == 3:
            ref, win = rng.lognormal(size=(n1, d)), rng.lognormal(0.2, size=(n2, d))
        elif kind == 4:  # about half the window's values are reference values
            ref = rng.normal(size=(n1, d))
            win = ref[rng.integers(0, n1, n2)] + rng.normal(size=(n2, d)) * (rng.random((n2, d)) < 0.5)
        else:
            ref, win = rng.normal(size=(n1, d)) * 1e-300, rng.normal(size=(n2, d)) * 1e-300
        if np.unique(win, axis=0).shape[0] == n2:
            yield np.sort(np.ascontiguousarray(ref.T), axis=1), win
    ref = rng.normal(size=(5000, 3))
    far = np.vstack([rng.normal(size=(97, 3)), np.full((1, 3), 1e308), np.full((1, 3), -1e308), ref[:1]])
    yield np.sort(np.ascontiguousarray(ref.T), axis=1), far


def test_the_ks_grid_finds_the_distances_every_point_finds(monkeypatch: pytest.MonkeyPatch):
    """Bit for bit: the grid only decides which points need counting, never what a point counts."""
    grid_path = ks._ks_extremes_by_grid
    used = 0

    def counting(*args):
        nonlocal used
        used += 1
        return grid_path(*args)

    monkeypatch.setattr(ks, "_ks_extremes_by_grid", counting)
    for ref_rows, win in _ks_cases():
        grid = RefGrid.build(ref_rows)
        every_point = ks.ks_columns(ref_rows, win)
        by_grid = ks.ks_columns(ref_rows, win, grid)
        assert every_point[0].tobytes() == by_grid[0].tobytes()
        assert every_point[1].tobytes() == by_grid[1].tobytes()
        for j in range(win.shape[1]):
            assert by_grid[0][j] == pytest.approx(st.ks_2samp(ref_rows[j], win[:, j]).statistic, abs=1e-12)
    assert used >= 60  # most cases took the grid path (a grid, and a window without repeated values)


def test_no_ks_grid_where_it_would_not_pay():
    rng = np.random.default_rng(3)
    assert RefGrid.build(np.zeros((2, 10))) is None  # a constant feature: no range
    clustered = np.sort(np.concatenate([rng.normal(size=500), np.full(100, 2.0)]))[None, :]
    assert RefGrid.build(clustered) is None  # 100 equal values: a cell holds more than MAX_OCCUPANCY
    grid = RefGrid.build(np.sort(rng.normal(size=(3, 5000)), axis=1))
    assert grid is not None and grid.occupancy <= RefGrid.MAX_OCCUPANCY


def test_cvm_counts_from_the_grid_give_the_searched_statistics():
    """The same statistics bit for bit whether a stretch's counts come from the grid or from sorting
    and searching: continuous values, values equal to reference values, and stretches that repeat a
    value (those always take the sorted path)."""
    import dataclasses

    from drift_detector.detector import FeatureSpec, FittedDetector

    rng = np.random.default_rng(8)
    reference = rng.normal(size=(800, 3))
    features = [FeatureSpec(f"x{j}", "numeric") for j in range(3)]
    make = lambda: FittedDetector(method="cvm_online", features=features, reference=reference,  # noqa: E731
                                  window=60, window_sizes=(5, 20), thresholds=np.full(39, 3.0))
    by_grid, by_search = make(), make()
    assert by_grid._cvm.grid is not None
    by_search._cvm = dataclasses.replace(by_search._cvm, grid=None)
    for kind in range(9):
        window = rng.normal(0.3 * (kind % 2), 1, size=(60, 3))
        if kind % 3 == 1:  # a third of the values are reference values
            picks = reference[rng.integers(0, 800, size=(60, 3)), np.arange(3)]
            window = np.where(rng.random((60, 3)) < 0.3, picks, window)
        elif kind % 3 == 2:  # a repeated value
            window[7] = window[3]
        got, want = by_grid.score(window), by_search.score(window)
        assert repr(got) == repr(want)  # repr: NaN p-values compare unequal


def test_processed_offsets_wait_for_the_commit_interval_not_for_the_poll_timeout(tmp_path):
    """Once a batch is processed, ``getmany`` waits at most until the commit interval has passed, so the
    offsets are committed then (not up to a poll timeout later, once the topic is drained); with
    nothing waiting for a commit it waits the whole poll timeout."""
    timeouts: list[int] = []

    class Consumer:
        async def getmany(self, timeout_ms: int, max_records: int) -> dict:
            timeouts.append(timeout_ms)
            if len(timeouts) == 3:
                consumer.stop()
            return {"tp": ["m"]} if len(timeouts) == 1 else {}

        def assignment(self) -> set:
            return set()

    processor = SimpleNamespace(process=lambda batch: SimpleNamespace(rejections=[], next_offsets={"tp": 1}),
                                advance=lambda offsets: None, next_offsets={}, committable=dict, unsaved=list)
    settings = _settings(tmp_path).model_copy(update={"commit_interval_seconds": 0.2, "poll_timeout_ms": 500})
    consumer = DriftConsumer(settings, processor, metrics=None)  # type: ignore[arg-type]
    consumer._consumer = Consumer()  # type: ignore[assignment]
    consumer._last_commit = time.monotonic()  # a commit just happened
    assert asyncio.run(consumer._consume()) is False
    assert timeouts[0] == 500
    assert 0 < timeouts[1] <= 200 and 0 < timeouts[2] <= 200


@pytest.mark.parametrize("top", [0, 1, 7, 5000, 65535, 65536, 100_000])
def test_pair_max_sums_equal_their_definition_whatever_the_integer_width(top):
    """Counts up to 65,535 are summed in uint16 blocks of lags, larger ones in int32: both give the
    sums of the definition, also when a block ends inside a window size's lags."""
    from drift_detector.methods.cvm_online import pair_max_sums

    rng = np.random.default_rng(top)
    for m in (1, 5, 150):
        keys = rng.integers(0, top + 1, size=(m, 3))
        got = pair_max_sums(keys, (5, 20, 100))
        for ws in (5, 20, 100):
            later, earlier = np.zeros((m, 3), np.int64), np.zeros((m, 3), np.int64)
            for k in range(m):
                for i in range(max(0, k - ws + 1), k):
                    later[k] += np.maximum(keys[i], keys[k])
                    earlier[i] += np.maximum(keys[i], keys[k])
            assert (got[ws][0] == later).all() and (got[ws][1] == earlier).all()


def test_window_series_are_looked_up_once_per_predictor_and_land_on_their_labels():
    from drift_detector.metrics import DriftMetrics

    metrics = DriftMetrics("m")
    for n, (version, predictor) in enumerate([("1", "main"), ("1", "canary"), ("2", "main")]):
        for repeat in range(2):
            metrics.window(version, predictor, drift=bool(n), p_value=0.1 * n + repeat, statistic=n, threshold=0.01,
                           feature_p_values={"a": n + repeat, "b": -n}, seconds=0.5, timestamp=100.0 + n)
    assert len(metrics._series) == 3  # one lookup per predictor, reused by its second window
    sample = metrics.registry.get_sample_value
    for n, (version, predictor) in enumerate([("1", "main"), ("1", "canary"), ("2", "main")]):
        labels = {"model": "m", "version": version, "predictor": predictor}
        assert sample("mlops_drift_p_value", labels) == 0.1 * n + 1
        assert sample("mlops_drift_detected", labels) == bool(n)
        assert sample("mlops_drift_feature_p_value", {**labels, "feature": "a"}) == n + 1
        assert sample("mlops_drift_feature_p_value", {**labels, "feature": "b"}) == -n
        assert sample("mlops_drift_windows_evaluated_total", labels) == 2
        assert sample("mlops_drift_windows_drifted_total", labels) == 2 * bool(n)
        assert sample("mlops_drift_processing_seconds_count", labels) == 2
        assert sample("mlops_drift_last_window_timestamp_seconds", labels) == 100.0 + n
