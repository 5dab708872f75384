"""Platform components: the pins and base values in ``apps/<component>/``, one source of truth per pin.

``mlops render`` turns each enabled component plus the environment's overrides into a child Argo CD
Application of the environment's app-of-apps; components of kind ``manifests`` also render their
templates into ``environments/<env>/rendered/platform/<component>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from generator.spec.errors import Problem, SpecError
from generator.spec.images import ImageDigestValue
from generator.spec.layout import RepoLayout
from generator.spec.loader import parse_document, read_yaml_mapping
from generator.spec.models import Environment, Name, Strict

# An exact release: no ranges, wildcards, HEAD or latest, so a sync today and a sync next year agree.
EXACT_VERSION_RE = r"^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$"


class HelmSource(Strict):
    kind: Literal["helm"]
    repo_url: Annotated[str, StringConstraints(pattern=r"^(https://|oci://)")]
    chart: Annotated[str, StringConstraints(min_length=1)]
    version: Annotated[str, StringConstraints(pattern=EXACT_VERSION_RE)]
    release_name: Name
    evidence: str = ""


class ManifestSource(Strict):
    kind: Literal["manifests"]
    evidence: str = ""


class Component(Strict):
    """``apps/<component>/component.yaml``."""

    name: Name
    description: str
    namespace: Name
    wave: Annotated[int, Field(ge=-100, le=100)]
    depends_on: list[Name] = []
    optional: bool = False
    license: str
    source: Annotated[HelmSource | ManifestSource, Field(discriminator="kind")]
    app_version: str | None = None
    secrets: list[Name] = []
    settings: dict[str, Any] = {}
    ignore_differences: list[dict[str, Any]] = []
    """Argo CD ``ignoreDifferences`` entries for fields the component's controllers write at run time."""
    env_values: dict[str, str] = {}
    """Helm value paths set from the environment spec, e.g. ``extraEnvVars.MLFLOW_S3_ENDPOINT_URL: s3.endpoint``,
    so a setting lives once, in environment.yaml."""
    replaceable: bool = False
    """May be disabled although others depend on it: an existing external service takes its place."""
    inert_values: dict[str, str] = {}
    """Helm value paths (dotted) that change nothing in the pinned chart's output, each with the reason they
    are set anyway (a chart default stated so a policy is visible). ``mlops validate`` still requires the key
    in the chart's values.yaml or values.schema.json; any other value that changes nothing is an error."""
    policy_exceptions: dict[str, str] = {}
    """Chart workloads that cannot meet a platform policy through values: ``"<Kind>/<name>: <rule>"`` → why."""
    image_digests: dict[str, ImageDigestValue] = {}
    """Helm value path → the chart image it gives a digest (``vendor/images.yaml``; set in prod by render)."""

    def render_dump(self) -> dict[str, Any]:
        """The fields output is rendered from (what rendered files' hashes cover): the check-only ones are
        left out, so recording a reason for a check does not re-render the platform."""
        return self.model_dump(mode="json", exclude=CHECK_ONLY_FIELDS | HELM_ONLY_FIELDS)


CHECK_ONLY_FIELDS = frozenset({"inert_values", "policy_exceptions"})
"""Component fields only ``mlops validate``'s chart checks read."""
HELM_ONLY_FIELDS = frozenset({"image_digests"})
"""Component fields that become Helm values, never a manifest template's context."""


@dataclass(frozen=True)
class LoadedComponent:
    """A component with its folder, its base values (Helm) and its manifest templates."""

    spec: Component
    folder: str
    """Repo-relative folder, e.g. ``apps/mlflow``."""
    values: dict
    templates: tuple[str, ...]
    """Template paths relative to ``apps/``, e.g. ``kafka-cluster/manifests/kafka.yaml.j2``."""

    @property
    def name(self) -> str:
        return self.spec.name


def load_components(layout: RepoLayout) -> list[LoadedComponent]:
    """Every ``apps/*/component.yaml``, sorted by wave then name.

    Raises:
        SpecError: with every problem in every component file, and broken dependencies.
    """
    components, problems = [], []
    for path in sorted(layout.apps_dir.glob("*/component.yaml")):
        loaded, found = _load_component(layout, path)
        problems += found
        if loaded:
            components.append(loaded)
    problems += _dependency_problems(layout, components)
    if problems:
        raise SpecError(problems)
    return sorted(components, key=lambda c: (c.spec.wave, c.name))


def _load_component(layout: RepoLayout, path: Path) -> tuple[LoadedComponent | None, list[Problem]]:
    display = layout.relative(path)
    raw, problems = read_yaml_mapping(layout, path)
    if raw is None:
        return None, problems
    spec, problems = parse_document(Component, raw, path, display)
    if spec is None:
        return None, problems
    folder = path.parent
    if spec.name != folder.name:
        return None, [Problem(display, f"is {spec.name!r} but the folder is apps/{folder.name}/", field="name",
                              fix=f"set name: {folder.name}")]
    values: dict = {}
    values_path = folder / "values.yaml"
    if spec.source.kind == "helm" and values_path.is_file():
        values, problems = read_yaml_mapping(layout, values_path)
        if values is None:
            return None, problems
    templates = tuple(p.relative_to(layout.apps_dir).as_posix() for p in sorted(folder.glob("manifests/*.yaml.j2")))
    if spec.source.kind == "manifests" and not templates:
        return None, [Problem(display, "kind manifests but no manifests/*.yaml.j2 templates", field="source.kind",
                              fix=f"add templates under apps/{folder.name}/manifests/ or use a Helm chart")]
    return LoadedComponent(spec, layout.relative(folder), values, templates), []


