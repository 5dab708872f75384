"""Network and namespace rules across one environment's rendered manifests:

* every Namespace has a default-deny NetworkPolicy (nothing in or out but DNS unless another policy allows it);
* every Namespace enforces a Pod Security level, with the reason recorded when it is not ``restricted``;
* no credential travels over plain HTTP: a Grafana webhook contact point or an Alertmanager webhook receiver
  (kube-prometheus-stack's values) with credentials, or a container holding a Prefect auth string, must use
  ``https://`` or reach a namespace where Istio enforces mutual TLS (a ``PeerAuthentication`` STRICT without
  selector), unless ``ACCEPTED_PLAINTEXT`` records why not yet (the retrain trigger is not among them: its
  senders use HTTPS); and none of them may skip verifying the server's certificate.

:func:`allowed` evaluates the rendered NetworkPolicies as a cluster would (both ends must allow a
connection), for the tests that check the policy graph against the description.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from generator.check.manifest import Manifest, as_dict, as_list
from generator.check.policies import pod_specs
from generator.spec import yamlio
from generator.spec.errors import Problem
from generator.spec.network import ACCEPTED_PLAINTEXT

DNS_PORT = 53
POD_SECURITY_REASON = "mlops-gitops.io/pod-security-reason"
CREDENTIAL_ENV = ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING")


def network_problems(manifests: list[Manifest]) -> list[Problem]:
    """Default-deny, Pod Security and plaintext-credential problems, per environment."""
    problems: list[Problem] = []
    for env in sorted({m.env for m in manifests if m.env}):
        ours = [m for m in manifests if m.env == env]
        problems += _namespace_problems(ours)
        problems += _plaintext_problems(ours)
    return problems


def _kind(m: Manifest) -> str:
    return str(as_dict(m.doc).get("kind"))


def _meta(m: Manifest) -> dict:
    return as_dict(as_dict(m.doc).get("metadata"))


def is_default_deny(doc: dict) -> bool:
    """Selects every pod, covers both directions and allows nothing but DNS egress."""
    spec = as_dict(doc.get("spec"))
    if as_dict(spec.get("podSelector")) or set(as_list(spec.get("policyTypes"))) != {"Ingress", "Egress"}:
        return False
    if as_list(spec.get("ingress")):
        return False
    for rule in as_list(spec.get("egress")):
        rule = as_dict(rule)
        ports = {as_dict(p).get("port") for p in as_list(rule.get("ports"))}
        if rule.get("to") or ports != {DNS_PORT}:
            return False
    return True


def _namespace_problems(ours: list[Manifest]) -> Iterator[Problem]:
    denied = {_meta(m).get("namespace") for m in ours if _kind(m) == "NetworkPolicy" and is_default_deny(m.doc)}
    for m in ours:
        if _kind(m) != "Namespace":
            continue
        name, labels, notes = _meta(m).get("name"), as_dict(_meta(m).get("labels")), as_dict(_meta(m).get("annotations"))
        if name not in denied:
            yield Problem(m.path, f"Namespace/{name} has no default-deny NetworkPolicy: every pod in it accepts and "
                          "opens any connection", field="metadata.name",
                          fix="describe its traffic in generator/spec/network.py (the platform renders default-deny "
                          "and the allows from it), or add a NetworkPolicy with podSelector: {} and no rules")
        level = labels.get("pod-security.kubernetes.io/enforce")
        if level not in ("restricted", "baseline", "privileged"):
            yield Problem(m.path, f"Namespace/{name} enforces no Pod Security level",
                          field="metadata.labels.pod-security.kubernetes.io/enforce",
                          fix="set pod-security.kubernetes.io/enforce: restricted (pod_security in "
                          "generator/spec/network.py)")
        elif level != "restricted" and not notes.get(POD_SECURITY_REASON):
            yield Problem(m.path, f"Namespace/{name} enforces {level}, not restricted, and says not why",
                          field=f"metadata.annotations.{POD_SECURITY_REASON}",
                          fix="record the reason in pod_security of generator/spec/network.py, or enforce restricted")


def _mtls_namespaces(ours: list[Manifest]) -> set[str]:
    return {str(_meta(m).get("namespace")) for m in ours if _kind(m) == "PeerAuthentication"
            and not as_dict(as_dict(m.doc.get("spec")).get("selector"))
            and as_dict(as_dict(m.doc.get("spec")).get("mtls")).get("mode") == "STRICT"}


def _plaintext_problems(ours: list[Manifest]) -> Iterator[Problem]:
    mtls = _mtls_namespaces(ours)
    for m in ours:
        for sender in _credential_senders(m):
            where = f"{_kind(m)}/{_meta(m).get('name')}: {sender.source}"
            if sender.skips_verify:
                yield Problem(m.path, f"{where} sends credentials over TLS without verifying the server's "
                              "certificate: anyone who can intercept the connection gets them",
                              field=sender.skip_field,
                              fix="remove the skip and verify with the CA that signed the server's certificate")
            url = sender.url
            if not url.startswith("http://"):
                continue
            host = url.removeprefix("http://").split("/", 1)[0].split(":", 1)[0]
            namespace = host.split(".")[1] if host.count(".") >= 1 else str(_meta(m).get("namespace"))
            service = host.split(".")[0]
            if namespace in mtls or (namespace, service) in ACCEPTED_PLAINTEXT:
                continue
            yield Problem(m.path, f"{where} sends credentials to {url} over plain HTTP", field=sender.url_field,
                          fix=f"use https://{url.removeprefix('http://')} and verify the server with its CA "
                          f"({sender.ca_hint}), or put both ends in the mesh with a STRICT PeerAuthentication in "
                          "the target namespace")


@dataclass(frozen=True)
class _Sender:
    """Something in a manifest that sends a credential to ``url``, and where each part of it is written."""

    source: str
    url: str
    url_field: str
    ca_hint: str
    skips_verify: bool = False
    skip_field: str = ""


def _credential_senders(m: Manifest) -> Iterator[_Sender]:
    doc = as_dict(m.doc)
    if doc.get("kind") == "ConfigMap" and "grafana_alert" in as_dict(_meta(m).get("labels")):
        for key, text in as_dict(doc.get("data")).items():
            try:
                content = as_dict(yamlio.load(text)) if isinstance(text, str) else {}
            except Exception:  # noqa: BLE001 - the alert-file check reports unparsable files
                continue
            for p, point in enumerate(as_list(content.get("contactPoints"))):
                for r, receiver in enumerate(as_list(as_dict(point).get("receivers"))):
                    settings = as_dict(as_dict(receiver).get("settings"))
                    if settings.get("authorization_credentials") or settings.get("password"):
                        at = f"data[{key}].contactPoints[{p}].receivers[{r}].settings"
                        yield _Sender(f"Grafana contact point {as_dict(point).get('name')!r}",
                                      str(settings.get("url")), f"{at}.url", f"{at}.tlsConfig.caCertificate",
                                      as_dict(settings.get("tlsConfig")).get("insecureSkipVerify") is True,
                                      f"{at}.tlsConfig.insecureSkipVerify")
    if doc.get("kind") == "Application":
        yield from _alertmanager_senders(doc)
    for path, pod in pod_specs(doc, str(doc.get("kind"))):
        for container in as_list(pod.get("containers")) + as_list(pod.get("initContainers")):
            env = {as_dict(e).get("name"): as_dict(e) for e in as_list(as_dict(container).get("env"))}
            if any(name in env for name in CREDENTIAL_ENV):
                url = str(env.get("PREFECT_API_URL", {}).get("value", ""))
                name = as_dict(container).get("name")
                yield _Sender(f"container {name!r} (Prefect auth string)", url,
                              f"{'.'.join(map(str, path))}.containers[{name}].env.PREFECT_API_URL",
                              "SSL_CERT_FILE or the image's trust store")


def _alertmanager_senders(doc: dict) -> Iterator[_Sender]:
    """Alertmanager webhook receivers with credentials in an Argo CD Application's Helm values
    (kube-prometheus-stack's ``alertmanager.config``)."""
    values = as_dict(as_dict(as_dict(as_dict(doc.get("spec")).get("source")).get("helm")).get("valuesObject"))
    config = as_dict(as_dict(values.get("alertmanager")).get("config"))
    for r, receiver in enumerate(as_list(config.get("receivers"))):
        for w, webhook in enumerate(as_list(as_dict(receiver).get("webhook_configs"))):
            http_config = as_dict(as_dict(webhook).get("http_config"))
            if not any(http_config.get(k) for k in ("authorization", "basic_auth", "bearer_token",
                                                    "bearer_token_file", "oauth2")):
                continue
            at = f"spec.source.helm.valuesObject.alertmanager.config.receivers[{r}].webhook_configs[{w}]"
            yield _Sender(f"Alertmanager receiver {as_dict(receiver).get('name')!r}",
                          str(as_dict(webhook).get("url", "")), f"{at}.url", f"{at}.http_config.tls_config.ca_file",
                          as_dict(http_config.get("tls_config")).get("insecure_skip_verify") is True,
                          f"{at}.http_config.tls_config.insecure_skip_verify")


# --- the policy graph ------------------------------------------------------------------------------


def _matches(selector: Any, labels: dict[str, str]) -> bool:
    wanted = as_dict(as_dict(selector).get("matchLabels"))
    return all(labels.get(k) == v for k, v in wanted.items())


def _peer_matches(peer: dict, namespace: str | None, labels: dict[str, str]) -> bool:
    if "ipBlock" in peer:
        return True  # an ipBlock may cover pod addresses too: count it as reaching anything
    if namespace is None:
        return False  # outside the cluster: only an ipBlock reaches it
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
            return False
    elif "podSelector" in peer:
        return False  # a podSelector alone means the policy's own namespace: checked by the caller
    return "podSelector" not in peer or _matches(peer["podSelector"], labels)


def _rule_allows(rule: dict, peers_key: str, namespace: str | None, labels: dict[str, str], port: int,
                 own_namespace: str) -> bool:
    ports = {as_dict(p).get("port") for p in as_list(rule.get("ports"))}
    if ports and port not in ports:
        return False
    peers = as_list(rule.get(peers_key))
    if not peers:
        return True
    for peer in map(as_dict, peers):
        if "podSelector" in peer and "namespaceSelector" not in peer and "ipBlock" not in peer:
            if namespace == own_namespace and _matches(peer["podSelector"], labels):
                return True
        elif _peer_matches(peer, namespace, labels):
            return True
    return False


def allowed(policies: list[dict], source: tuple[str | None, dict[str, str]], target: tuple[str | None, dict[str, str]],
            port: int) -> bool:
    """Whether ``source`` (namespace, pod labels; namespace ``None`` for outside the cluster) may open a TCP
    connection to ``target`` on ``port`` under ``policies``: egress at the source and ingress at the target
    must both allow it (a side no policy selects allows everything)."""
    return (_side(policies, "Egress", "egress", "to", source, target, port)
            and _side(policies, "Ingress", "ingress", "from", target, source, port))


def _side(policies: list[dict], kind: str, rules_key: str, peers_key: str, own: tuple, other: tuple,
          port: int) -> bool:
    namespace, labels = own
    if namespace is None:
        return True  # outside the cluster: no policy applies
    selecting = [p for p in policies if as_dict(p.get("metadata")).get("namespace") == namespace
                 and kind in as_list(as_dict(p.get("spec")).get("policyTypes"))
                 and _matches(as_dict(p.get("spec")).get("podSelector"), labels)]
    if not selecting:
        return True
    return any(_rule_allows(as_dict(rule), peers_key, other[0], other[1], port, namespace)
               for p in selecting for rule in as_list(as_dict(p.get("spec")).get(rules_key)))
