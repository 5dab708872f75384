"""Policy checks on rendered manifests: names, uniqueness, Grafana dashboards, Seldon's admission
rules and pod security. Pure functions over one parsed document (:class:`Doc`); schema validation
and reading files live in :mod:`generator.check.validate` and :mod:`generator.check.manifest`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from generator.check.manifest import Claims, Doc, FieldPath, as_dict, as_list, format_path
from generator.spec.errors import Problem
from generator.spec.models import is_digest_pinned, requires_digest
from generator.spec.naming import MIN_RUN_AS_UID, RUN_AS_UID

MODEL_URI_ENV = "MODEL_SERVER_MODEL_URI"
ARTIFACT_SHA256_ENV = "MODEL_SERVER_ARTIFACT_SHA256"
"""The model server's variables for the artifact it loads and the digest that artifact must have."""
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "IngressClass",
        "RuntimeClass",
        "CSIDriver",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "APIService",
        "ClusterSecretStore",
        "ClusterIssuer",
    }
)

# Seldon Core v1 admission webhook (seldondeployment_webhook.go) and prepack.go.
SELDON_ENUMS = {
    "protocol": ("seldon", "tensorflow", "kfserving", "v2"),
    "transport": ("rest", "grpc"),
    "serverType": ("rpc", "kafka"),
}
SELDON_PREPACKAGED = frozenset(
    {
        "SKLEARN_SERVER",
        "XGBOOST_SERVER",
        "MLFLOW_SERVER",
        "TENSORFLOW_SERVER",
        "HUGGINGFACE_SERVER",
        "TRITON_SERVER",
        "TEMPO_SERVER",
    }
)
SELDON_IMPLEMENTATIONS = SELDON_PREPACKAGED | {
    "SIMPLE_MODEL",
    "SIMPLE_ROUTER",
    "RANDOM_ABTEST",
    "AVERAGE_COMBINER",
    "UNKNOWN_IMPLEMENTATION",
}
SELDON_KAFKA_ENV = ("KAFKA_BROKER", "KAFKA_INPUT_TOPIC", "KAFKA_OUTPUT_TOPIC")
SELDON_LOGGER_MODES = ("all", "request", "response")

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_GRAFANA_UID = re.compile(r"[a-zA-Z0-9_-]{1,40}")
_SECRET_ENV_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.IGNORECASE)

LONG_RUNNING_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "SeldonDeployment"})
"""Kinds whose containers serve until stopped, and so need readiness and liveness probes."""

# --- metadata ---------------------------------------------------------------------------------


def metadata_problems(d: Doc, kind: str) -> Iterator[Problem]:
    meta = d.doc.get("metadata")
    if not isinstance(meta, dict):
        yield d.problem(("metadata",), "metadata is missing", "add metadata with name and namespace")
        return
    yield from _name_problems(d, kind, meta.get("name"))
    namespace = meta.get("namespace")
    if kind not in CLUSTER_SCOPED_KINDS:
        if not namespace:
            yield d.problem(
                ("metadata", "namespace"),
                "namespaced object has no metadata.namespace",
                "set metadata.namespace explicitly; do not rely on Argo CD's destination",
            )
        elif not _is_dns_label(namespace):
            yield d.problem(
                ("metadata", "namespace"),
                f"namespace {namespace!r} is not a DNS-1123 label",
                "use <= 63 lowercase letters, digits and '-'",
            )
    for section in ("labels", "annotations"):
        entries = meta.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            yield d.problem(
                ("metadata", section), f"{section} must be a mapping", f"write {section} as key: value"
            )
            continue
        for key, value in entries.items():
            where = ("metadata", section, str(key))
            if (reason := _qualified_name_error(key)) is not None:
                yield d.problem(where, f"{section[:-1]} key {key!r} is invalid: {reason}", "rename the key")
            if not isinstance(value, str):
                yield d.problem(
                    where,
                    f"{section[:-1]} value {value!r} is not a string",
                    'quote it in YAML, e.g. "true" or "1"',
                )
            elif section == "labels" and (len(value) > 63 or not _QUALIFIED_NAME.fullmatch(value or "a")):
                yield d.problem(
                    where,
                    f"label value {value!r} is invalid: at most 63 characters, alphanumerics, "
                    "'-', '_' or '.', starting and ending alphanumeric",
                    "shorten or sanitise the value (or move it to an annotation)",
                )


