"""Configuration of the model server: environment variables, as the rendered SeldonDeployment sets them.

Prefix ``MODEL_SERVER_`` (:class:`Settings`), plus two variables other parts own:

* ``PREDICTOR_ID``: set by Seldon's operator to the predictor name (``main``, ``candidate``...); the
  inference log carries it so the drift detector can tell a canary's records from main's;
* ``PROMETHEUS_MULTIPROC_DIR``: prometheus-client's multiprocess directory. It must be set before the
  process starts (prometheus-client reads it at import), so it is checked here, not set. The entry point
  hands it on under the old lower-case name that seldon-core 1.17.1's prometheus-client reads
  (:func:`legacy_prometheus_variables`).

Reading settings touches nothing on the network; nothing else in the server reads the environment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import NoDecode, SettingsConfigDict
from service_kit.kafka import KafkaClientSettings
from service_kit.settings import ConfigError, ServiceSettings, problems

CategoryValue = str | int | bool


class FeatureSpec(BaseModel):
    """One model input, in the order the release spec lists it (``drift.features``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    type: Literal["numeric", "categorical"] = "numeric"
    categories: list[CategoryValue] | None = None

    @model_validator(mode="after")
    def _categories_match_type(self) -> FeatureSpec:
        if self.type == "numeric" and self.categories:
            raise ValueError(f"numeric feature {self.name!r} must not list categories")
        return self

    def describe(self) -> str:
        """``amount (numeric)`` or ``merchant_category (categorical: grocery, travel)``, for error messages."""
        if self.type == "categorical" and self.categories:
            return f"{self.name} (categorical: {', '.join(map(str, self.categories))})"
        return f"{self.name} ({self.type})"


class Settings(ServiceSettings, KafkaClientSettings):
    """Every knob of the model server. Identity and endpoints come from the rendered manifest; the
    tuning knobs have defaults that suit one to four gunicorn workers. How the inference log authenticates
    to Kafka (``MODEL_SERVER_KAFKA_SECURITY_PROTOCOL``, ``_SASL_MECHANISM``, ``_USERNAME``, ``_PASSWORD_FILE``,
    ``_CA_FILE``) comes from :class:`service_kit.kafka.KafkaClientSettings`."""

    model_config = SettingsConfigDict(env_prefix="MODEL_SERVER_", extra="ignore", frozen=True)

    model_name: str = Field(min_length=1, description="The model's name in the specs (``model:``).")
    registered_model: str = Field(min_length=1, description="The MLflow registered model name.")
    model_version: str = Field(min_length=1, description="The MLflow model version this predictor serves.")
    release_id: str = Field(default="", description="Content hash of the release block (logged in tags).")
    model_uri: str = Field(min_length=1, description="Artifact URI pinned in the release (s3://..., models:/...).")
    artifact_sha256: str = Field(
        default="", pattern=r"^([0-9a-f]{64})?$",
        description="The release's artifact digest (service_kit.artifact_digest); empty: not checked (dev only, "
                    "the spec rules require it in staging and prod).")
    environment: str = Field(default="", description="dev, staging or prod.")
    # NoDecode: the JSON is parsed below, so that a bad value names the variable like every other error.
    features: Annotated[list[FeatureSpec], NoDecode] = Field(
        min_length=1, description="JSON list of {name, type, categories}.")
    predictor: str = Field(min_length=1, validation_alias=AliasChoices("MODEL_SERVER_PREDICTOR", "PREDICTOR_ID"),
                           description="Predictor name; Seldon sets PREDICTOR_ID.")

    kafka_bootstrap_servers: str = Field(default="", description="Kafka bootstrap servers (host:port,...).")
    kafka_topic: str = Field(default="", description="The model's inference-log topic.")
    logging_enabled: bool = Field(default=True, description="Log inferences to Kafka.")
    buffer_records: int = Field(default=20_000, ge=1, description="Records kept in memory while Kafka is slow.")
    batch_records: int = Field(default=2_000, ge=1, description="Most records shipped in one produce request.")
    flush_interval_seconds: float = Field(default=1.0, gt=0, description="How often the shipper drains the buffer.")
    send_timeout_seconds: float = Field(default=5.0, gt=0, description="A produce request slower than this fails.")
    reconnect_max_seconds: float = Field(default=10.0, gt=0, description="Longest back-off between reconnects.")

    app_metrics_port: int = Field(default=6001, ge=1, le=65535, description="Port of our /metrics endpoint.")
    max_class_labels: int = Field(default=50, ge=1, description="Distinct predicted classes counted by name.")
    prometheus_multiproc_dir: str = Field(
        default="", validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR"),
        description="prometheus-client's multiprocess directory (required).")

    @field_validator("features", mode="before")
    @classmethod
    def _features_from_json(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise PydanticCustomError("json_invalid", "not JSON ({error}); it is a JSON list of {shape} objects",
                                      {"error": str(exc), "shape": "{name, type, categories}"}) from None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"MODEL_SERVER_FEATURES lists a feature twice: {names}")
        if self.logging_enabled and not (self.kafka_bootstrap_servers and self.kafka_topic):
            raise ValueError("inference logging is on but MODEL_SERVER_KAFKA_BOOTSTRAP_SERVERS or "
                             "MODEL_SERVER_KAFKA_TOPIC is empty; set both, or MODEL_SERVER_LOGGING_ENABLED=false")
        if not self.prometheus_multiproc_dir:
            raise ValueError("PROMETHEUS_MULTIPROC_DIR is not set; gunicorn workers share metrics through it. "
                             "Set it to a writable directory before the server starts (the rendered "
                             "SeldonDeployment sets /tmp/prometheus)")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read :class:`Settings` from ``environ`` (default: the process environment); any problem is a
    :class:`ConfigError` listing every bad variable with the fix."""
    try:
        return Settings.load(environ)
    except ValidationError as exc:
        raise ConfigError("invalid model server configuration:\n  " + "\n  ".join(problems(exc, _variable))) from None


class _MultiprocessDir(ServiceSettings):
    """``PROMETHEUS_MULTIPROC_DIR`` alone: the entry point needs it before Seldon imports prometheus-client,
    while the whole :class:`Settings` are checked later, in the main process, when ``ModelServer`` is built."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    prometheus_multiproc_dir: str = Field(default="", validation_alias="PROMETHEUS_MULTIPROC_DIR")


def legacy_prometheus_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"prometheus_multiproc_dir": <PROMETHEUS_MULTIPROC_DIR>}``: the only name prometheus-client 0.8
    (what seldon-core 1.17.1 allows) reads, and only from the process environment when first imported.
    Empty when the directory is unset or empty (:class:`Settings` then refuse to start, naming the fix)."""
    directory = _MultiprocessDir.load(environ).prometheus_multiproc_dir
    return {"prometheus_multiproc_dir": directory} if directory else {}


PREFIX = "MODEL_SERVER_"
_OWN_NAMES = {"predictor": "PREDICTOR_ID", "prometheus_multiproc_dir": "PROMETHEUS_MULTIPROC_DIR"}


def _variable(location: tuple) -> str:
    if not location:
        return "settings"
    head = str(location[0])
    rest = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location[1:])
    if head in ("MODEL_SERVER_PREDICTOR", "PREDICTOR_ID"):
        return "PREDICTOR_ID (Seldon's operator sets it; outside Seldon set it to the predictor name)" + rest
    if head == "PROMETHEUS_MULTIPROC_DIR":
        return head + rest
    return _OWN_NAMES.get(head, f"{PREFIX}{head.upper()}") + rest
