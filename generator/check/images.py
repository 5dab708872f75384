"""Every image the platform runs, from the rendered charts and our own manifests: ``apps/IMAGES.md``, and
the rule that prod's chart images run by digest (``vendor/images.yaml``, :mod:`generator.spec.images`).

An image "runs" when a pod runs it (containers, init and ephemeral containers of every workload kind), or
when an operator the platform installs is told to run it: an ``image`` field of a custom resource
(Prometheus, Alertmanager), an operator container's ``*IMAGE*`` environment variable or any variable that
names an image on a registry host (Strimzi's Kafka images, Seldon's executor), an ``--*image*``/
``--*reloader*`` argument (prometheus-operator), or the sidecar Istio injects (istiod's injector values).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from generator.check.chart_objects import ChartApp
from generator.check.manifest import Manifest, as_dict, as_list
from generator.check.policies import pod_specs
from generator.spec.errors import Problem
from generator.spec.images import (
    CHART_DIGEST_ENVS,
    IMAGES_LOCK,
    IMAGES_TABLE,
    ImageLock,
    LockedImage,
    split_reference,
)
from generator.spec.layout import ENVIRONMENTS, GENERATED_MARKER

CONTAINER_GROUPS = ("initContainers", "containers", "ephemeralContainers")
IMAGE_ARG = re.compile(r"^--[\w-]*(?:image|reloader)[\w-]*=(\S+)$")


@dataclass(frozen=True, order=True)
class ImageUse:
    """One image one component runs in one environment, and where it is named."""

    component: str
    image: str
    env: str
    where: str
    chart: str | None
    """``<chart> <version>`` for a chart's image; ``None`` for our manifests."""


def chart_image_uses(env: str, apps: list[ChartApp]) -> list[ImageUse]:
    """Every image the rendered charts of ``env`` run."""
    uses = set()
    for app in apps:
        component = app.component.name if app.component else app.name
        chart = f"{app.vendored.entry.chart} {app.vendored.entry.version}"
        for _template, doc in app.documents:
            for image, where in document_images(doc):
                uses.add(ImageUse(component, image, env, where, chart))
    return sorted(uses)


def manifest_image_uses(env: str, manifests: list[Manifest]) -> list[ImageUse]:
    """Every image our rendered manifests of ``env`` run (models, drift detectors, jobs, platform components)."""
    uses = set()
    for m in manifests:
        if m.env != env:
            continue
        parts = m.path.split("/")
        component = parts[4] if len(parts) > 4 and parts[3] == "platform" else \
            f"model {parts[4]}" if len(parts) > 4 and parts[3] == "models" else parts[-1]
        for image, where in document_images(m.doc):
            uses.add(ImageUse(component, image, env, where, None))
    return sorted(uses)


def document_images(doc: dict) -> Iterator[tuple[str, str]]:
    """``(image, where)`` for every image one document makes the cluster run."""
    kind = str(doc.get("kind"))
    ref = f"{kind}/{as_dict(doc.get('metadata')).get('name')}"
    pods = list(pod_specs(doc, kind))
    for _path, pod in pods:
        for group in CONTAINER_GROUPS:
            for container in as_list(pod.get(group)):
                container = as_dict(container)
                name = container.get("name")
                image = container.get("image")
                if isinstance(image, str) and image != "auto":  # "auto": Istio injects its proxy image
                    yield image, f"{ref} container {name}"
                for env in as_list(container.get("env")):
                    env = as_dict(env)
                    if not isinstance(env.get("value"), str):
                        continue
                    named = "IMAGE" in str(env.get("name", "")).upper()
                    for token in env["value"].split():
                        candidate = token.rsplit("=", 1)[-1]
                        # An *IMAGE* variable, or any value that names an image on a registry host
                        # (Strimzi's STRIMZI_DEFAULT_MAVEN_BUILDER).
                        if _is_reference(candidate) and (named or _on_registry(candidate)):
                            yield candidate, f"{ref} container {name} env {env.get('name')} (operator)"
                for arg in as_list(container.get("args")):
                    if isinstance(arg, str) and (match := IMAGE_ARG.match(arg)) and _is_reference(match[1]):
                        yield match[1], f"{ref} container {name} arg {arg.split('=', 1)[0]} (operator)"
    if not pods and kind not in ("ConfigMap", "CustomResourceDefinition"):
        for path, value in _image_fields(doc.get("spec"), "spec"):
            if _is_reference(value):
                yield value, f"{ref} {path} (operator)"
    if kind == "ConfigMap":
        yield from _istio_proxy_image(doc, ref)
        for key, value in as_dict(doc.get("data")).items():
            if key == "image" and isinstance(value, str) and _is_reference(value):
                yield value, f"{ref} data.image"


