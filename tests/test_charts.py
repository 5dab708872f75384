"""Every platform Application rendered with its vendored chart (real Helm, offline), and each chart check
fed a deliberately wrong input. The MLflow test starts a real ``mlflow server`` with the environment the
chart renders and checks the Host header an in-cluster client sends.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from generator.check.charts import chart_problems
from generator.check.manifest import load_rendered_tree
from generator.render.charts import ChartRenderer, load_documents
from generator.spec import yamlio
from generator.spec.charts import load_lock
from generator.spec.layout import RepoLayout
from helpers import REPO, copy_example_repo
from services import LOCALHOST, free_port, require_module, run_service

KUBERNETES = "1.33"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One render cache for the module: the unchanged Applications of every case render once."""
    return tmp_path_factory.mktemp("chart-cache")


def problems_of(root: Path, cache: Path, envs: list[str]) -> list[str]:
    layout = RepoLayout(root)
    manifests, problems = load_rendered_tree(root, envs)
    assert problems == []
    return [str(p) for p in chart_problems(layout, manifests, envs, KUBERNETES, ChartRenderer(cache, KUBERNETES))]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_example_repo(tmp_path / "repo")


def edit_yaml(path: Path, change) -> None:
    """Change a YAML file in place, keeping a generated file's header line (the tree checks want it)."""
    text = path.read_text(encoding="utf-8")
    header = text.splitlines(keepends=True)[0] if text.startswith("# Code generated") else ""
    document = yamlio.load(text)
    change(document)
    path.write_text(header + yamlio.dump(document), encoding="utf-8")


def app_values(root: Path, component: str, env: str = "dev") -> Path:
    return root / "environments" / env / "rendered" / "apps" / f"platform-{component}.yaml"


def test_every_platform_application_of_every_environment_renders_and_passes(cache_dir):
    assert problems_of(REPO, cache_dir, ["dev", "staging", "prod"]) == []


def test_every_helm_pin_is_vendored_with_its_archive():
    vendored, problems = load_lock(RepoLayout(REPO))
    assert problems == []
    assert {(c.entry.chart, c.entry.version) for c in vendored.values()} >= {("mlflow", "1.11.5"), ("loki", "12.0.0")}


def test_render_passes_kube_version_and_api_versions_to_helm(tmp_path):
    """The renderer relies on the native render call taking `helm template`'s capability options."""
    chart = tmp_path / "caps"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: caps\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: caps}\ndata:\n"
        "  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
        "  monitoring: {{ .Capabilities.APIVersions.Has \"monitoring.coreos.com/v1\" | quote }}\n")
    import helm_python

    archive = Path(helm_python.package(chart, destination=tmp_path))
    from generator.spec.charts import LockedChart, VendoredChart, file_sha256
    entry = LockedChart(repo_url="https://example.com/charts", chart="caps", version="0.1.0",
                        sha256=file_sha256(archive), published="test chart, not published",
                        obtained="built by this test", license="Apache-2.0")
    renderer = ChartRenderer(None, "1.31", frozenset({"monitoring.coreos.com/v1"}))
    rendered = renderer.render(VendoredChart(entry, archive), {}, "caps", "default")
    [(_, doc)] = rendered.documents()
    assert doc["data"] == {"kube": "v1.31.0", "monitoring": "true"}


# --- each check, fed a wrong input ---------------------------------------------------------------------


def test_an_ignored_value_is_named_with_component_key_and_file(repo, cache_dir):
    edit_yaml(app_values(repo, "strimzi"), lambda d: d["spec"]["source"]["helm"]["valuesObject"].update(
        {"watchNamespace": ["kafka"]}))  # the chart's key is watchNamespaces; it ships no values schema
    found = problems_of(repo, cache_dir, ["dev"])
    assert len(found) == 1, found
    assert "strimzi: value watchNamespace (from environments/dev/environment.yaml platform.components.strimzi" \
        ".values) is ignored by chart strimzi-kafka-operator 1.2.0" in found[0]


def test_a_typo_is_refused_by_a_strict_chart_schema(repo, cache_dir):
    edit_yaml(app_values(repo, "mlflow"), lambda d: d["spec"]["source"]["helm"]["valuesObject"].update(
        {"serverAllowedHost": ["mlflow.mlflow.svc:5000"]}))
    found = problems_of(repo, cache_dir, ["dev"])
    assert len(found) == 1, found
    assert "additional properties 'serverAllowedHost' not allowed" in found[0]


def test_a_value_that_changes_nothing_needs_a_recorded_reason(repo, cache_dir):
    path = repo / "apps" / "strimzi" / "component.yaml"
    edit_yaml(path, lambda d: d["inert_values"].pop("watchAnyNamespace"))
    found = problems_of(repo, cache_dir, ["dev"])
    assert any("value watchAnyNamespace (from apps/strimzi/values.yaml) changes nothing in chart "
               "strimzi-kafka-operator 1.2.0's output" in p and "inert_values" in p for p in found), found


