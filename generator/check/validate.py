"""Offline validation of rendered Kubernetes manifests.

Three layers, all reported together so a user can fix everything in one pass:

* schemas: built-in kinds against kubernetes-validate's strict schemas, custom resources against the
  vendored CRD schemas in ``schemas/`` made strict at load time;
* admission rules the cluster would enforce but no schema expresses (the Seldon webhook, Kubernetes
  name and label syntax, Grafana's provisioning format);
* platform policies (no plain Secrets, limits, non-root, digest-pinned images, no literal secrets).
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate.utils import all_versions
from packaging.version import Version
from referencing import Registry, Resource

from generator.check.manifest import Claims, Doc, FieldPath, Manifest, as_dict, as_list, one_line
from generator.check.policies import (
    claim,
    dashboard_file,
    identity_claim,
    metadata_problems,
    pod_problems,
    pod_specs,
    seldon_problems,
)
from generator.render.renderer import RenderedFile
from generator.spec import yamlio
from generator.spec.errors import Problem, RepositoryError, ValidationError
from generator.spec.layout import RepoLayout

CRD_SCHEMAS = {
    ("argoproj.io/v1alpha1", "Application"): "argoproj.io/application_v1alpha1.json",
    ("argoproj.io/v1alpha1", "AppProject"): "argoproj.io/appproject_v1alpha1.json",
    (
        "machinelearning.seldon.io/v1",
        "SeldonDeployment",
    ): "machinelearning.seldon.io/seldondeployment_v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com/podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com/prometheusrule_v1.json",
    ("kafka.strimzi.io/v1", "KafkaTopic"): "kafka.strimzi.io/kafkatopic_v1.json",
    ("kafka.strimzi.io/v1", "Kafka"): "kafka.strimzi.io/kafka_v1.json",
    ("kafka.strimzi.io/v1", "KafkaNodePool"): "kafka.strimzi.io/kafkanodepool_v1.json",
    ("kafka.strimzi.io/v1", "KafkaUser"): "kafka.strimzi.io/kafkauser_v1.json",
    ("bitnami.com/v1alpha1", "SealedSecret"): "bitnami.com/sealedsecret_v1alpha1.json",
    ("external-secrets.io/v1", "ExternalSecret"): "external-secrets.io/externalsecret_v1.json",
    # Project-authored subsets (see schemas/SOURCES.md): upstream's Cluster CRD is too large to vendor.
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io/cluster_v1.json",
    ("postgresql.cnpg.io/v1", "Database"): "postgresql.cnpg.io/database_v1.json",
    ("networking.istio.io/v1", "Gateway"): "networking.istio.io/gateway_v1.json",
    ("security.istio.io/v1", "PeerAuthentication"): "security.istio.io/peerauthentication_v1.json",
}
"""(apiVersion, kind) of every custom resource the project emits -> vendored schema file."""

GRAFANA_ALERTING_SCHEMA = "grafana.com/alerting-provisioning_v1.json"

class Validator:
    """Checks manifests against schemas, admission rules and platform policies.

    Build it once: schemas are loaded and compiled in the constructor (built-in kinds on first use)
    and reused for every document.
    """

    def __init__(self, schemas_dir: Path, kubernetes_version: str = "1.33") -> None:
        """Load the vendored schemas and pick kubernetes-validate's schemas for a Kubernetes version.

        Args:
            schemas_dir: The repository's ``schemas/`` directory.
            kubernetes_version: Target cluster version, ``major.minor``.

        Raises:
            MlopsError: A vendored schema is missing or unreadable, or the version is unsupported.
        """
        schemas_dir = Path(schemas_dir)
        self._crds = {key: _compile(schemas_dir / rel) for key, rel in CRD_SCHEMAS.items()}
        self._grafana = _compile(schemas_dir / GRAFANA_ALERTING_SCHEMA)
        self._k8s_dir, self._k8s_version = _kubernetes_schema_dir(kubernetes_version)
        definitions = json.loads(self._k8s_dir.joinpath("_definitions.json").read_text())
        self._k8s_registry = Resource.from_contents(definitions) @ Registry()
        self._builtins: dict[tuple[str, str], jsonschema.Draft202012Validator | None] = {}

    def validate(self, manifests: Iterable[Manifest]) -> list[Problem]:
        """Check every manifest and the relations between manifests of the same environment.

        Args:
            manifests: Parsed documents, typically from :func:`load_rendered_tree`.

        Returns:
            Every problem found, in input order; empty when all manifests pass. Never raises on bad
            documents: malformed ones are reported as problems.
        """
        return self.validate_part(manifests)[0]

    def validate_part(self, manifests: Iterable[Manifest]) -> tuple[list[Problem], Claims]:
        """Like :meth:`validate`, for one part of a larger set checked in parallel.

        Returns:
            The part's problems and the names it claims; :func:`conflicts_between` finds names that
            two parts both claim.
        """
        problems: list[Problem] = []
        claims: Claims = {}
        for manifest in manifests:
            doc = Doc(manifest)
            try:
                problems += self._check(doc, claims)
            except Exception as exc:  # noqa: BLE001 - a bug here must not hide other files' problems
                problems.append(
                    doc.problem(
                        (),
                        f"internal validator error: {exc!r}",
                        "report this as a bug in generator/check/validate.py",
                    )
                )
        return problems, claims

    def _check(self, d: Doc, claims: Claims) -> list[Problem]:
        doc = d.doc
        if not isinstance(doc, dict):
            return [d.problem((), "document is not a mapping", "emit one Kubernetes object per document")]
        api, kind = doc.get("apiVersion"), doc.get("kind")
        if not isinstance(api, str) or not isinstance(kind, str) or not api or not kind:
            return [d.problem((), "apiVersion or kind is missing", "set both apiVersion and kind")]
        out = list(self._schema_problems(d, api, kind))
        out += metadata_problems(d, kind)
        out += identity_claim(d, api, kind, claims)
        if kind == "Secret" and api == "v1":
            out.append(
                d.problem(
                    ("kind",),
                    "plain Secrets are not allowed in Git",
                    "use a SealedSecret or an ExternalSecret",
                )
            )
        if kind == "ConfigMap":
            out += self._grafana_problems(d, claims)
        if kind == "SeldonDeployment":
            out += seldon_problems(d)
        for pod_path, pod in pod_specs(doc, kind):
            out += pod_problems(d, pod_path, pod)
        return out

    def _schema_problems(self, d: Doc, api: str, kind: str) -> Iterator[Problem]:
        if (api, kind) in self._crds:
            yield from _schema_errors(d, self._crds[api, kind], d.doc, CRD_SCHEMAS[api, kind])
            return
        validator = self._builtin(api, kind)
        if validator is not None:
            yield from _schema_errors(d, validator, d.doc, f"Kubernetes {self._k8s_version}")
        elif _is_builtin_group(api):
            yield d.problem(
                ("apiVersion",),
                f"Kubernetes {self._k8s_version} has no {api} {kind}",
                "check the kind's spelling and that this apiVersion is still served",
            )
        else:
            yield d.problem(
                ("apiVersion",),
                f"no schema for apiVersion {api} kind {kind}",
                "add its schema to schemas/ with provenance in schemas/SOURCES.md and "
                "register it in CRD_SCHEMAS in generator/check/validate.py",
            )

    def _builtin(self, api: str, kind: str) -> jsonschema.Draft202012Validator | None:
        # Compiled lazily but once: ~700 kinds exist and a render uses a dozen.
        if (api, kind) not in self._builtins:
            group, _, version = api.rpartition("/")
            suffix = f"{group.split('.')[0]}-{version}" if group else version
            file = self._k8s_dir.joinpath(f"{kind.lower()}-{suffix}.json")
            validator = None
            if _is_builtin_group(api) and file.is_file():
                schema = json.loads(file.read_text())
                validator = jsonschema.Draft202012Validator(schema, registry=self._k8s_registry)
            self._builtins[api, kind] = validator
        return self._builtins[api, kind]

    def _grafana_problems(self, d: Doc, claims: Claims) -> Iterator[Problem]:
        labels = as_dict(as_dict(d.doc.get("metadata")).get("labels"))
        data = as_dict(d.doc.get("data"))
        if "grafana_alert" in labels:
            if not data:
                yield d.problem(
                    ("data",),
                    "grafana_alert ConfigMap has no alert files",
                    "add a data key such as <model>-alerts.yaml",
                )
            for key, text in data.items():
                yield from self._alert_file(d, str(key), text, claims)
        if "grafana_dashboard" in labels:
            for key, text in data.items():
                yield from dashboard_file(d, str(key), text, claims)

    def _alert_file(self, d: Doc, key: str, text: Any, claims: Claims) -> Iterator[Problem]:
        where = ("data", key)
        if not key.endswith((".yaml", ".yml", ".json")):
            yield d.problem(
                where,
                "Grafana only provisions alert files ending in .yaml, .yml or .json",
                f"rename the data key to {key}.yaml",
            )
            return
        yield from claim(d, claims, "Grafana alert file", key, where)
        if not isinstance(text, str):
            return  # the ConfigMap schema already reports non-string data
        try:
            content = json.loads(text) if key.endswith(".json") else yamlio.load(text)
        except (TypeError, ValueError, yaml.YAMLError) as exc:
            yield d.problem(
                where,
                f"alert file does not parse: {one_line(exc)}",
                "emit the file with a YAML/JSON serializer, not string templating",
            )
            return
        yield from _schema_errors(d, self._grafana, content, GRAFANA_ALERTING_SCHEMA, prefix=where)
        for g, group in enumerate(as_list(as_dict(content).get("groups"))):
            for r, rule in enumerate(as_list(as_dict(group).get("rules"))):
                uid = as_dict(rule).get("uid")
                if isinstance(uid, str):
                    path = (*where, "groups", g, "rules", r, "uid")
                    yield from claim(d, claims, "Grafana alert rule uid", uid, path)


# --- schema loading ---------------------------------------------------------------------------


def _compile(file: Path) -> jsonschema.Draft202012Validator:
    try:
        schema = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RepositoryError(
            f"{file}: cannot load vendored schema ({exc}); restore it from "
            "git (upstream and commit are in schemas/SOURCES.md)"
        ) from exc
    _prepare(schema, strict=True)
    return jsonschema.Draft202012Validator(schema)


def _prepare(node: Any, strict: bool) -> None:
    """Make a schema strict and Python-compatible, in place.

    Objects that declare ``properties`` get ``additionalProperties: false`` so typos fail, unless the
    CRD keeps unknown fields on purpose. Branches of ``allOf/anyOf/oneOf/not`` are left open: in a
    structural CRD schema they only constrain fields the parent declares (Strimzi's volume ``oneOf``
    lists ``secret``/``configMap`` but not ``name``), so closing them would reject valid objects.
    """
    if not isinstance(node, dict):
        return
    pattern = node.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        node["pattern"] = "(?i)^" + pattern[len("^(?i)") :]  # Python >= 3.11 wants global flags first
    if (
        strict
        and "properties" in node
        and "additionalProperties" not in node
        and node.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        node["additionalProperties"] = False
    for keyword in ("properties", "patternProperties", "$defs", "definitions"):
        for sub in as_dict(node.get(keyword)).values():
            _prepare(sub, strict)
    for keyword in ("items", "additionalProperties", "contains", "propertyNames"):
        _prepare(node.get(keyword), strict)
    for keyword in ("allOf", "anyOf", "oneOf"):
        for sub in as_list(node.get(keyword)):
            _prepare(sub, strict=False)
    _prepare(node.get("not"), strict=False)


def _kubernetes_schema_dir(version: str) -> tuple[Any, str]:
    """kubernetes-validate's strict schemas for the newest release <= ``version``, and that release."""
    wanted = Version(version.lstrip("v"))
    wanted_mm = (wanted.major, wanted.minor)
    shipped = [Version(v) for v in all_versions()]
    usable = [v for v in shipped if (v.major, v.minor) <= wanted_mm]
    if not usable or wanted_mm > (shipped[-1].major, shipped[-1].minor):
        raise RepositoryError(
            f"kubernetes-validate ships schemas for {shipped[0]}..{shipped[-1]}, "
            f"not {version}; pick a supported kubernetes version"
        )
    root = importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    return root.joinpath(f"v{usable[-1]}-local-strict"), f"{usable[-1].major}.{usable[-1].minor}"


