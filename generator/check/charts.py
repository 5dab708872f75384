"""Every platform Application rendered with its pinned chart, and checked on what the chart really produces.

For each environment, each rendered ``platform-*`` Application with a Helm source is rendered with the
vendored archive of its pin (:mod:`generator.render.charts`), with its release name, destination namespace
and ``valuesObject``, as Argo CD would. Then:

1. every value we set takes effect: removing it changes the output, or the key is in the chart's values or
   schema and the component records why it is set anyway (``inert_values``);
2. the chart's ``values.schema.json`` accepts the values; no left-out dependency chart is enabled;
3. wiring, 4. the AppProject and determinism, 5. workload policies: see :mod:`generator.check.chart_objects`;
6. images: prod's chart images run by digest or are recorded in ``vendor/images.yaml``, and ``apps/IMAGES.md``
   lists every image the platform runs (:mod:`generator.check.images`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from generator.check import chart_objects
from generator.check.chart_objects import ChartApp
from generator.check.images import (
    ImageUse,
    chart_image_uses,
    digest_problems,
    images_markdown,
    manifest_image_uses,
)
from generator.check.manifest import Manifest, as_dict
from generator.render.charts import (
    CACHE_FORMAT,
    ChartRenderer,
    ChartRenderError,
    Rendered,
    _helm,
    load_documents,
    output_digest,
)
from generator.spec.charts import chart_key, load_lock, pin_problems, read_lock_or_empty, sources_markdown
from generator.spec.components import load_components
from generator.spec.errors import Problem, SpecError
from generator.spec.images import CHART_DIGEST_ENVS, IMAGES_TABLE, load_image_lock
from generator.spec.layout import RepoLayout, env_file_path

RENDER_THREADS = 4
"""Threads that hand renders to Helm's worker processes (one per CPU, :mod:`generator.render.helm_pool`): more
threads than workers, so a worker never waits while this process compares or parses an output."""


def chart_problems(layout: RepoLayout, manifests: list[Manifest], envs: list[str], kubernetes_version: str,
                   renderer: ChartRenderer | None = None, images: list[ImageUse] | None = None) -> list[Problem]:
    """Render every platform Application of ``envs`` with its vendored chart and run every chart check;
    ``images`` (when given) receives every image the environments run (:mod:`generator.check.images`)."""
    vendored, problems = load_lock(layout)
    if layout.charts_lock.is_file() and not problems:
        expected = sources_markdown(read_lock_or_empty(layout))
        if not layout.charts_sources.is_file() or layout.charts_sources.read_text(encoding="utf-8") != expected:
            problems.append(Problem(layout.relative(layout.charts_sources), "is not what the chart lock says",
                                    fix="run `mlops charts sources`"))
    try:
        components = load_components(layout)
    except SpecError as exc:
        return problems + exc.problems
    problems += pin_problems(components, vendored)
    renderer = renderer or ChartRenderer(layout.chart_cache_dir, kubernetes_version)
    by_component = {c.name: c for c in components}
    uses: list[ImageUse] = []
    complete = True
    for env in envs:
        apps, found = _chart_apps(env, manifests, vendored, by_component)
        problems += found
        env_problems, ready = _check_environment(layout, env, apps, manifests, renderer)
        problems += env_problems
        complete = complete and not found and len(ready) == len(apps)
        uses += chart_image_uses(env, ready) + manifest_image_uses(env, manifests)
    if images is not None:
        images += uses
    if complete:  # an image table or digest verdict without every chart's images would be wrong
        problems += _image_problems(layout, envs, uses)
    return problems


def _image_problems(layout: RepoLayout, envs: list[str], uses: list[ImageUse]) -> list[Problem]:
    """Prod's chart images run by digest or are in the image lock; apps/IMAGES.md is current (all envs)."""
    lock, problems = load_image_lock(layout)
    if problems:
        return problems
    if set(CHART_DIGEST_ENVS) <= set(envs):
        exceptions = {c.name: c.spec.policy_exceptions for c in load_components(layout)}
        problems += digest_problems(uses, lock, exceptions)
    table = layout.root / IMAGES_TABLE
    if set(envs) == set(layout.existing_environments()) and (
            not table.is_file() or table.read_text(encoding="utf-8") != images_markdown(uses, lock)):
        problems.append(Problem(IMAGES_TABLE, "is not the table of the images the rendered platform runs",
                                fix="run `mlops images` and commit the result"))
    return problems


