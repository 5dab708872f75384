"""Checks on the objects the platform's charts render, together with our own rendered manifests.

* wiring: every in-cluster address we point at (``<service>.<namespace>.svc[:port]`` in any value or
  manifest, the Grafana datasource UIDs our alert rules query, the Istio Gateway Seldon routes through)
  reaches a Service and port, datasource or workload the rendered charts or our manifests create;
* Argo CD: every kind and namespace a chart renders passes the Application's AppProject, and output that
  changes from one render to the next (random passwords) is covered by an ``ignoreDifferences`` entry;
* workload policies: limits, non-root and read-only root filesystem, or a recorded exception;
* images: every image the platform runs, for ``apps/IMAGES.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from generator.check.appgraph import load_projects, project_problems
from generator.check.manifest import Manifest, as_dict, as_list
from generator.check.policies import CLUSTER_SCOPED_KINDS, pod_specs
from generator.render.charts import ChartRenderer, Rendered, load_documents
from generator.spec.charts import VendoredChart
from generator.spec.components import LoadedComponent
from generator.spec.errors import Problem
from generator.spec.layout import RepoLayout


@dataclass
class ChartApp:
    """One platform Application with a Helm source, and what rendering it produced."""

    env: str
    path: str
    doc: dict
    component: LoadedComponent | None
    vendored: VendoredChart
    values: dict
    release: str
    namespace: str
    rendered: Rendered | None = None
    documents: list[tuple[str, dict]] = field(default_factory=list)
    unstable: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return as_dict(self.doc.get("metadata")).get("name", "<no name>")

    def problem(self, message: str, fix: str | None, field: str | None = "spec.source.helm.valuesObject") -> Problem:
        return Problem(self.path, f"Application/{self.name}: {message}", field=field, fix=fix)


ADDRESS = re.compile(r"(?:(?P<scheme>[a-z][a-z0-9+]*)://)?(?:[^@/\s\"']+@)?(?P<service>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                     r"\.(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc(?:\.cluster\.local)?\b(?::(?P<port>\d+))?")
DEFAULT_PORTS = {"http": 80, "https": 443}
POSTGRES_PORT = 5432
"""CloudNativePG's ``<cluster>-rw``/``-ro``/``-r`` Services listen on PostgreSQL's port."""
POLICY_RULES = ("limits", "non-root", "read-only-root")


def manifest_api_versions(documents: list[dict]) -> Iterator[str]:
    """``group/version`` of every CRD among ``documents`` (what a cluster serves once they are applied)."""
    for doc in documents:
        if doc.get("kind") == "CustomResourceDefinition":
            spec = as_dict(doc.get("spec"))
            for version in as_list(spec.get("versions")):
                yield f"{spec.get('group')}/{as_dict(version).get('name')}"


def object_problems(layout: RepoLayout, env: str, apps: list[ChartApp], manifests: list[Manifest],
                    renderer: ChartRenderer, complete: bool = True) -> list[Problem]:
    """Wiring, AppProject, determinism and workload-policy problems of one environment's charts; wiring
    only when every chart rendered (``complete``), since a missing chart's Services are unknown."""
    ours = [m for m in manifests if m.env == env]
    problems = _project_problems(layout, apps, renderer)
    problems += _unstable_problems(apps)
    problems += _policy_problems(apps)
    if complete:
        problems += _wiring_problems(apps, ours)
    return problems


def _chart_objects(app: ChartApp) -> list[dict]:
    return [doc for _, doc in app.documents]


# --- Argo CD: the AppProject, and output that changes on every render ---------------------------------


def _project_problems(layout: RepoLayout, apps: list[ChartApp], renderer: ChartRenderer) -> list[Problem]:
    projects, problems = load_projects(layout)
    cluster_scoped = set(CLUSTER_SCOPED_KINDS)
    for app in apps:
        cluster_scoped.update(crd["kind"] for crd in renderer.crds(app.vendored) if crd["scope"] == "Cluster")
        cluster_scoped.update(as_dict(as_dict(d.get("spec")).get("names")).get("kind") for d in _chart_objects(app)
                              if d.get("kind") == "CustomResourceDefinition"
                              and as_dict(d.get("spec")).get("scope") == "Cluster")
    for app in apps:
        spec = as_dict(app.doc.get("spec"))
        project = projects.get(spec.get("project", ""))
        if project is None:
            continue  # the app-of-apps check reports the missing project
        objects = [(f"chart {app.vendored.entry.chart} {template}: {d.get('kind')}/"
                    f"{as_dict(d.get('metadata')).get('name')}", d) for template, d in app.documents]
        objects += [(f"chart {app.vendored.entry.chart} {crd['file']}: CustomResourceDefinition/{crd['name']}",
                     {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                      "metadata": {"name": crd["name"]}}) for crd in renderer.crds(app.vendored)]
        problems += project_problems(app.path, app.name, objects, project, as_dict(spec.get("destination")),
                                     frozenset(cluster_scoped))
    return problems


