"""The two input specs, as strict pydantic models: ``environment.yaml`` and ``models/<model>.yaml``.

Shape and types are checked by pydantic (``extra="forbid"`` everywhere); rules that span fields or
files (traffic sums, shadows, digests, derived name lengths) live in :mod:`generator.spec.rules` so each
problem can name its exact field. Loading never stops at the first problem: :mod:`generator.spec.loader`
collects them all with file, line, field and fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

DNS1123_LABEL_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SHA256_HEX_RE = r"^[0-9a-f]{64}$"
# OCI reference: registry/repository, optional :tag, optional @sha256:digest.
IMAGE_RE = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
DIGEST_SUFFIX_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
# Kubernetes resource quantity, e.g. 500m, 1, 1.5, 256Mi, 2Gi.
QUANTITY_RE = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
# Prometheus/Grafana duration: 30s, 10m, 1h30m. Grafana parses rule `for` with the same grammar.
DURATION_RE = r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
ARTIFACT_SCHEMES = ("s3://", "gs://", "gcs://", "pvc://", "azureblob://", "https://")

MODEL_NAME_MAX = 40
"""Model names stay short enough that every name derived from them fits Kubernetes' 63-character limit."""

PREDICTOR_NAME_MAX = 20
ENV_NAME_MAX = 20

Name = Annotated[str, StringConstraints(pattern=DNS1123_LABEL_RE, max_length=63)]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_HEX_RE)]
Image = Annotated[str, StringConstraints(pattern=IMAGE_RE)]
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_RE)]
Duration = Annotated[str, StringConstraints(pattern=DURATION_RE, min_length=2)]
Percent = Annotated[int, Field(ge=0, le=100)]


class Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------------
# Release: the immutable block promotion copies between environments.


class RegistryRef(Strict):
    """The MLflow registered model and version this release serves."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    version: Annotated[int, Field(ge=1)]


class DetectorArtifact(Strict):
    """The fitted, persisted drift detector and the sha256 the drift service checks at start."""

    uri: Annotated[str, StringConstraints(min_length=6)]
    sha256: Sha256


class Release(Strict):
    """Everything that identifies what runs: model artifact, images and drift detector."""

    registry: RegistryRef
    artifact_uri: Annotated[str, StringConstraints(min_length=6)]
    artifact_sha256: Sha256 | None = None
    """Manifest hash of the MLflow model directory at ``artifact_uri`` (components/service_kit/
    artifact_digest.py defines it); the model server refuses to load another. Required where
    :func:`requires_digest` holds."""
    server_image: Image
    drift_image: Image
    detector: DetectorArtifact

    @cached_property
    def release_id(self) -> str:
        """A short content hash: equal releases have equal ids in every environment."""
        # exclude_none: a release without the optional artifact digest keeps the id it had before the field.
        canonical = json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class Candidate(Strict):
    """A second predictor next to ``main``: a canary, an A/B variant or a shadow."""

    name: Name = "candidate"
    traffic: Percent = 0
    shadow: bool = False
    release: Release


Strategy = Literal["replace", "canary", "shadow", "ab"]


class Rollout(Strict):
    """How the release (predictor ``main``) shares traffic with candidates."""

    strategy: Strategy = "replace"
    main_traffic: Percent | None = None
    candidates: list[Candidate] = []

    @property
    def effective_main_traffic(self) -> int:
        """Main's share: as written, or what the live candidates leave."""
        if self.main_traffic is not None:
            return self.main_traffic
        return 100 - sum(c.traffic for c in self.candidates if not c.shadow)


# --------------------------------------------------------------------------------------------------
# Settings with environment-wide defaults (a model spec overrides any subset).


class ResourceAmounts(Strict):
    cpu: Quantity
    memory: Quantity


class Resources(Strict):
    requests: ResourceAmounts
    limits: ResourceAmounts


class Replicas(Strict):
    min: Annotated[int, Field(ge=1, le=1000)]
    max: Annotated[int, Field(ge=1, le=1000)]


class Serving(Strict):
    """Serving capacity: autoscaling bounds and per-pod resources."""

    replicas: Replicas = Replicas(min=1, max=3)
    cpu_target_percent: Annotated[int, Field(ge=10, le=100)] = 70
    workers: Annotated[int, Field(ge=1, le=32)] = 1
    resources: Resources = Resources(
        requests=ResourceAmounts(cpu="250m", memory="512Mi"),
        limits=ResourceAmounts(cpu="1", memory="1Gi"),
    )


DriftMethod = Literal["ks", "chi2", "tabular", "cvm_online"]