def _chart_apps(env: str, manifests: list[Manifest], vendored: dict, components: dict) -> tuple[list[ChartApp], list[Problem]]:
    apps, problems = [], []
    for m in manifests:
        doc = m.doc
        if m.env != env or doc.get("kind") != "Application" or "/rendered/apps/" not in m.path:
            continue
        spec = as_dict(doc.get("spec"))
        source = as_dict(spec.get("source"))
        if "chart" not in source:
            continue
        helm = as_dict(source.get("helm"))
        key = chart_key(str(source.get("repoURL", "")), str(source["chart"]), str(source.get("targetRevision", "")))
        name = as_dict(doc.get("metadata")).get("name")
        if key not in vendored:
            problems.append(Problem(m.path, f"Application/{name}: chart {key[1]} {key[2]} from {key[0]} has no "
                                    "vendored archive, so nothing checks what it renders", field="spec.source",
                                    fix="pin a vendored version in apps/<component>/component.yaml, or vendor "
                                    "this one with `mlops charts pull <component>`"))
            continue
        component = components.get(as_dict(as_dict(doc.get("metadata")).get("labels")).get("app.kubernetes.io/name"))
        namespace = as_dict(spec.get("destination")).get("namespace") or ""
        apps.append(ChartApp(env, m.path, doc, component, vendored[key], as_dict(helm.get("valuesObject")),
                             str(helm.get("releaseName") or name), namespace))
    return apps, problems


def _check_environment(layout: RepoLayout, env: str, apps: list[ChartApp], manifests: list[Manifest],
                       renderer: ChartRenderer) -> tuple[list[Problem], list[ChartApp]]:
    problems: list[Problem] = []
    # Pass 1 finds the APIs the platform installs (CRDs in crds/ and in templates); pass 2 renders with
    # them, as Argo CD does on a cluster where they exist (charts switch ServiceMonitors etc. on them).
    with ThreadPoolExecutor(RENDER_THREADS) as pool:
        first = list(pool.map(lambda a: _safe_render(renderer, a), apps))
    api_versions = set(chart_objects.manifest_api_versions([m.doc for m in manifests if m.env == env]))
    for app, rendered in zip(apps, first, strict=True):
        api_versions.update(f"{crd['group']}/{v}" for crd in renderer.crds(app.vendored) for v in crd["versions"])
        if isinstance(rendered, Rendered):
            api_versions.update(chart_objects.manifest_api_versions([d for _, d in renderer.documents(rendered)]))
    full = renderer.with_api_versions(frozenset(api_versions))
    with ThreadPoolExecutor(RENDER_THREADS) as pool:
        second = list(pool.map(lambda a: _safe_render(full, a), apps))
    ready = []
    for app, rendered in zip(apps, second, strict=True):
        found = _schema_problems(full, app) + _dependency_problems(full, app)
        problems += found
        if isinstance(rendered, str):
            if not found:  # Helm checks the schema too: say it once, in the schema's words
                problems.append(app.problem(f"chart {app.vendored.entry.chart} {app.vendored.entry.version} does "
                                            f"not render: {rendered}", "fix the values Helm names"))
            continue
        app.rendered, app.documents = rendered, full.documents(rendered)
        ready.append(app)
    with ThreadPoolExecutor(RENDER_THREADS) as pool:
        for app, unstable in zip(ready, pool.map(lambda a: _unstable_templates(full, a), ready), strict=True):
            app.unstable = unstable
    problems += _consumption_problems(full, ready)
    # Objects of a chart that did not render are unknown: wiring to them would only repeat its problem.
    problems += chart_objects.object_problems(layout, env, ready, manifests, full, complete=len(ready) == len(apps))
    return problems, ready


def _safe_render(renderer: ChartRenderer, app: ChartApp) -> Rendered | str:
    try:
        return renderer.render(app.vendored, app.values, app.release, app.namespace)
    except ChartRenderError as exc:
        return str(exc)


