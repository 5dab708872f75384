"""The Prefect server REST calls the trigger needs, over one ``httpx.AsyncClient``.

Plain REST instead of the ``prefect`` client: the trigger imports in a fraction of a second and its
process stays small, and the create call's status code says whether the run is new (201) or an
existing run with the same idempotency key (200), which is exactly the de-duplication answer.
Endpoints (Prefect 3 server API): ``GET /health``, ``GET /deployments/name/{flow}/{deployment}``,
``POST /flow_runs/count``, ``POST /flow_runs/filter``, ``POST /deployments/{id}/create_flow_run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

ENDED_WITHOUT_SUCCESS = ("FAILED", "CRASHED", "CANCELLED")
"""Final state types of a run that did not complete."""
PAGE_SIZE = 200
"""Runs per ``/flow_runs/filter`` call (the server's default limit)."""


class PrefectUnavailable(RuntimeError):
    """The Prefect API could not be reached or answered with an error; the sender should retry."""


@dataclass(frozen=True)
class FlowRun:
    """A flow run the trigger asked for: its id and name, and whether this call created it."""

    id: str
    name: str
    created: bool


class PrefectAPI:
    """A client of one Prefect server API (``.../api``)."""

    def __init__(self, api_url: str, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None,
                 auth_string: str | None = None) -> None:
        """``auth_string``: ``user:password`` of the server's basic auth (as Prefect's own clients send it)."""
        self.api_url = api_url.rstrip("/")
        user, _, password = (auth_string or "").partition(":")
        self._client = httpx.AsyncClient(base_url=self.api_url, timeout=timeout, transport=transport,
                                         auth=httpx.BasicAuth(user, password) if auth_string else None,
                                         headers={"Accept": "application/json"}, trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def healthy(self) -> bool:
        """Whether the API answers its health check."""
        try:
            response = await self._client.get("/health")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def deployment_id(self, name: str) -> str | None:
        """The id of deployment ``<flow>/<deployment>``, or ``None`` when the server has no such deployment."""
        flow, _, deployment = name.partition("/")
        response = await self._call("GET", f"/deployments/name/{quote(flow, safe='')}/{quote(deployment, safe='')}")
        if response.status_code == 404:
            return None
        return self._json(response, 200)["id"]

    async def count_runs(self, deployment_id: str, tag: str, since: datetime) -> int:
        """Flow runs of the deployment carrying ``tag`` expected to start at or after ``since``."""
        body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}, "tags": {"all_": [tag]},
                              "expected_start_time": {"after_": since.isoformat()}}}
        return int(self._json(await self._call("POST", "/flow_runs/count", json=body), 200))

    async def ended_runs_without(self, deployment_id: str, tag: str, since: datetime, marker: str) -> int:
        """Of the runs :meth:`count_runs` counts, those that ended Failed, Crashed or Cancelled without the
        tag ``marker``. Prefect's filters cannot say "lacks a tag", so the ended runs are listed (few:
        at most the day's runs) and their tags read here."""
        ended = 0
        offset = 0
        while True:
            body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}, "tags": {"all_": [tag]},
                                  "expected_start_time": {"after_": since.isoformat()},
                                  "state": {"type": {"any_": list(ENDED_WITHOUT_SUCCESS)}}},
                    "limit": PAGE_SIZE, "offset": offset}
            page = self._json(await self._call("POST", "/flow_runs/filter", json=body), 200)
            ended += sum(1 for run in page if marker not in (run.get("tags") or []))
            if len(page) < PAGE_SIZE:
                return ended
            offset += PAGE_SIZE

    async def create_flow_run(self, deployment_id: str, parameters: dict[str, Any], tags: list[str],
                              idempotency_key: str) -> FlowRun:
        """Schedule a run of the deployment now; an earlier run with the same key is returned instead."""
        body = {"parameters": parameters, "tags": tags, "idempotency_key": idempotency_key}
        response = await self._call("POST", f"/deployments/{deployment_id}/create_flow_run", json=body)
        run = self._json(response, 200, 201)
        return FlowRun(str(run["id"]), str(run.get("name", "")), created=response.status_code == 201)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PrefectUnavailable(f"{method} {self.api_url}{path}: {type(exc).__name__}: {exc}") from exc

    def _json(self, response: httpx.Response, *expected: int) -> Any:
        if response.status_code not in expected:
            raise PrefectUnavailable(f"{response.request.method} {response.request.url}: HTTP "
                                     f"{response.status_code}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError as exc:
            raise PrefectUnavailable(f"{response.request.url}: answer is not JSON") from exc
