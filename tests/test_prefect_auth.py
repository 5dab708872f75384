"""Prefect's API refuses a client without the basic-auth string and accepts one with it, with a real
``prefect server start`` configured the way the rendered charts configure the server and the worker (the
variable names and the Secret are read from the charts' output, not restated here), and the retrain
trigger's own client (the files its Deployment mounts) passes the same check."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest

from generator.render.charts import ChartRenderer, load_documents
from generator.spec import yamlio
from generator.spec.charts import load_lock
from generator.spec.layout import RepoLayout, rendered_apps_path
from helpers import REPO
from services import LOCALHOST, free_port, prefect_server_command, require_module, run_service

SECRET = "prefect-api-auth"
AUTH = "admin:" + "s3cret-" * 4


def _secret_env(component: str, env: str = "prod") -> dict[str, str]:
    """``{variable: key}`` of every variable the chart's Deployment fills from Secret ``prefect-api-auth``."""
    layout = RepoLayout(REPO)
    vendored, _ = load_lock(layout)
    app = yamlio.load((REPO / rendered_apps_path(env) / f"platform-{component}.yaml").read_text(encoding="utf-8"))
    source = app["spec"]["source"]
    [chart] = [c for key, c in vendored.items() if key[1] == component and key[2] == source["targetRevision"]]
    rendered = ChartRenderer(None, "1.33").render(chart, source["helm"]["valuesObject"], source["helm"]["releaseName"],
                                                  "prefect")
    found = {}
    for text in rendered.files.values():
        for doc in load_documents(text):
            if not doc or doc.get("kind") != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for var in container.get("env", []):
                    ref = (var.get("valueFrom") or {}).get("secretKeyRef") or {}
                    if ref.get("name") == SECRET:
                        found[var["name"]] = ref["key"]
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    require_module("prefect", "prefect")
    server_env = _secret_env("prefect-server")
    assert server_env == {"PREFECT_SERVER_API_AUTH_STRING": "auth-string"}
    home = tmp_path_factory.mktemp("prefect-auth")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
                "PREFECT_SERVER_UI_ENABLED": "false",
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
                # The value the Secret's key auth-string holds, under the name the chart gives it.
                **{name: AUTH for name in server_env}})
    api = f"http://{LOCALHOST}:{port}/api"
    with run_service("prefect server (basic auth)", prefect_server_command(port), url=f"{api}/health", env=env,
                     cwd=home, timeout=180, log_dir=home):
        yield api


def _status(url: str, auth: str | None) -> int:
    headers = {"Authorization": "Basic " + b64encode(auth.encode()).decode()} if auth else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_api_refuses_a_request_without_credentials_and_accepts_the_auth_string(server: str) -> None:
    assert _status(f"{server}/version", None) == 401
    assert _status(f"{server}/version", "admin:wrong") == 401
    assert _status(f"{server}/version", AUTH) == 200
    assert _status(f"{server}/health", None) == 200  # Kubernetes probes stay unauthenticated


def _client(server: str, client_env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": server, "DO_NOT_TRACK": "true", **client_env})
    code = ("import asyncio\nfrom prefect.client.orchestration import get_client\n"
            "async def main():\n    async with get_client() as client:\n"
            "        print(len(await client.read_work_pools()))\nasyncio.run(main())\n")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_a_prefect_client_configured_like_the_worker_gets_in_and_one_without_is_refused(server, tmp_path) -> None:
    worker_env = _secret_env("prefect-worker")
    assert worker_env["PREFECT_API_AUTH_STRING"] == "auth-string"
    refused = _client(server, {}, tmp_path)
    assert refused.returncode != 0 and "401" in refused.stderr
    accepted = _client(server, {name: AUTH for name in worker_env if name == "PREFECT_API_AUTH_STRING"}, tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    # The deploy Job reads the same Secret under the same name.
    job = yamlio.load((REPO / "environments/prod/rendered/platform/retrain-pipeline/job-prefect-deploy.yaml")
                      .read_text(encoding="utf-8"))
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert {"name": "PREFECT_API_AUTH_STRING", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "auth-string"}}} \
        in container["env"]


def test_the_trigger_reads_the_auth_string_from_its_mounted_file_and_gets_in(server, tmp_path) -> None:
    require_module("httpx", "httpx")
    from retrain_trigger.prefect_api import PrefectAPI
    from retrain_trigger.settings import load_settings

    deployment = yamlio.load((REPO / "environments/prod/rendered/platform/retrain-trigger/deployment.yaml")
                             .read_text(encoding="utf-8"))
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "token"]
    files = {item["path"]: (source["secret"]["name"], item["key"])
             for source in volume["projected"]["sources"] for item in source["secret"]["items"]}
    assert files["retrain_trigger_prefect_auth_string"] == (SECRET, "auth-string")
    for path in files:  # what the kubelet writes into the mounted directory
        (tmp_path / path).write_text(AUTH + "\n" if "prefect" in path else "t" * 32 + "\n")
    settings = load_settings({"RETRAIN_TRIGGER_PREFECT_API_URL": server}, secrets_dir=tmp_path)

    async def deployment_of(auth: str | None) -> str:
        api = PrefectAPI(server, auth_string=auth)
        try:
            return str(await api.deployment_id("retrain/nothing"))
        except Exception as exc:  # noqa: BLE001 - the refusal is what is checked
            return type(exc).__name__ + str(exc)
        finally:
            await api.aclose()

    assert asyncio.run(deployment_of(settings.prefect_auth_string.get_secret_value())) == "None"
    assert "401" in asyncio.run(deployment_of(None))
