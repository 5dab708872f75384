"""The retrain trigger as a real process (``python -m retrain_trigger``) against a real Prefect server.

Every test talks to the trigger the way Grafana and Alertmanager do (webhook JSON over HTTP, bearer
token or HMAC signature) and checks the result where it matters: the flow runs on the Prefect server
(``prefect_server`` fixture, PostgreSQL-backed). Deployments ``retrain/<model>`` are created on the
server through its REST API; nothing executes the runs, they stay scheduled, which is all the trigger
is responsible for. Each test uses its own model names, so the shared server's state cannot leak
between tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from services import ManagedProcess, PrefectServer, free_port, require_module, run_service

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ROOT / "components"

TOKEN = "trigger-test-token-0123456789abcdef"
FLOW = "retrain"
DISABLED = "frozen-model"
ONE_RUN = "single-run-model"
CRASHING = "crashing-model"
"""One run a day, for the test of runs that crash before training."""
POLICY = {"environment": "dev", "default": {"on_drift": True, "max_runs_per_day": 2},
          "models": {DISABLED: {"on_drift": False, "max_runs_per_day": 2},
                     ONE_RUN: {"on_drift": True, "max_runs_per_day": 1},
                     CRASHING: {"on_drift": True, "max_runs_per_day": 1}}}
RENDERED_RULES = ROOT / "environments/dev/rendered/models/fraud-detector/grafana-alerts-configmap.yaml"


@pytest.fixture(autouse=True)
def _service_dependencies() -> None:
    for module, package in (("starlette", "starlette"), ("uvicorn", "uvicorn"), ("httpx", "httpx"),
                            ("pydantic_settings", "pydantic-settings"), ("prometheus_client", "prometheus-client")):
        require_module(module, package)


# --- the Prefect side -----------------------------------------------------------------------------


class PrefectREST:
    """What the tests need from the Prefect server: deployments to target and the runs they got."""

    def __init__(self, api_url: str) -> None:
        self.client = httpx.Client(base_url=api_url, timeout=30, trust_env=False)

    def deployment(self, model: str) -> str:
        """Create (or find) deployment ``retrain/<model>`` and return its id."""
        flow = self.client.post("/flows/", json={"name": FLOW})
        flow.raise_for_status()
        deployment = self.client.post("/deployments/", json={"name": model, "flow_id": flow.json()["id"]})
        deployment.raise_for_status()
        return deployment.json()["id"]

    def end(self, run_id: str, state_type: str, *, trained: bool = False) -> None:
        """End a run as the worker and the flow would: the training tag when it got that far, then the state."""
        from retrain.records import TRAINING_STARTED_TAG

        if trained:
            tags = self.client.get(f"/flow_runs/{run_id}").json()["tags"]
            self.client.patch(f"/flow_runs/{run_id}", json={"tags": [*tags, TRAINING_STARTED_TAG]}).raise_for_status()
        state = {"type": state_type, "name": state_type.title(), "message": "ended by the test"}
        response = self.client.post(f"/flow_runs/{run_id}/set_state", json={"state": state, "force": True})
        response.raise_for_status()
        assert response.json()["status"] == "ACCEPT", response.text

    def runs(self, deployment_id: str) -> list[dict]:
        response = self.client.post("/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def prefect(prefect_server: PrefectServer) -> Iterator[PrefectREST]:
    rest = PrefectREST(prefect_server.api_url)
    yield rest
    rest.client.close()


# --- the trigger process --------------------------------------------------------------------------


@dataclass
class Trigger:
    """A running trigger: where it answers and its process (for logs and signals)."""

    url: str
    process: ManagedProcess

    def post(self, source: str, body: bytes | dict, headers: dict[str, str] | None = None,
             token: str | None = TOKEN) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}),
                **(headers or {})}
        return httpx.post(f"{self.url}/v1/alerts/{source}", content=content, headers=sent, timeout=30,
                          trust_env=False)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10, trust_env=False)


def trigger_env(api_url: str, policy_file: Path, port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RETRAIN_", "PREFECT_"))}
    env.update({"PYTHONPATH": str(COMPONENTS), "RETRAIN_TRIGGER_PREFECT_API_URL": api_url,
                "RETRAIN_TRIGGER_POLICY_FILE": str(policy_file), "RETRAIN_TRIGGER_TOKEN": TOKEN,
                "RETRAIN_TRIGGER_HTTP_HOST": "127.0.0.1", "RETRAIN_TRIGGER_HTTP_PORT": str(port),
                # Plain HTTP on 127.0.0.1, explicitly: these tests are about the webhook's handling; serving it
                # over HTTPS is tests/test_trigger_tls.py's.
                "RETRAIN_TRIGGER_PLAIN_HTTP": "true", **extra})
    return env


@contextlib.contextmanager
def running_trigger(api_url: str, work: Path, **extra: str) -> Iterator[Trigger]:
    work.mkdir(parents=True, exist_ok=True)
    policy_file = work / "policy.json"
    policy_file.write_text(json.dumps(POLICY))
    port = free_port()
    with run_service(f"retrain-trigger-{port}", [sys.executable, "-m", "retrain_trigger"],
                     url=f"http://127.0.0.1:{port}/healthz", env=trigger_env(api_url, policy_file, port, **extra),
                     timeout=60, log_dir=work) as process:
        yield Trigger(f"http://127.0.0.1:{port}", process)


@pytest.fixture(scope="module")
def trigger(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trigger]:
    with running_trigger(prefect_server.api_url, tmp_path_factory.mktemp("retrain-trigger")) as running:
        yield running


# --- payloads -------------------------------------------------------------------------------------


def unique_model() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


def fingerprint() -> str:
    return uuid.uuid4().hex[:16]


def drift_labels(model: str) -> dict[str, str]:
    return {"alertname": f"{model} (dev): data drift detected", "mlops_alert": "drift", "model": model,
            "env": "dev", "team": "team-risk", "severity": "warning", "retrain": "true", "grafana_folder": "MLOps",
            "predictor": "main", "version": "7"}


def grafana_payload(labels: dict[str, str], *, print_: str | None = None, status: str = "firing",
                    starts_at: str = "2026-11-20T10:00:00Z") -> dict:
    """A notification as Grafana's webhook contact point sends it (one alert)."""
    alert = {"status": status, "labels": labels, "annotations": {"summary": f"Drift detected on {labels.get('model')}"},
             "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://grafana/alerting/grafana/x/view", "fingerprint": print_ or fingerprint(),
             "silenceURL": "http://grafana/alerting/silence/new", "dashboardURL": "", "panelURL": "",
             "values": {"B": 1, "C": 1}, "valueString": "[ var='B' labels={} value=1 ]"}
    return {"receiver": "mlops-retrain-trigger", "status": status, "orgId": 1, "alerts": [alert],
            "groupLabels": {"alertname": labels.get("alertname", "")}, "commonLabels": labels,
            "commonAnnotations": alert["annotations"], "externalURL": "http://grafana/", "version": "1",
            "groupKey": "{}/{retrain=\"true\"}:{alertname=\"x\"}", "truncatedAlerts": 0,
            "title": "[FIRING:1] drift", "state": "alerting", "message": "drift"}


