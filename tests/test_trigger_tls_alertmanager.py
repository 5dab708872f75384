"""A real Alertmanager (the Debian ``prometheus-alertmanager`` package) delivers a retrain alert to a real
trigger process over HTTPS with the receiver ``mlops render`` writes into kube-prometheus-stack's values
(:func:`generator.render.trigger.alertmanager_values`).

Only what cannot exist here is changed: the receiver's URL points at 127.0.0.1 instead of the cluster's
Service (the certificate and ``server_name`` keep the Service's name, so Alertmanager verifies the name the
cluster uses), the files the operator mounts from ``alertmanagerSpec.secrets`` are written to a folder, and
the route's waits are shortened. The trigger has no Prefect server: a firing alert that reaches it is
authenticated, parsed and answered 503 (Prefect unavailable), which its request counter records by sender
and result. A second Alertmanager given another CA never reaches the trigger and counts failed
notifications.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from demo.certs import ServerCertificate, server_certificate
from generator.render.trigger import ALERTMANAGER_SECRETS_DIR, alertmanager_values, service_host
from services import free_port, require_module, run_service

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "alertmanager-test-token-0123456789"
HOST = service_host("prefect")


@pytest.fixture(autouse=True)
def _dependencies() -> None:
    for module, package in (("cryptography", "cryptography"), ("uvicorn", "uvicorn"), ("httpx", "httpx")):
        require_module(module, package)


def _alertmanager() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert found, "Alertmanager is required (Debian package prometheus-alertmanager)"
    return found


@pytest.fixture(scope="module")
def certificate() -> ServerCertificate:
    return server_certificate("mlops retrain-trigger test CA", [HOST, "127.0.0.1"])


@pytest.fixture(scope="module")
def trigger(certificate: ServerCertificate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    work = tmp_path_factory.mktemp("trigger")
    for key, text in certificate.secret().items():
        (work / key).write_text(text)
    (work / "policy.json").write_text(json.dumps({"environment": "dev", "models": {},
                                                 "default": {"on_drift": True, "max_runs_per_day": 2}}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAIN_", "PREFECT_", "SSL_"))}
    env.update({"PYTHONPATH": str(ROOT / "components"), "RETRAIN_TRIGGER_TOKEN": TOKEN,
                "RETRAIN_TRIGGER_PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
                "RETRAIN_TRIGGER_POLICY_FILE": str(work / "policy.json"), "RETRAIN_TRIGGER_HTTP_HOST": "127.0.0.1",
                "RETRAIN_TRIGGER_HTTP_PORT": str(port), "RETRAIN_TRIGGER_PREFECT_TIMEOUT_SECONDS": "1",
                "RETRAIN_TRIGGER_TLS_CERT_FILE": str(work / "tls.crt"),
                "RETRAIN_TRIGGER_TLS_KEY_FILE": str(work / "tls.key")})
    with run_service(f"retrain-trigger-{port}", [sys.executable, "-m", "retrain_trigger"],
                     url=f"https://127.0.0.1:{port}/healthz", env=env, timeout=60, log_dir=work):
        yield port, work / "ca.crt"


def _requests(port: int, ca_file: Path, result: str) -> float:
    verify = ssl.create_default_context(cafile=str(ca_file))
    text = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=verify, trust_env=False, timeout=10).text
    prefix = f'retrain_trigger_requests_total{{result="{result}",source="alertmanager"}} '
    return next((float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def _config(folder: Path, trigger_port: int, ca_text: str) -> Path:
    """The rendered Alertmanager config, with the mounted Secrets written to ``folder``."""
    config = alertmanager_values("prefect")["alertmanager"]
    secrets = folder / "secrets"
    for name, key, text in (("retrain-trigger-token", "token", TOKEN), ("retrain-trigger-ca", "ca.crt", ca_text)):
        assert name in config["alertmanagerSpec"]["secrets"]
        (secrets / name).mkdir(parents=True)
        (secrets / name / key).write_text(text)
    text = yaml.safe_dump(config["config"]).replace(ALERTMANAGER_SECRETS_DIR, str(secrets))
    document = yaml.safe_load(text.replace(f"https://{HOST}:8080", f"https://127.0.0.1:{trigger_port}"))
    document["route"]["receiver"] = "null"  # the chart's root route, which the values keep
    for route in document["route"]["routes"]:
        route.update({"group_wait": "0s", "group_interval": "1s"})
    (webhook,) = next(r for r in document["receivers"] if r["name"] == "retrain-trigger")["webhook_configs"]
    assert webhook["url"] == f"https://127.0.0.1:{trigger_port}/v1/alerts/alertmanager"
    assert webhook["http_config"]["tls_config"]["server_name"] == HOST
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def _fire(alertmanager_port: int) -> None:
    alert = [{"labels": {"alertname": "FraudDetectorDrift", "retrain": "true", "mlops_alert": "drift",
                         "model": "fraud-detector", "env": "dev"},
              "annotations": {"summary": "drift"}, "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]
    request = urllib.request.Request(f"http://127.0.0.1:{alertmanager_port}/api/v2/alerts", method="POST",
                                     data=json.dumps(alert).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as response:
        assert response.status == 200


def _wait(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def _run_alertmanager(config: Path, folder: Path):
    port = free_port()
    return port, run_service(f"alertmanager-{port}", [
        _alertmanager(), f"--config.file={config}", f"--storage.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        url=f"http://127.0.0.1:{port}/-/ready", timeout=60, log_dir=folder)


def test_alertmanager_delivers_over_https_verifying_the_ca(trigger, certificate, tmp_path: Path) -> None:
    trigger_port, ca_file = trigger
    before = _requests(trigger_port, ca_file, "unavailable")
    port, service = _run_alertmanager(_config(tmp_path, trigger_port, certificate.ca_crt), tmp_path)
    with service:
        _fire(port)
        # Authenticated (not "unauthorized"), parsed, handled: Prefect is absent, so 503 and a retry.
        assert _wait(lambda: _requests(trigger_port, ca_file, "unavailable") > before)
    assert _requests(trigger_port, ca_file, "unauthorized") == 0


def test_alertmanager_with_another_ca_never_reaches_the_trigger(trigger, tmp_path: Path) -> None:
    trigger_port, ca_file = trigger
    before = {result: _requests(trigger_port, ca_file, result) for result in ("unavailable", "unauthorized")}
    other = server_certificate("another CA", [HOST])
    port, service = _run_alertmanager(_config(tmp_path, trigger_port, other.ca_crt), tmp_path)
    with service as process:
        _fire(port)

        def failed() -> bool:
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=10).text
            return any(line.startswith('alertmanager_notifications_failed_total{integration="webhook"')
                       and not line.endswith(" 0") for line in metrics.splitlines())

        assert _wait(failed)
        assert "x509" in process.output() or "certificate" in process.output()
    assert {result: _requests(trigger_port, ca_file, result) for result in before} == before