def _name_problems(d: Doc, kind: str, name: Any) -> Iterator[Problem]:
    where = ("metadata", "name")
    if not isinstance(name, str) or not name:
        yield d.problem(where, "metadata.name is missing", "set metadata.name")
    elif kind == "Service" and (len(name) > 63 or not _DNS1035_LABEL.fullmatch(name)):
        # The API server checks Service names as DNS-1035 labels: also no leading digit.
        yield d.problem(
            where,
            f"Service name {name!r} is not a DNS label (<= 63 lowercase letters, "
            "digits and '-', starting with a letter)",
            "shorten or rename the Service",
        )
    elif kind == "Namespace" and not _is_dns_label(name):
        yield d.problem(
            where, f"Namespace name {name!r} is not a DNS-1123 label (<= 63)", "shorten or rename it"
        )
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        yield d.problem(
            where,
            f"name {name!r} is not a DNS-1123 subdomain (<= 253 lowercase letters, digits, '-' and '.')",
            "rename it",
        )


def _is_dns_label(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 63 and _DNS1123_LABEL.fullmatch(value) is not None


def _qualified_name_error(key: Any) -> str | None:
    if not isinstance(key, str):
        return "keys must be strings"
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return "the prefix before '/' must be a DNS-1123 subdomain"
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return "the name must be <= 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    return None


# --- cross-document uniqueness ----------------------------------------------------------------


def identity_claim(d: Doc, api: str, kind: str, claims: Claims) -> Iterator[Problem]:
    meta, group = as_dict(d.doc.get("metadata")), api.rpartition("/")[0]
    namespace = f"{meta['namespace']}/" if meta.get("namespace") else ""
    identity = f"{kind}.{group}" if group else kind  # kubectl's spelling, e.g. Deployment.apps
    identity += f" {namespace}{meta.get('name')}"
    yield from claim(d, claims, "object", identity, ("metadata", "name"))


def claim(d: Doc, claims: Claims, what: str, value: str, field: FieldPath) -> Iterator[Problem]:
    """Record that ``value`` is taken in this environment; report any later taker."""
    first = claims.setdefault((d.env, what, value), (id(d), d.path, field, d.ref))
    if first[0] != id(d) or first[2] != field:
        yield _conflict(d.path, d.ref, what, value, field, first)


def _conflict(path: str, ref: str, what: str, value: str, field: FieldPath, first: tuple) -> Problem:
    return Problem(
        file=path,
        message=f"{ref}: {what} {value!r} is already defined in {first[1]} at {format_path(first[2])}",
        field=format_path(field) or None,
        fix="make it unique, e.g. by including the model and environment name",
    )


def conflicts_between(parts: Iterable[Claims]) -> list[Problem]:
    """Names claimed by more than one part of a set validated in parts (see ``validate_part``)."""
    seen: Claims = {}
    problems = []
    for claims in parts:
        for key, claim in claims.items():
            if key in seen:
                _, what, value = key
                problems.append(_conflict(claim[1], claim[3], what, value, claim[2], seen[key]))
            else:
                seen[key] = claim
    return problems


# --- Grafana dashboards -----------------------------------------------------------------------


def dashboard_file(d: Doc, key: str, text: Any, claims: Claims) -> Iterator[Problem]:
    where = ("data", key)
    if not key.endswith(".json"):
        yield d.problem(where, "dashboard files must end in .json", f"rename the data key to {key}.json")
        return
    yield from claim(d, claims, "Grafana dashboard file", key, where)
    try:
        board = json.loads(text)
    except (TypeError, ValueError) as exc:
        yield d.problem(where, f"dashboard is not valid JSON: {exc}", "emit it with json.dumps")
        return
    if not isinstance(board, dict):
        yield d.problem(where, "dashboard JSON must be an object", "emit the dashboard model object")
        return
    uid = board.get("uid")
    if not isinstance(uid, str) or not _GRAFANA_UID.fullmatch(uid):
        yield d.problem(
            (*where, "uid"),
            f"dashboard uid {uid!r} must be 1-40 characters of [a-zA-Z0-9_-]",
            "set a short stable uid, e.g. <model>-<env>",
        )
    else:
        yield from claim(d, claims, "Grafana dashboard uid", uid, (*where, "uid"))
    if not isinstance(board.get("title"), str) or not board.get("title"):
        yield d.problem((*where, "title"), "dashboard has no title", "set a title")
    if not isinstance(board.get("panels"), list):
        yield d.problem((*where, "panels"), "dashboard has no panels list", "add panels: [...]")


# --- Seldon admission webhook -----------------------------------------------------------------


def seldon_problems(d: Doc) -> Iterator[Problem]:
    spec = as_dict(d.doc.get("spec"))
    for key, allowed in SELDON_ENUMS.items():
        if key in spec and spec[key] not in allowed:
            yield d.problem(
                ("spec", key), f"{key} {spec[key]!r} is not supported", "use one of: " + ", ".join(allowed)
            )
    predictors = [as_dict(p) for p in as_list(spec.get("predictors"))]
    if spec.get("predictors") == []:  # a missing or mistyped list is the schema's to report
        yield d.problem(("spec", "predictors"), "has no predictors", "add at least one predictor")
    yield from _traffic_problems(d, predictors)
    names: set[Any] = set()
    for i, predictor in enumerate(predictors):
        base = ("spec", "predictors", i)
        if predictor.get("name") in names:
            yield d.problem(
                (*base, "name"),
                f"duplicate predictor name {predictor.get('name')!r}",
                "give every predictor a unique name",
            )
        names.add(predictor.get("name"))
        containers = {
            as_dict(c).get("name")
            for cs in as_list(predictor.get("componentSpecs"))
            for c in as_list(as_dict(as_dict(cs).get("spec")).get("containers"))
        }
        yield from _graph_problems(
            d, predictor.get("graph"), (*base, "graph"), containers, spec.get("protocol")
        )
        yield from _artifact_pin_problems(d, predictor, base)
        env = as_list(as_dict(predictor.get("svcOrchSpec")).get("env"))
        yield from _literal_secret_problems(d, env, (*base, "svcOrchSpec", "env"))
        if spec.get("serverType") == "kafka":
            present = {as_dict(e).get("name") for e in env}
            missing = [n for n in SELDON_KAFKA_ENV if n not in present]
            if missing:
                yield d.problem(
                    (*base, "svcOrchSpec", "env"),
                    f"serverType kafka needs {', '.join(missing)}",
                    "add the KAFKA_BROKER, KAFKA_INPUT_TOPIC and KAFKA_OUTPUT_TOPIC env vars",
                )


def _artifact_pin_problems(d: Doc, predictor: dict, base: FieldPath) -> Iterator[Problem]:
    """Where images must be digest-pinned, a model server must be given its artifact's digest too: the
    rendered manifest is what runs, so a hand edit that drops it is caught here, not only in the spec."""
    if not requires_digest(d.env):
        return
    for j, component in enumerate(as_list(predictor.get("componentSpecs"))):
        for k, container in enumerate(as_list(as_dict(as_dict(component).get("spec")).get("containers"))):
            env = {as_dict(e).get("name"): as_dict(e).get("value") for e in as_list(as_dict(container).get("env"))}
            if MODEL_URI_ENV not in env:
                continue  # not a model server of ours
            if not _SHA256_HEX.fullmatch(str(env.get(ARTIFACT_SHA256_ENV) or "")):
                yield d.problem(
                    (*base, "componentSpecs", j, "spec", "containers", k, "env"),
                    f"model container {as_dict(container).get('name')!r} loads {env[MODEL_URI_ENV]!r} without "
                    f"{ARTIFACT_SHA256_ENV} in {d.env}, so a swapped artifact would be served",
                    "set release.artifact_sha256 in the spec and render (a 64-hex digest)",
                )


def _traffic_problems(d: Doc, predictors: list[dict]) -> Iterator[Problem]:
    shadows = [i for i, p in enumerate(predictors) if p.get("shadow") is True]
    serving = [i for i in range(len(predictors)) if i not in shadows]
    traffic = {i: p.get("traffic", 0) for i, p in enumerate(predictors)}
    for i in shadows[1:]:
        yield d.problem(
            ("spec", "predictors", i, "shadow"),
            "more than one shadow predictor",
            "keep at most one predictor with shadow: true",
        )
    if shadows and not serving:
        yield d.problem(
            ("spec", "predictors", shadows[0], "shadow"),
            "a shadow cannot be the only predictor",
            "add a non-shadow predictor or set shadow: false",
        )
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in traffic.values()):
        return  # the schema already reports the bad type; a sum would only add noise
    for i in shadows:
        if not 0 <= traffic[i] <= 100:
            yield d.problem(
                ("spec", "predictors", i, "traffic"),
                "shadow traffic must be between 0 and 100",
                "set traffic between 0 and 100",
            )
    split = ", ".join(f"{predictors[i].get('name')}={traffic[i]}" for i in serving)
    if len(serving) > 1 and sum(traffic[i] for i in serving) != 100:
        yield d.problem(
            ("spec", "predictors", serving[-1], "traffic"),
            f"traffic of non-shadow predictors must sum to 100, got {split}",
            "adjust the traffic values so they add up to 100",
        )
    elif len(serving) == 1 and traffic[serving[0]] not in (0, 100):
        yield d.problem(
            ("spec", "predictors", serving[0], "traffic"),
            f"a single serving predictor must have traffic 0 or 100, got {split}",
            "set traffic to 100 (or leave it out)",
        )