class DriftSettings(Strict):
    """Detector settings an environment may default; features are per model."""

    method: DriftMethod = "tabular"
    p_value: Annotated[float, Field(gt=0, lt=1)] = 0.01
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    window: Annotated[int, Field(ge=10, le=1_000_000)] = 1000
    ert: Annotated[int, Field(ge=10)] = 10000
    """Expected run time between false alarms in records, online methods only (alibi-detect ``ert``)."""
    resources: Resources = Resources(
        requests=ResourceAmounts(cpu="100m", memory="256Mi"),
        limits=ResourceAmounts(cpu="500m", memory="512Mi"),
    )


class Feature(Strict):
    """One model input: its name and whether drift treats it as numeric or categorical."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")]
    type: Literal["numeric", "categorical"] = "numeric"
    categories: list[str | int] | None = None


class Drift(DriftSettings):
    """Drift detection for one model: settings plus the model's feature contract."""

    features: Annotated[list[Feature], Field(min_length=1)]


class Alerts(Strict):
    """Thresholds of the five rendered Grafana alert rules."""

    interval: Duration = "1m"
    drift_for: Duration = "10m"
    """The period the drift rule looks back over: it counts the windows evaluated and drifted in it."""
    drift_min_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Share of the windows evaluated in ``drift_for`` that must have drifted. A half needs the majority
    of the evidence, which one false-positive window (1.5 % of clean windows with ks, about 10 % with
    cvm_online) cannot provide once ``drift_min_windows`` holds."""
    drift_min_windows: Annotated[int, Field(ge=1)] = 3
    """Windows that must have been evaluated in ``drift_for``. Three with a half means two drifted
    windows of three: about 7e-4 of clean three-window periods with ks and 3 % with cvm_online, while
    real drift (nearly every window drifted) needs only three windows to alert."""
    error_rate: Annotated[float, Field(gt=0, lt=1)] = 0.02
    error_rate_for: Duration = "5m"
    latency_p95_ms: Annotated[int, Field(ge=1)] = 250
    latency_for: Duration = "10m"
    no_traffic_for: Duration = "30m"
    detector_down_for: Duration = "10m"
    """How long the drift detector may be down or not ready (drift unwatched) before it alerts."""
    severity: Literal["info", "warning", "critical"] = "warning"


class Retrain(Strict):
    """When drift may start a retrain, and how its candidate is proposed."""

    on_drift: bool = True
    max_runs_per_day: Annotated[int, Field(ge=0, le=24)] = 2
    propose_as: Literal["canary", "shadow"] = "canary"
    canary_traffic: Annotated[int, Field(ge=1, le=50)] = 10
    metric: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")] = "roc_auc"
    min_improvement: Annotated[float, Field(ge=0)] = 0.0


# --------------------------------------------------------------------------------------------------
# The two files.


class ModelSpec(Strict):
    """``environments/<env>/models/<model>.yaml`` after environment defaults are applied."""

    model: Name
    owner: Name
    description: str = ""
    release: Release
    rollout: Rollout = Rollout()
    serving: Serving
    drift: Drift
    alerts: Alerts
    retrain: Retrain

    def predictors(self) -> list[tuple[str, Release, int, bool]]:
        """Every predictor as ``(name, release, traffic, shadow)``, ``main`` first."""
        main = ("main", self.release, self.rollout.effective_main_traffic, False)
        return [main] + [(c.name, c.release, c.traffic, c.shadow) for c in self.rollout.candidates]


class Namespaces(Strict):
    models: Name
    monitoring: Name = "monitoring"
    kafka: Name = "kafka"
    argocd: Name = "argocd"
    ingress: Name = "istio-system"
    """Namespace of the ingress gateway allowed to reach model servers."""


class SyncPolicy(Strict):
    """Argo CD sync policy of the environment's applications."""

    automated: bool
    prune: bool = True
    self_heal: bool = True


class ArgoCD(Strict):
    project: Name
    repo_url: Annotated[str, StringConstraints(min_length=1)]
    target_revision: Annotated[str, StringConstraints(min_length=1)] = "main"
    destination_server: str = "https://kubernetes.default.svc"
    sync: SyncPolicy


class Kafka(Strict):
    bootstrap_servers: Annotated[str, StringConstraints(pattern=r"^[^\s,]+:[0-9]+(,[^\s,]+:[0-9]+)*$")]
    cluster: Name
    security_protocol: Literal["SASL_SSL", "PLAINTEXT"] = "SASL_SSL"
    """``SASL_SSL``: the cluster's only client listener is TLS with SCRAM-SHA-512 (port 9093) and ``simple``
    authorization; each model server and drift detector is its own ``KafkaUser`` with ACLs on its own topics
    and group. ``PLAINTEXT``: no authentication (port 9092), for a local broker only; refused in staging and
    prod (:data:`KAFKA_AUTH_REQUIRED_ENVIRONMENTS`)."""
    partitions: Annotated[int, Field(ge=1, le=1000)] = 3
    replication_factor: Annotated[int, Field(ge=1, le=7)] = 3
    retention_hours: Annotated[int, Field(ge=1)] = 168


