"""bootstrap/argocd: the kustomize build, the argocd-cm Lua health checks (executed), RBAC and ignoreDifferences.

The Lua scripts run in a real Lua 5.1 runtime (lupa; Argo CD's gopher-lua is Lua 5.1) the way Argo CD
runs them: the live object as the global ``obj``, the script returning ``{status=..., message=...}``.
The jq expressions run in a real jq against SeldonDeployments defaulted the way Seldon's defaulting does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = REPO / "bootstrap" / "argocd"
UPSTREAM = BOOTSTRAP / "upstream" / "install.yaml"
SELDON_LUA = BOOTSTRAP / "health" / "seldondeployment.lua"
APPLICATION_LUA = BOOTSTRAP / "health" / "application.lua"
SELDON_IGNORE = BOOTSTRAP / "diff" / "seldondeployment-ignore-differences.yaml"
POLICY_CSV = BOOTSTRAP / "rbac" / "policy.csv"

SELDON_HEALTH_KEY = "resource.customizations.health.machinelearning.seldon.io_SeldonDeployment"
APPLICATION_HEALTH_KEY = "resource.customizations.health.argoproj.io_Application"
SELDON_IGNORE_KEY = "resource.customizations.ignoreDifferences.machinelearning.seldon.io_SeldonDeployment"
ARGO_HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def load_documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def require_tool(name: str, why: str) -> str:
    """The tool's path; a missing tool fails under CI=true and skips (with the reason) elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed; {why}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


# --- the vendored upstream manifest ------------------------------------------------------------------

def recorded_sha256() -> str:
    sources = (BOOTSTRAP / "upstream" / "SOURCES.md").read_text()
    match = re.search(r"\|\s*sha256\s*\|\s*`([0-9a-f]{64})`", sources)
    assert match, "upstream/SOURCES.md records no sha256"
    return match.group(1)


def test_upstream_manifest_matches_its_recorded_hash():
    assert hashlib.sha256(UPSTREAM.read_bytes()).hexdigest() == recorded_sha256()


def test_sources_name_the_release_and_forbid_edits():
    sources = (BOOTSTRAP / "upstream" / "SOURCES.md").read_text()
    for fact in ("argoproj/argo-cd", "v3.5.1", "109ca7ca71139e514114499d294a492e7910a965",
                 "manifests/install.yaml", "Apache-2.0", "Never edit it"):
        assert fact in sources


