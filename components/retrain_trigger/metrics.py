"""Prometheus series of the retrain trigger, declared once, on an injectable registry.

Labels stay low-cardinality: ``source`` (grafana, alertmanager), ``result`` and ``outcome`` come from
fixed sets and are pre-initialised to 0; ``model`` only appears on started runs, which only an
authenticated sender can cause.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .payloads import SOURCES

REQUEST_RESULTS = ("accepted", "unauthorized", "bad_request", "invalid", "too_large", "unsupported_media_type",
                   "unavailable")
"""What happened to a webhook request as a whole (HTTP 200, 401, 400, 422, 413, 415, 503)."""
ALERT_OUTCOMES = ("started", "duplicate", "rate_limited", "disabled", "no_deployment", "resolved",
                  "not_retrain", "other_environment")
"""What happened to one alert of an accepted request."""


class TriggerMetrics:
    """All series of one trigger process, registered on ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("retrain_trigger_requests", "Webhook requests, by sender and result.",
                                ("source", "result"), registry=r)
        self.alerts = Counter("retrain_trigger_alerts", "Alerts of accepted requests, by outcome.",
                              ("outcome",), registry=r)
        self.runs_started = Counter("retrain_trigger_runs_started", "Flow runs the trigger created, by model.",
                                    ("model",), registry=r)
        self.prefect_errors = Counter("retrain_trigger_prefect_errors",
                                      "Prefect API calls that failed (the sender was asked to retry).", registry=r)
        self.ready = Gauge("retrain_trigger_ready", "1 while the Prefect API answered the last readiness check.",
                           registry=r)
        for source in SOURCES:
            for result in REQUEST_RESULTS:
                self.requests.labels(source, result)
        for outcome in ALERT_OUTCOMES:
            self.alerts.labels(outcome)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every series and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