def _dependency_problems(layout: RepoLayout, components: list[LoadedComponent]) -> list[Problem]:
    by_name = {c.name: c for c in components}
    problems = []
    for component in components:
        display = f"{component.folder}/component.yaml"
        for index, dependency in enumerate(component.spec.depends_on):
            other = by_name.get(dependency)
            if other is None:
                problems.append(Problem(display, f"depends on unknown component {dependency!r}",
                                        field=f"depends_on[{index}]", fix=f"use one of {', '.join(sorted(by_name))}"))
            elif other.spec.wave >= component.spec.wave:
                problems.append(Problem(
                    display, f"depends on {dependency} (wave {other.spec.wave}) but syncs in wave "
                    f"{component.spec.wave}, not after it", field="wave",
                    fix=f"use a wave above {other.spec.wave}, or lower {dependency}'s"))
    return problems


def enabled_components(components: list[LoadedComponent], env: Environment) -> list[LoadedComponent]:
    """Components the environment runs: all non-optional ones unless disabled, optional ones if enabled."""
    chosen = []
    for component in components:
        override = env.platform.components.get(component.name)
        enabled = override.enabled if override and override.enabled is not None else not component.spec.optional
        if enabled:
            chosen.append(component)
    return chosen


def environment_values(component: LoadedComponent, env_json: dict) -> dict:
    """The Helm values the component takes from the environment spec (``env_values``), as a nested dict.

    Raises:
        KeyError: an ``env_values`` source path that the environment spec does not have.
    """
    values: dict = {}
    for target, source in component.spec.env_values.items():
        value: Any = env_json
        for part in source.split("."):
            value = value[part]
        node = values
        *parents, leaf = target.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return values


def override_problems(components: list[LoadedComponent], env: Environment, display: str) -> list[Problem]:
    """Overrides in ``environment.yaml`` that name no component, or do not fit its kind."""
    by_name = {c.name: c for c in components}
    problems = []
    enabled = {c.name for c in enabled_components(components, env)}
    for name, override in env.platform.components.items():
        where = f"platform.components.{name}"
        component = by_name.get(name)
        if component is None:
            problems.append(Problem(display, "names no component in apps/", field=where,
                                    fix=f"use one of {', '.join(sorted(by_name))}"))
            continue
        if override.values and component.spec.source.kind != "helm":
            problems.append(Problem(display, "values only apply to Helm components", field=f"{where}.values",
                                    fix="use settings for manifest components"))
        if unknown := sorted(set(override.settings) - set(component.spec.settings)):
            problems.append(Problem(display, f"unknown settings {unknown}", field=f"{where}.settings",
                                    fix=f"known settings: {', '.join(sorted(component.spec.settings)) or 'none'}"))
    env_json = env.model_dump(mode="json")
    for component in components:
        try:
            environment_values(component, env_json)
        except (KeyError, TypeError) as exc:
            problems.append(Problem(f"{component.folder}/component.yaml", f"env_values reads {exc} which "
                                    "environment.yaml does not have", field="env_values",
                                    fix="use a field path of the environment spec, e.g. s3.endpoint"))
        if component.name not in enabled:
            continue
        for dependency in component.spec.depends_on:
            if dependency in by_name and dependency not in enabled and not by_name[dependency].spec.replaceable:
                problems.append(Problem(display, f"{component.name} is enabled but its dependency {dependency} is not",
                                        field=f"platform.components.{dependency}.enabled",
                                        fix=f"enable {dependency}, or disable {component.name}"))
    return problems


TABLE_START = "<!-- components:start (written by mlops render from apps/*/component.yaml) -->"
TABLE_END = "<!-- components:end -->"


def components_table(components: list[LoadedComponent]) -> str:
    """The README's component/version table, one row per ``apps/<component>/`` pin."""
    rows = ["| component | source | version | app version | namespace | wave | licence |",
            "|---|---|---|---|---|---|---|"]
    for c in components:
        spec, source = c.spec, c.spec.source
        where = f"`{source.chart}` from {source.repo_url}" if source.kind == "helm" else f"manifests in `{c.folder}/`"
        version = source.version if source.kind == "helm" else "—"
        optional = " (optional)" if spec.optional else ""
        rows.append(f"| {spec.name}{optional} | {where} | {version} | {spec.app_version or '—'} | {spec.namespace} "
                    f"| {spec.wave} | {spec.license} |")
    return "\n".join(rows)


def readme_with_table(readme: str, components: list[LoadedComponent]) -> str | None:
    """``readme`` with the text between the table markers replaced; ``None`` when it has no markers."""
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start < 0 or end < start:
        return None
    return readme[: start + len(TABLE_START)] + "\n" + components_table(components) + "\n" + readme[end:]