def _graph_problems(d: Doc, unit: Any, path: FieldPath, containers: set, protocol: Any) -> Iterator[Problem]:
    unit = as_dict(unit)
    name, impl = unit.get("name"), unit.get("implementation")
    if impl is not None and impl not in SELDON_IMPLEMENTATIONS:
        yield d.problem(
            (*path, "implementation"),
            f"unknown implementation {impl!r}",
            "use one of: " + ", ".join(sorted(SELDON_IMPLEMENTATIONS)),
        )
    elif impl in (None, "UNKNOWN_IMPLEMENTATION") and name not in containers:
        yield d.problem(
            (*path, "name"),
            f"graph unit {name!r} has no implementation and no container of "
            "that name in this predictor's componentSpecs",
            f"add a container named {name!r} or set a prepackaged implementation",
        )
    elif impl in SELDON_PREPACKAGED:
        if not unit.get("modelUri") and impl != "HUGGINGFACE_SERVER":
            yield d.problem(
                (*path, "modelUri"), f"{impl} needs a modelUri", "set modelUri to the model artifacts"
            )
        if protocol == "tensorflow" and impl != "TENSORFLOW_SERVER":
            yield d.problem(
                (*path, "implementation"),
                f"{impl} does not speak the tensorflow protocol",
                "use protocol seldon or v2, or TENSORFLOW_SERVER",
            )
    if "logger" in unit and as_dict(unit["logger"]).get("mode") not in SELDON_LOGGER_MODES:
        yield d.problem(
            (*path, "logger", "mode"),
            "logger needs a mode",
            "set logger.mode to one of: " + ", ".join(SELDON_LOGGER_MODES),
        )
    for j, child in enumerate(as_list(unit.get("children"))):
        yield from _graph_problems(d, child, (*path, "children", j), containers, protocol)