def outcomes(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [result["outcome"] for result in response.json()["results"]]


# --- a valid alert, then the same alert again -------------------------------------------------------


def test_a_rendered_drift_alert_starts_exactly_one_run_and_a_repeat_starts_none(trigger, prefect, tmp_path,
                                                                              prefect_server):
    # The labels the rendered fraud-detector drift rule gives its alert instances (see test_alert_rules).
    document = yaml.safe_load(RENDERED_RULES.read_text())
    rules = yaml.safe_load(next(iter(document["data"].values())))
    group = rules["groups"][0]
    (rule,) = [r for r in group["rules"] if r["labels"]["mlops_alert"] == "drift"]
    labels = {**rule["labels"], "alertname": rule["title"], "grafana_folder": group["folder"],
              "predictor": "candidate", "version": "8"}
    model = labels["model"]
    deployment = prefect.deployment(model)
    payload = grafana_payload(labels)

    first = trigger.post("grafana", payload)
    assert outcomes(first) == ["started"]
    runs = [r for r in prefect.runs(deployment) if "retrain-trigger" in r["tags"]]
    assert len(runs) == 1
    (run,) = runs
    assert run["id"] == first.json()["results"][0]["flow_run_id"]
    assert run["parameters"]["model"] == model
    assert rule["title"] in run["parameters"]["reason"] and "predictor=candidate" in run["parameters"]["reason"]
    assert run["state"]["type"] == "SCHEDULED"

    assert outcomes(trigger.post("grafana", payload)) == ["duplicate"]
    # A fresh trigger process remembers nothing, but Prefect's idempotency key does.
    with running_trigger(prefect_server.api_url, tmp_path / "second") as second:
        assert outcomes(second.post("grafana", payload)) == ["duplicate"]
    assert [r["id"] for r in prefect.runs(deployment) if "retrain-trigger" in r["tags"]] == [run["id"]]


def test_the_next_firing_episode_of_the_same_alert_may_retrain_again(trigger, prefect):
    model = unique_model()
    deployment = prefect.deployment(model)
    same = fingerprint()
    assert outcomes(trigger.post("grafana", grafana_payload(drift_labels(model), print_=same))) == ["started"]
    later = grafana_payload(drift_labels(model), print_=same, starts_at="2026-11-21T08:00:00Z")
    assert outcomes(trigger.post("grafana", later)) == ["started"]
    assert len(prefect.runs(deployment)) == 2


def test_an_alertmanager_notification_starts_a_run(trigger, prefect):
    model = unique_model()
    deployment = prefect.deployment(model)
    alert = {"status": "firing", "labels": {**drift_labels(model), "alertname": "MlopsDriftDetected"},
             "annotations": {}, "startsAt": "2026-11-20T10:00:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint()}
    payload = {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
               "receiver": "retrain", "groupLabels": {}, "commonLabels": alert["labels"], "commonAnnotations": {},
               "externalURL": "http://alertmanager", "alerts": [alert]}
    assert outcomes(trigger.post("alertmanager", payload)) == ["started"]
    (run,) = prefect.runs(deployment)
    assert run["parameters"]["reason"].startswith("alertmanager alert 'MlopsDriftDetected'")


# --- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong-token-0123456789abcdef"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {},
], ids=["wrong-token", "token-plus-one", "basic-scheme", "no-credentials"])
def test_a_bad_or_missing_token_gets_401_and_starts_nothing(trigger, prefect, headers):
    model = unique_model()
    deployment = prefect.deployment(model)
    response = trigger.post("grafana", grafana_payload(drift_labels(model)), headers=headers, token=None)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert prefect.runs(deployment) == []
    assert "refused grafana webhook from 127.0.0.1: HTTP 401" in trigger.process.output()


