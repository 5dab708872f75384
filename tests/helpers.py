"""Builders for test inputs: small valid specs written into a temporary repository."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import yaml

from generator.spec import naming

REPO = Path(__file__).resolve().parents[1]


def digest(seed: str) -> str:
    """A stable fake sha256 hex digest."""
    return hashlib.sha256(seed.encode()).hexdigest()


def release(version: int, digest_pinned: bool = True) -> dict:
    """A valid release block for model version ``version``; ``digest_pinned``: images by digest and the
    artifact by ``artifact_sha256`` (what staging and prod require), else image tags and no artifact digest."""
    suffix = f"@sha256:{digest('img')}" if digest_pinned else ":1.0.0"
    pinned_artifact = {"artifact_sha256": digest(f"model{version}")} if digest_pinned else {}
    return {
        "registry": {"name": "churn", "version": version},
        "artifact_uri": f"s3://mlflow-artifacts/3/run{version}/artifacts/model",
        **pinned_artifact,
        "server_image": f"ghcr.io/acme/model-server{suffix}",
        "drift_image": f"ghcr.io/acme/drift-detector{suffix}",
        "detector": {"uri": f"s3://mlflow-artifacts/3/run{version}/artifacts/drift/detector.npz",
                     "sha256": digest(f"detector{version}")},
    }


def environment(name: str, **overrides) -> dict:
    """A valid environment.yaml document for environment ``name``."""
    doc = {
        "name": name,
        "namespaces": {"models": f"models-{name}"},
        "argocd": {"project": f"models-{name}", "repo_url": "https://git.example.com/acme/gitops.git",
                   "sync": {"automated": name != "prod"}},
        "kafka": {"bootstrap_servers": "mlops-kafka-bootstrap.kafka.svc:9093", "cluster": "mlops"},
        "mlflow": {"tracking_uri": "http://mlflow.mlflow.svc:5000"},
        "s3": {"endpoint": "http://s3.storage.svc:8333", "credentials_secret": "s3-credentials"},
        "images": {"registry": "ghcr.io/acme", "require_digest": name in ("staging", "prod")},
    }
    doc.update(overrides)
    return doc


def model_spec(name: str = "churn", **overrides) -> dict:
    """A valid release spec; ``overrides`` replace top-level keys."""
    doc = {
        "model": name,
        "owner": "team-growth",
        "release": release(1),
        "drift": {"method": "tabular", "features": [
            {"name": "tenure", "type": "numeric"},
            {"name": "plan", "type": "categorical", "categories": ["basic", "pro"]},
        ]},
    }
    doc.update(overrides)
    return doc


def sealed_secret(name: str, namespace: str) -> dict:
    """A SealedSecret document (placeholder ciphertext) that provides Secret ``namespace/name``."""
    return {"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"encryptedData": {"KEY": "AgPLACEHOLDER"},
                     "template": {"metadata": {"name": name, "namespace": namespace}}}}


def write_yaml(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


SEALED_KAFKA_MODELS = ("churn", "fraud-detector", "upsell", "attrition", "other")
"""Models whose Kafka credentials :func:`make_repo` seals in every environment up front, as an operator
seals them before a model's first render (README, "Kafka"): the names the tests create models under."""


def make_repo(root: Path, envs: dict[str, dict] | None = None, models: dict[str, dict[str, dict]] | None = None) -> Path:
    """A repository in ``root`` with this checkout's templates and schemas and the given specs.

    ``envs`` maps environment name to environment.yaml content (default: dev, staging, prod);
    ``models`` maps environment name to {model name: spec}.
    """
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "schemas", root / "schemas")
    (root / "apps").mkdir()
    envs = envs if envs is not None else {e: environment(e) for e in ("dev", "staging", "prod")}
    for env, doc in envs.items():
        write_yaml(root / "environments" / env / "environment.yaml", doc)
        (root / "environments" / env / "models").mkdir(parents=True, exist_ok=True)
        for secret in ("s3-credentials", "s3-credentials-drift-detector"):  # model servers', drift detectors'
            write_yaml(root / "environments" / env / "secrets" / f"{doc['namespaces']['models']}-{secret}.yaml",
                       sealed_secret(secret, doc["namespaces"]["models"]))
        for name in SEALED_KAFKA_MODELS:
            seal_kafka_credentials(root, doc, name)
    for env, specs in (models or {}).items():
        for name, spec in specs.items():
            write_yaml(root / "environments" / env / "models" / f"{name}.yaml", spec)
            seal_kafka_credentials(root, envs[env], name)
    return root


def kafka_secrets(env: dict, model: str) -> list[tuple[str, str]]:
    """(namespace, name) of every Secret ``model``'s Kafka identities need in environment ``env`` (none on
    PLAINTEXT): each KafkaUser's password in the Kafka namespace and in the model namespace, and the cluster
    CA in the model namespace."""
    if env.get("kafka", {}).get("security_protocol", "SASL_SSL") != "SASL_SSL":
        return []
    models_ns = env["namespaces"]["models"]
    kafka_ns = env["namespaces"].get("kafka", "kafka")
    names = naming.model_names(model, env["name"])
    out = [(models_ns, naming.KAFKA_CA_SECRET)]
    for user in (names.kafka_user_model_server, names.kafka_user_drift_detector):
        out += [(kafka_ns, naming.kafka_password_secret(user)), (models_ns, naming.kafka_password_secret(user))]
    return out


def seal_kafka_credentials(root: Path, env: dict, model: str) -> None:
    """Commit placeholder SealedSecrets for ``model``'s Kafka credentials in ``env`` (what an operator seals
    before the model's first render, README "Kafka")."""
    for namespace, name in kafka_secrets(env, model):
        write_yaml(root / "environments" / env["name"] / "secrets" / f"{namespace}-{name}.yaml",
                   sealed_secret(name, namespace))


def copy_example_repo(root: Path) -> Path:
    """A copy of this checkout's specs, templates, schemas, components, vendored charts and committed rendered output."""
    for folder in ("environments", "templates", "schemas", "apps", "bootstrap", "vendor"):
        shutil.copytree(REPO / folder, root / folder)
    # The retrain-pipeline component renders from the committed prefect.yaml (generator/render/retrain_pipeline.py).
    (root / "components" / "retrain").mkdir(parents=True)
    shutil.copy2(REPO / "components" / "retrain" / "prefect.yaml", root / "components" / "retrain" / "prefect.yaml")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, to prove a failed command wrote nothing."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