# --- pod policies -----------------------------------------------------------------------------


def pod_specs(doc: dict, kind: str) -> Iterator[tuple[FieldPath, dict]]:
    spec = as_dict(doc.get("spec"))
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield ("spec", "template", "spec"), as_dict(as_dict(spec.get("template")).get("spec"))
    elif kind == "CronJob":
        job = as_dict(as_dict(spec.get("jobTemplate")).get("spec"))
        yield (
            ("spec", "jobTemplate", "spec", "template", "spec"),
            as_dict(as_dict(job.get("template")).get("spec")),
        )
    elif kind == "SeldonDeployment":
        for i, predictor in enumerate(as_list(spec.get("predictors"))):
            for j, component in enumerate(as_list(as_dict(predictor).get("componentSpecs"))):
                path = ("spec", "predictors", i, "componentSpecs", j, "spec")
                yield path, as_dict(as_dict(component).get("spec"))


def pod_problems(d: Doc, pod_path: FieldPath, pod: dict) -> Iterator[Problem]:
    pod_context = as_dict(pod.get("securityContext"))
    for group in ("initContainers", "containers"):
        for k, container in enumerate(as_list(pod.get(group))):
            container, path = as_dict(container), (*pod_path, group, k)
            label = f"container {container.get('name')!r}"
            limits = as_dict(as_dict(container.get("resources")).get("limits"))
            missing = [r for r in ("cpu", "memory") if r not in limits]
            if missing:
                yield d.problem(
                    (*path, "resources", "limits"),
                    f"{label} has no {' and '.join(missing)} limit",
                    "set resources.limits.cpu and resources.limits.memory",
                )
            yield from _security_problems(
                d, path, label, pod_context, as_dict(container.get("securityContext"))
            )
            if group == "containers" and d.doc.get("kind") in LONG_RUNNING_KINDS:
                for probe in ("readinessProbe", "livenessProbe"):
                    if not container.get(probe):
                        yield d.problem(
                            (*path, probe),
                            f"{label} has no {probe}",
                            f"add a {probe} so Kubernetes knows when the container is ready and alive",
                        )
            image = container.get("image")
            if requires_digest(d.env) and not is_digest_pinned(str(image or "")):
                yield d.problem(
                    (*path, "image"),
                    f"{label} image {image!r} is not pinned by digest in {d.env}",
                    "use <repository>@sha256:<64 hex digits>",
                )
            yield from _literal_secret_problems(d, as_list(container.get("env")), (*path, "env"))


