"""Kafka authentication and authorization rules across one environment's rendered manifests:

* in staging and prod (``KAFKA_AUTH_REQUIRED_ENVIRONMENTS``) every listener of the ``Kafka`` cluster is TLS
  with client authentication, and authorization is on: no plaintext listener exists for a client to use;
* in staging and prod every Kafka client we run (a container with ``<prefix>KAFKA_BOOTSTRAP_SERVERS``, see
  :data:`generator.spec.kafka.ENV_PREFIX`) uses ``SASL_SSL`` with a user name, and its password and CA are
  files in a volume mounted from Secrets (never env values);
* everywhere, a client's bootstrap port is a listener of the rendered cluster whose TLS and authentication
  match the client's security protocol (a ``SASL_SSL`` client on the plain port would never connect, a
  ``PLAINTEXT`` client on an authenticated one neither);
* everywhere, a client that authenticates has a rendered ``KafkaUser`` of its user name, with SCRAM-SHA-512,
  whose ACLs are exactly what the client does with the resources its own environment names
  (:data:`generator.spec.kafka.KAFKA_CLIENTS`): literal names, no ``All``, no wildcard, nothing more.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from generator.check.manifest import Manifest, as_dict, as_list
from generator.spec.errors import Problem
from generator.spec.kafka import ENV_PREFIX, KAFKA_CLIENTS
from generator.spec.models import KAFKA_AUTH_REQUIRED_ENVIRONMENTS

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
MECHANISM_OF = {"SCRAM-SHA-512": "scram-sha-512"}
"""A client's SASL mechanism → the Strimzi listener/KafkaUser authentication type that serves it."""


def kafka_problems(manifests: list[Manifest]) -> list[Problem]:
    """Every Kafka listener, client and KafkaUser problem, per environment."""
    problems: list[Problem] = []
    for env in sorted({m.env for m in manifests if m.env}):
        ours = [m for m in manifests if m.env == env]
        clusters = [m for m in ours if _kind(m) == "Kafka"]
        users = {str(_meta(m).get("name")): m for m in ours if _kind(m) == "KafkaUser"}
        strict = env in KAFKA_AUTH_REQUIRED_ENVIRONMENTS
        for cluster in clusters:
            problems += _listener_problems(cluster, strict)
        for client in _clients(ours):
            problems += _client_problems(client, strict, clusters, users)
    return problems


class _Client:
    """One container of ours that talks to Kafka, with what its pod mounts."""

    def __init__(self, manifest: Manifest, path: tuple, component: str, container: dict, pod: dict) -> None:
        self.manifest, self.path, self.component = manifest, path, component
        self.prefix = ENV_PREFIX[component]
        self.env = {str(v.get("name")): v for v in map(as_dict, as_list(container.get("env")))}
        self.container, self.pod = container, pod

    def value(self, name: str) -> str | None:
        value = self.env.get(self.prefix + name, {}).get("value")
        return value if isinstance(value, str) else None

    def problem(self, message: str, fix: str, variable: str = "") -> Problem:
        field = ".".join(str(p) for p in self.path)
        where = f"{field} env {self.prefix}{variable}" if variable else field
        return Problem(self.manifest.path, message, field=where, fix=fix)


def _clients(manifests: list[Manifest]) -> Iterator[_Client]:
    for m in manifests:
        doc, kind = as_dict(m.doc), _kind(m)
        pods: list[tuple[tuple, dict, dict]] = []
        if kind == "SeldonDeployment":
            for p, predictor in enumerate(as_list(as_dict(doc.get("spec")).get("predictors"))):
                for c, component in enumerate(as_list(as_dict(predictor).get("componentSpecs"))):
                    component = as_dict(component)
                    pods.append((("spec", "predictors", p, "componentSpecs", c, "spec"),
                                 as_dict(as_dict(component.get("metadata")).get("labels")),
                                 as_dict(component.get("spec"))))
        elif kind in ("Deployment", "StatefulSet", "Job"):
            template = as_dict(as_dict(doc.get("spec")).get("template"))
            pods.append((("spec", "template", "spec"), as_dict(as_dict(template.get("metadata")).get("labels")),
                         as_dict(template.get("spec"))))
        for path, labels, pod in pods:
            component = labels.get("app.kubernetes.io/component")
            if component not in ENV_PREFIX:
                continue
            for i, container in enumerate(as_list(pod.get("containers"))):
                container = as_dict(container)
                names = {as_dict(v).get("name") for v in as_list(container.get("env"))}
                if f"{ENV_PREFIX[component]}KAFKA_BOOTSTRAP_SERVERS" in names:
                    yield _Client(m, (*path, "containers", i), component, container, pod)