def _is_builtin_group(api: str) -> bool:
    # CRD groups must contain a dot and may not end in .k8s.io, so this never captures a CRD.
    group = api.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


# --- schema errors ----------------------------------------------------------------------------


def _schema_errors(
    d: Doc, validator: Any, instance: Any, source: str, prefix: FieldPath = ()
) -> Iterator[Problem]:
    reported: set[FieldPath] = set()
    for err in validator.iter_errors(instance):
        path = prefix + tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            yield from _unknown_fields(d, err, path)
        elif err.validator == "required" and isinstance(err.instance, dict):
            for name in err.validator_value:
                if name not in err.instance and (*path, name) not in reported:
                    reported.add((*path, name))
                    yield d.problem((*path, name), f"required field {name!r} is missing", f"add {name}")
        else:
            message = err.message if len(err.message) <= 200 else err.message[:197] + "..."
            yield d.problem(path, message, _schema_fix(err, source))


def _unknown_fields(d: Doc, err: Any, path: FieldPath) -> Iterator[Problem]:
    allowed = list(as_dict(err.schema.get("properties")))
    patterns = list(as_dict(err.schema.get("patternProperties")))
    for key in err.instance:
        if key in allowed or any(re.search(p, str(key)) for p in patterns):
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(sorted(allowed)) or 'none'}"
        yield d.problem((*path, key), f"unknown field {key!r}", f"remove it or fix its spelling ({hint})")


