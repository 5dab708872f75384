"""The retrain trigger's rendered manifests: they configure the service the service expects, route the
alerts the rendered rules produce, and keep the environment-wide policy current under generate-model.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner
from retrain_trigger.app import create_app
from retrain_trigger.policy import Policy
from retrain_trigger.settings import SECRETS_DIR, TOKEN_FILE_NAME, Settings, load_settings

from generator.cli import cli
from generator.render import trigger as trigger_context
from generator.render.retrain_pipeline import flow_image
from helpers import REPO, copy_example_repo, digest, seal_kafka_credentials

ENVIRONMENTS = ("dev", "staging", "prod")
TOKEN = "manifest-test-token-0123456789"


def rendered(env: str, name: str) -> dict:
    return yaml.safe_load((REPO / f"environments/{env}/rendered/platform/retrain-trigger/{name}").read_text())


def container(env: str) -> dict:
    (only,) = rendered(env, "deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_rendered_deployment_env_loads_into_the_trigger_settings(env, tmp_path, monkeypatch):
    deployment = rendered(env, "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    main = container(env)
    for key in [k for k in os.environ if k.startswith("RETRAIN_TRIGGER_")]:
        monkeypatch.delenv(key)
    assert all("valueFrom" not in var for var in main["env"])  # the token comes from a file, never env
    for var in main["env"]:
        monkeypatch.setenv(var["name"], var["value"])
    # The Secret volume, as the pod would see it: the token file under the mount path.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    token_secret, auth_secret = (s["secret"] for s in volumes[mounts[str(SECRETS_DIR)]]["projected"]["sources"])
    assert token_secret["name"] == trigger_context.TOKEN_SECRET
    assert token_secret["items"] == [{"key": "token", "path": TOKEN_FILE_NAME}]
    # Prefect's basic auth beside it, read into field prefect_auth_string (tests/test_prefect_auth.py uses it).
    assert auth_secret == {"name": "prefect-api-auth",
                           "items": [{"key": "auth-string", "path": "retrain_trigger_prefect_auth_string"}]}
    (tmp_path / TOKEN_FILE_NAME).write_text(TOKEN + "\n")
    (tmp_path / "retrain_trigger_prefect_auth_string").write_text("admin:pass\n")

    settings = load_settings(secrets_dir=tmp_path)
    assert settings.token.get_secret_value() == TOKEN
    assert settings.prefect_auth_string.get_secret_value() == "admin:pass"
    assert settings.http_port == next(p["containerPort"] for p in main["ports"] if p["name"] == "https")
    assert settings.deployment_for("fraud-detector") == "retrain/fraud-detector"
    assert urlsplit(settings.prefect_api_url).hostname == "prefect-server.prefect.svc.cluster.local"
    # The policy file the settings name is the rendered ConfigMap's key at its mount path.
    policy_volume = volumes[mounts[str(settings.policy_file.parent)]]["configMap"]["name"]
    configmap = rendered(env, "configmap-policy.yaml")
    assert configmap["metadata"]["name"] == policy_volume
    policy = Policy.model_validate(json.loads(configmap["data"][settings.policy_file.name]))
    assert policy.environment == env
    # The probes ask for endpoints the app serves.
    paths = {route.path for route in _app(settings, tmp_path, configmap).routes}
    assert {main["readinessProbe"]["httpGet"]["path"], main["livenessProbe"]["httpGet"]["path"]} <= paths


def _app(settings: Settings, tmp_path: Path, configmap: dict):
    local = tmp_path / "policy.json"
    local.write_text(configmap["data"]["policy.json"])
    return create_app(settings.model_copy(update={"policy_file": local}))


def test_the_policy_holds_the_default_and_only_models_that_differ():
    staging = json.loads(rendered("staging", "configmap-policy.yaml")["data"]["policy.json"])
    assert staging == {"environment": "staging", "default": {"on_drift": True, "max_runs_per_day": 2},
                       "models": {"fraud-detector": {"on_drift": False, "max_runs_per_day": 2}}}
    dev = json.loads(rendered("dev", "configmap-policy.yaml")["data"]["policy.json"])
    assert dev["models"] == {} and dev["default"] == {"on_drift": True, "max_runs_per_day": 2}


def test_generate_model_keeps_the_environment_wide_policy_current(tmp_path):
    root = copy_example_repo(tmp_path)
    # A new model's Kafka passwords are sealed before its first render (README, "Kafka").
    seal_kafka_credentials(root, yaml.safe_load((root / "environments/dev/environment.yaml").read_text()), "churn")
    runner = CliRunner()
    created = runner.invoke(cli, [
        "generate-model", "churn", "--env", "dev", "--repo-root", str(root), "--owner", "team-growth",
        "--registry-version", "1", "--artifact-uri", "s3://b/1/r/artifacts/model",
        "--server-image", "ghcr.io/acme/model-server:0.1.0", "--drift-image", "ghcr.io/acme/drift:0.1.0",
        "--detector-uri", "s3://b/1/r/artifacts/drift/detector.npz", "--detector-sha256", digest("d"),
        "--feature", "tenure:numeric"])
    assert created.exit_code == 0, created.output
    assert runner.invoke(cli, ["render", "--check", "--repo-root", str(root)]).exit_code == 0

    # An override of the retrain block is a spec edit; mlops render puts it into the policy.
    spec = root / "environments/dev/models/churn.yaml"
    spec.write_text(spec.read_text() + "retrain:\n  max_runs_per_day: 5\n")
    assert runner.invoke(cli, ["render", "--check", "--repo-root", str(root)]).exit_code == 1
    assert runner.invoke(cli, ["render", "--repo-root", str(root)]).exit_code == 0
    policy_file = root / "environments/dev/rendered/platform/retrain-trigger/configmap-policy.yaml"
    policy = json.loads(yaml.safe_load(policy_file.read_text())["data"]["policy.json"])
    assert policy["models"] == {"churn": {"on_drift": True, "max_runs_per_day": 5}}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_grafana_sends_retrain_drift_alerts_to_the_trigger_with_a_referenced_token(env):
    configmap = rendered(env, "configmap-grafana-alerting.yaml")
    assert configmap["metadata"]["namespace"] == "monitoring" and configmap["metadata"]["labels"]["grafana_alert"] == "1"
    (text,) = configmap["data"].values()
    alerting = yaml.safe_load(text)
    (contact,) = alerting["contactPoints"]
    (receiver,) = contact["receivers"]
    settings = receiver["settings"]

    # The URL reaches the Service, on its port, at the route the app serves for Grafana.
    service = rendered(env, "service.yaml")
    url = urlsplit(settings["url"])
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert url.port == service["spec"]["ports"][0]["port"] and url.path == "/v1/alerts/grafana"
    # The credential is a reference to Grafana's environment, filled from the Secret, never a literal.
    assert settings["authorization_scheme"] == "Bearer"
    assert settings["authorization_credentials"] == f"${trigger_context.GRAFANA_TOKEN_ENV}"
    values = yaml.safe_load((REPO / "apps/kube-prometheus-stack/values.yaml").read_text())
    assert values["grafana"]["envValueFrom"][trigger_context.GRAFANA_TOKEN_ENV] == {
        "secretKeyRef": {"name": trigger_context.TOKEN_SECRET, "key": "token"}}
    for namespace in ("monitoring", "prefect"):
        sealed = yaml.safe_load((REPO / f"environments/{env}/secrets/{namespace}-retrain-trigger-token.yaml").read_text())
        assert sealed["kind"] == "SealedSecret" and list(sealed["spec"]["encryptedData"]) == ["token"]

    # The notification policy sends exactly the rendered drift alerts that ask for a retrain to it.
    (tree,) = alerting["policies"]
    (route,) = tree["routes"]
    assert route["receiver"] == contact["name"] and route["continue"] is True
    for model_dir in sorted((REPO / f"environments/{env}/rendered/models").iterdir()):
        alerts = yaml.safe_load((model_dir / "grafana-alerts-configmap.yaml").read_text())
        rules = yaml.safe_load(next(iter(alerts["data"].values())))
        for rule in rules["groups"][0]["rules"]:
            matches = all(rule["labels"].get(label) == value for label, op, value in route["object_matchers"]
                          if op == "=")
            assert matches == (rule["labels"]["mlops_alert"] == "drift" and rule["labels"]["retrain"] == "true")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_network_policy_admits_monitoring_only_and_reaches_prefect_only(env):
    # Generated from generator/spec/network.py: Grafana, Alertmanager and Prometheus pods in; Prefect's API out.
    policy = rendered(env, "networkpolicy.yaml")["spec"]
    deployment = rendered(env, "deployment.yaml")
    assert policy["podSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert [rule["from"] for rule in policy["ingress"]] == [
        [{"namespaceSelector": monitoring, "podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}}]
        for name in ("grafana", "alertmanager", "prometheus")]
    port = container(env)["ports"][0]["containerPort"]
    assert all(rule["ports"] == [{"protocol": "TCP", "port": port}] for rule in policy["ingress"])
    dns, prefect = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
    assert prefect["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prefect"}},
                              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prefect-server"}}}]
    assert prefect["ports"] == [{"protocol": "TCP", "port": 4200}]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_trigger_runs_non_root_with_limits_and_a_pinned_image_where_required(env):
    pod = rendered(env, "deployment.yaml")["spec"]["template"]["spec"]
    main = container(env)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert set(main["resources"]["limits"]) == {"cpu", "memory"}
    assert "@sha256:" in main["image"] or env == "dev"


PREFECT_FILE = REPO / "components/retrain/prefect.yaml"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_trigger_runs_the_retrain_image_prefect_yaml_pins(env):
    document = yaml.safe_load(PREFECT_FILE.read_text())
    assert container(env)["image"] == flow_image(document, "components/retrain/prefect.yaml")


def _flow_name(entrypoint: str) -> str:
    """The name in ``@flow(name=...)`` of ``path.py:function`` (read, not imported: the flow imports MLflow)."""
    path, function = entrypoint.split(":")
    tree = ast.parse((REPO / "components" / path).read_text())
    (definition,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function]
    (decorator,) = [d for d in definition.decorator_list if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "flow"]
    return next(k.value.value for k in decorator.keywords if k.arg == "name")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_model_that_may_retrain_has_the_deployment_the_trigger_starts(env):
    """prefect.yaml's deployments are the names the rendered trigger asks Prefect for."""
    deployed = {f"{_flow_name(d['entrypoint'])}/{d['name']}"
                for d in yaml.safe_load(PREFECT_FILE.read_text())["deployments"]}
    env_vars = {var["name"]: var["value"] for var in container(env)["env"]}
    settings = Settings(prefect_api_url=env_vars["RETRAIN_TRIGGER_PREFECT_API_URL"], token=TOKEN,
                        deployment_name=env_vars["RETRAIN_TRIGGER_DEPLOYMENT_NAME"])
    policy = Policy.model_validate(json.loads(rendered(env, "configmap-policy.yaml")["data"]["policy.json"]))
    models = [p.stem for p in sorted((REPO / f"environments/{env}/models").glob("*.yaml"))]
    retraining = [m for m in models if policy.for_model(m).on_drift and policy.for_model(m).max_runs_per_day]
    assert {settings.deployment_for(m) for m in retraining} <= deployed
    if env == "dev":
        assert retraining  # the example model retrains in dev
