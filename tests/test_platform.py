"""Platform rendering: component Applications from apps/ pins, tenancy, credentials."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from generator.cli import cli
from helpers import environment, kafka_secrets, make_repo, model_spec, sealed_secret, write_yaml

HELM = {"name": "demo", "description": "Demo chart", "namespace": "demo", "wave": -5, "license": "Apache-2.0",
        "secrets": ["demo-db"], "source": {"kind": "helm", "repo_url": "https://charts.example.com", "chart": "demo",
                                           "version": "1.2.3", "release_name": "demo"}}
MANIFESTS = {"name": "cache", "description": "A ConfigMap per environment", "namespace": "cache", "wave": 5,
             "depends_on": ["demo"], "license": "MIT", "source": {"kind": "manifests"}, "settings": {"size": 1}}
TEMPLATE = ('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cache, namespace: cache}\n'
            'data: {size: {{ settings.size | string | tojson }}, env: {{ env.name | tojson }}}\n')


def repo(tmp_path: Path, env_overrides: dict | None = None, optional: bool = False) -> Path:
    env = environment("dev", **(env_overrides or {}))
    root = make_repo(tmp_path, envs={"dev": env}, models={"dev": {"churn": model_spec()}})
    write_yaml(root / "apps/demo/component.yaml", {**HELM, "optional": optional})
    write_yaml(root / "apps/demo/values.yaml", {"replicas": 1, "resources": {"limits": {"cpu": "1"}}})
    write_yaml(root / "apps/cache/component.yaml", MANIFESTS)
    (root / "apps/cache/manifests").mkdir()
    (root / "apps/cache/manifests/configmap.yaml.j2").write_text(TEMPLATE)
    write_yaml(root / "environments/dev/secrets/demo-demo-db.yaml", sealed_secret("demo-db", "demo"))
    return root


def render(root: Path):
    return CliRunner().invoke(cli, ["render", "--repo-root", str(root)])


def load(root: Path, path: str) -> dict:
    return yaml.safe_load((root / path).read_text())


def test_helm_component_becomes_a_pinned_application_with_merged_values(tmp_path):
    root = repo(tmp_path, {"platform": {"components": {"demo": {"values": {"replicas": 3}}}}})
    result = render(root)
    assert result.exit_code == 0, result.output
    app = load(root, "environments/dev/rendered/apps/platform-demo.yaml")
    assert app["spec"]["source"] == {"repoURL": "https://charts.example.com", "chart": "demo", "targetRevision": "1.2.3",
                                     "helm": {"releaseName": "demo",
                                              "valuesObject": {"replicas": 3, "resources": {"limits": {"cpu": "1"}}}}}
    assert app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-5"
    assert app["spec"]["project"] == "platform" and "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_manifest_component_renders_its_templates_with_environment_settings(tmp_path):
    root = repo(tmp_path, {"platform": {"components": {"cache": {"settings": {"size": 7}}}}})
    assert render(root).exit_code == 0
    configmap = load(root, "environments/dev/rendered/platform/cache/configmap.yaml")
    assert configmap["data"] == {"size": "7", "env": "dev"}
    app = load(root, "environments/dev/rendered/apps/platform-cache.yaml")
    assert app["spec"]["source"]["path"] == "environments/dev/rendered/platform/cache"


def test_optional_component_is_off_until_enabled(tmp_path):
    root = repo(tmp_path, optional=True, env_overrides={"platform": {"components": {"demo": {"enabled": True}}}})
    assert render(root).exit_code == 0
    assert (root / "environments/dev/rendered/apps/platform-demo.yaml").is_file()
    (root / "environments/dev/environment.yaml").write_text(yaml.safe_dump(environment("dev")))
    result = render(root)
    assert result.exit_code == 3, result.output  # cache depends on demo, which is now off
    assert "cache is enabled but its dependency demo is not" in result.output


def test_unknown_component_override_and_unknown_setting(tmp_path):
    root = repo(tmp_path, {"platform": {"components": {"demoo": {"enabled": True},
                                                       "cache": {"settings": {"colour": "red"}}}}})
    result = render(root)
    assert result.exit_code == 3
    assert "platform.components.demoo: names no component in apps/" in result.output
    assert "platform.components.cache.settings: unknown settings ['colour']" in result.output


def test_dependency_must_sync_in_an_earlier_wave(tmp_path):
    root = repo(tmp_path)
    write_yaml(root / "apps/cache/component.yaml", {**MANIFESTS, "wave": -10})
    result = render(root)
    assert result.exit_code == 3
    assert "apps/cache/component.yaml: wave: depends on demo (wave -5) but syncs in wave -10" in result.output


def test_chart_version_range_is_refused(tmp_path):
    root = repo(tmp_path)
    write_yaml(root / "apps/demo/component.yaml", {**HELM, "source": {**HELM["source"], "version": "1.x"}})
    result = render(root)
    assert result.exit_code == 3 and "apps/demo/component.yaml:" in result.output and "source.helm.version" in result.output


def test_referenced_secret_without_sealed_secret(tmp_path):
    root = repo(tmp_path)
    (root / "environments/dev/secrets/demo-demo-db.yaml").unlink()
    result = render(root)
    assert result.exit_code == 5
    assert "Secret demo/demo-db is needed by component demo but nothing in sealed-secrets provides it" in result.output
    assert "kubeseal --cert sealed-secrets-dev.crt --format yaml > environments/dev/secrets/demo-demo-db.yaml" in result.output


def test_plain_secret_in_the_secrets_folder_is_refused(tmp_path):
    root = repo(tmp_path)
    write_yaml(root / "environments/dev/secrets/plain.yaml", {"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "x", "namespace": "demo"}, "stringData": {"password": "hunter2"}})
    result = render(root)
    assert result.exit_code == 5 and "plain Secrets are not allowed in Git" in result.output


def test_external_secrets_backend_renders_external_secrets(tmp_path):
    secrets = {"backend": "external-secrets", "store": {"name": "vault"}, "items": [
        {"name": "demo-db", "namespace": "demo", "keys": ["username", "password"]},
        {"name": "s3-credentials", "namespace": "models-dev", "keys": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]},
        {"name": "s3-credentials-drift-detector", "namespace": "models-dev", "keys": ["credentials"]},
        # The model's Kafka identities: each password in both namespaces, and the cluster CA.
        *({"name": name, "namespace": namespace, "keys": ["ca.crt" if name == "kafka-cluster-ca" else "password"]}
          for namespace, name in kafka_secrets(environment("dev"), "churn"))]}
    root = repo(tmp_path, {"platform": {"secrets": secrets}})
    result = render(root)
    assert result.exit_code == 0, result.output
    external = load(root, "environments/dev/rendered/platform/secrets/externalsecret-demo-db.yaml")
    assert external["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "vault"}
    assert external["spec"]["data"][1] == {"secretKey": "password",
                                           "remoteRef": {"key": "mlops/dev/demo-db", "property": "password"}}
    app = load(root, "environments/dev/rendered/apps/platform-secrets.yaml")
    assert app["spec"]["source"]["path"] == "environments/dev/rendered/platform/secrets"


def test_tenancy_guard_rails_follow_the_environment(tmp_path):
    root = repo(tmp_path, {"platform": {"tenancy": {"quota": {"cpu": "8", "memory": "16Gi", "pods": 40}}}})
    assert render(root).exit_code == 0
    quota = load(root, "environments/dev/rendered/platform/tenancy/resourcequota.yaml")
    assert quota["spec"]["hard"] == {"requests.cpu": "8", "requests.memory": "16Gi", "limits.cpu": "8",
                                     "limits.memory": "16Gi", "pods": "40"}
    deny = load(root, "environments/dev/rendered/platform/tenancy/networkpolicy-default-deny.yaml")
    assert deny["spec"]["podSelector"] == {} and deny["spec"]["ingress"] == []
    assert deny["spec"]["egress"] == [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]
    limits = load(root, "environments/dev/rendered/platform/tenancy/limitrange.yaml")
    assert limits["spec"]["limits"][0]["default"] == {"cpu": "500m", "memory": "512Mi"}


def test_long_running_containers_need_probes(tmp_path):
    from generator.check.manifest import Manifest
    from generator.check.validate import Validator

    root = repo(tmp_path)
    assert render(root).exit_code == 0
    path = "environments/dev/rendered/models/churn/drift-detector-deployment.yaml"
    doc = load(root, path)
    del doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    problems = Validator(root / "schemas").validate([Manifest(path, doc, "dev")])
    assert [p.field for p in problems] == ["spec.template.spec.containers[0].livenessProbe"]
    assert "container 'drift-detector' has no livenessProbe" in problems[0].message


def test_values_from_the_environment_and_a_replaceable_dependency(tmp_path):
    root = repo(tmp_path)
    write_yaml(root / "apps/cache/component.yaml", {**MANIFESTS, "depends_on": []})
    write_yaml(root / "apps/user/component.yaml", {
        **HELM, "name": "user", "wave": 10, "depends_on": ["demo"], "secrets": [],
        "env_values": {"extraEnv.S3_ENDPOINT": "s3.endpoint", "extraEnv.REGION": "s3.region"}})
    write_yaml(root / "apps/demo/component.yaml", {**HELM, "replaceable": True})
    env = environment("dev", s3={"endpoint": "https://minio.example.com", "credentials_secret": "s3-credentials"},
                      platform={"components": {"demo": {"enabled": False}}})
    write_yaml(root / "environments/dev/environment.yaml", env)
    result = render(root)
    assert result.exit_code == 0, result.output
    app = load(root, "environments/dev/rendered/apps/platform-user.yaml")
    assert app["spec"]["source"]["helm"]["valuesObject"]["extraEnv"] == {
        "S3_ENDPOINT": "https://minio.example.com", "REGION": "us-east-1"}
    assert not (root / "environments/dev/rendered/apps/platform-demo.yaml").exists()


def test_env_values_must_name_an_environment_field(tmp_path):
    root = repo(tmp_path)
    write_yaml(root / "apps/demo/component.yaml", {**HELM, "env_values": {"x": "s3.nope"}})
    result = render(root)
    assert result.exit_code == 3 and "apps/demo/component.yaml: env_values: env_values reads 'nope'" in result.output


def test_sidecars_may_reach_istiod_when_the_mesh_runs(tmp_path):
    root = repo(tmp_path)
    assert render(root).exit_code == 0
    assert not (root / "environments/dev/rendered/platform/tenancy/networkpolicy-allow-istio.yaml").exists()
    write_yaml(root / "apps/istiod/component.yaml", {**HELM, "name": "istiod", "namespace": "istio-system",
                                                     "secrets": [], "wave": -24})
    assert render(root).exit_code == 0
    policy = load(root, "environments/dev/rendered/platform/tenancy/networkpolicy-allow-istio.yaml")
    assert policy["spec"]["egress"][1] == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}}],
        "ports": [{"protocol": "TCP", "port": 15012}]}
