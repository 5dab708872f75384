"""The rendered cluster side of the trigger's HTTPS (issue 16 item 5): every sender of the bearer token uses
``https://`` and verifies the trigger with the environment's CA, the Deployment serves with the mounted
certificate (the settings it sets, read as the process reads them, serve HTTPS with real files in place of
the Secret), and ``mlops validate`` refuses a plain ``http://`` URL carrying the token, naming the file,
the field and the fix.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from demo.certs import server_certificate
from generator.check.manifest import Manifest
from generator.check.network import network_problems
from generator.cli import cli
from helpers import copy_example_repo

REPO = Path(__file__).resolve().parents[1]
ENVS = ("dev", "staging", "prod")
HOST = "retrain-trigger.prefect.svc.cluster.local"
CONTACT_POINT = "rendered/platform/retrain-trigger/configmap-grafana-alerting.yaml"


def _rendered(env: str, relative: str) -> dict:
    return yaml.safe_load((REPO / "environments" / env / relative).read_text())


def _contact_settings(configmap: dict) -> dict:
    (text,) = configmap["data"].values()
    (point,) = yaml.safe_load(text)["contactPoints"]
    (receiver,) = point["receivers"]
    return receiver["settings"]


@pytest.mark.parametrize("env", ENVS)
def test_grafana_posts_over_https_and_verifies_with_the_ca(env: str) -> None:
    settings = _contact_settings(_rendered(env, CONTACT_POINT))
    assert settings["url"] == f"https://{HOST}:8080/v1/alerts/grafana"
    assert settings["authorization_credentials"] == "$RETRAIN_TRIGGER_TOKEN"
    assert settings["tlsConfig"] == {"caCertificate": "$RETRAIN_TRIGGER_CA", "insecureSkipVerify": False}
    # Grafana expands both from its environment: the CA from Secret retrain-trigger-ca in its namespace.
    app = _rendered(env, "rendered/apps/platform-kube-prometheus-stack.yaml")
    grafana_env = app["spec"]["source"]["helm"]["valuesObject"]["grafana"]["envValueFrom"]
    assert grafana_env["RETRAIN_TRIGGER_CA"] == {"secretKeyRef": {"name": "retrain-trigger-ca", "key": "ca.crt"}}
    assert grafana_env["RETRAIN_TRIGGER_TOKEN"] == {"secretKeyRef": {"name": "retrain-trigger-token", "key": "token"}}
    # Both Secrets are sealed for the environment (the example ciphertext marks where the operator's goes).
    sealed = {p.name for p in (REPO / "environments" / env / "secrets").glob("*.yaml")}
    assert {"monitoring-retrain-trigger-ca.yaml", "prefect-retrain-trigger-tls.yaml"} <= sealed


@pytest.mark.parametrize("env", ENVS)
def test_the_deployment_serves_https_with_the_mounted_certificate(env: str, tmp_path: Path) -> None:
    deployment = _rendered(env, "rendered/platform/retrain-trigger/deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "https", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS" and container[probe]["httpGet"]["port"] == "https"
    (tls,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == "retrain-trigger-tls"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    assert mount["readOnly"] is True
    env_vars = {e["name"]: e["value"] for e in container["env"] if "value" in e}

    # What the process reads from these variables, with real files where the Secret is mounted.
    from retrain_trigger.settings import Settings, transport

    certificate = server_certificate("test CA", [HOST, "retrain-trigger.prefect.svc"])
    folder = tmp_path / "tls"
    folder.mkdir()
    for item in tls["secret"]["items"]:
        (folder / item["path"]).write_text(certificate.secret()[item["key"]])
    local = {name: value.replace(mount["mountPath"], str(folder)) for name, value in env_vars.items()}
    settings = Settings.load(local, token="t" * 16)
    served = transport(settings)
    assert served.scheme == "https" and served.cert_file == folder / "tls.crt" and served.key_file == folder / "tls.key"
    assert settings.plain_http is False and settings.http_port == 8080


@pytest.mark.parametrize("env", ENVS)
def test_prometheus_scrapes_over_https_verifying_the_ca(env: str) -> None:
    monitor = _rendered(env, "rendered/platform/retrain-trigger/servicemonitor.yaml")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["port"] == "https"
    assert endpoint["tlsConfig"] == {"ca": {"secret": {"name": "retrain-trigger-tls", "key": "ca.crt"}},
                                     "serverName": HOST}
    service = _rendered(env, "rendered/platform/retrain-trigger/service.yaml")
    assert [p["name"] for p in service["spec"]["ports"]] == ["https"]


def test_the_committed_tree_sends_no_credential_in_plain_http() -> None:
    from generator.spec.network import ACCEPTED_PLAINTEXT

    assert ("prefect", "retrain-trigger") not in ACCEPTED_PLAINTEXT
    manifests = [Manifest(f"environments/{env}/{CONTACT_POINT}", _rendered(env, CONTACT_POINT), env) for env in ENVS]
    assert network_problems(manifests) == []


def test_validate_refuses_the_token_over_plain_http_naming_file_field_and_fix(tmp_path: Path) -> None:
    root = copy_example_repo(tmp_path / "repo")
    path = root / "environments" / "prod" / CONTACT_POINT
    path.write_text(path.read_text().replace(f"url: https://{HOST}", f"url: http://{HOST}"))
    result = CliRunner().invoke(cli, ["validate", "--repo-root", str(root)])
    assert result.exit_code != 0
    line = next(line for line in result.output.splitlines() if "over plain HTTP" in line).strip().removeprefix("- ")
    assert line.startswith(f"environments/prod/{CONTACT_POINT}: "
                           "data[mlops-prod-retrain-trigger.yaml].contactPoints[0].receivers[0].settings.url: ")
    assert (f"Grafana contact point 'mlops-retrain-trigger' sends credentials to http://{HOST}:8080/v1/alerts/grafana"
            in line)
    assert f"(fix: use https://{HOST}:8080/v1/alerts/grafana and verify the server with its CA" in line
    assert ".settings.tlsConfig.caCertificate" in line


def test_skipping_certificate_verification_is_refused_too() -> None:
    configmap = _rendered("staging", CONTACT_POINT)
    (key,) = configmap["data"]
    document = yaml.safe_load(configmap["data"][key])
    document["contactPoints"][0]["receivers"][0]["settings"]["tlsConfig"]["insecureSkipVerify"] = True
    configmap["data"][key] = yaml.safe_dump(document)
    (problem,) = network_problems([Manifest("cm.yaml", configmap, "staging")])
    assert problem.field == f"data[{key}].contactPoints[0].receivers[0].settings.tlsConfig.insecureSkipVerify"
    assert "without verifying the server's certificate" in problem.message


def test_alertmanager_routes_retrain_alerts_over_https_with_prometheus_rule(tmp_path: Path) -> None:
    """With alerting.prometheus_rule the Alertmanager of kube-prometheus-stack gets the trigger's receiver:
    HTTPS, the CA and the token read from the Secrets the operator mounts; an http:// URL put there by an
    override is refused by the policy."""
    root = copy_example_repo(tmp_path / "repo")
    spec_path = root / "environments" / "dev" / "environment.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["alerting"] = {"prometheus_rule": True}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    rendered = CliRunner().invoke(cli, ["render", "--repo-root", str(root), "--env", "dev"])
    assert rendered.exit_code == 0, rendered.output
    app_path = root / "environments/dev/rendered/apps/platform-kube-prometheus-stack.yaml"
    app = yaml.safe_load(app_path.read_text())
    alertmanager = app["spec"]["source"]["helm"]["valuesObject"]["alertmanager"]
    assert alertmanager["alertmanagerSpec"]["secrets"] == ["retrain-trigger-token", "retrain-trigger-ca"]
    config = alertmanager["config"]
    route = next(r for r in config["route"]["routes"] if r["receiver"] == "retrain-trigger")
    assert route["matchers"] == ['retrain="true"', 'mlops_alert="drift"'] and route["continue"] is True
    assert {"receiver": "null", "matchers": ['alertname = "Watchdog"']} in config["route"]["routes"]
    (webhook,) = next(r for r in config["receivers"] if r["name"] == "retrain-trigger")["webhook_configs"]
    assert webhook["url"] == f"https://{HOST}:8080/v1/alerts/alertmanager"
    assert webhook["http_config"] == {
        "authorization": {"type": "Bearer", "credentials_file": "/etc/alertmanager/secrets/retrain-trigger-token/token"},
        "tls_config": {"ca_file": "/etc/alertmanager/secrets/retrain-trigger-ca/ca.crt", "server_name": HOST}}
    assert network_problems([Manifest("app.yaml", app, "dev")]) == []
    # The chart takes every one of these values (validate renders it and checks each value takes effect).
    validated = CliRunner().invoke(cli, ["validate", "--repo-root", str(root)])
    assert validated.exit_code == 0, validated.output

    webhook["url"] = f"http://{HOST}:8080/v1/alerts/alertmanager"
    (problem,) = network_problems([Manifest("app.yaml", app, "dev")])
    index = next(i for i, r in enumerate(config["receivers"]) if r["name"] == "retrain-trigger")
    assert problem.field == (f"spec.source.helm.valuesObject.alertmanager.config.receivers[{index}]"
                             ".webhook_configs[0].url")
    assert "Alertmanager receiver 'retrain-trigger' sends credentials to http://" in problem.message
    assert "http_config.tls_config.ca_file" in problem.fix
    shutil.rmtree(root)