def _unstable_problems(apps: list[ChartApp]) -> list[Problem]:
    problems = []
    for app in apps:
        ignored = as_list(as_dict(app.doc.get("spec")).get("ignoreDifferences"))
        for template in sorted(app.unstable):
            for doc in load_documents(app.rendered.files.get(template, "")) if app.rendered else []:
                if not isinstance(doc, dict):
                    continue
                kind, name = doc.get("kind"), as_dict(doc.get("metadata")).get("name")
                group = str(doc.get("apiVersion", "")).rpartition("/")[0]
                exceptions = app.component.spec.policy_exceptions if app.component else {}
                if any(_ignores(entry, group, kind, name) for entry in ignored) or \
                        f"{kind}/{name}: regenerated" in exceptions:
                    continue
                problems.append(app.problem(
                    f"chart {app.vendored.entry.chart} renders {kind}/{name} ({template}) differently on every "
                    "render (a generated password or certificate): every sync would replace it",
                    f"give it a fixed value or an existing Secret through values, or add an ignore_differences "
                    f"entry for {kind} {name} to apps/{app.component.name if app.component else '<component>'}/"
                    f"component.yaml (a hook Argo CD recreates on each sync: record '{kind}/{name}: regenerated' "
                    "with the reason under policy_exceptions)", field="spec.ignoreDifferences"))
    return problems


def _ignores(entry: Any, group: str, kind: Any, name: Any) -> bool:
    entry = as_dict(entry)
    return (entry.get("group", "") == group and entry.get("kind") == kind
            and entry.get("name") in (None, name) and bool(entry.get("jsonPointers") or entry.get("jqPathExpressions")
                                                          or entry.get("managedFieldsManagers")))


# --- workload policies ---------------------------------------------------------------------------------


def workload_findings(kind: str, doc: dict) -> Iterator[tuple[str, str, str]]:
    """``(container, rule, message)`` for every container of a workload that breaks a platform policy."""
    for _path, pod in pod_specs(doc, kind):
        pod_context = as_dict(pod.get("securityContext"))
        for group in ("initContainers", "containers"):
            for container in as_list(pod.get(group)):
                container = as_dict(container)
                own = as_dict(container.get("securityContext"))
                label = str(container.get("name"))
                limits = as_dict(as_dict(container.get("resources")).get("limits"))
                if missing := [r for r in ("cpu", "memory") if r not in limits]:
                    yield label, "limits", f"has no {' and '.join(missing)} limit"
                non_root = own.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
                user = own.get("runAsUser", pod_context.get("runAsUser"))
                if non_root is not True or user == 0:
                    yield label, "non-root", "may run as root (runAsNonRoot is not true)"
                if own.get("readOnlyRootFilesystem") is not True:
                    yield label, "read-only-root", "has a writable root filesystem"


def _policy_problems(apps: list[ChartApp]) -> list[Problem]:
    problems = []
    for app in apps:
        exceptions = app.component.spec.policy_exceptions if app.component else {}
        for doc in _chart_objects(app):
            kind = str(doc.get("kind"))
            ref = f"{kind}/{as_dict(doc.get('metadata')).get('name')}"
            for container, rule, message in workload_findings(kind, doc):
                if f"{ref}: {rule}" in exceptions or f"{ref}/{container}: {rule}" in exceptions:
                    continue
                problems.append(app.problem(
                    f"chart {app.vendored.entry.chart}: {ref} container {container!r} {message}",
                    f"set it through the chart's values in apps/{app.component.name if app.component else '?'}/"
                    f"values.yaml, or record '{ref}: {rule}' with the reason under policy_exceptions in its "
                    "component.yaml"))
    return problems


# --- wiring --------------------------------------------------------------------------------------------


