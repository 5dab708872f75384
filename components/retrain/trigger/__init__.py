"""The retrain trigger: Grafana and Alertmanager webhooks in, Prefect flow runs of ``retrain(model, reason)`` out.

An authenticated (bearer token or HMAC signature) firing alert labelled ``retrain="true"`` starts the
model's Prefect deployment once per alert (fingerprint and start time, also enforced by Prefect's
idempotency key) and at most ``retrain.max_runs_per_day`` times per model in any 24 hours (counted on
the Prefect server, so a restart forgets nothing). Modules: ``settings`` (``RETRAIN_TRIGGER_*``),
``policy`` (the rendered per-model policy file), ``payloads`` (webhook bodies), ``auth``, ``prefect_api``
(the Prefect REST calls), ``service`` (the decisions), ``metrics``, ``app`` (HTTP wiring and ``main``).
"""
