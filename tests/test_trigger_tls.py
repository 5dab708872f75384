"""The retrain trigger serves its webhook over HTTPS (issue 16 item 5): a real ``python -m retrain_trigger``
process with a certificate signed by a CA made for the test (``cryptography``, :mod:`demo.certs`).

Checked from the client's side, as Grafana and Alertmanager connect: a client that verifies the test CA
gets answers and its authenticated webhook is handled; the same port refuses plain HTTP (the request
gets no HTTP answer); a client that does not trust the CA (the system's CAs, or another CA) fails the
handshake before any token is sent. The trigger refuses to start without a certificate unless plain HTTP
is explicitly asked for on a loopback address, and then only there. No Prefect server is needed: the
alerts sent are resolved ones, which the trigger answers without calling Prefect.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from demo.certs import ServerCertificate, server_certificate
from services import free_port, require_module, run_service

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ROOT / "components"
TOKEN = "tls-test-token-0123456789abcdef"
POLICY = {"environment": "dev", "default": {"on_drift": True, "max_runs_per_day": 2}, "models": {}}
RESOLVED = {"receiver": "retrain-trigger", "status": "resolved", "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "https://grafana/", "version": "4", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "alerts": [{
                "status": "resolved", "labels": {"alertname": "drift", "model": "m", "retrain": "true"},
                "annotations": {}, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2026-01-01T01:00:00Z",
                "generatorURL": "https://grafana/x", "fingerprint": "0123456789abcdef"}]}


@pytest.fixture(autouse=True)
def _dependencies() -> None:
    for module, package in (("cryptography", "cryptography"), ("uvicorn", "uvicorn"), ("httpx", "httpx")):
        require_module(module, package)


@pytest.fixture(scope="module")
def certificate() -> ServerCertificate:
    """A test CA and the trigger's certificate for 127.0.0.1 and localhost."""
    return server_certificate("mlops retrain-trigger test CA", ["127.0.0.1", "localhost"])


@dataclass
class Served:
    port: int
    ca_file: Path

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


def _env(work: Path, port: int, **extra: str) -> dict[str, str]:
    policy = work / "policy.json"
    policy.write_text(json.dumps(POLICY))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RETRAIN_", "PREFECT_", "SSL_"))}
    env.update({"PYTHONPATH": str(COMPONENTS), "RETRAIN_TRIGGER_PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
                "RETRAIN_TRIGGER_POLICY_FILE": str(policy), "RETRAIN_TRIGGER_TOKEN": TOKEN,
                "RETRAIN_TRIGGER_HTTP_HOST": "127.0.0.1", "RETRAIN_TRIGGER_HTTP_PORT": str(port), **extra})
    return env


def _write_secret(folder: Path, certificate: ServerCertificate) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, text in certificate.secret().items():
        (folder / key).write_text(text)
        files[key] = folder / key
    (folder / "tls.key").chmod(0o600)
    return files


@pytest.fixture(scope="module")
def served(certificate: ServerCertificate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("trigger-tls")
    files = _write_secret(work / "retrain-trigger-tls", certificate)
    port = free_port()
    env = _env(work, port, RETRAIN_TRIGGER_TLS_CERT_FILE=str(files["tls.crt"]),
               RETRAIN_TRIGGER_TLS_KEY_FILE=str(files["tls.key"]))
    with run_service(f"retrain-trigger-tls-{port}", [sys.executable, "-m", "retrain_trigger"],
                     url=f"https://127.0.0.1:{port}/healthz", env=env, timeout=60, log_dir=work):
        yield Served(port, files["ca.crt"])


def _post(client: httpx.Client, served: Served) -> httpx.Response:
    return client.post(served.url("/v1/alerts/grafana"), content=json.dumps(RESOLVED).encode(),
                       headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})


