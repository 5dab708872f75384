"""Prometheus series of the model server, declared once.

gunicorn runs several worker processes, so the series live in prometheus-client's multiprocess mode:
each worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` and the metrics endpoint
(:func:`serve_metrics`, started by Seldon as the model's ``custom_service``) adds them up. Every
series carries ``model``, ``version`` and ``predictor``.

* ``mlops_model_server_predictions_total{outcome}``: requests by outcome (``ok``, ``bad_request``,
  ``error``);
* ``mlops_model_server_prediction_seconds``: time in ``predict`` (validation, model, logging);
* ``mlops_model_server_predicted_class_total{class}``: predicted labels of classifiers (the first
  ``MODEL_SERVER_MAX_CLASS_LABELS`` distinct labels by name, the rest as ``other``);
* ``mlops_model_server_inference_records_logged_total``: records Kafka acknowledged;
* ``mlops_model_server_inference_records_dropped_total{reason}``: records lost: ``buffer_full``
  (Kafka slow or down) or ``send_failed`` (a produce request failed);
* ``mlops_model_server_inference_records_buffered``: records waiting in memory (sum over live workers);
* ``mlops_model_server_inference_log_connected``: 1 while a worker's producer is connected (per worker
  process, ``pid`` label).
"""

from __future__ import annotations

import asyncio
import glob
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from service_kit.http import HealthServer, negotiated_metrics

LABELS = ("model", "version", "predictor")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
OTHER_CLASS = "other"


class ServerMetrics:
    """The series of one worker, bound to its model/version/predictor labels."""

    def __init__(self, model: str, version: str, predictor: str, max_class_labels: int,
                 registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        labels = {"model": model, "version": version, "predictor": predictor}
        predictions = Counter("mlops_model_server_predictions", "Prediction requests by outcome.",
                              (*LABELS, "outcome"), registry=r)
        self.ok = predictions.labels(**labels, outcome="ok")
        self.bad_request = predictions.labels(**labels, outcome="bad_request")
        self.error = predictions.labels(**labels, outcome="error")
        self.latency = Histogram("mlops_model_server_prediction_seconds", "Seconds spent in predict.",
                                 LABELS, buckets=LATENCY_BUCKETS, registry=r).labels(**labels)
        self._classes = Counter("mlops_model_server_predicted_class", "Predicted labels of a classifier.",
                                (*LABELS, "class"), registry=r)
        self._class_children: dict[str, Counter] = {}
        self._labels = labels
        self._max_class_labels = max_class_labels
        self.logged = Counter("mlops_model_server_inference_records_logged",
                              "Inference-log records acknowledged by Kafka.", LABELS, registry=r).labels(**labels)
        dropped = Counter("mlops_model_server_inference_records_dropped",
                          "Inference-log records lost, by reason.", (*LABELS, "reason"), registry=r)
        self.dropped_buffer_full = dropped.labels(**labels, reason="buffer_full")
        self.dropped_send_failed = dropped.labels(**labels, reason="send_failed")
        self.buffered = Gauge("mlops_model_server_inference_records_buffered",
                              "Inference-log records waiting in memory.", LABELS, registry=r,
                              multiprocess_mode="livesum").labels(**labels)
        self.connected = Gauge("mlops_model_server_inference_log_connected",
                               "1 while the worker's Kafka producer is connected.", LABELS, registry=r,
                               multiprocess_mode="liveall").labels(**labels)

    def count_classes(self, predictions: list) -> None:
        """Count each predicted label; only scalar labels (int, bool, str) are classes."""
        for label in predictions:
            if isinstance(label, (int, str)):  # bool is an int
                self._class_child(str(label)).inc()

    def _class_child(self, label: str) -> Counter:
        child = self._class_children.get(label)
        if child is None:
            if len(self._class_children) >= self._max_class_labels:
                label = OTHER_CLASS
                child = self._class_children.get(label)
            if child is None:
                child = self._classes.labels(**self._labels, **{"class": label})
                self._class_children[label] = child
        return child


def reset_multiprocess_dir(directory: str) -> None:
    """Empty the multiprocess directory at start-up: files left by an earlier run would be summed in."""
    os.makedirs(directory, exist_ok=True)
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)


class _LiveWorkersCollector(multiprocess.MultiProcessCollector):
    """Sums the workers' files, first retiring the live gauges of workers that have exited."""

    def collect(self):
        for path in glob.glob(os.path.join(self._path, "gauge_live*_*.db")):
            pid = int(path.rsplit("_", 1)[1].split(".")[0])
            if not _alive(pid):
                multiprocess.mark_process_dead(pid, self._path)
        return super().collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve_metrics(directory: str, port: int, host: str = "0.0.0.0") -> None:
    """Serve the workers' summed series at ``http://host:port/metrics``; blocks forever."""
    registry = CollectorRegistry()
    _LiveWorkersCollector(registry, path=directory)
    # This process only adds up the workers' files: it is ready as soon as it listens.
    server = HealthServer(host, port, lambda: (True, "ready"), negotiated_metrics(registry))
    asyncio.run(server.serve_forever())
