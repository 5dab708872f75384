"""The platform's network: the rendered NetworkPolicies allow exactly what generator/spec/network.py
describes (every pair not described is denied), and mlops validate's network rules refuse wrong manifests."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from generator.check.manifest import Manifest, load_rendered_tree
from generator.check.network import allowed, is_default_deny, network_problems
from generator.render.network import resolve
from generator.spec import naming
from generator.spec.components import load_components
from generator.spec.layout import RepoLayout
from generator.spec.loader import load_environment
from generator.spec.network import ANY_CIDR, DESCRIPTION

REPO = Path(__file__).resolve().parents[1]
ENVS = ("dev", "prod")


def _environment(env: str):
    layout = RepoLayout(REPO)
    return load_environment(layout, env), load_components(layout)


def _endpoints(env: str) -> dict[str, tuple[str | None, dict[str, str]]]:
    """Every group of the description as a concrete pod, the model pods as rendered, an intruder in every
    namespace and a host outside the cluster."""
    loaded, components = _environment(env)
    peers = resolve(loaded, components)
    points: dict[str, tuple[str | None, dict[str, str]]] = {}
    for name, peer in peers.items():
        if peer.cidr:
            continue
        if name == "model-pods":
            for model in loaded_models(env):
                for kind in ("model-server", "drift-detector"):
                    points[f"{model}-{kind}"] = (peer.namespace, naming.selector_labels(model, kind))
        else:
            points[name] = (peer.namespace, dict(peer.pods or {"app": name}))
    for namespace in {p.namespace for p in peers.values() if p.namespace}:
        points[f"intruder@{namespace}"] = (namespace, {"app": "intruder"})
    points["outside"] = (None, {})
    return points


def loaded_models(env: str) -> list[str]:
    return RepoLayout(REPO).models(env)


def _group_of(point: tuple[str | None, dict[str, str]], group: str, peers) -> bool:
    peer = peers.get(group)
    if peer is None:
        return False
    if peer.cidr:
        return True  # an ipBlock covers every address, pods included
    namespace, labels = point
    return namespace == peer.namespace and all(labels.get(k) == v for k, v in (peer.pods or {}).items())


def _described(source, target, port: int, peers, internal: set[str]) -> bool:
    if source[0] is not None and source[0] == target[0] and source[0] in internal:
        return True
    return any(_group_of(source, f.source, peers) and _group_of(target, f.target, peers)
               and (not f.ports or port in f.ports) for f in DESCRIPTION.flows)


def _policies(env: str) -> list[dict]:
    manifests, problems = load_rendered_tree(REPO, [env])
    assert problems == []
    return [m.doc for m in manifests if m.doc.get("kind") == "NetworkPolicy"]


@pytest.mark.parametrize("env", ENVS)
def test_the_policy_graph_denies_every_pair_not_described(env: str) -> None:
    loaded, components = _environment(env)
    peers = resolve(loaded, components)
    internal = {peers_namespace for ref in DESCRIPTION.internal
                if (peers_namespace := _namespace(ref, loaded, components))}
    policies = _policies(env)
    points = _endpoints(env)
    ports = sorted({p for f in DESCRIPTION.flows for p in f.ports} | {22, 80, 4200, 5432, 8080, 9092, 12345})
    leaks = [(s, t, port) for (s, src), (t, dst) in itertools.permutations(points.items(), 2) for port in ports
             if allowed(policies, src, dst, port) and not _described(src, dst, port, peers, internal)]
    assert leaks == []


def _namespace(ref: str, loaded, components) -> str | None:
    from generator.render.network import namespace_of
    return namespace_of(ref, loaded, components)


@pytest.mark.parametrize("env", ENVS)
def test_every_described_flow_between_platform_pods_is_allowed(env: str) -> None:
    loaded, components = _environment(env)
    peers = resolve(loaded, components)
    policies = _policies(env)
    points = _endpoints(env)
    missing = []
    for flow in DESCRIPTION.flows:
        sources = [p for n, p in points.items() if not n.startswith("intruder") and _group_of(p, flow.source, peers)
                   and not peers[flow.source].cidr]
        targets = [p for n, p in points.items() if not n.startswith("intruder") and _group_of(p, flow.target, peers)
                   and not peers[flow.target].cidr]
        if flow.source not in peers or flow.target not in peers or not sources or not targets:
            continue  # a disabled component, or an address outside the cluster
        for port in flow.ports:
            if not any(allowed(policies, s, t, port) for s in sources for t in targets):
                missing.append((flow.source, flow.target, port))
    assert missing == [], missing


def test_only_the_four_clients_reach_prefects_api() -> None:
    policies = _policies("dev")
    points = _endpoints("dev")
    server = points["prefect-server"]
    reach = sorted(name for name, point in points.items() if point != server and allowed(policies, point, server, 4200))
    assert reach == ["prefect-worker", "retrain-deploy", "retrain-flow-runs", "retrain-trigger"]


def test_cidr_peers_are_the_api_server_and_outside_only() -> None:
    cidrs = {d["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name", "*")
             for d in _policies("dev") for side in ("ingress", "egress") for rule in d["spec"][side]
             for peer in rule.get("to", rule.get("from", [])) if "ipBlock" in peer}
    assert all(peer for peer in cidrs)
    assert ANY_CIDR == "0.0.0.0/0"


@pytest.mark.parametrize("env", ENVS)
def test_every_rendered_namespace_is_default_deny_with_pod_security(env: str) -> None:
    manifests, _ = load_rendered_tree(REPO, [env])
    namespaces = [m.doc for m in manifests if m.doc.get("kind") == "Namespace"]
    assert len(namespaces) >= 10
    denied = {m.doc["metadata"]["namespace"] for m in manifests
              if m.doc.get("kind") == "NetworkPolicy" and is_default_deny(m.doc)}
    assert {n["metadata"]["name"] for n in namespaces} <= denied
    levels = {n["metadata"]["name"]: n["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] for n in namespaces}
    assert levels["prefect"] == "restricted" and levels["cnpg-system"] == "restricted"
    assert levels["monitoring"] == "privileged"
    assert network_problems(manifests) == []


# --- the validate rules, each fed a wrong manifest --------------------------------------------------


def _manifest(doc: dict, path: str = "environments/dev/rendered/x.yaml") -> Manifest:
    return Manifest(path, doc, "dev")


def _namespace_doc(name: str = "team", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _deny(namespace: str = "team") -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [],
                     "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}}


RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def test_a_namespace_without_default_deny_is_refused() -> None:
    problems = network_problems([_manifest(_namespace_doc(**RESTRICTED))])
    assert [p.message for p in problems] == [
        "Namespace/team has no default-deny NetworkPolicy: every pod in it accepts and opens any connection"]
    allow_all = _deny()
    allow_all["spec"]["ingress"] = [{}]
    assert len(network_problems([_manifest(_namespace_doc(**RESTRICTED)), _manifest(allow_all)])) == 1
    assert network_problems([_manifest(_namespace_doc(**RESTRICTED)), _manifest(_deny())]) == []


def test_a_namespace_without_pod_security_or_reason_is_refused() -> None:
    problems = network_problems([_manifest(_namespace_doc()), _manifest(_deny())])
    assert [p.message for p in problems] == ["Namespace/team enforces no Pod Security level"]
    baseline = _namespace_doc(**{"pod-security.kubernetes.io/enforce": "baseline"})
    problems = network_problems([_manifest(baseline), _manifest(_deny())])
    assert [p.message for p in problems] == ["Namespace/team enforces baseline, not restricted, and says not why"]
    baseline["metadata"]["annotations"] = {"mlops-gitops.io/pod-security-reason": "the CNI needs NET_ADMIN"}
    assert network_problems([_manifest(baseline), _manifest(_deny())]) == []


def _contact_point(url: str) -> dict:
    text = yaml.safe_dump({"apiVersion": 1, "contactPoints": [{"orgId": 1, "name": "hook", "receivers": [{
        "uid": "hook", "type": "webhook", "settings": {"url": url, "authorization_scheme": "Bearer",
                                                       "authorization_credentials": "$TOKEN"}}]}]})
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hook", "namespace": "monitoring",
                                                                  "labels": {"grafana_alert": "1"}},
            "data": {"hook.yaml": text}}


def test_credentials_over_plain_http_are_refused() -> None:
    problems = network_problems([_manifest(_contact_point("http://receiver.team.svc:8080/alerts"))])
    assert [p.message for p in problems] == [
        "ConfigMap/hook: Grafana contact point 'hook' sends credentials to "
        "http://receiver.team.svc:8080/alerts over plain HTTP"]
    assert problems[0].field == "data[hook.yaml].contactPoints[0].receivers[0].settings.url"
    assert "use https://receiver.team.svc:8080/alerts" in problems[0].fix
    assert network_problems([_manifest(_contact_point("https://receiver.team.svc:8443/alerts"))]) == []
    strict = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "default", "namespace": "team"}, "spec": {"mtls": {"mode": "STRICT"}}}
    assert network_problems([_manifest(_contact_point("http://receiver.team.svc:8080/alerts")), _manifest(strict)]) == []


def test_a_prefect_auth_string_over_plain_http_is_refused() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "client", "namespace": "team"},
                  "spec": {"template": {"spec": {"containers": [{"name": "client", "env": [
                      {"name": "PREFECT_API_URL", "value": "http://api.orchestration.svc:4200/api"},
                      {"name": "PREFECT_API_AUTH_STRING", "valueFrom": {"secretKeyRef": {"name": "a", "key": "b"}}}]}]}}}}
    problems = network_problems([_manifest(deployment)])
    assert [p.message for p in problems] == [
        "Deployment/client: container 'client' (Prefect auth string) sends credentials to "
        "http://api.orchestration.svc:4200/api over plain HTTP"]
    assert problems[0].field == "spec.template.spec.containers[client].env.PREFECT_API_URL"


def test_the_readme_security_section_is_generated_from_the_description() -> None:
    from generator.render.network import SECURITY_END, SECURITY_START, security_markdown

    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text[text.index(SECURITY_START):text.index(SECURITY_END) + len(SECURITY_END)]
    assert block == security_markdown()
    assert "`prefect-worker` (prefect-worker: app.kubernetes.io/name=prefect-worker)" in block


def test_each_s3_consumer_has_its_own_identity_and_only_writers_may_write() -> None:
    from generator.spec.network import S3_IDENTITIES

    by_name = {i.name: i for i in S3_IDENTITIES}
    assert set(by_name) == {"model-server", "drift-detector", "mlflow", "retrain-flow"}
    assert len({(i.namespace, i.secret) for i in S3_IDENTITIES}) == len(S3_IDENTITIES)
    for name in ("model-server", "drift-detector"):
        assert not any(a.startswith(("Write", "Admin", "Tagging")) for a in by_name[name].actions)
    for name in ("mlflow", "retrain-flow"):
        assert "Write:mlflow-artifacts" in by_name[name].actions
    assert all(not a.startswith("Admin") for i in S3_IDENTITIES for a in i.actions)


def test_the_drift_detector_reads_its_own_s3_identity_from_the_mounted_file(tmp_path, monkeypatch) -> None:
    # The rendered Deployment: no AWS keys in the environment, a file from its own Secret, and boto3 (the
    # detector's S3 client) resolving exactly those keys from it.
    boto3 = pytest.importorskip("boto3")
    manifests, _ = load_rendered_tree(REPO, ["prod"])
    [deployment] = [m.doc for m in manifests if m.doc.get("kind") == "Deployment"
                    and m.doc["metadata"]["name"].endswith("-drift")]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    [volume] = [v for v in pod["volumes"] if v["name"] == "s3-credentials"]
    assert volume["secret"]["secretName"] == naming.DRIFT_S3_SECRET
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "s3-credentials"]
    path = env["AWS_SHARED_CREDENTIALS_FILE"]
    assert path == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    local = tmp_path / "credentials"
    local.write_text("[default]\naws_access_key_id = DRIFTREADONLY\naws_secret_access_key = s3cret\n")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(local))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    credentials = boto3.Session().get_credentials()
    assert (credentials.access_key, credentials.secret_key) == ("DRIFTREADONLY", "s3cret")