class MLflow(Strict):
    tracking_uri: Annotated[str, StringConstraints(pattern=r"^https?://")]


class S3(Strict):
    """Object store of model artifacts and detectors. Credentials are Secret *names*, never values."""

    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://")]
    region: str = "us-east-1"
    credentials_secret: Name
    """Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, delivered by Sealed Secrets."""


class Images(Strict):
    registry: Annotated[str, StringConstraints(min_length=1)]
    require_digest: bool = False


class Grafana(Strict):
    datasource_uid: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,40}$")] = "prometheus"
    folder: Annotated[str, StringConstraints(min_length=1)] = "MLOps"


class Alerting(Strict):
    """Where the models' alert rules are evaluated besides Grafana (the default everywhere)."""

    prometheus_rule: bool = False
    """Also render each model's rules as a ``PrometheusRule`` for Prometheus' ruler and Alertmanager, as
    kube-prometheus-stack users alert; translated from the same Grafana rules, so both say the same."""


class Defaults(Strict):
    serving: Serving = Serving()
    drift: DriftSettings = DriftSettings()
    alerts: Alerts = Alerts()
    retrain: Retrain = Retrain()


class ComponentOverride(Strict):
    """An environment's changes to one platform component of ``apps/<component>/``."""

    enabled: bool | None = None
    """``None`` keeps the component's default (optional components are off unless enabled)."""
    values: dict[str, Any] = {}
    """Helm values merged over ``apps/<component>/values.yaml`` (Helm components only)."""
    settings: dict[str, Any] = {}
    """Overrides of the component's ``settings`` (manifest components only)."""


class ExternalSecretStore(Strict):
    kind: Literal["SecretStore", "ClusterSecretStore"] = "ClusterSecretStore"
    name: Name


class SecretItem(Strict):
    """A Secret the platform needs in this environment, and where its values come from."""

    name: Name
    namespace: Name
    keys: Annotated[list[Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$")]], Field(min_length=1)]
    remote_key: str | None = None
    """external-secrets only: the key in the external store (default ``mlops/<env>/<name>``)."""


class Secrets(Strict):
    """How credentials reach the cluster: never as a plain ``Secret`` in Git."""

    backend: Literal["sealed-secrets", "external-secrets"] = "sealed-secrets"
    store: ExternalSecretStore | None = None
    items: list[SecretItem] = []


class Quota(Strict):
    cpu: Quantity = "16"
    memory: Quantity = "64Gi"
    pods: Annotated[int, Field(ge=1)] = 100


class Tenancy(Strict):
    """Guard rails of the model namespace: quota, default container resources, default-deny traffic."""

    quota: Quota = Quota()
    default_limits: ResourceAmounts = ResourceAmounts(cpu="500m", memory="512Mi")
    default_requests: ResourceAmounts = ResourceAmounts(cpu="100m", memory="128Mi")


class Platform(Strict):
    """The environment's platform: component overrides, secrets backend and tenancy."""

    components: dict[Name, ComponentOverride] = {}
    secrets: Secrets = Secrets()
    tenancy: Tenancy = Tenancy()


class Environment(Strict):
    """``environments/<env>/environment.yaml``: where and how an environment runs its models."""

    name: Annotated[str, StringConstraints(pattern=DNS1123_LABEL_RE, max_length=ENV_NAME_MAX)]
    namespaces: Namespaces
    argocd: ArgoCD
    kafka: Kafka
    mlflow: MLflow
    s3: S3
    images: Images
    grafana: Grafana = Grafana()
    alerting: Alerting = Alerting()
    defaults: Defaults = Defaults()
    platform: Platform = Platform()


DIGEST_REQUIRED_ENVIRONMENTS = frozenset({"staging", "prod"})
KAFKA_AUTH_REQUIRED_ENVIRONMENTS = frozenset({"staging", "prod"})
"""Environments whose Kafka clients must authenticate (``kafka.security_protocol: SASL_SSL``)."""
"""Environments whose images must be pinned by ``@sha256:`` digest, whatever their spec says."""


def is_digest_pinned(image: str) -> bool:
    """True when ``image`` ends in ``@sha256:<64 hex>``, so it cannot change under the same name."""
    return bool(DIGEST_SUFFIX_RE.search(image))


def requires_digest(env_name: str, require_digest: bool = False) -> bool:
    """The digest rule: staging and prod, and any environment that sets ``images.require_digest``, run
    only digest-pinned images (the spec rules, the manifest policies and ``promote`` all ask this)."""
    return require_digest or env_name in DIGEST_REQUIRED_ENVIRONMENTS