def test_the_chart_schema_refuses_a_wrong_type(repo, cache_dir):
    edit_yaml(app_values(repo, "cloudnative-pg"),
              lambda d: d["spec"]["source"]["helm"]["valuesObject"].update({"replicaCount": "two"}))
    found = problems_of(repo, cache_dir, ["dev"])
    assert len(found) == 1, found
    assert "chart cloudnative-pg's values.schema.json refuses the values" in found[0] and "/replicaCount" in found[0]


def test_enabling_a_left_out_dependency_chart_is_an_error(repo, cache_dir):
    edit_yaml(app_values(repo, "mlflow"),
              lambda d: d["spec"]["source"]["helm"]["valuesObject"].update({"postgresql": {"enabled": True}}))
    found = problems_of(repo, cache_dir, ["dev"])
    assert any("values enable dependency chart postgresql (postgresql.enabled), which the vendored mlflow archive "
               "leaves out" in p for p in found), found


def test_a_wrong_port_in_an_address_is_found(repo, cache_dir):
    def change(d):
        worker = d["spec"]["source"]["helm"]["valuesObject"]["worker"]
        worker["selfHostedServerApiConfig"]["apiUrl"] = "http://prefect-server.prefect.svc.cluster.local:4300/api"

    edit_yaml(app_values(repo, "prefect-worker"), change)
    found = problems_of(repo, cache_dir, ["dev"])
    assert any("points at http://prefect-server.prefect.svc.cluster.local:4300, but Service prefect-server.prefect "
               "listens on 4200, not 4300" in p for p in found), found


def test_a_gateway_selector_that_matches_no_gateway_pod_is_found(repo, cache_dir):
    edit_yaml(repo / "environments" / "dev" / "rendered" / "platform" / "seldon-gateway" / "gateway.yaml",
              lambda d: d["spec"].update({"selector": {"istio": "ingress"}}))
    found = problems_of(repo, cache_dir, ["dev"])
    assert any("Gateway/seldon-gateway: selector {'istio': 'ingress'} matches no gateway pod" in p for p in found), found


def test_a_kind_outside_the_appproject_is_found(repo, cache_dir):
    path = repo / "bootstrap" / "argocd" / "projects" / "platform.yaml"
    edit_yaml(path, lambda d: d["spec"].update({"clusterResourceWhitelist": [
        r for r in d["spec"]["clusterResourceWhitelist"] if r["kind"] != "ClusterRoleBinding"]}))
    found = problems_of(repo, cache_dir, ["dev"])
    assert any("Application/platform-sealed-secrets-dev: chart sealed-secrets" in p and "ClusterRoleBinding/" in p
               and "is cluster-scoped and not in project platform's clusterResourceWhitelist" in p for p in found), found


def test_a_secret_generated_on_every_render_is_found(repo, cache_dir):
    path = repo / "apps" / "mlflow" / "component.yaml"
    edit_yaml(path, lambda d: d["policy_exceptions"].pop("Secret/mlflow-flask-server-secret-key: regenerated"))
    found = problems_of(repo, cache_dir, ["dev"])
    assert any("chart mlflow renders Secret/mlflow-flask-server-secret-key (mlflow/templates/flask_secret.yaml) "
               "differently on every render" in p for p in found), found


def test_a_chart_workload_outside_the_policies_is_found(repo, cache_dir):
    edit_yaml(app_values(repo, "seldon-core-operator"),
              lambda d: d["spec"]["source"]["helm"]["valuesObject"]["manager"].pop("containerSecurityContext"))
    found = problems_of(repo, cache_dir, ["dev"])
    assert any("Deployment/seldon-controller-manager container 'manager' may run as root" in p for p in found), found


def test_an_altered_archive_is_refused(repo, cache_dir):
    archive = repo / "vendor" / "charts" / "strimzi-kafka-operator-1.2.0.tgz"
    archive.write_bytes(archive.read_bytes() + b"\0")
    found = problems_of(repo, cache_dir, ["dev"])
    assert any("strimzi-kafka-operator 1.2.0: the archive's sha256 is" in p for p in found), found
    assert any("chart strimzi-kafka-operator 1.2.0 from https://strimzi.io/charts has no vendored archive" in p
               for p in found), found


# --- MLflow answers in-cluster callers ---------------------------------------------------------------------


def mlflow_env_from_chart() -> dict[str, str]:
    """The variables the MLflow chart puts in the server container's env ConfigMap for prod's values."""
    layout = RepoLayout(REPO)
    vendored, _ = load_lock(layout)
    app = yamlio.load(app_values(REPO, "mlflow", "prod").read_text(encoding="utf-8"))
    source = app["spec"]["source"]
    [chart] = [c for key, c in vendored.items() if key[1] == "mlflow" and key[2] == source["targetRevision"]]
    rendered = ChartRenderer(None, KUBERNETES).render(chart, source["helm"]["valuesObject"],
                                                      source["helm"]["releaseName"], "mlflow")
    [configmap] = [d for d in load_documents(rendered.files["mlflow/templates/configmap.yaml"])
                   if d and "MLFLOW_SERVER_ALLOWED_HOSTS" in (d.get("data") or {})]
    return {key: str(value) for key, value in configmap["data"].items()}


