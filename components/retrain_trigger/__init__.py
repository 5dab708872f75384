"""The retrain trigger (``python -m retrain_trigger``): Grafana and Alertmanager webhooks in, Prefect flow runs of ``retrain(model, reason)`` out.

An authenticated (bearer token or HMAC signature) firing alert labelled ``retrain="true"`` starts the
model's Prefect deployment once per alert (fingerprint and start time, also enforced by Prefect's
idempotency key) and at most ``retrain.max_runs_per_day`` times per model in any 24 hours (counted on
the Prefect server, so a restart forgets nothing). Modules: ``settings`` (``RETRAIN_TRIGGER_*``),
``policy`` (the rendered per-model policy file), ``payloads`` (webhook bodies), ``auth``, ``prefect_api``
(the Prefect REST calls), ``service`` (the decisions), ``metrics``, ``app`` (HTTP wiring and ``main``).
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit status of ``python -m retrain_trigger``; see the README."""

    OK = 0
    """Stopped by SIGTERM or SIGINT after the requests in flight finished."""
    FAILURE = 1
    """An unexpected runtime error (the HTTP port is taken; uvicorn's own status for it, 3, is mapped here)."""
    CONFIG = 2
    """Invalid settings, a short or missing token, or a bad policy file: nothing listens."""