def _services(apps: list[ChartApp], ours: list[Manifest]) -> dict[tuple[str, str], set[int]]:
    """``(namespace, service) → ports`` of every Service the charts render, our manifests define, or an
    operator creates from our custom resources (Strimzi's bootstrap Service, CloudNativePG's)."""
    found: dict[tuple[str, str], set[int]] = {}

    def add(namespace: Any, name: Any, ports: Any) -> None:
        found.setdefault((str(namespace), str(name)), set()).update(int(p) for p in ports if str(p).isdigit())

    for app in apps:
        for doc in _chart_objects(app):
            if doc.get("kind") == "Service":
                meta = as_dict(doc.get("metadata"))
                add(meta.get("namespace") or app.namespace, meta.get("name"),
                    [as_dict(p).get("port") for p in as_list(as_dict(doc.get("spec")).get("ports"))])
    for m in ours:
        doc, meta = m.doc, as_dict(m.doc.get("metadata"))
        spec = as_dict(doc.get("spec"))
        if doc.get("kind") == "Service":
            add(meta.get("namespace"), meta.get("name"), [as_dict(p).get("port") for p in as_list(spec.get("ports"))])
        elif doc.get("kind") == "Kafka" and str(doc.get("apiVersion", "")).startswith("kafka.strimzi.io/"):
            listeners = as_list(as_dict(spec.get("kafka")).get("listeners"))
            add(meta.get("namespace"), f"{meta.get('name')}-kafka-bootstrap", [as_dict(x).get("port") for x in listeners])
        elif doc.get("kind") == "Cluster" and str(doc.get("apiVersion", "")).startswith("postgresql.cnpg.io/"):
            for suffix in ("rw", "ro", "r"):
                add(meta.get("namespace"), f"{meta.get('name')}-{suffix}", [POSTGRES_PORT])
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def address_problems(where: str, field: str | None, text: str, services: dict[tuple[str, str], set[int]],
                     label: str) -> Iterator[Problem]:
    """A problem for every ``<service>.<namespace>.svc[:port]`` in ``text`` that reaches no Service and port."""
    for match in ADDRESS.finditer(text):
        namespace, service = match["namespace"], match["service"]
        port = int(match["port"]) if match["port"] else DEFAULT_PORTS.get(match["scheme"] or "")
        ports = services.get((namespace, service))
        if ports is None:
            candidates = sorted(f"{n}.{ns}.svc" for ns, n in services if ns == namespace) or ["none"]
            yield Problem(where, f"{label} points at {match[0]}, but no Service {service} exists in namespace "
                          f"{namespace}", field=field, fix=f"use one of: {', '.join(candidates)}")
        elif port is not None and port not in ports:
            yield Problem(where, f"{label} points at {match[0]}, but Service {service}.{namespace} listens on "
                          f"{', '.join(map(str, sorted(ports)))}, not {port}", field=field,
                          fix=f"use port {min(ports)}, or change the Service's port")


def _wiring_problems(apps: list[ChartApp], ours: list[Manifest]) -> list[Problem]:
    services = _services(apps, ours)
    problems: list[Problem] = []
    for app in apps:
        for text in _strings(app.values):
            problems += address_problems(app.path, "spec.source.helm.valuesObject", text, services,
                                         f"Application/{app.name}")
    for m in ours:
        if m.doc.get("kind") in ("Application", "AppProject"):
            continue  # repository URLs, not cluster addresses
        ref = f"{m.doc.get('kind')}/{as_dict(m.doc.get('metadata')).get('name')}"
        for text in _strings(m.doc):
            problems += address_problems(m.path, None, text, services, ref)
    problems += _datasource_problems(apps, ours)
    problems += _gateway_problems(apps, ours)
    return problems


def _datasource_problems(apps: list[ChartApp], ours: list[Manifest]) -> list[Problem]:
    """Our Grafana alert rules query datasources by UID: a provisioned datasource must have each one."""
    provisioned: set[str] = set()
    for app in apps:
        for doc in _chart_objects(app):
            if doc.get("kind") == "ConfigMap":
                for text in as_dict(doc.get("data")).values():
                    if isinstance(text, str) and "datasources:" in text:
                        provisioned.update(re.findall(r"^\s*uid:\s*['\"]?([\w-]+)", text, re.MULTILINE))
    problems = []
    for m in ours:
        if m.doc.get("kind") != "ConfigMap" or not provisioned:
            continue
        for key, text in as_dict(m.doc.get("data")).items():
            if not isinstance(text, str):
                continue
            for uid in sorted(set(re.findall(r"datasourceUid:\s*['\"]?([\w-]+)", text)) - {"__expr__"} - provisioned):
                problems.append(Problem(m.path, f"ConfigMap/{as_dict(m.doc.get('metadata')).get('name')}: {key} "
                                        f"queries datasource UID {uid!r}, which no provisioned Grafana datasource has",
                                        field=f"data.{key}", fix=f"use one of {', '.join(sorted(provisioned))}"))
    return problems


def _gateway_problems(apps: list[ChartApp], ours: list[Manifest]) -> list[Problem]:
    """An Istio Gateway selects the gateway pods by label: some rendered workload in the mesh must match."""
    pods: list[dict] = []
    for app in apps:
        for doc in _chart_objects(app):
            if any(True for _ in pod_specs(doc, str(doc.get("kind")))):
                pods.append(as_dict(as_dict(as_dict(doc.get("spec")).get("template")).get("metadata")).get("labels") or {})
    problems = []
    for m in ours:
        if m.doc.get("kind") != "Gateway" or not str(m.doc.get("apiVersion", "")).startswith("networking.istio.io/"):
            continue
        selector = as_dict(as_dict(m.doc.get("spec")).get("selector"))
        if selector and not any(all(labels.get(k) == v for k, v in selector.items()) for labels in pods):
            problems.append(Problem(m.path, f"Gateway/{as_dict(m.doc.get('metadata')).get('name')}: selector "
                                    f"{selector} matches no gateway pod the charts render", field="spec.selector",
                                    fix="match the istio-gateway chart's pod labels (istio: <release name without "
                                    "istio- prefix>)"))
    return problems