def _listener_problems(cluster: Manifest, strict: bool) -> Iterator[Problem]:
    kafka = as_dict(as_dict(as_dict(cluster.doc).get("spec")).get("kafka"))
    if not strict:
        return
    for i, listener in enumerate(as_list(kafka.get("listeners"))):
        listener = as_dict(listener)
        if listener.get("tls") is not True or not as_dict(listener.get("authentication")).get("type"):
            yield Problem(cluster.path, f"listener {listener.get('name')!r} (port {listener.get('port')}) accepts "
                          "clients without TLS and authentication", field=f"spec.kafka.listeners.{i}",
                          fix="staging and prod serve clients only on a TLS listener with authentication "
                              "(kafka.security_protocol: SASL_SSL renders it)")
    if not as_dict(kafka.get("authorization")).get("type"):
        yield Problem(cluster.path, "authorization is off: every authenticated user may read and write every topic",
                      field="spec.kafka.authorization", fix="set authorization: {type: simple}")


def _client_problems(client: _Client, strict: bool, clusters: list[Manifest],
                     users: dict[str, Manifest]) -> Iterator[Problem]:
    protocol = client.value("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT"  # the services' default
    if strict and protocol != "SASL_SSL":
        yield client.problem(f"{client.component} connects to Kafka with {protocol}: without TLS and "
                             "authentication anyone in the cluster could read or fake its records",
                             "set kafka.security_protocol: SASL_SSL in environment.yaml",
                             "KAFKA_SECURITY_PROTOCOL")
    yield from _listener_match(client, protocol, clusters)
    if protocol not in SASL_PROTOCOLS:
        return
    yield from _mounted_files(client, protocol)
    user = client.value("KAFKA_USERNAME")
    if not user:
        return  # _mounted_files reported it
    kafka_user = users.get(user)
    if kafka_user is None:
        yield client.problem(f"authenticates as {user!r} but no KafkaUser of that name is rendered in this "
                             "environment", "render the model's KafkaUsers (kafka.security_protocol: SASL_SSL)",
                             "KAFKA_USERNAME")
        return
    yield from _acl_problems(client, kafka_user)


def _listener_match(client: _Client, protocol: str, clusters: list[Manifest]) -> Iterator[Problem]:
    servers = client.value("KAFKA_BOOTSTRAP_SERVERS") or ""
    mechanism = client.value("KAFKA_SASL_MECHANISM") or "SCRAM-SHA-512"
    for cluster in clusters:
        listeners = {as_dict(x).get("port"): as_dict(x) for x in
                     as_list(as_dict(as_dict(as_dict(cluster.doc).get("spec")).get("kafka")).get("listeners"))}
        for server in servers.split(","):
            host, _, port = server.rpartition(":")
            if not port.isdigit() or not host.startswith(f"{_meta(cluster).get('name')}-kafka-bootstrap."):
                continue
            listener = listeners.get(int(port))
            if listener is None:
                yield client.problem(f"bootstrap port {port} is no listener of Kafka {_meta(cluster).get('name')} "
                                     f"(listeners: {sorted(p for p in listeners if p is not None)})",
                                     "point kafka.bootstrap_servers at the listener of kafka.security_protocol",
                                     "KAFKA_BOOTSTRAP_SERVERS")
                continue
            tls = listener.get("tls") is True
            auth = as_dict(listener.get("authentication")).get("type")
            wanted_auth = MECHANISM_OF.get(mechanism, mechanism) if protocol in SASL_PROTOCOLS else None
            if tls != (protocol in TLS_PROTOCOLS) or auth != wanted_auth:
                yield client.problem(
                    f"uses {protocol} on listener {listener.get('name')!r} (port {port}), which has tls={tls} and "
                    f"authentication {auth or 'none'}: the client could not connect",
                    "point kafka.bootstrap_servers at the listener of kafka.security_protocol (tls: 9093)",
                    "KAFKA_BOOTSTRAP_SERVERS")


def _mounted_files(client: _Client, protocol: str) -> Iterator[Problem]:
    """Username set; password (and CA, with TLS) are files under a mount of a Secret-backed volume."""
    if not client.value("KAFKA_USERNAME"):
        yield client.problem(f"{protocol} without a user name", "set <prefix>KAFKA_USERNAME to its KafkaUser",
                             "KAFKA_USERNAME")
    secret_volumes = set()
    for volume in map(as_dict, as_list(client.pod.get("volumes"))):
        sources = as_list(as_dict(volume.get("projected")).get("sources"))
        if "secret" in volume or (sources and all("secret" in as_dict(s) for s in sources)):
            secret_volumes.add(volume.get("name"))
    mounts = [as_dict(m) for m in as_list(client.container.get("volumeMounts"))
              if as_dict(m).get("name") in secret_volumes]
    files = [("KAFKA_PASSWORD_FILE", True), ("KAFKA_CA_FILE", protocol in TLS_PROTOCOLS)]
    for variable, required in files:
        if not required:
            continue
        value = client.value(variable)
        if not value:
            yield client.problem(f"{protocol} without {client.prefix}{variable}",
                                 "mount the Secret and point the variable at the file", variable)
        elif not any(value.startswith(str(m.get("mountPath", "")).rstrip("/") + "/") for m in mounts):
            yield client.problem(f"{client.prefix}{variable}={value} is not in a volume mounted from a Secret",
                                 "mount the credentials Secret (kafka-credentials) at that folder", variable)
        if client.env.get(client.prefix + variable, {}).get("valueFrom") is not None:
            yield client.problem(f"{client.prefix}{variable} comes from valueFrom: it must name a mounted file",
                                 "set value: <mount path>/<key>", variable)


def _acl_problems(client: _Client, kafka_user: Manifest) -> Iterator[Problem]:
    spec = as_dict(as_dict(kafka_user.doc).get("spec"))
    mechanism = client.value("KAFKA_SASL_MECHANISM") or "SCRAM-SHA-512"
    auth = as_dict(spec.get("authentication")).get("type")
    if auth != MECHANISM_OF.get(mechanism):
        yield Problem(kafka_user.path, f"authentication {auth!r} does not serve the client's {mechanism}",
                      field="spec.authentication.type", fix=f"use {MECHANISM_OF.get(mechanism, mechanism)!r}")
    wanted: set[tuple[str, str, str]] = set()
    for access in KAFKA_CLIENTS[client.component]:
        name = client.value(access.variable.removeprefix(client.prefix))
        if name:
            wanted |= {(access.resource, name, op) for op in access.operations}
    granted: set[tuple[str, str, str]] = set()
    acls = as_list(as_dict(spec.get("authorization")).get("acls"))
    if as_dict(spec.get("authorization")).get("type") != "simple":
        yield Problem(kafka_user.path, "has no simple authorization: its ACLs would not be applied",
                      field="spec.authorization", fix="set authorization: {type: simple, acls: [...]}")
    for i, acl in enumerate(map(as_dict, acls)):
        resource = as_dict(acl.get("resource"))
        where = f"spec.authorization.acls.{i}"
        if acl.get("type", "allow") != "allow":
            continue
        if resource.get("patternType", "literal") != "literal" or resource.get("name") in (None, "*"):
            yield Problem(kafka_user.path, f"ACL on {resource.get('type')} {resource.get('name')!r} is not one "
                          "literal name", field=where, fix="name each topic and group literally")
            continue
        for op in as_list(acl.get("operations")):
            granted.add((str(resource.get("type")), str(resource.get("name")), str(op)))
    for resource, name, op in sorted(granted - wanted):
        yield Problem(kafka_user.path, f"allows {op} on {resource} {name!r}, which {client.component} "
                      f"({client.manifest.path}) does not use", field="spec.authorization.acls",
                      fix="allow only what generator/spec/kafka.py KAFKA_CLIENTS lists (re-render)")
    for resource, name, op in sorted(wanted - granted):
        yield Problem(kafka_user.path, f"does not allow {op} on {resource} {name!r}, which {client.component} "
                      f"({client.manifest.path}) needs", field="spec.authorization.acls",
                      fix="re-render: the ACLs follow the names the client is given")


def _kind(m: Manifest) -> str:
    return str(as_dict(m.doc).get("kind"))


def _meta(m: Manifest) -> dict[str, Any]:
    return as_dict(as_dict(m.doc).get("metadata"))
