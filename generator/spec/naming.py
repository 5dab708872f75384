"""Names and labels derived from a model and its environment, computed in one place.

Templates never build names themselves: everything they print comes from :func:`model_names` so that
alert rules, selectors, NetworkPolicies and the drift detector agree on every name.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from generator import __version__
from generator.spec.layout import MANAGED_BY, PART_OF

LABEL_PREFIX = "mlops-gitops.io"
RELEASE_ID_LABEL = f"{LABEL_PREFIX}/release-id"
"""Label on a model's rendered Application: the release id Argo CD syncs (``mlops status``, ``promote``)."""
GRAFANA_UID_MAX = 40
RUN_AS_UID = 10001
"""The uid and gid of the platform's own images (components/*/Dockerfile: useradd, USER) and of every pod
that runs them. At least 10000 (``mlops validate`` checks it): above the host's ordinary user range, so a
process escaping its container lands on no host account."""
MIN_RUN_AS_UID = 10000
DRIFT_S3_SECRET = "s3-credentials-drift-detector"
"""The drift detectors' own S3 identity (read-only) in the model namespace: key ``credentials``, an AWS shared
credentials file (``[default]`` with ``aws_access_key_id`` and ``aws_secret_access_key``) boto3 reads."""
DRIFT_S3_DIR = "/var/run/secrets/s3"
DRIFT_S3_FILE = "credentials"

KAFKA_TLS_PORT = 9093
"""Strimzi's ``tls`` listener: TLS with SCRAM-SHA-512 client authentication (``kafka.security_protocol: SASL_SSL``)."""
KAFKA_PLAIN_PORT = 9092
"""The ``plain`` listener, rendered only where ``kafka.security_protocol`` is ``PLAINTEXT`` (a local broker)."""
KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
KAFKA_CA_SECRET = "kafka-cluster-ca"
"""In the model namespace: key ``ca.crt``, a copy of Strimzi's ``<cluster>-cluster-ca-cert`` (public, but a
Secret so that it mounts next to the password)."""
KAFKA_CA_KEY = "ca.crt"
KAFKA_PASSWORD_KEY = "password"
KAFKA_CREDENTIALS_DIR = "/var/run/secrets/kafka"
"""Where a model server or drift detector finds ``password`` and ``ca.crt`` (one projected Secret volume)."""


def kafka_password_secret(user: str) -> str:
    """The Secret holding ``user``'s SCRAM password (key ``password``): the same name in the Kafka namespace,
    where the KafkaUser reads it, and in the model namespace, where the pod mounts it. Not ``user`` itself:
    Strimzi's User Operator writes a Secret of that name in the Kafka namespace."""
    return f"{user}-scram"

# Metrics the rendered alerts and dashboards query. The drift detector exports the mlops_drift_* series
# (labels model, version, predictor, feature); Seldon's executor exports the request histograms.
METRICS = {
    "drift_detected": "mlops_drift_detected",
    "drift_windows_evaluated": "mlops_drift_windows_evaluated_total",
    "drift_windows_drifted": "mlops_drift_windows_drifted_total",
    "drift_p_value": "mlops_drift_p_value",
    "drift_feature_p_value": "mlops_drift_feature_p_value",
    "drift_records_consumed": "mlops_drift_records_consumed_total",
    "drift_records_rejected": "mlops_drift_records_rejected_total",
    "drift_consumer_lag": "mlops_drift_consumer_lag",
    "drift_ready": "mlops_drift_ready",
    "requests_count": "seldon_api_executor_server_requests_seconds_count",
    "requests_bucket": "seldon_api_executor_server_requests_seconds_bucket",
}

MODEL_SERVER_HTTP_PORT = 9000
MODEL_SERVER_METRICS_PORT = 6000
"""Seldon's wrapper metrics (scraped by the platform's seldon PodMonitor at /prometheus)."""
MODEL_SERVER_APP_METRICS_PORT = 6001
"""Our model server's own metrics (inference logging, predictions), prometheus-client multiprocess."""
EXECUTOR_HTTP_PORT = 8000
DRIFT_HTTP_PORT = 8080


