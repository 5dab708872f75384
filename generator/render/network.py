"""The platform's NetworkPolicies and Pod Security labels, from the one description of who talks to whom
(:data:`generator.spec.network.DESCRIPTION`), resolved for one environment.

Every managed namespace but the model namespace (which has its own tenancy policies, rendered with each
model) gets ``default-deny``, an ``allow-same-namespace`` where the description says its pods talk among
themselves, and one policy per group: ingress from every flow that ends at it, egress to every flow that
starts at it. Groups whose component renders its own policy (:data:`SELF_POLICED`) are left to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from generator.spec import naming
from generator.spec.components import LoadedComponent, enabled_components
from generator.spec.loader import LoadedEnvironment
from generator.spec.network import ANY_CIDR, DESCRIPTION, KUBE_API, OUTSIDE, Description, Group

SELF_POLICED = frozenset({"model-pods", "retrain-trigger", "retrain-flow-runs", "retrain-deploy"})
"""Groups whose own component renders their NetworkPolicy (per model, the trigger, the deploy Job, the
flow runs), from the same flows (:func:`group_rules`)."""
ENV_NAMESPACES = ("models", "monitoring", "kafka", "ingress")
POD_SECURITY_REASON = f"{naming.LABEL_PREFIX}/pod-security-reason"
"""Annotation on a Namespace that does not enforce ``restricted``: why (from the description)."""


@dataclass(frozen=True)
class Peer:
    """A group resolved in one environment: its namespace and pod labels, or a CIDR."""

    name: str
    namespace: str | None
    pods: dict[str, str] | None
    cidr: str | None = None

    def rule(self, ports: tuple[int, ...]) -> dict[str, Any]:
        """A template peer (``templates/networkpolicy.yaml.j2``) with its ports."""
        if self.cidr:
            return {"cidr": self.cidr, "ports": list(ports)}
        return {"namespace": self.namespace, **({"pods": self.pods} if self.pods else {}), "ports": list(ports)}


def namespace_of(reference: str, loaded: LoadedEnvironment, components: list[LoadedComponent]) -> str | None:
    """The namespace a reference names in this environment (``None``: its component is disabled)."""
    if reference in ENV_NAMESPACES:
        return getattr(loaded.env.namespaces, reference)
    found = {c.name: c.spec.namespace for c in enabled_components(components, loaded.env)}
    return found.get(reference)


def resolve(loaded: LoadedEnvironment, components: list[LoadedComponent],
            description: Description = DESCRIPTION) -> dict[str, Peer]:
    """Every group of the description that exists in this environment, by name."""
    enabled = {c.name for c in enabled_components(components, loaded.env)}
    peers = {}
    for name, group in description.groups.items():
        if name in (KUBE_API, OUTSIDE):
            peers[name] = Peer(name, None, None, ANY_CIDR)
            continue
        if not _exists(group, enabled):
            continue
        namespace = namespace_of(group.namespace, loaded, components)
        if namespace:
            peers[name] = Peer(name, namespace, group.pods)
    return peers


def _exists(group: Group, enabled: set[str]) -> bool:
    component = group.component or (group.namespace if group.namespace not in ENV_NAMESPACES else None)
    return component is None or component in enabled


def group_rules(group: str, peers: dict[str, Peer], description: Description = DESCRIPTION) -> tuple[list, list]:
    """``(ingress, egress)`` template rules of one group: every described flow that ends or starts at it."""
    ingress = [peers[f.source].rule(f.ports) for f in description.flows
               if f.target == group and f.source in peers]
    egress = [peers[f.target].rule(f.ports) for f in description.flows
              if f.source == group and f.target in peers]
    return _distinct(ingress), _distinct(egress)


def _distinct(rules: list[dict]) -> list[dict]:
    seen, out = set(), []
    for rule in rules:
        key = repr(sorted(rule.items()))
        if key not in seen:
            seen.add(key)
            out.append(rule)
    return out


def network_policies(loaded: LoadedEnvironment, components: list[LoadedComponent], namespaces: list[str],
                     labels: dict[str, str], description: Description = DESCRIPTION) -> dict[str, dict]:
    """Template contexts (``network_policies``) of every platform namespace's policies, keyed
    ``<namespace>-<name>``: default-deny, allow-same-namespace, and one per group with flows."""
    peers = resolve(loaded, components, description)
    internal = {namespace_of(ref, loaded, components) for ref in description.internal} - {None}
    policies: dict[str, dict] = {}
    for namespace in namespaces:
        if namespace == loaded.env.namespaces.models:
            continue  # the tenancy policies and each model's own
        base = {"namespace": namespace, "labels": labels}
        policies[f"{namespace}-default-deny"] = {**base, "name": "default-deny", "pod_selector": {},
                                                 "ingress": [], "egress": []}
        if namespace in internal:
            same = {"namespace": namespace}
            policies[f"{namespace}-allow-same-namespace"] = {**base, "name": "allow-same-namespace",
                                                             "pod_selector": {}, "ingress": [same], "egress": [same]}
        for name, peer in sorted(peers.items()):
            if peer.namespace != namespace or name in SELF_POLICED:
                continue
            ingress, egress = group_rules(name, peers, description)
            if ingress or egress:
                policies[f"{namespace}-{name}"] = {**base, "name": f"allow-{name}", "pod_selector": peer.pods or {},
                                                   "ingress": ingress, "egress": egress}
    return policies


def pod_security_labels(reference_namespace: str, loaded: LoadedEnvironment, components: list[LoadedComponent],
                        description: Description = DESCRIPTION) -> tuple[dict[str, str], dict[str, str]]:
    """``(labels, annotations)`` of a namespace: the enforced Pod Security level, ``restricted`` warned and
    audited, and the reason when it is not enforced."""
    by_namespace = {namespace_of(ref, loaded, components): policy for ref, policy in description.pod_security.items()}
    policy = by_namespace.get(reference_namespace)
    level = policy.level if policy else "restricted"
    labels = {"pod-security.kubernetes.io/enforce": level, "pod-security.kubernetes.io/warn": "restricted",
              "pod-security.kubernetes.io/audit": "restricted"}
    return labels, ({POD_SECURITY_REASON: policy.reason} if policy and policy.reason else {})


SECURITY_START = "<!-- security:start (generated from generator/spec/network.py; tests/test_network.py checks it) -->"
SECURITY_END = "<!-- security:end -->"


def security_markdown(description: Description = DESCRIPTION) -> str:
    """The README's security tables: who may reach what (every flow; everything else is denied), which S3
    identity and which Kafka user may do what, each namespace's Pod Security level, and the credentials still sent in plain HTTP."""
    from generator.spec.kafka import KAFKA_CLIENTS  # noqa: PLC0415 - README only
    from generator.spec.network import ACCEPTED_PLAINTEXT, S3_IDENTITIES  # noqa: PLC0415 - README only

    def where(name: str) -> str:
        group = description.groups[name]
        if name in (KUBE_API, OUTSIDE):
            return name
        pods = ", ".join(f"{k}={v}" for k, v in (group.pods or {}).items()) or "every pod"
        return f"`{name}` ({group.namespace}: {pods})"

    lines = [SECURITY_START, "", "| from | to | TCP ports | why |", "|---|---|---|---|"]
    lines += [f"| {where(f.source)} | {where(f.target)} | {', '.join(map(str, f.ports)) or 'any'} | {f.why} |"
              for f in description.flows]
    lines += ["", "Pods of one namespace talk freely among themselves only in: "
              + "; ".join(f"`{ref}` ({why})" for ref, why in description.internal.items()) + ".", "",
              "| S3 identity | namespace | Secret | actions | delivered as |", "|---|---|---|---|---|"]
    lines += [f"| `{i.name}` | {i.namespace} | `{i.secret}` | {', '.join(f'`{a}`' for a in i.actions)} | {i.delivery} |"
              for i in S3_IDENTITIES]
    placeholders = naming.model_names("<model>", "<env>").as_dict()
    lines += ["", "| Kafka user (KafkaUser, SCRAM-SHA-512 over TLS, one per model) | may (simple authorization; "
              "nothing else) | password delivered as |", "|---|---|---|"]
    lines += [f"| `<model>-<env>-{component}` | "
              + "; ".join(f"{', '.join(a.operations)} on {a.resource} `{placeholders[a.name_key]}`" for a in accesses)
              + f" | Secret `<model>-<env>-{component}-scram` (key `password`) in the Kafka namespace (read by the "
                "KafkaUser) and the model namespace (mounted as a file with the cluster CA `kafka-cluster-ca`) |"
              for component, accesses in KAFKA_CLIENTS.items()]
    lines += ["", "| namespace | Pod Security enforced | why not `restricted` |", "|---|---|---|"]
    lines += [f"| {ref} | {p.level} | {p.reason or '—'} |" for ref, p in description.pod_security.items()]
    lines += ["", "Credentials still sent over plain in-cluster HTTP (`mlops validate` refuses any other):", ""]
    lines += [f"- `{service}.{namespace}`: {why}" for (namespace, service), why in ACCEPTED_PLAINTEXT.items()]
    return "\n".join([*lines, "", SECURITY_END])