def status_with_host(url: str, host: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("with_setting", [True, False], ids=["chart-env", "without-allowed-hosts"])
def test_mlflow_answers_the_in_cluster_host_only_with_the_rendered_setting(tmp_path, with_setting):
    require_module("mlflow", "mlflow")
    chart_env = mlflow_env_from_chart()
    assert chart_env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")[0] == "mlflow.mlflow.svc:5000"
    # Only the server's own settings: the S3 endpoint and region name cluster services this test has not.
    server_env = {k: v for k, v in chart_env.items() if k.startswith("MLFLOW_SERVER_")}
    if not with_setting:
        server_env.pop("MLFLOW_SERVER_ALLOWED_HOSTS")
    port = free_port()
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **server_env}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
               "--default-artifact-root", str(tmp_path / "artifacts"), "--host", LOCALHOST, "--port", str(port),
               "--workers", "1"]
    url = f"http://{LOCALHOST}:{port}"
    with run_service("mlflow server", command, url=f"{url}/health", env=env, cwd=tmp_path, timeout=120):
        api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        status = status_with_host(api, "mlflow.mlflow.svc:5000")
        assert status == (200 if with_setting else 403), json.dumps(server_env)


# --- mlops charts pull ---------------------------------------------------------------------------------------


def test_charts_pull_writes_archive_lock_sources_and_pin_together(repo, tmp_path):
    import helm_python

    from generator.commands.charts import pull

    source = tmp_path / "src" / "strimzi-kafka-operator"
    helm_python.expand(tmp_path / "src", REPO / "vendor" / "charts" / "strimzi-kafka-operator-1.2.0.tgz")
    layout = RepoLayout(repo)
    result = pull(layout, "strimzi", version="1.2.1", chart_dir=source,
                  published="release tag 1.2.1 of github.com/strimzi/strimzi-kafka-operator (test)")
    assert (result.previous, result.version) == ("1.2.0", "1.2.1")
    assert (repo / "vendor" / "charts" / "strimzi-kafka-operator-1.2.1.tgz").is_file()
    assert not (repo / "vendor" / "charts" / "strimzi-kafka-operator-1.2.0.tgz").exists()
    component = (repo / "apps" / "strimzi" / "component.yaml").read_text()
    assert "  version: 1.2.1\n" in component
    assert "inert_values:" in component  # the round-trip edit keeps the rest of the file
    assert "strimzi-kafka-operator | 1.2.1 |" in (repo / "vendor" / "charts" / "SOURCES.md").read_text()
    vendored, problems = load_lock(layout)
    assert problems == [] and ("https://strimzi.io/charts", "strimzi-kafka-operator", "1.2.1") in vendored


def test_charts_pull_refuses_an_archive_of_another_chart(repo):
    from generator.commands.charts import pull
    from generator.spec.errors import UsageError

    with pytest.raises(UsageError, match="holds chart 'mlflow', not 'strimzi-kafka-operator'"):
        pull(RepoLayout(repo), "strimzi", archive=REPO / "vendor" / "charts" / "mlflow-1.11.5.tgz",
             published="test")


def test_sources_md_must_match_the_lock(repo, cache_dir):
    (repo / "vendor" / "charts" / "SOURCES.md").write_text("edited by hand\n")
    found = problems_of(repo, cache_dir, ["dev"])
    assert found == ["vendor/charts/SOURCES.md: is not what the chart lock says (fix: run `mlops charts sources`)"]


def test_the_optional_loki_renders_and_passes_when_an_environment_enables_it(repo, cache_dir):
    """Loki is off everywhere in the example, so only this test renders its pin with its values."""
    from generator.commands.render import render_environments
    from generator.write.plan import apply

    edit_yaml(repo / "environments" / "dev" / "environment.yaml",
              lambda d: d.setdefault("platform", {}).setdefault("components", {}).update({"loki": {"enabled": True}}))
    layout = RepoLayout(repo)
    apply(layout, render_environments(layout, ["dev"]).plan)
    app = yamlio.load(app_values(repo, "loki").read_text(encoding="utf-8").split("\n", 1)[1])
    assert (app["spec"]["source"]["chart"], app["spec"]["source"]["targetRevision"]) == ("loki", "12.0.0")
    assert problems_of(repo, cache_dir, ["dev"]) == []


def test_an_alert_rule_querying_a_datasource_grafana_does_not_provision_is_found(repo, cache_dir):
    path = repo / "environments" / "dev" / "rendered" / "models" / "fraud-detector" / "grafana-alerts-configmap.yaml"
    edit_yaml(path, lambda d: d["data"].update({key: text.replace("datasourceUid: prometheus", "datasourceUid: prom")
                                                for key, text in d["data"].items()}))
    found = problems_of(repo, cache_dir, ["dev"])
    assert any("queries datasource UID 'prom', which no provisioned Grafana datasource has" in p for p in found), found