def test_hmac_signed_notifications_are_checked(trigger, prefect):
    from retrain_trigger.auth import Authenticator

    signer = Authenticator(TOKEN.encode())
    model = unique_model()
    deployment = prefect.deployment(model)
    body = json.dumps(grafana_payload(drift_labels(model))).encode()

    tampered = body.replace(b'"version": "7"', b'"version": "9"')
    assert tampered != body
    stale = signer.sign(body, timestamp=int(time.time()) - 3600)
    for headers, payload in ((signer.sign(body), tampered), (stale, body),
                             ({"X-Grafana-Alerting-Signature": "00" * 32}, body)):
        assert trigger.post("grafana", payload, headers=headers, token=None).status_code == 401
    assert prefect.runs(deployment) == []

    signed = trigger.post("grafana", body, headers=signer.sign(body, timestamp=int(time.time())), token=None)
    assert outcomes(signed) == ["started"]
    assert len(prefect.runs(deployment)) == 1


# --- bad payloads ---------------------------------------------------------------------------------


def _without_model(model: str) -> bytes:
    labels = drift_labels(model)
    del labels["model"]
    return json.dumps(grafana_payload(labels)).encode()


BAD_PAYLOADS = {
    "not-json": (lambda model: b"{not json", {}, 400),
    "json-but-not-a-notification": (lambda model: b'{"hello": "world"}', {}, 422),
    "no-alerts": (lambda model: json.dumps({**grafana_payload(drift_labels(model)), "alerts": []}).encode(), {}, 422),
    "retrain-alert-without-model": (_without_model, {}, 422),
    "model-label-not-a-model-name": (
        lambda model: json.dumps(grafana_payload({**drift_labels(model), "model": "../../etc"})).encode(), {}, 422),
    "bad-fingerprint": (
        lambda model: json.dumps(grafana_payload(drift_labels(model), print_="x; rm -rf")).encode(), {}, 422),
    "wrong-content-type": (lambda model: json.dumps(grafana_payload(drift_labels(model))).encode(),
                           {"Content-Type": "text/plain"}, 415),
    "too-large": (lambda model: json.dumps({**grafana_payload(drift_labels(model)), "pad": "x" * 2_000_000}).encode(),
                  {}, 413),
}