def _security_problems(d: Doc, path: FieldPath, label: str, pod: dict, own: dict) -> Iterator[Problem]:
    def effective(key: str) -> Any:  # a container setting overrides the pod's
        return own[key] if own.get(key) is not None else pod.get(key)

    if effective("runAsNonRoot") is not True:
        yield d.problem(
            (*path, "securityContext", "runAsNonRoot"),
            f"{label} may run as root",
            "set securityContext.runAsNonRoot: true on the pod or the container",
        )
    elif effective("runAsUser") == 0:
        yield d.problem(
            (*path, "securityContext", "runAsUser"),
            f"{label} sets runAsUser 0 with runAsNonRoot",
            "use a non-zero runAsUser",
        )
    for key in ("runAsUser", "runAsGroup"):
        # Below 10000 a uid can collide with a host account: a process escaping its container would act as it.
        value = effective(key)
        if (key, value) == ("runAsUser", 0):
            continue  # reported above
        if not isinstance(value, int) or value < MIN_RUN_AS_UID:
            yield d.problem(
                (*path, "securityContext", key),
                f"{label} runs with {key} {value if value is not None else '<image default>'}, below {MIN_RUN_AS_UID}",
                f"set securityContext.{key}: {RUN_AS_UID} (the uid of the platform's images) or another "
                f"id >= {MIN_RUN_AS_UID}, and build the image with that user",
            )
    if own.get("allowPrivilegeEscalation") is not False:
        yield d.problem(
            (*path, "securityContext", "allowPrivilegeEscalation"),
            f"{label} allows privilege escalation",
            "set securityContext.allowPrivilegeEscalation: false on the container",
        )


def _literal_secret_problems(d: Doc, env: list, path: FieldPath) -> Iterator[Problem]:
    for k, var in enumerate(env):
        var = as_dict(var)
        name = var.get("name")
        # A ``*_FILE`` variable names a mounted file (MODEL_SERVER_KAFKA_PASSWORD_FILE), not the secret itself.
        if (isinstance(name, str) and _SECRET_ENV_NAME.search(name) and not name.endswith("_FILE")
                and var.get("value") not in (None, "")):
            yield d.problem(
                (*path, k, "value"),
                f"env var {name} carries a literal secret value",
                "use valueFrom.secretKeyRef backed by a SealedSecret or ExternalSecret",
            )