@dataclass(frozen=True)
class ModelNames:
    """Every Kubernetes, Kafka and Grafana name one model gets in one environment."""

    seldon_deployment: str
    drift_detector: str
    drift_config: str
    topic: str
    dead_letter_topic: str
    state_topic: str
    consumer_group: str
    application: str
    alerts_configmap: str
    alerts_file: str
    dashboard_configmap: str
    dashboard_file: str
    dashboard_uid: str
    alert_group: str
    network_policy_model: str
    network_policy_drift: str
    alias_job: str
    network_policy_alias: str
    kafka_user_model_server: str
    """KafkaUser (and SCRAM user name) of the model's servers: writes its inference log only."""
    kafka_user_drift_detector: str
    """KafkaUser of the model's drift detector: reads the log as its group, writes dead letters and state."""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def model_names(model: str, env: str) -> ModelNames:
    """Derive all names of ``model`` in ``env``; model names are at most 40 characters (see spec)."""
    topic = f"{model}-{env}-inference-log"
    return ModelNames(
        seldon_deployment=model,
        drift_detector=f"{model}-drift",
        drift_config=f"{model}-drift-config",
        topic=topic,
        dead_letter_topic=f"{topic}-dlq",
        state_topic=f"{model}-{env}-drift-state",
        consumer_group=f"{model}-{env}-drift-detector",
        application=f"model-{model}-{env}",
        alerts_configmap=f"{model}-{env}-grafana-alerts",
        alerts_file=f"mlops-{env}-{model}-alerts.yaml",
        dashboard_configmap=f"{model}-{env}-grafana-dashboard",
        dashboard_file=f"mlops-{env}-{model}-dashboard.json",
        dashboard_uid=grafana_uid(model, env, "dash"),
        alert_group=f"{model}-{env}",
        network_policy_model=f"{model}-model-server",
        network_policy_drift=f"{model}-drift",
        alias_job=f"{model}-mlflow-alias",
        network_policy_alias=f"{model}-mlflow-alias",
        kafka_user_model_server=f"{model}-{env}-model-server",
        kafka_user_drift_detector=f"{model}-{env}-drift-detector",
    )


def grafana_uid(model: str, env: str, suffix: str) -> str:
    """A Grafana uid (at most 40 of ``[a-zA-Z0-9_-]``), readable when it fits, hashed when not."""
    uid = f"{model}-{env}-{suffix}"
    if len(uid) <= GRAFANA_UID_MAX:
        return uid
    digest = hashlib.sha256(f"{model}/{env}".encode()).hexdigest()[:8]
    keep = GRAFANA_UID_MAX - len(digest) - len(suffix) - 2
    return f"{model[:keep].rstrip('-')}-{digest}-{suffix}"


def common_labels(model: str, env: str, component: str) -> dict[str, str]:
    """Labels every rendered object of a model carries (selectors use a subset of them)."""
    return {
        "app.kubernetes.io/name": model,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        f"{LABEL_PREFIX}/model": model,
        f"{LABEL_PREFIX}/environment": env,
    }


def selector_labels(model: str, component: str) -> dict[str, str]:
    """The stable subset of labels used in selectors (never includes versions, which change)."""
    return {f"{LABEL_PREFIX}/model": model, "app.kubernetes.io/component": component}


@dataclass(frozen=True)
class Endpoint:
    """Where a service URL points, for NetworkPolicy egress rules."""

    namespace: str | None
    port: int


def endpoint_of(url: str) -> Endpoint:
    """Split ``http://svc.ns.svc:port`` into namespace and port; external hosts have no namespace."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    labels = (parts.hostname or "").split(".")
    in_cluster = len(labels) >= 3 and labels[2] == "svc"
    return Endpoint(labels[1] if in_cluster else None, port)


def generator_version() -> str:
    return __version__