@pytest.mark.parametrize("case", sorted(BAD_PAYLOADS))
def test_bad_payloads_get_4xx_are_logged_and_start_nothing(trigger, prefect, case):
    model = unique_model()
    deployment = prefect.deployment(model)
    build, headers, status = BAD_PAYLOADS[case]
    response = trigger.post("grafana", build(model), headers=headers)
    assert response.status_code == status, response.text
    assert f"refused grafana webhook from 127.0.0.1: HTTP {status}" in trigger.process.output()
    assert prefect.runs(deployment) == []


def test_an_unknown_sender_path_is_404(trigger):
    assert trigger.post("slack", grafana_payload(drift_labels(unique_model()))).status_code == 404


# --- policy and rate limit ------------------------------------------------------------------------


def test_the_daily_rate_limit_holds_per_model(trigger, prefect):
    busy, other = unique_model(), unique_model()
    busy_id, other_id = prefect.deployment(busy), prefect.deployment(other)
    decided = [outcomes(trigger.post("grafana", grafana_payload(drift_labels(busy))))[0] for _ in range(4)]
    assert decided == ["started", "started", "rate_limited", "rate_limited"]  # default: 2 a day
    assert len(prefect.runs(busy_id)) == 2
    # Another model has its own budget; a model whose policy allows one run a day gets one.
    assert outcomes(trigger.post("grafana", grafana_payload(drift_labels(other)))) == ["started"]
    assert len(prefect.runs(other_id)) == 1
    one_id = prefect.deployment(ONE_RUN)
    assert [outcomes(trigger.post("grafana", grafana_payload(drift_labels(ONE_RUN))))[0] for _ in range(2)] == [
        "started", "rate_limited"]
    assert len(prefect.runs(one_id)) == 1


def test_a_run_that_ended_before_training_does_not_use_up_the_daily_limit(trigger, prefect):
    """Failed, Crashed or Cancelled without the flow's training tag: not counted. A run still waiting or
    running counts (it may train), and so does one that crashed after training started."""
    deployment = prefect.deployment(CRASHING)
    same = fingerprint()

    def episode(hour: int) -> tuple[str, str | None]:
        response = trigger.post("grafana", grafana_payload(drift_labels(CRASHING), print_=same,
                                                           starts_at=f"2026-11-20T{hour:02d}:00:00Z"))
        [result] = response.json()["results"]
        assert outcomes(response) == [result["outcome"]]
        return result["outcome"], result["flow_run_id"]

    outcome, first = episode(1)
    assert outcome == "started"
    assert episode(2) == ("rate_limited", None)  # the first run is scheduled: it may still train
    prefect.end(first, "CRASHED")  # e.g. its working directory did not exist
    outcome, second = episode(2)  # the same episode again: rate-limited alerts are not remembered
    assert outcome == "started"
    prefect.end(second, "FAILED")
    outcome, third = episode(3)
    assert outcome == "started"
    prefect.end(third, "CRASHED", trained=True)  # it trained, then died: it counts
    assert episode(4) == ("rate_limited", None)
    assert sorted(r["state"]["type"] for r in prefect.runs(deployment)) == ["CRASHED", "CRASHED", "FAILED"]


def test_alerts_the_trigger_must_not_act_on_start_nothing(trigger, prefect):
    model = unique_model()
    deployment = prefect.deployment(model)
    disabled_id = prefect.deployment(DISABLED)
    cases = {
        "resolved": grafana_payload(drift_labels(model), status="resolved"),
        "not_retrain": grafana_payload({**drift_labels(model), "retrain": "false"}),
        "other_environment": grafana_payload({**drift_labels(model), "env": "prod"}),
        "disabled": grafana_payload(drift_labels(DISABLED)),
        "no_deployment": grafana_payload(drift_labels(unique_model())),
    }
    for outcome, payload in cases.items():
        assert outcomes(trigger.post("grafana", payload)) == [outcome]
    assert prefect.runs(deployment) == [] and prefect.runs(disabled_id) == []


