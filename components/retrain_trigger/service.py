"""What the trigger does with each alert of an authenticated, valid notification.

In order: resolved alerts, alerts not labelled ``retrain="true"`` and alerts of another environment are
ignored; a model whose policy disables retraining is skipped; an alert already handled (same
fingerprint and start time: one firing episode) is a duplicate; a model that already had
``max_runs_per_day`` runs started by the trigger in the last 24 hours is rate-limited (a run that ended
Failed, Crashed or Cancelled before it started training does not count: :meth:`RetrainTrigger.runs_counted`);
otherwise the model's deployment gets a run with ``model`` and ``reason``.

Both guards live on the Prefect server, so restarts and repeated notifications cannot start extra
runs: the count of runs tagged :data:`TRIGGER_TAG` is the rate limit, and each run carries an
idempotency key derived from the alert, so Prefect returns the existing run for a repeat. The
in-memory set of handled alerts only saves those calls. Decisions for one model are serialised by a
lock, so two notifications arriving together cannot both pass the count (one trigger replica runs,
see the rendered Deployment).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# The flow's marker of a run that reached training; the flow's package ships in the same image.
from retrain.records import TRAINING_STARTED_TAG

from .metrics import TriggerMetrics
from .payloads import Alert, WebhookPayload
from .policy import Policy
from .prefect_api import PrefectAPI

log = logging.getLogger("retrain_trigger")

TRIGGER_TAG = "retrain-trigger"
"""Tag of every run the trigger starts; the rate limit counts these."""
RATE_WINDOW = timedelta(hours=24)
REASON_MAX_CHARS = 500


@dataclass(frozen=True)
class AlertResult:
    """The decision on one alert, returned to the sender and logged."""

    fingerprint: str
    model: str | None
    outcome: str
    flow_run_id: str | None = None
    flow_run_name: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"fingerprint": self.fingerprint, "model": self.model, "outcome": self.outcome,
                "flow_run_id": self.flow_run_id, "flow_run_name": self.flow_run_name}


class RetrainTrigger:
    """Turns alerts into flow runs under the policy; one instance per process."""

    def __init__(self, policy: Policy, prefect: PrefectAPI, metrics: TriggerMetrics,
                 deployment_for: Callable[[str], str], dedupe_capacity: int = 10_000,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.policy = policy
        self.prefect = prefect
        self.metrics = metrics
        self.deployment_for = deployment_for
        self.dedupe_capacity = dedupe_capacity
        self.clock = clock
        self._handled: OrderedDict[tuple[str, datetime], None] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def handle(self, payload: WebhookPayload, source: str) -> list[AlertResult]:
        """Decide on every alert of ``payload`` in order.

        Raises:
            PrefectUnavailable: the Prefect API failed; alerts before it were handled, the sender retries
                the whole notification and those come back as duplicates.
        """
        results = []
        for alert in payload.alerts:
            result = await self._handle(alert, source)
            self.metrics.alerts.labels(result.outcome).inc()
            results.append(result)
        return results

    async def _handle(self, alert: Alert, source: str) -> AlertResult:
        def result(outcome: str, run=None) -> AlertResult:
            return AlertResult(alert.fingerprint, alert.model, outcome, run.id if run else None,
                               run.name if run else None)

        if alert.status != "firing":
            return result("resolved")
        if not alert.wants_retrain:
            return result("not_retrain")
        model = alert.model
        env = alert.labels.get("env")
        if env is not None and env != self.policy.environment:
            log.warning("ignored alert %s for model %s: environment %r, this trigger serves %r",
                        alert.fingerprint, model, env, self.policy.environment)
            return result("other_environment")
        policy = self.policy.for_model(model)
        if not policy.on_drift or policy.max_runs_per_day == 0:
            log.info("alert %s: retraining of %s is disabled by its policy", alert.fingerprint, model)
            return result("disabled")
        key = (alert.fingerprint, alert.starts_at)
        if key in self._handled:
            return result("duplicate")
        async with self._locks.setdefault(model, asyncio.Lock()):
            if key in self._handled:  # handled while this one waited for the lock
                return result("duplicate")
            deployment = self.deployment_for(model)
            deployment_id = await self.prefect.deployment_id(deployment)
            if deployment_id is None:
                log.error("alert %s: Prefect has no deployment %s; no run started (is prefect.yaml deployed?)",
                          alert.fingerprint, deployment)
                return result("no_deployment")
            started = await self.runs_counted(deployment_id)
            if started >= policy.max_runs_per_day:
                # Not remembered: if the alert still fires once the window has room, it may retrain then.
                log.warning("alert %s: %s already had %d of %d runs in the last 24h; not starting another",
                            alert.fingerprint, model, started, policy.max_runs_per_day)
                return result("rate_limited")
            run = await self.prefect.create_flow_run(
                deployment_id, {"model": model, "reason": reason(alert, source)},
                tags=[TRIGGER_TAG, f"model:{model}", f"alert:{alert.fingerprint}"],
                idempotency_key=idempotency_key(alert))
            self._remember(key)
        if not run.created:
            return result("duplicate", run)
        self.metrics.runs_started.labels(model).inc()
        log.info("alert %s: started flow run %s (%s) of %s", alert.fingerprint, run.name, run.id, deployment)
        return result("started", run)

    async def runs_counted(self, deployment_id: str) -> int:
        """The runs of the last 24 hours that count against ``max_runs_per_day``: every run the trigger
        started, except those that ended Failed, Crashed or Cancelled before training started (the flow
        tags a run :data:`TRAINING_STARTED_TAG` just before it trains)."""
        since = self.clock() - RATE_WINDOW
        started = await self.prefect.count_runs(deployment_id, TRIGGER_TAG, since)
        if not started:
            return 0
        return started - await self.prefect.ended_runs_without(deployment_id, TRIGGER_TAG, since, TRAINING_STARTED_TAG)

    def _remember(self, key: tuple[str, datetime]) -> None:
        self._handled[key] = None
        while len(self._handled) > self.dedupe_capacity:
            self._handled.popitem(last=False)


def idempotency_key(alert: Alert) -> str:
    """One key per firing episode of an alert: a later episode (after it resolved) may retrain again."""
    return f"{TRIGGER_TAG}:{alert.fingerprint}:{alert.starts_at.astimezone(UTC).isoformat()}"


def reason(alert: Alert, source: str) -> str:
    """The ``reason`` parameter of the run: which alert, since when, on what, and its summary."""
    labels = alert.labels
    scope = ", ".join(f"{key}={labels[key]}" for key in ("predictor", "version") if key in labels)
    text = (f"{source} alert {labels.get('alertname', '?')!r} firing since "
            f"{alert.starts_at.astimezone(UTC).isoformat()}{f' ({scope})' if scope else ''}")
    if summary := alert.annotations.get("summary"):
        text += f": {summary}"
    return text[:REASON_MAX_CHARS]
