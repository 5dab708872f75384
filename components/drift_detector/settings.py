"""Configuration of the drift detector service.

Two sources, both rendered by ``mlops render`` (see ``drift-detector-deployment.yaml`` and
``drift-detector-configmap.yaml``):

* environment variables with the prefix ``DRIFT_`` (:class:`Settings`): where to consume, where to
  send rejected records, the HTTP port, the S3 endpoint, and tuning knobs with safe defaults;
* the YAML file named by ``DRIFT_CONFIG_FILE`` (:class:`DriftConfig`): the detection method, its
  thresholds, the feature schema and the persisted detector artifact of every predictor.

Nothing here touches the network; :func:`Settings.load_config` only reads the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from service_kit.kafka import KafkaClientSettings
from service_kit.settings import ConfigError, ServiceSettings, problems

CategoryValue = str | int | float | bool


class FeatureConfig(BaseModel):
    """One model input, in the order the model server logs them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    type: Literal["numeric", "categorical"]
    categories: list[CategoryValue] | None = None

    @model_validator(mode="after")
    def _categories_match_type(self) -> FeatureConfig:
        if self.type == "categorical" and not self.categories:
            raise ValueError(f"categorical feature {self.name!r} needs a non-empty list of categories")
        if self.type == "numeric" and self.categories:
            raise ValueError(f"numeric feature {self.name!r} must not list categories")
        if self.categories is not None and len({repr(c) for c in self.categories}) != len(self.categories):
            raise ValueError(f"feature {self.name!r} lists a category twice")
        return self


class DetectorRef(BaseModel):
    """Where a fitted detector artifact lives and the sha256 it must have."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class PredictorConfig(BaseModel):
    """One predictor of the SeldonDeployment (``main`` or a candidate) and its detector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    release_id: str = ""
    detector: DetectorRef

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class DriftConfig(BaseModel):
    """The detector config file (``config.yaml`` in the rendered ConfigMap)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    method: Literal["ks", "chi2", "tabular", "cvm_online"]
    p_value: float = Field(gt=0, lt=1)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    window: int = Field(ge=2)
    ert: int | None = Field(default=None, ge=1)
    features: list[FeatureConfig] = Field(min_length=1)
    predictors: list[PredictorConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> DriftConfig:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        keys = [(p.version, p.name) for p in self.predictors]
        if len(set(keys)) != len(keys):
            raise ValueError("each (version, predictor) pair may appear once")
        return self

    @classmethod
    def from_file(cls, path: Path) -> DriftConfig:
        """Read and validate ``path``; any problem becomes a :class:`ConfigError` naming the file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the drift config file ({exc.strerror or exc})") from exc
        return cls.from_yaml(text, source=str(path))

    @classmethod
    def from_yaml(cls, text: str, source: str = "<config>") -> DriftConfig:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the drift config must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: invalid drift config:\n{_describe(exc)}") from exc


class Settings(ServiceSettings, KafkaClientSettings):
    """Environment of the service: every ``DRIFT_*`` variable the rendered Deployment sets, plus tuning.

    Kafka authentication (``DRIFT_KAFKA_SECURITY_PROTOCOL``, ``_SASL_MECHANISM``, ``_USERNAME``,
    ``_PASSWORD_FILE``, ``_CA_FILE``) comes from :class:`service_kit.kafka.KafkaClientSettings`.
    Credentials for S3 are not settings: boto3 reads them itself (``AWS_SHARED_CREDENTIALS_FILE`` in the
    rendered Deployment) with ``AWS_DEFAULT_REGION``.
    """

    model_config = SettingsConfigDict(env_prefix="DRIFT_", extra="ignore", frozen=True)

    # Rendered by mlops render (drift-detector-deployment.yaml).
    model: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    kafka_bootstrap_servers: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    dead_letter_topic: str = Field(min_length=1)
    group_id: str = Field(min_length=1)
    state_topic: str = ""
    """Compacted topic keeping each predictor's last window verdict, restored at start (``state.py``);
    empty: not kept, and a restart shows no drift until the next window."""
    config_file: Path
    http_port: int = Field(default=8080, ge=1, le=65535)
    s3_endpoint_url: str | None = None

    # Tuning (safe defaults; not rendered).
    http_host: str = "0.0.0.0"
    client_id: str = "drift-detector"
    artifact_dir: Path = Path("/tmp/drift-detectors")
    """Where downloaded detector artifacts are kept (the rendered pod mounts an emptyDir on /tmp)."""
    batch_max_records: int = Field(default=10_000, ge=1)
    """Most records one ``getmany`` call returns."""
    poll_timeout_ms: int = Field(default=500, ge=1)
    commit_interval_seconds: float = Field(default=1.0, ge=0)
    """Least time between two offset commits (0: after every batch that moved an offset)."""
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=10.0, gt=0)
    session_timeout_seconds: float = Field(default=10.0, ge=1)
    """Consumer-group session: a member that stops heart-beating this long is replaced."""
    heartbeat_interval_seconds: float = Field(default=3.0, gt=0)
    broker_check_interval_seconds: float = Field(default=2.0, gt=0)
    """How often the broker is probed; readiness goes false while it does not answer."""
    broker_timeout_seconds: float = Field(default=5.0, gt=0)
    state_restore_timeout_seconds: float = Field(default=30.0, gt=0)
    """Longest read of the state topic at start; past it nothing is restored (a partial read could show
    an older verdict than the one a previous instance kept)."""
    shutdown_timeout_seconds: float = Field(default=8.0, gt=0)
    """SIGTERM to exit; below the Deployment's grace period and the 10 s the service promises."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    log_level: str = "INFO"

    @field_validator("s3_endpoint_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def load_config(self) -> DriftConfig:
        """The config file, checked against these settings (same model and environment)."""
        config = DriftConfig.from_file(self.config_file)
        if config.model != self.model:
            raise ConfigError(f"{self.config_file}: model {config.model!r} does not match "
                              f"DRIFT_MODEL={self.model!r}")
        if config.environment != self.environment:
            raise ConfigError(f"{self.config_file}: environment {config.environment!r} does not match "
                              f"DRIFT_ENVIRONMENT={self.environment!r}")
        return config


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The ``DRIFT_*`` settings from ``environ`` (default: the process environment); errors become a
    :class:`ConfigError` naming every bad variable."""
    try:
        return Settings.load(environ)
    except ValidationError as exc:
        raise ConfigError(f"invalid DRIFT_* environment:\n{_describe(exc, prefix='DRIFT_')}") from exc


def _describe(exc: ValidationError, prefix: str = "") -> str:
    def variable(loc: tuple) -> str:
        where = ".".join(str(part) for part in loc) or "<root>"
        return prefix + where.upper() if prefix else where

    return "\n".join(f"  {line}" for line in problems(exc, variable))