def test_one_notification_with_several_alerts_decides_each(trigger, prefect):
    first, second = unique_model(), unique_model()
    ids = prefect.deployment(first), prefect.deployment(second)
    payload = grafana_payload(drift_labels(first))
    payload["alerts"].append(grafana_payload(drift_labels(second))["alerts"][0])
    payload["alerts"].append(grafana_payload(drift_labels(second), status="resolved")["alerts"][0])
    assert outcomes(trigger.post("grafana", payload)) == ["started", "started", "resolved"]
    assert [len(prefect.runs(i)) for i in ids] == [1, 1]


# --- operations -----------------------------------------------------------------------------------


def test_health_readiness_and_metrics(trigger, prefect):
    model = unique_model()
    prefect.deployment(model)
    trigger.post("grafana", grafana_payload(drift_labels(model)))
    trigger.post("grafana", grafana_payload(drift_labels(model)), token="wrong-token-0123456789")
    assert trigger.get("/healthz").status_code == 200
    assert trigger.get("/readyz").status_code == 200
    text = trigger.get("/metrics").text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples[f'retrain_trigger_runs_started_total{{model="{model}"}}'] == 1
    assert samples['retrain_trigger_alerts_total{outcome="started"}'] >= 1
    assert samples['retrain_trigger_requests_total{result="unauthorized",source="grafana"}'] >= 1
    assert samples["retrain_trigger_ready"] == 1


def test_without_prefect_it_is_not_ready_and_asks_senders_to_retry(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/api"
    with running_trigger(dead, tmp_path) as orphan:
        assert orphan.get("/healthz").status_code == 200
        assert orphan.get("/readyz").status_code == 503
        response = orphan.post("grafana", grafana_payload(drift_labels(unique_model())))
        assert response.status_code == 503 and response.headers["retry-after"] == "30"
        assert "Prefect API failed" in orphan.process.output()


def test_sigterm_shuts_down_cleanly_with_exit_status_0(prefect_server, tmp_path):
    with running_trigger(prefect_server.api_url, tmp_path) as running:
        started = time.monotonic()
        running.process.process.send_signal(signal.SIGTERM)
        assert running.process.process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        assert "SIGTERM: shutting down" in running.process.output()


@pytest.mark.parametrize(("change", "message"), [
    ({"RETRAIN_TRIGGER_TOKEN": "short"}, "RETRAIN_TRIGGER_TOKEN: Value error, the token needs at least 16"),
    ({"RETRAIN_TRIGGER_DEPLOYMENT_NAME": "retrain"}, "RETRAIN_TRIGGER_DEPLOYMENT_NAME"),
    ({"RETRAIN_TRIGGER_PREFECT_API_URL": "prefect:4200"}, "RETRAIN_TRIGGER_PREFECT_API_URL"),
    ({"RETRAIN_TRIGGER_POLICY_FILE": "/nonexistent/policy.json"}, "/nonexistent/policy.json: cannot read"),
])
def test_invalid_configuration_refuses_to_start_with_exit_status_2(tmp_path, change, message):
    from retrain_trigger import ExitCode

    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(POLICY))
    env = trigger_env("http://127.0.0.1:1/api", policy_file, free_port(), **change)
    result = subprocess.run([sys.executable, "-m", "retrain_trigger"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == ExitCode.CONFIG == 2, result.stderr
    assert message in result.stderr
    if token := change.get("RETRAIN_TRIGGER_TOKEN"):
        assert f"'{token}'" not in result.stderr and f" {token}\n" not in result.stderr  # never echoed


def test_a_port_already_taken_exits_with_status_1(tmp_path):
    from retrain_trigger import ExitCode

    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(POLICY))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = trigger_env("http://127.0.0.1:1/api", policy_file, taken.getsockname()[1])
        result = subprocess.run([sys.executable, "-m", "retrain_trigger"], env=env, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == ExitCode.FAILURE == 1, result.stderr


def test_the_command_the_rendered_deployment_runs_starts_the_trigger(tmp_path):
    """apps/retrain-trigger's Deployment names the command; that command starts the trigger (here it
    refuses a short token with its config exit code, so it got as far as reading its settings)."""
    deployment = (ROOT / "apps/retrain-trigger/manifests/deployment.yaml.j2").read_text()
    command = json.loads(re.search(r"command: (\[.*\])", deployment).group(1))
    assert command == ["python", "-m", "retrain_trigger"]
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(POLICY))
    env = trigger_env("http://127.0.0.1:1/api", policy_file, free_port(), RETRAIN_TRIGGER_TOKEN="short")
    result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "RETRAIN_TRIGGER_TOKEN" in result.stderr
