"""Webhook bodies of Grafana (contact point type ``webhook``) and Alertmanager (``webhook_configs``).

Both send the Alertmanager shape: ``status`` and ``alerts[]`` with ``status``, ``labels``,
``annotations``, ``startsAt`` and ``fingerprint``. Only those fields are read and checked; everything
else (``groupKey``, Grafana's ``values``, ``orgId``, ...) is ignored, so either sender may add fields in
a new release without breaking the trigger. A firing alert labelled ``retrain="true"`` must name a
valid ``model``: the payload is refused otherwise, because it cannot be acted on correctly.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SOURCES = ("grafana", "alertmanager")
MAX_ALERTS = 1000
MODEL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
"""A model name as the generator allows it (DNS-1123, at most 40 characters)."""


class Alert(BaseModel):
    """One alert instance of a notification."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    starts_at: datetime = Field(alias="startsAt")
    fingerprint: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")
    """Hash of the label set, stable for the alert's lifetime (Grafana and Alertmanager: 16 hex digits)."""

    @model_validator(mode="after")
    def _retrain_alert_names_its_model(self) -> Alert:
        if self.status == "firing" and self.wants_retrain:
            model = self.labels.get("model")
            if model is None or not MODEL_NAME.fullmatch(model):
                raise ValueError(f"a firing retrain alert needs a valid model label, got {model!r}")
        return self

    @property
    def wants_retrain(self) -> bool:
        return self.labels.get("retrain") == "true"

    @property
    def model(self) -> str | None:
        return self.labels.get("model")


class WebhookPayload(BaseModel):
    """A whole notification: one group of alerts."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    alerts: list[Alert] = Field(min_length=1, max_length=MAX_ALERTS)


class PayloadError(ValueError):
    """The body is not a webhook payload; the message says what is wrong (never echoes the body)."""

    def __init__(self, message: str, not_json: bool) -> None:
        super().__init__(message)
        self.not_json = not_json
        """True when the body is not JSON at all (400), False when it is JSON of the wrong shape (422)."""


def parse(body: bytes) -> WebhookPayload:
    """Validate a JSON body.

    Raises:
        PayloadError: not JSON, or not the webhook shape.
    """
    try:
        return WebhookPayload.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}" for e in errors[:10])
        raise PayloadError(problems, not_json=any(e["type"] == "json_invalid" for e in errors)) from None