# --- the kustomize build -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built() -> list[dict]:
    kubectl = require_tool("kubectl", "`kubectl kustomize bootstrap/argocd` cannot be checked "
                                      "(install kubectl: it bundles kustomize)")
    result = subprocess.run([kubectl, "kustomize", str(BOOTSTRAP)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return load_documents(result.stdout)


def test_kustomization_uses_local_files_only():
    # `kubectl kustomize` must build offline: no remote resources, every referenced file present.
    kustomization = yaml.safe_load((BOOTSTRAP / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "argocd"
    referenced = list(kustomization["resources"])
    for generator in kustomization.get("configMapGenerator", []):
        referenced += [entry.split("=", 1)[-1] for entry in generator.get("files", [])]
    referenced += [patch["path"] for patch in kustomization.get("patches", [])]
    for path in referenced:
        assert "://" not in path and not path.startswith(("github.com", "git@")), path
        assert (BOOTSTRAP / path).exists(), path
    assert "upstream/install.yaml" in referenced


def find(documents: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name} appears {len(matches)} times"
    return matches[0]


@cache
def upstream_documents() -> list[dict]:
    return load_documents(UPSTREAM.read_text())


def project_documents() -> list[dict]:
    return [d for path in sorted((BOOTSTRAP / "projects").glob("*.yaml")) if path.name != "kustomization.yaml"
            for d in load_documents(path.read_text()) if d.get("kind") == "AppProject"]


def test_build_holds_every_upstream_object_plus_namespace_and_projects(built):
    upstream = upstream_documents()
    expected = Counter(d["kind"] for d in upstream) + Counter({"Namespace": 1}) \
        + Counter(d["kind"] for d in project_documents())
    assert Counter(d["kind"] for d in built) == expected
    names = {(d["kind"], d["metadata"]["name"]) for d in built}
    assert {(d["kind"], d["metadata"]["name"]) for d in upstream} <= names


def test_build_puts_everything_namespaced_in_argocd(built):
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    find(built, "Namespace", "argocd")
    misplaced = [(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in built
                 if d["kind"] not in cluster_scoped and d["metadata"].get("namespace") != "argocd"]
    assert misplaced == []


def test_build_holds_the_generated_app_projects(built):
    projects = {d["metadata"]["name"] for d in built if d["kind"] == "AppProject"}
    assert projects == {d["metadata"]["name"] for d in project_documents()}
    assert "models-prod" in projects


def test_build_images_are_pinned(built):
    images = [c["image"] for d in built if d["kind"] in ("Deployment", "StatefulSet")
              for c in d["spec"]["template"]["spec"].get("containers", []) + d["spec"]["template"]["spec"].get(
                  "initContainers", [])]
    assert images
    for image in images:
        reference = image.rsplit("/", 1)[-1]
        assert "@sha256:" in image or (":" in reference and not reference.endswith(":latest")), image
    assert "quay.io/argoproj/argocd:v3.5.1" in images


def test_build_gives_every_argocd_container_requests_and_limits(built):
    # Upstream ships none; resources/patches.yaml adds them by container name. A container upstream adds
    # or renames in a bump would come out without them and fail here.
    workloads = [d for d in built if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(workloads) == 7
    missing = [(d["metadata"]["name"], c["name"], kind, resource)
               for d in workloads for group in ("initContainers", "containers")
               for c in d["spec"]["template"]["spec"].get(group, [])
               for kind in ("requests", "limits") for resource in ("cpu", "memory")
               if resource not in (c.get("resources") or {}).get(kind, {})]
    assert missing == []
    controller = find(built, "StatefulSet", "argocd-application-controller")
    assert controller["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    # The patch only adds resources: upstream's images, args and probes are untouched.
    upstream = find(upstream_documents(), "StatefulSet", "argocd-application-controller")
    ours = {k: v for k, v in controller["spec"]["template"]["spec"]["containers"][0].items() if k != "resources"}
    assert ours == upstream["spec"]["template"]["spec"]["containers"][0]


def test_argocd_cm_carries_our_keys_and_keeps_upstream_ones(built):
    data = find(built, "ConfigMap", "argocd-cm")["data"]
    assert data[SELDON_HEALTH_KEY] == SELDON_LUA.read_text()
    assert data[APPLICATION_HEALTH_KEY] == APPLICATION_LUA.read_text()
    assert data[SELDON_IGNORE_KEY] == SELDON_IGNORE.read_text()
    assert data["admin.enabled"] == "false"
    assert data["users.anonymous.enabled"] == "false"
    assert data["exec.enabled"] == "false"
    assert data["statusbadge.enabled"] == "false"
    assert data["timeout.reconciliation"] == "180s"
    upstream = find(upstream_documents(), "ConfigMap", "argocd-cm").get("data") or {}
    assert upstream, "upstream argocd-cm has data of its own to keep"
    assert {k: data.get(k) for k in upstream} == upstream


def test_argocd_rbac_cm_carries_the_policy(built):
    data = find(built, "ConfigMap", "argocd-rbac-cm")["data"]
    assert data["policy.csv"] == POLICY_CSV.read_text()
    assert data["policy.default"] == "role:readonly"
    assert data["scopes"] == "[groups]"


def test_config_maps_keep_their_names(built):
    # Argo CD reads its ConfigMaps by name: a kustomize hash suffix would leave them unread.
    names = {d["metadata"]["name"] for d in built if d["kind"] == "ConfigMap"}
    assert {"argocd-cm", "argocd-rbac-cm", "argocd-cmd-params-cm"} <= names


# --- Lua health checks, executed ---------------------------------------------------------------------

def to_lua(lua, value):
    """A Python value (JSON-like) as a Lua value: dicts and lists become tables, lists 1-based."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(lua, item)
        return table
    return value


def run_health_check(script: str, obj: dict) -> dict:
    """Run an argocd-cm health script as Argo CD does: `obj` global in, {status, message} table out."""
    from lupa.lua51 import LuaRuntime

    lua = LuaRuntime(register_eval=False, register_builtins=False)
    sandbox = lua.globals()
    for name in ("io", "os", "debug", "package", "require", "dofile", "loadfile", "load", "loadstring"):
        sandbox[name] = None  # Argo CD opens no file, OS or module access to these scripts
    sandbox.obj = to_lua(lua, obj)
    result = lua.execute(script)
    assert lua.eval("type")(result) == "table", f"the script returned {result!r}, not a table"
    health = dict(result.items())
    assert set(health) <= {"status", "message"}
    assert health["status"] in ARGO_HEALTH_STATUSES
    assert isinstance(health.get("message", ""), str)
    return health


def seldon_deployment(status: dict | None = None, generation: int | None = None) -> dict:
    """A rendered SeldonDeployment of this repository (or a minimal one) with the given status."""
    rendered = sorted(REPO.glob("environments/*/rendered/models/*/seldondeployment.yaml"))
    if rendered:
        obj = yaml.safe_load(rendered[0].read_text())
    else:
        obj = {"apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment",
               "metadata": {"name": "model", "namespace": "models-dev"},
               "spec": {"predictors": [{"name": "main", "graph": {"name": "model", "type": "MODEL"}}]}}
    if generation is not None:
        obj["metadata"]["generation"] = generation
    if status is not None:
        obj["status"] = status
    return obj


@pytest.fixture(scope="module")
def seldon_health():
    script = SELDON_LUA.read_text()
    return lambda obj: run_health_check(script, obj)


@pytest.fixture(scope="module")
def application_health():
    script = APPLICATION_LUA.read_text()
    return lambda obj: run_health_check(script, obj)


def test_seldon_available_is_healthy(seldon_health):
    health = seldon_health(seldon_deployment({
        "state": "Available",
        "deploymentStatus": {"fraud-detector-main-0-model": {"replicas": 2, "availableReplicas": 2},
                             "fraud-detector-candidate-0-model": {"replicas": 1, "availableReplicas": 1}}}))
    assert health["status"] == "Healthy"


def test_seldon_available_without_deployment_status_is_healthy(seldon_health):
    assert seldon_health(seldon_deployment({"state": "Available"}))["status"] == "Healthy"


def test_seldon_available_with_replicas_missing_is_progressing(seldon_health):
    health = seldon_health(seldon_deployment({
        "state": "Available",
        "deploymentStatus": {"fraud-detector-main-0-model": {"replicas": 2, "availableReplicas": 2},
                             "fraud-detector-candidate-0-model": {"replicas": 3, "availableReplicas": 1}}}))
    assert health["status"] == "Progressing"
    assert "fraud-detector-candidate-0-model 1/3" in health["message"]
    assert "main" not in health["message"]


def test_seldon_available_counts_an_omitted_available_count_as_zero(seldon_health):
    # The operator omits zero counts (omitempty), so no availableReplicas means none available.
    health = seldon_health(seldon_deployment({"state": "Available",
                                              "deploymentStatus": {"d": {"replicas": 2}}}))
    assert health["status"] == "Progressing"
    assert "d 0/2" in health["message"]


def test_seldon_creating_is_progressing(seldon_health):
    health = seldon_health(seldon_deployment({"state": "Creating"}))
    assert health["status"] == "Progressing"
    assert "created" in health["message"]


def test_seldon_failed_is_degraded_with_the_description(seldon_health):
    description = "Deployment is no longer progressing and not available."
    health = seldon_health(seldon_deployment({"state": "Failed", "description": description}))
    assert health["status"] == "Degraded"
    assert description in health["message"]


def test_seldon_failed_without_description_is_degraded(seldon_health):
    health = seldon_health(seldon_deployment({"state": "Failed"}))
    assert health["status"] == "Degraded"
    assert health["message"]


@pytest.mark.parametrize("status", [None, {}, {"state": ""}, {"deploymentStatus": {"d": {"replicas": 1}}}])
def test_seldon_without_state_is_progressing(seldon_health, status):
    assert seldon_health(seldon_deployment(status))["status"] == "Progressing"


def test_seldon_status_of_an_older_generation_is_progressing(seldon_health):
    stale = seldon_health(seldon_deployment({"state": "Available", "observedGeneration": 3}, generation=4))
    assert stale["status"] == "Progressing"
    assert "generation 4" in stale["message"]
    current = seldon_health(seldon_deployment({"state": "Available", "observedGeneration": 4}, generation=4))
    assert current["status"] == "Healthy"
    failed = seldon_health(seldon_deployment({"state": "Failed", "observedGeneration": 4}, generation=4))
    assert failed["status"] == "Degraded"


def test_seldon_unrecognised_state_is_unknown(seldon_health):
    health = seldon_health(seldon_deployment({"state": "Exploded"}))
    assert health["status"] == "Unknown"
    assert "Exploded" in health["message"]


def application(health: dict | None = None, sync: str | None = "Synced", operation: dict | None = None) -> dict:
    obj = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
           "metadata": {"name": "model-fraud-detector", "namespace": "argocd"},
           "spec": {"project": "models-prod", "destination": {"namespace": "models-prod"}}}
    status: dict = {}
    if health is not None:
        status["health"] = health
    if sync is not None:
        status["sync"] = {"status": sync}
    if operation is not None:
        status["operationState"] = operation
    if status:
        obj["status"] = status
    return obj


@pytest.mark.parametrize("reported", ["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"])
def test_application_health_is_the_child_reported_health(application_health, reported):
    assert application_health(application({"status": reported}))["status"] == reported


def test_application_degraded_keeps_the_child_message(application_health):
    health = application_health(application({"status": "Degraded", "message": "Deployment x exceeded its deadline"}))
    assert health["status"] == "Degraded"
    assert health["message"] == "Deployment x exceeded its deadline"


def test_application_missing_says_it_is_out_of_sync(application_health):
    health = application_health(application({"status": "Missing"}, sync="OutOfSync"))
    assert health["status"] == "Missing"
    assert "OutOfSync" in health["message"]


@pytest.mark.parametrize("status", [None, {"sync": {"status": "OutOfSync"}}, {"health": {}}])
def test_application_without_health_is_progressing(application_health, status):
    obj = application(sync=None)
    if status is not None:
        obj["status"] = status
    assert application_health(obj)["status"] == "Progressing"


def test_application_being_synced_is_progressing(application_health):
    running = application({"status": "Healthy"}, operation={"phase": "Running", "message": "waiting for wave 50"})
    health = application_health(running)
    assert health["status"] == "Progressing"
    assert "waiting for wave 50" in health["message"]
    done = application({"status": "Healthy"}, operation={"phase": "Succeeded"})
    assert application_health(done)["status"] == "Healthy"


def test_application_unrecognised_health_is_unknown(application_health):
    assert application_health(application({"status": "Sparkling"}))["status"] == "Unknown"


# --- RBAC --------------------------------------------------------------------------------------------

def parse_policy(text: str) -> tuple[list[tuple[str, str, str, str, str]], list[tuple[str, str]]]:
    """The `p` (subject, resource, action, object, effect) and `g` (member, role) lines of a policy.csv."""
    policies, groupings = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split(",")]
        if fields[0] == "p":
            assert len(fields) == 6 and fields[5] in ("allow", "deny"), f"line {number}: {line}"
            policies.append(tuple(fields[1:]))
        elif fields[0] == "g":
            assert len(fields) == 3, f"line {number}: {line}"
            groupings.append((fields[1], fields[2]))
        else:
            raise AssertionError(f"line {number} is neither p nor g: {line}")
    return policies, groupings


class Policy:
    """Argo CD's RBAC semantics: glob matching, roles through `g`, deny beats allow, default role."""

    def __init__(self, csv_text: str, default_role: str):
        self.policies, self.groupings = parse_policy(csv_text)
        self.default_role = default_role

    def subjects(self, user: str, groups: tuple[str, ...] = ()) -> set[str]:
        found = {user, *groups, self.default_role}
        while True:
            more = {role for member, role in self.groupings if member in found} - found
            if not more:
                return found
            found |= more

    def allows(self, user: str, groups: tuple[str, ...], resource: str, action: str, obj: str) -> bool:
        subjects = self.subjects(user, groups)
        effects = {effect for subject, res, act, ob, effect in self.policies
                   if subject in subjects and fnmatchcase(resource, res) and fnmatchcase(action, act)
                   and fnmatchcase(obj, ob)}
        return "allow" in effects and "deny" not in effects


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(POLICY_CSV.read_text(), default_role="role:readonly")


def test_policy_lines_are_well_formed_and_map_the_sso_groups(policy):
    assert set(policy.groupings) == {("mlops-platform-admins", "role:platform-admins"),
                                     ("mlops-release-managers", "role:release-managers"),
                                     ("mlops-ml-engineers", "role:ml-engineers")}


def test_policy_grants_nothing_to_the_default_role_or_admin(policy):
    assert all(subject not in ("role:readonly", "role:admin") for subject, *_ in policy.policies)
    assert all(role != "role:admin" for _, role in policy.groupings)
    assert not policy.allows("someone", (), "applications", "sync", "models-dev/fraud-detector")


def test_only_release_managers_sync_prod_models(policy):
    subjects = {s for s, *_ in policy.policies} | {m for m, _ in policy.groupings} | {"someone"}
    for action in ("sync", "override", "action/apps/Deployment/restart"):
        may = {s for s in subjects if policy.allows(s, (), "applications", action, "models-prod/fraud-detector")}
        assert may == {"role:release-managers", "mlops-release-managers"}, action
        assert may <= {"role:release-managers", "mlops-release-managers", "role:platform-admins",
                       "mlops-platform-admins"}


def test_release_managers_manage_staging_and_prod(policy):
    for project in ("models-staging", "models-prod"):
        for action in ("get", "sync", "override", "action/apps/Deployment/restart"):
            assert policy.allows("alice", ("mlops-release-managers",), "applications", action, f"{project}/m")
    assert policy.allows("alice", ("mlops-release-managers",), "applications", "sync", "platform/root-prod")
    assert not policy.allows("alice", ("mlops-release-managers",), "applications", "sync", "platform/seldon-core")
    assert not policy.allows("alice", ("mlops-release-managers",), "applications", "delete", "models-prod/m")


def test_ml_engineers_sync_dev_and_staging_never_prod(policy):
    engineer = ("bob", ("mlops-ml-engineers",))
    for project in ("models-dev", "models-staging"):
        assert policy.allows(*engineer, "applications", "get", f"{project}/m")
        assert policy.allows(*engineer, "applications", "sync", f"{project}/m")
    for action in ("sync", "override", "update", "delete", "action/apps/Deployment/restart"):
        assert not policy.allows(*engineer, "applications", action, "models-prod/m")
    # Segregation of duties: membership of the ML engineers' group removes prod sync even from a
    # release manager (deny beats allow).
    assert not policy.allows("carol", ("mlops-ml-engineers", "mlops-release-managers"),
                             "applications", "sync", "models-prod/m")


def test_platform_admins_own_the_platform_project_only(policy):
    admin = ("dana", ("mlops-platform-admins",))
    for action in ("get", "create", "update", "delete", "sync", "override"):
        assert policy.allows(*admin, "applications", action, "platform/seldon-core")
    assert policy.allows(*admin, "applicationsets", "create", "platform/anything")
    assert not policy.allows(*admin, "applications", "sync", "models-prod/m")


def test_policy_evaluator_applies_deny_over_allow():
    # The checks above rely on this evaluator: prove it can say no and yes.
    evaluator = Policy("p, role:x, applications, *, a/*, allow\np, role:x, applications, sync, a/b, deny\n"
                       "g, grp, role:x\n", default_role="role:readonly")
    assert evaluator.allows("u", ("grp",), "applications", "sync", "a/c")
    assert not evaluator.allows("u", ("grp",), "applications", "sync", "a/b")
    assert not evaluator.allows("u", (), "applications", "sync", "a/c")


# --- ignoreDifferences -------------------------------------------------------------------------------

def jq_expressions() -> list[str]:
    document = yaml.safe_load(SELDON_IGNORE.read_text())
    assert set(document) == {"jqPathExpressions"}
    return document["jqPathExpressions"]


def test_ignore_differences_are_jq_path_strings():
    expressions = jq_expressions()
    assert expressions
    assert len(set(expressions)) == len(expressions)
    for expression in expressions:
        assert isinstance(expression, str) and expression.startswith("."), expression
        assert expression.count("(") == expression.count(")") and expression.count("[") == expression.count("]")


def normalize(obj: dict) -> dict:
    """Apply the expressions as Argo CD does: `del(<expression>)` for each, in order."""
    jq = require_tool("jq", "the ignoreDifferences expressions cannot be executed (apt-get install jq)")
    program = " | ".join(f"del({expression})" for expression in jq_expressions())
    result = subprocess.run([jq, "-c", program], input=json.dumps(obj), capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def seldon_defaulting(sdep: dict) -> dict:
    """The stored object after Seldon Core v1's defaulting (defaults.go): what the cluster shows Argo CD."""
    live = copy.deepcopy(sdep)
    next_http, next_grpc = 9000, 9500
    for predictor in live["spec"]["predictors"]:
        labels = predictor.setdefault("labels", {})
        labels.setdefault("version", predictor["name"])

        def default_unit(unit: dict) -> None:
            if unit.get("type") is None and unit.get("methods") is None and unit.get("implementation") is None:
                unit["type"] = "MODEL"
            unit.setdefault("implementation", "UNKNOWN_IMPLEMENTATION")
            for child in unit.get("children") or []:
                default_unit(child)

        def units(unit: dict):
            yield unit
            for child in unit.get("children") or []:
                yield from units(child)

        default_unit(predictor["graph"])
        for index, component in enumerate(predictor.get("componentSpecs") or []):
            for container in component["spec"]["containers"]:
                unit = next((u for u in units(predictor["graph"]) if u["name"] == container["name"]), None)
                if unit is None:
                    continue
                ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
                http, grpc = ports.get("http", next_http), ports.get("grpc", next_grpc)
                next_http, next_grpc = next_http + 1, next_grpc + 1
                host = "localhost" if index == 0 else f"{live['metadata']['name']}-{predictor['name']}-{container['name']}"
                unit["endpoint"] = {**(unit.get("endpoint") or {}), "service_host": host, "service_port": http,
                                    "httpPort": http, "grpcPort": grpc}
                mounts = container.setdefault("volumeMounts", [])
                if not any(m["name"] == "seldon-podinfo" for m in mounts):
                    mounts.append({"name": "seldon-podinfo", "mountPath": "/etc/podinfo"})
    return live


def rendered_seldon_deployments() -> list[dict]:
    found = [yaml.safe_load(p.read_text())
             for p in sorted(REPO.glob("environments/*/rendered/models/*/seldondeployment.yaml"))]
    minimal = {"apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment",
               "metadata": {"name": "m", "namespace": "models-dev"},
               "spec": {"predictors": [{"name": "main", "graph": {"name": "model", "children": [
                   {"name": "child", "children": []}]},
                   "componentSpecs": [{"spec": {"containers": [{"name": "model", "image": "x@sha256:0"},
                                                               {"name": "child", "image": "y@sha256:0"}]}}]}]}}
    return [*found, minimal]


def test_defaulted_seldon_deployments_are_in_sync():
    for desired in rendered_seldon_deployments():
        live = seldon_defaulting(desired)
        assert live != desired  # the defaulting did write fields
        assert normalize(live) == normalize(desired), desired["metadata"]


@pytest.mark.parametrize("change", [
    "image", "traffic", "implementation", "version-label", "extra-mount", "endpoint-type"])
def test_real_changes_still_show_as_differences(change):
    desired = rendered_seldon_deployments()[0]
    live = seldon_defaulting(desired)
    predictor = live["spec"]["predictors"][0]
    container = predictor["componentSpecs"][0]["spec"]["containers"][0]
    if change == "image":
        container["image"] = "ghcr.io/acme/model-server@sha256:" + "0" * 64
    elif change == "traffic":
        predictor["traffic"] = 37
    elif change == "implementation":
        predictor["graph"]["implementation"] = "SKLEARN_SERVER"
    elif change == "version-label":
        predictor["labels"]["version"] = "someone-else"
    elif change == "extra-mount":
        container["volumeMounts"].append({"name": "injected", "mountPath": "/injected"})
    elif change == "endpoint-type":
        predictor["graph"]["endpoint"]["type"] = "GRPC"
    assert normalize(live) != normalize(desired)
