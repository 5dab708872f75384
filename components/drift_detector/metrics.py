"""Prometheus series of the drift detector, declared once.

The names are the ones the rendered Grafana alerts and dashboard query (``generator/spec/naming.py``
``METRICS``); change them together. Every series carries ``model``; per-window series carry
``version`` and ``predictor`` (the SeldonDeployment predictor the records came from), per-feature
series add ``feature``, rejections add ``reason``. A record that cannot be decoded has no known
version or predictor: it is counted with ``version="unknown"`` and ``predictor="unknown"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

UNKNOWN = "unknown"
WINDOW_LABELS = ("model", "version", "predictor")
PROCESSING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class DriftMetrics:
    """All series of one service instance, registered on ``registry`` (a fresh one by default)."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.model = model
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.records_consumed = Counter(
            "mlops_drift_records_consumed", "Inference-log records read from the topic.",
            WINDOW_LABELS, registry=r)
        self.records_rejected = Counter(
            "mlops_drift_records_rejected", "Records sent to the dead-letter topic, by reason.",
            (*WINDOW_LABELS, "reason"), registry=r)
        self.windows_evaluated = Counter(
            "mlops_drift_windows_evaluated", "Windows scored by the detector.", WINDOW_LABELS, registry=r)
        self.windows_drifted = Counter(
            "mlops_drift_windows_drifted", "Windows in which the detector found drift.", WINDOW_LABELS,
            registry=r)
        self.drift_detected = Gauge(
            "mlops_drift_detected", "1 if the last window of this predictor drifted, else 0.",
            WINDOW_LABELS, registry=r)
        self.p_value = Gauge(
            "mlops_drift_p_value", "p-value of the last window (after correction, the smallest feature p-value).",
            WINDOW_LABELS, registry=r)
        self.test_statistic = Gauge(
            "mlops_drift_test_statistic", "Test statistic of the last window.", WINDOW_LABELS, registry=r)
        self.threshold = Gauge(
            "mlops_drift_threshold", "Threshold the last window was compared with.", WINDOW_LABELS, registry=r)
        self.feature_p_value = Gauge(
            "mlops_drift_feature_p_value", "Per-feature p-value of the last window.",
            (*WINDOW_LABELS, "feature"), registry=r)
        self.last_window_timestamp = Gauge(
            "mlops_drift_last_window_timestamp_seconds", "Unix time the last window was evaluated.",
            WINDOW_LABELS, registry=r)
        self.processing_seconds = Histogram(
            "mlops_drift_processing_seconds", "Seconds spent scoring one window.",
            WINDOW_LABELS, buckets=PROCESSING_BUCKETS, registry=r)
        self.consumer_lag = Gauge(
            "mlops_drift_consumer_lag", "Records between the consumer's position and the partition's end.",
            ("model", "topic", "partition"), registry=r)
        self.ready = Gauge(
            "mlops_drift_ready", "1 while the service is ready (detectors loaded, group joined, broker up).",
            ("model",), registry=r)
        self.ready.labels(model).set(0)
        self._series: dict[tuple[str, str], _PredictorSeries] = {}

    def _predictor(self, version: str, predictor: str) -> _PredictorSeries:
        """A predictor's labelled window series, looked up once: ``labels()`` validates and locks on
        every call (about 5 µs), and a window sets some 27 series."""
        series = self._series.get((version, predictor))
        if series is None:
            series = self._series[(version, predictor)] = _PredictorSeries(self, version, predictor)
        return series

    # --- helpers used by the consumer -------------------------------------------------------------

    def declare_predictor(self, version: str, predictor: str, features: list[str]) -> None:
        """Create a predictor's series at start, so dashboards show 0 instead of nothing."""
        labels = (self.model, version, predictor)
        self.records_consumed.labels(*labels)
        self.windows_evaluated.labels(*labels)
        self.windows_drifted.labels(*labels)
        self.drift_detected.labels(*labels).set(0)
        self.processing_seconds.labels(*labels)

    def consumed(self, version: str, predictor: str, count: int) -> None:
        self.records_consumed.labels(self.model, version, predictor).inc(count)

    def rejected(self, version: str, predictor: str, reason: str, count: int = 1) -> None:
        self.records_rejected.labels(self.model, version, predictor, reason).inc(count)

    def window(self, version: str, predictor: str, *, drift: bool, p_value: float, statistic: float,
               threshold: float, feature_p_values: Mapping[str, float], seconds: float, timestamp: float) -> None:
        """Export one evaluated window; the caller commits its offsets only after this returns."""
        series = self._predictor(version, predictor)
        self.last_window(version, predictor, drift=drift, p_value=p_value, statistic=statistic,
                         threshold=threshold, feature_p_values=feature_p_values, timestamp=timestamp)
        series.processing_seconds.observe(seconds)
        if drift:
            series.windows_drifted.inc()
        series.windows_evaluated.inc()

    def last_window(self, version: str, predictor: str, *, drift: bool, p_value: float, statistic: float,
                    threshold: float, feature_p_values: Mapping[str, float], timestamp: float) -> None:
        """Set the gauges that describe a predictor's last window: on each window, and at start from the
        verdict a previous instance kept (``state.py``). Counters are left alone: they count this
        process's windows, and ``increase()`` in the alert already spans restarts."""
        series = self._predictor(version, predictor)
        series.drift_detected.set(1 if drift else 0)
        series.p_value.set(p_value)
        series.test_statistic.set(statistic)
        series.threshold.set(threshold)
        for feature, value in feature_p_values.items():
            series.feature(feature).set(value)
        series.last_window_timestamp.set(timestamp)

    def lag(self, topic: str, partition: int, records: int) -> None:
        self.consumer_lag.labels(self.model, topic, str(partition)).set(max(0, records))

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the lag series of a partition this instance no longer owns."""
        try:
            self.consumer_lag.remove(self.model, topic, str(partition))
        except KeyError:
            pass

    def track_ready(self, is_ready: Callable[[], bool]) -> None:
        """Make ``mlops_drift_ready`` report ``is_ready()`` at every scrape."""
        self.ready.labels(self.model).set_function(lambda: 1.0 if is_ready() else 0.0)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every series and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _PredictorSeries:
    """The labelled children of one predictor's window series (the same objects ``labels()`` returns)."""

    __slots__ = ("_feature_p_value", "_features", "_labels", "drift_detected", "last_window_timestamp", "p_value",
                 "processing_seconds", "test_statistic", "threshold", "windows_drifted", "windows_evaluated")

    def __init__(self, metrics: DriftMetrics, version: str, predictor: str) -> None:
        labels = self._labels = (metrics.model, version, predictor)
        self.drift_detected = metrics.drift_detected.labels(*labels)
        self.p_value = metrics.p_value.labels(*labels)
        self.test_statistic = metrics.test_statistic.labels(*labels)
        self.threshold = metrics.threshold.labels(*labels)
        self.last_window_timestamp = metrics.last_window_timestamp.labels(*labels)
        self.processing_seconds = metrics.processing_seconds.labels(*labels)
        self.windows_drifted = metrics.windows_drifted.labels(*labels)
        self.windows_evaluated = metrics.windows_evaluated.labels(*labels)
        self._feature_p_value = metrics.feature_p_value
        self._features: dict[str, Gauge] = {}

    def feature(self, name: str) -> Gauge:
        """The per-feature p-value gauge of ``name``."""
        child = self._features.get(name)
        if child is None:
            child = self._features[name] = self._feature_p_value.labels(*self._labels, name)
        return child