def _schema_problems(renderer: ChartRenderer, app: ChartApp) -> list[Problem]:
    def refusal() -> str | None:
        helm = _helm()
        try:
            renderer.chart(app.vendored).validate_schema(app.values)
        except helm.HelmError as exc:
            return " ".join(str(exc).split())
        return None

    # Remembered by archive and values (a warm run loads no chart at all).
    refused = renderer.remember("schema", app.vendored, app.values, refusal)
    if refused is not None:
        return [app.problem(f"chart {app.vendored.entry.chart}'s values.schema.json refuses the values: {refused}",
                            "fix the values the schema names")]
    return []


def _dependency_problems(renderer: ChartRenderer, app: ChartApp) -> list[Problem]:
    """A dependency chart the archive leaves out renders nothing here; Argo CD would install it."""
    def enabled_but_left_out() -> list[list[str]]:
        chart = renderer.chart(app.vendored)
        present = {d.get("name") for d in chart.dependencies}
        merged = chart.merge_values(app.values)
        found = []
        for dependency in chart.metadata.get("dependencies") or []:
            name, condition = dependency.get("name"), dependency.get("condition") or ""
            if name in present:
                continue
            enabled = any(_lookup(merged, path.strip().split(".")) is True for path in condition.split(",")
                          if path.strip())
            if enabled or not condition:
                found.append([name, condition])
        return found

    return [app.problem(f"values enable dependency chart {name} ({condition or 'no condition'}), which the vendored "
                        f"{app.vendored.entry.chart} archive leaves out",
                        f"keep {condition or name} false, or vendor the chart with its dependencies")
            for name, condition in renderer.remember("dependencies", app.vendored, app.values, enabled_but_left_out)]


def _unstable_templates(renderer: ChartRenderer, app: ChartApp) -> frozenset[str]:
    """Templates whose output differs between two renders of the same inputs (random passwords, certs).

    Cached with the render: the answer only depends on the archive and the values."""
    key = hashlib.sha256(json.dumps(["unstable", CACHE_FORMAT, app.vendored.entry.sha256, app.values, app.release,
                                     app.namespace], sort_keys=True).encode()).hexdigest()
    cached = renderer.cache_get(key)
    if cached is not None:
        return frozenset(cached["unstable"])
    # The render the checks use is one of the two (same inputs; from the cache or not, it is a render).
    one = app.rendered.files if app.rendered is not None else \
        renderer.render_uncached(app.vendored, app.values, app.release, app.namespace).files
    two = renderer.render_uncached(app.vendored, app.values, app.release, app.namespace).files
    # Parsed, not text: a template that prints a random value inside a YAML comment changes nothing applied.
    unstable = sorted(p for p in set(one) | set(two) if one.get(p) != two.get(p)
                      and load_documents(one.get(p, "")) != load_documents(two.get(p, "")))
    renderer.cache_put(key, {"unstable": unstable})
    return frozenset(unstable)


# --- 1. every value takes effect --------------------------------------------------------------------