def _schema_fix(err: Any, source: str) -> str:
    value = err.validator_value
    fixes = {
        "type": lambda: "use a value of type " + " or ".join(value if isinstance(value, list) else [value]),
        "enum": lambda: "use one of: " + ", ".join(repr(v) for v in value),
        "const": lambda: f"set it to {value!r}",
        "pattern": lambda: f"make the value match the regular expression {value}",
        "maxLength": lambda: f"shorten it to at most {value} characters",
        "minLength": lambda: f"make it at least {value} characters long",
        "minimum": lambda: f"use a value >= {value}",
        "maximum": lambda: f"use a value <= {value}",
        "minItems": lambda: f"give it at least {value} item(s)",
    }
    return fixes.get(err.validator, lambda: f"make it conform to the {source} schema")()


def as_manifests(files: Iterable[RenderedFile]) -> list[Manifest]:
    """Rendered files (with their parsed documents) as the manifests the checks read."""
    return [Manifest(f.path, f.document, f.env) for f in files]


def check_rendered_files(layout: RepoLayout, files: Iterable[RenderedFile]) -> None:
    """Validate files rendered in memory, before anything is written.

    Raises:
        ValidationError: with every problem found.
    """
    if problems := Validator(layout.schemas_dir).validate(as_manifests(files)):
        raise ValidationError(problems)