def _image_fields(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("image", "imageName") and isinstance(item, str):  # imageName: CloudNativePG's Cluster
                yield f"{path}.{key}", item
            else:
                yield from _image_fields(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _image_fields(item, f"{path}[{index}]")


def _istio_proxy_image(doc: dict, ref: str) -> Iterator[tuple[str, str]]:
    """istiod's injector ConfigMap: the proxy image every injected pod (and the gateway) runs."""
    text = as_dict(doc.get("data")).get("values")
    if not isinstance(text, str) or "proxy" not in text:
        return
    try:
        values = as_dict(as_dict(json.loads(text)).get("global"))
    except ValueError:
        return
    image = as_dict(values.get("proxy")).get("image")
    if isinstance(image, str) and image:
        full = image if "/" in image or ":" in image else f"{values.get('hub')}/{image}:{values.get('tag')}"
        if _is_reference(full):
            yield full, f"{ref} data.values global.proxy.image (Istio sidecar, injected)"


def _on_registry(text: str) -> bool:
    first = text.split("/", 1)[0]
    return "/" in text and ("." in first or ":" in first) and not text.startswith(("http:", "https:"))


def _is_reference(text: str) -> bool:
    repository, tag, digest = split_reference(text)
    return (tag is not None or digest is not None) and "/" in repository


# --- prod runs chart images by digest ---------------------------------------------------------------------


def digest_problems(uses: list[ImageUse], lock: ImageLock, exceptions: dict[str, dict[str, str]]) -> list[Problem]:
    """Prod's chart images without a digest that the lock does not account for, and lock entries that name
    an image prod no longer runs. ``exceptions``: each component's ``policy_exceptions``, where
    ``"<Kind>/<name>/<container>: digest"`` records why a container cannot take the digest through values."""
    problems = []
    locked = {(i.component, i.image): i for i in lock.images}
    for use in _digest_env_chart_uses(uses):
        repository, tag, digest = split_reference(use.image)
        entry = locked.get((use.component, f"{repository}:{tag}"))
        if digest is not None:
            continue
        if entry is None:
            problems.append(Problem(IMAGES_LOCK, f"{use.env} runs chart image {use.image} ({use.component}: "
                                    f"{use.where}) by tag, and the lock does not record it",
                                    fix="run `mlops images` to record it (then `mlops images resolve` with "
                                    "network access fills its digest)"))
        elif entry.digest is not None and not _excepted(use, exceptions.get(use.component, {})):
            problems.append(Problem(f"apps/{use.component}/component.yaml", f"{use.env} runs {use.image} "
                                    f"({use.where}) by tag although {IMAGES_LOCK} has its digest",
                                    field="image_digests", fix=f"map the chart's digest value to {repository} "
                                    "under image_digests (see the chart's values.yaml), then `mlops render`"))
    running = {key for key, _ in _locked_keys(uses)}
    for key in sorted(set(locked) - running):
        problems.append(Problem(IMAGES_LOCK, f"{key[0]}: {key[1]} is recorded but prod's charts no longer run it",
                                fix="run `mlops images` to drop it"))
    return problems


def _excepted(use: ImageUse, exceptions: dict[str, str]) -> bool:
    """``"<Kind>/<name>/<container>: digest"``, ``"<Kind>/<name>/<container>/<VARIABLE>: digest"`` (an image an
    operator takes from one environment variable) or ``"<Kind>/<name>: digest"`` (a custom resource, a ConfigMap)."""
    match = re.match(r"^(\S+) container (\S+)(?: env (\S+))?", use.where)
    if match and (f"{match[1]}/{match[2]}: digest" in exceptions
                  or (match[3] and f"{match[1]}/{match[2]}/{match[3]}: digest" in exceptions)):
        return True
    return f"{use.where.split()[0]}: digest" in exceptions


def _digest_env_chart_uses(uses: list[ImageUse]) -> Iterator[ImageUse]:
    return (u for u in uses if u.env in CHART_DIGEST_ENVS and u.chart is not None)


def _locked_keys(uses: list[ImageUse]) -> Iterator[tuple[tuple[str, str], ImageUse]]:
    """``(component, repository:tag)`` of every chart image a digest environment runs, with or without digest."""
    for use in _digest_env_chart_uses(uses):
        repository, tag, _digest = split_reference(use.image)
        if tag is not None:
            yield (use.component, f"{repository}:{tag}"), use


def lock_entries(uses: list[ImageUse], lock: ImageLock) -> ImageLock:
    """The lock with one entry per chart image a digest environment runs (kept as recorded when it is)."""
    current = {(i.component, i.image): i for i in lock.images}
    entries = {}
    for key, use in _locked_keys(uses):
        entries[key] = current.get(key) or LockedImage(
            image=key[1], component=use.component,
            source="not resolved yet: recorded offline, without access to the image's registry; run "
                   "`mlops images resolve` where the registry is reachable")
    return ImageLock(images=sorted(entries.values(), key=lambda i: (i.component, i.image)))


# --- apps/IMAGES.md -------------------------------------------------------------------------------------


def images_markdown(uses: list[ImageUse], lock: ImageLock) -> str:
    """The table of every image the platform runs, by component and image, with its environments."""
    locked = {(i.component, i.image): i for i in lock.images}
    rows: dict[tuple[bool, str, str], dict] = {}
    for use in uses:
        row = rows.setdefault((use.chart is None, use.component, use.image),
                              {"envs": set(), "where": set(), "chart": use.chart})
        row["envs"].add(use.env)
        row["where"].add(use.where)
    lines = [f"<!-- Code generated by `mlops images` from the rendered charts and manifests. {GENERATED_MARKER} -->",
             "# Images the platform runs", "",
             "Every image a pod runs or an operator is told to run, in every environment: the platform charts' "
             "output as `mlops validate` renders it (vendored archives, each environment's values) and our own "
             f"rendered manifests. In {', '.join(CHART_DIGEST_ENVS)} every chart image runs by digest or is "
             f"recorded in `{IMAGES_LOCK}` with the reason it has none yet (`mlops validate` fails otherwise); "
             "`mlops images resolve` reads digests from the registries where they are reachable.", "",
             "| component | from | image | digest | environments | where |", "|---|---|---|---|---|---|"]
    for (ours, component, image), row in sorted(rows.items()):
        repository, tag, digest = split_reference(image)
        entry = locked.get((component, f"{repository}:{tag}"))
        if digest:
            shown = f"`{digest}`"
        elif entry is None or ours:
            shown = "—"
        else:
            shown = "none yet (`vendor/images.yaml`)" if entry.digest is None else \
                "recorded; the chart takes none here (`policy_exceptions`)"
        envs = ", ".join(e for e in ENVIRONMENTS if e in row["envs"])
        where = "; ".join(sorted(row["where"]))
        origin = "ours" if ours else f"chart {row['chart']}"
        lines.append(f"| {component} | {origin} | `{repository}{':' + tag if tag else ''}` | {shown} | {envs} | {where} |")
    unresolved = [i for i in lock.images if i.digest is None]
    lines += ["", f"{len(unresolved)} of the {len(lock.images)} chart images prod runs by tag have no digest "
              f"recorded yet ({IMAGES_LOCK})."]
    return "\n".join(lines) + "\n"


__all__ = ["IMAGES_TABLE", "ImageUse", "chart_image_uses", "digest_problems", "document_images",
           "images_markdown", "lock_entries", "manifest_image_uses"]