def leaf_paths(values: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Dotted paths of every value: mappings are walked, lists and scalars are leaves."""
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from leaf_paths(value, (*prefix, str(key)))
    elif prefix:
        yield prefix


def without(values: dict, path: tuple[str, ...]) -> dict:
    """``values`` with the key at ``path`` removed (and mappings it leaves empty)."""
    head, *rest = path
    result = dict(values)
    if not rest:
        result.pop(head, None)
    elif isinstance(result.get(head), dict):
        inner = without(result[head], tuple(rest))
        if inner:
            result[head] = inner
        else:
            result.pop(head)
    return result


def _lookup(values: Any, path: list[str] | tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(values, dict) or part not in values:
            return _MISSING
        values = values[part]
    return values


_MISSING = object()


def _consumption_problems(renderer: ChartRenderer, apps: list[ChartApp]) -> list[Problem]:
    probes = [(app, path) for app in apps for path in leaf_paths(app.values)]

    def changes_output(probe: tuple[ChartApp, tuple[str, ...]]) -> bool | None:
        app, path = probe
        # A key the chart knows, set with a recorded reason, is no problem whichever way a probe went: no render.
        if _inert_reason(app, path) is not None and _known(renderer, app, path):
            return None
        # A value equal to the chart's own default merges to the same values without it, so the output
        # cannot change: no render needed to know it.
        if _lookup(_chart_defaults(renderer, app)[0], path) == _lookup(app.values, path):
            return False
        digest = renderer.probe_digest(app.vendored, without(app.values, path), app.release, app.namespace,
                                       app.unstable)
        # None: Helm refuses the values without it, so the chart needs it.
        return digest is None or digest != base[id(app)]

    base = {id(app): output_digest(app.rendered, app.unstable) for app in apps}
    # The costliest charts' probes first (by archive size), so no worker idles at the end behind one of them;
    # the problems keep the order of the values.
    order = sorted(range(len(probes)), key=lambda i: -probes[i][0].vendored.path.stat().st_size)
    with ThreadPoolExecutor(RENDER_THREADS) as pool:
        answers = dict(zip(order, pool.map(changes_output, [probes[i] for i in order]), strict=True))
    results = [answers[i] for i in range(len(probes))]
    problems = []
    for (app, path), used in zip(probes, results, strict=True):
        if used is not False:
            continue
        dotted = ".".join(path)
        known = _known(renderer, app, path)
        reason = _inert_reason(app, path)
        origin = value_origin(app, path)
        component = app.component.name if app.component else app.name
        if not known:
            problems.append(app.problem(
                f"{component}: value {dotted} (from {origin}) is ignored by chart {app.vendored.entry.chart} "
                f"{app.vendored.entry.version}: it is not in the chart's values or schema and removing it changes "
                "nothing", "remove it or use the chart's key for it (see the chart's values.yaml)",
                field=f"spec.source.helm.valuesObject.{dotted}"))
        elif reason is None:
            problems.append(app.problem(
                f"{component}: value {dotted} (from {origin}) changes nothing in chart "
                f"{app.vendored.entry.chart} {app.vendored.entry.version}'s output (it states the chart's default "
                "or is not read with these values)", f"remove it, or record why it is set under inert_values in "
                f"apps/{component}/component.yaml", field=f"spec.source.helm.valuesObject.{dotted}"))
    return problems


ISTIO_DEFAULTS = "_internal_defaults_do_not_set"
_defaults: dict[str, tuple[dict, dict | None]] = {}


def _chart_defaults(renderer: ChartRenderer, app: ChartApp) -> tuple[dict, dict | None]:
    """The chart's default values (subcharts' included) and its schema, read once per archive (and cached)."""
    key = app.vendored.entry.sha256
    if key not in _defaults:
        def read() -> dict:
            chart = renderer.chart(app.vendored)
            return {"defaults": chart.merge_values({}), "schema": chart.schema}

        found = renderer.remember("defaults", app.vendored, None, read)
        _defaults[key] = (found["defaults"], found["schema"])
    return _defaults[key]


def _known(renderer: ChartRenderer, app: ChartApp, path: tuple[str, ...]) -> bool:
    """The chart's values or schema have the key."""
    defaults, schema = _chart_defaults(renderer, app)
    return (_lookup(defaults, path) is not _MISSING or _in_schema(schema, path)
            # Istio's charts keep their defaults under this key and merge user values over them.
            or _lookup(defaults, (ISTIO_DEFAULTS, *path)) is not _MISSING)


def _in_schema(schema: dict | None, path: tuple[str, ...]) -> bool:
    node = schema
    for part in path:
        if not isinstance(node, dict):
            return False
        properties = node.get("properties") or {}
        if part in properties:
            node = properties[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    return node is not None


def _inert_reason(app: ChartApp, path: tuple[str, ...]) -> str | None:
    if app.component is None:
        return None
    dotted = ".".join(path)
    for key, reason in app.component.spec.inert_values.items():
        if dotted == key or dotted.startswith(f"{key}."):
            return reason
    return None


def value_origin(app: ChartApp, path: tuple[str, ...]) -> str:
    """The file a value came from: the environment's overrides, ``env_values`` or the component's values."""
    if app.component is None:
        return app.path
    dotted = ".".join(path)
    name = app.component.name
    env_values = app.component.spec.env_values
    if dotted in env_values:
        return f"{env_file_path(app.env)} {env_values[dotted]} (env_values of apps/{name}/component.yaml)"
    if _lookup(app.component.values, path) is _MISSING:
        return f"{env_file_path(app.env)} platform.components.{name}.values"
    return f"{app.component.folder}/values.yaml"
