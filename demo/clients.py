"""Small HTTP clients the demo checks each stage with: Prefect's REST API, Prometheus, Alertmanager, a
model server. Standard library only; every call has a timeout and raises on an HTTP error."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(url: str, payload: Any = None, *, method: str | None = None, auth: str | None = None,
         timeout: float = 30) -> Any:
    """One JSON request; ``auth`` is ``user:password`` for basic authentication."""
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers=headers)
    with _DIRECT.open(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


class Prefect:
    """The Prefect server's REST API (the part the demo needs)."""

    def __init__(self, api_url: str, auth: str) -> None:
        self.api, self.auth = api_url.rstrip("/"), auth

    def _call(self, path: str, payload: Any = None, method: str | None = None) -> Any:
        return call(f"{self.api}{path}", payload, method=method, auth=self.auth)

    def deployment(self, name: str) -> dict[str, Any] | None:
        """``flow/deployment`` or None when it does not exist (yet)."""
        try:
            return self._call(f"/deployments/name/{name}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def run_deployment(self, name: str, parameters: dict[str, Any]) -> str:
        deployment = self.deployment(name)
        if deployment is None:
            raise LookupError(f"Prefect has no deployment {name}")
        return self._call(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})["id"]

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return self._call(f"/flow_runs/{run_id}")

    def flow_runs(self, deployment: str) -> list[dict[str, Any]]:
        """Flow runs of one deployment, oldest first."""
        found = self.deployment(deployment)
        if found is None:
            return []
        body = {"deployments": {"id": {"any_": [found["id"]]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 50}
        return self._call("/flow_runs/filter", body)


def prometheus_query(base: str, expression: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    answer = call(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expression})}")
    return answer["data"]["result"]


def prometheus_value(base: str, expression: str) -> float | None:
    """The first sample's value of an instant query, or None when the vector is empty."""
    result = prometheus_query(base, expression)
    return float(result[0]["value"][1]) if result else None


def firing_alerts(alertmanager: str, name: str | None = None) -> list[dict[str, Any]]:
    """Active alerts in Alertmanager (optionally only ``alertname=name``)."""
    alerts = call(f"{alertmanager}/api/v2/alerts?active=true&silenced=false&inhibited=false")
    return [a for a in alerts if name is None or a["labels"].get("alertname") == name]


def predict(url: str, names: list[str], rows: list[list[Any]], timeout: float = 30) -> list[Any]:
    """A Seldon protocol prediction: ``rows`` with feature ``names``; returns the predictions."""
    answer = call(f"{url}/api/v1.0/predictions", {"data": {"names": names, "ndarray": rows}}, timeout=timeout)
    data = answer["data"]
    return data["ndarray"] if "ndarray" in data else data["tensor"]["values"]


def mlflow_versions(tracking_uri: str, model: str) -> list[dict[str, Any]]:
    """Every registered version of ``model`` with its run's metrics, decision tags and dataset inputs."""
    query = urllib.parse.urlencode({"filter": f"name='{model}'", "max_results": 100})
    versions = call(f"{tracking_uri}/api/2.0/mlflow/model-versions/search?{query}").get("model_versions", [])
    found = []
    for version in sorted(versions, key=lambda v: int(v["version"])):
        run = call(f"{tracking_uri}/api/2.0/mlflow/runs/get?run_id={version['run_id']}")["run"]
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        found.append({
            "version": int(version["version"]),
            "version_tags": {t["key"]: t["value"] for t in version.get("tags", [])},
            "metrics": {m["key"]: round(m["value"], 4) for m in run["data"].get("metrics", [])
                        if m["key"].startswith(("holdout", "candidate", "live", "test"))},
            "decision": tags.get("mlops.decision"), "reason": tags.get("mlops.decision_reason"),
            "datasets": [d["dataset"].get("name") + "@" + d["dataset"].get("digest", "")
                         for d in (run.get("inputs") or {}).get("dataset_inputs", [])],
        })
    return found
