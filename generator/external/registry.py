"""Resolve an MLflow registered model version to the artifact URI Seldon can download.

Seldon cannot read ``models:/`` URIs, and a release must pin the exact artifact, never an alias that
moves. This module talks to MLflow's REST API with the standard library only, so the CLI stays fast
and needs no MLflow install. Credentials come from MLflow's own environment variables.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from generator.spec.errors import RegistryError

TIMEOUT_SECONDS = 15

ARTIFACT_DIGEST_TAG = "mlops.artifact_sha256"
"""Model-version tag holding the artifact digest (``components/service_kit/artifact_digest.py`` defines
it): the retrain flow sets it from the model it logged, ``generate-model`` pins it as
``release.artifact_sha256``."""


class ModelNotFoundError(RegistryError):
    """MLflow has no such registered model (or no such version of it)."""


@dataclass(frozen=True)
class ResolvedVersion:
    """A registered model version and where its files are stored."""

    name: str
    version: int
    artifact_uri: str
    run_id: str | None
    artifact_sha256: str | None = None
    """The digest recorded in the version's :data:`ARTIFACT_DIGEST_TAG`; ``None`` when it has none."""


def resolve_version(tracking_uri: str, name: str, version: int) -> ResolvedVersion:
    """Look up ``name`` version ``version`` and return its concrete artifact location.

    Raises:
        RegistryError: MLflow is unreachable, the version does not exist or is not READY, or its
            location is still a ``models:/`` URI.
    """
    query = {"name": name, "version": str(version)}
    details = _get(tracking_uri, "model-versions/get", query)["model_version"]
    status = details.get("status", "READY")
    if status != "READY":
        raise RegistryError(f"MLflow model {name!r} version {version} is {status}, not READY; wait for the "
                            "registration to finish or pick another version")
    # get-download-uri answers the storage location even when the version's source is a models:/ URI
    # (MLflow 3 logged models), which is exactly what Seldon needs.
    location = _get(tracking_uri, "model-versions/get-download-uri", query)["artifact_uri"]
    if location.startswith("models:/"):
        raise RegistryError(f"MLflow returned {location!r} for {name!r} version {version}, which Seldon cannot "
                            "download; pass the storage URI with --artifact-uri")
    tags = {tag.get("key"): tag.get("value") for tag in details.get("tags") or []}
    return ResolvedVersion(name, version, location, details.get("run_id") or None,
                           tags.get(ARTIFACT_DIGEST_TAG) or None)


def registered_model_aliases(tracking_uri: str, name: str) -> dict[str, int] | None:
    """Every alias of registered model ``name`` and the version it points at; ``None`` if there is no such model.

    Raises:
        RegistryError: MLflow is unreachable or refuses the request.
    """
    try:
        details = _get(tracking_uri, "registered-models/get", {"name": name})["registered_model"]
    except ModelNotFoundError:
        return None
    return {entry["alias"]: int(entry["version"]) for entry in details.get("aliases") or []}


def _get(tracking_uri: str, endpoint: str, query: dict[str, str]) -> dict:
    url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        detail = _error_message(exc)
        if (exc.code == 404 or "RESOURCE_DOES_NOT_EXIST" in detail) and "version" in query:
            raise ModelNotFoundError(f"MLflow at {tracking_uri} has no model {query['name']!r} version "
                                     f"{query['version']}: {detail}; check the name and --registry-version") from None
        if exc.code == 404 or "RESOURCE_DOES_NOT_EXIST" in detail:
            raise ModelNotFoundError(f"MLflow at {tracking_uri} has no registered model {query['name']!r}: "
                                     f"{detail}; check release.registry.name") from None
        raise RegistryError(f"MLflow at {tracking_uri} answered {exc.code} for {endpoint}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(f"cannot reach MLflow at {tracking_uri} ({reason}); pass a reachable --mlflow-uri, "
                            "or work offline with --artifact-uri") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        return exc.reason or ""
    return f"{body.get('error_code', '')} {body.get('message', '')}".strip()


def _auth_headers() -> dict[str, str]:
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}