def test_a_client_verifying_the_ca_is_answered_over_https(served: Served) -> None:
    context = ssl.create_default_context(cafile=str(served.ca_file))
    with httpx.Client(verify=context, trust_env=False, timeout=10) as client:
        health = client.get(served.url("/healthz"))
        assert health.status_code == 200 and health.text == "ok\n"
        answer = _post(client, served)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["outcome"] == "resolved"
        assert client.get(served.url("/metrics")).status_code == 200
    # Host name checked too: localhost is in the certificate, and TLS 1.2 is the least accepted.
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_the_https_port_refuses_plain_http(served: Served) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            connection.request("POST", "/v1/alerts/grafana", body=json.dumps(RESOLVED),
                               headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
            connection.getresponse()
    finally:
        connection.close()
    with httpx.Client(trust_env=False, timeout=10) as client, pytest.raises(httpx.TransportError):
        client.get(f"http://127.0.0.1:{served.port}/healthz")


def test_a_client_that_does_not_trust_the_ca_fails_the_handshake(served: Served) -> None:
    other = server_certificate("some other CA", ["127.0.0.1"])
    for verify in (ssl.create_default_context(),  # the system's CAs only
                   ssl.create_default_context(cadata=other.ca_crt)):
        with httpx.Client(verify=verify, trust_env=False, timeout=10) as client, \
                pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            _post(client, served)
    # The right CA but a name the certificate does not carry: refused as well.
    context = ssl.create_default_context(cafile=str(served.ca_file))
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        context.wrap_socket(raw, server_hostname="retrain-trigger.prefect.svc")


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "retrain_trigger"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_without_a_certificate_the_trigger_refuses_to_start(tmp_path: Path, certificate: ServerCertificate) -> None:
    result = _start(_env(tmp_path, free_port()))
    assert result.returncode == 2, result.stderr
    assert ("RETRAIN_TRIGGER_TLS_CERT_FILE and RETRAIN_TRIGGER_TLS_KEY_FILE not set: the trigger serves HTTPS"
            in result.stderr)
    files = _write_secret(tmp_path / "tls", certificate)
    other = _write_secret(tmp_path / "other", server_certificate("other", ["127.0.0.1"]))
    mismatched = _start(_env(tmp_path, free_port(), RETRAIN_TRIGGER_TLS_CERT_FILE=str(files["tls.crt"]),
                             RETRAIN_TRIGGER_TLS_KEY_FILE=str(other["tls.key"])))
    assert mismatched.returncode == 2, mismatched.stderr
    assert f"cannot serve HTTPS with RETRAIN_TRIGGER_TLS_CERT_FILE={files['tls.crt']}" in mismatched.stderr
    assert "-----BEGIN" not in mismatched.stderr  # no key material in the log


def test_plain_http_only_when_asked_for_and_only_on_loopback(tmp_path: Path, certificate: ServerCertificate) -> None:
    exposed = _start(_env(tmp_path, free_port(), RETRAIN_TRIGGER_PLAIN_HTTP="true", RETRAIN_TRIGGER_HTTP_HOST="0.0.0.0"))
    assert exposed.returncode == 2, exposed.stderr
    assert "RETRAIN_TRIGGER_PLAIN_HTTP=true is accepted only on a loopback RETRAIN_TRIGGER_HTTP_HOST" in exposed.stderr
    files = _write_secret(tmp_path / "tls", certificate)
    both = _start(_env(tmp_path, free_port(), RETRAIN_TRIGGER_PLAIN_HTTP="true",
                       RETRAIN_TRIGGER_TLS_CERT_FILE=str(files["tls.crt"]), RETRAIN_TRIGGER_TLS_KEY_FILE=str(files["tls.key"])))
    assert both.returncode == 2 and "choose one" in both.stderr, both.stderr
    port = free_port()
    with run_service(f"retrain-trigger-plain-{port}", [sys.executable, "-m", "retrain_trigger"],
                     url=f"http://127.0.0.1:{port}/healthz", env=_env(tmp_path, port, RETRAIN_TRIGGER_PLAIN_HTTP="true"),
                     timeout=60, log_dir=tmp_path) as process:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False, timeout=10).status_code == 200
        assert "serving plain HTTP on 127.0.0.1" in process.output()
