"""Image digests of the platform's chart images: ``vendor/images.yaml`` (the lock) and how prod applies them.

A chart renders its images by tag; a tag can be pushed again, a digest cannot. In prod (``CHART_DIGEST_ENVS``)
every image a platform chart runs must carry a digest, or be recorded in the lock with the reason it has none
yet. A digest is recorded only as seen in a published source: ``mlops images resolve`` asks each image's
registry (network needed) and writes the digest with the registry and date; offline, ``mlops images pin``
records one seen elsewhere, with that source. The component's ``image_digests`` names the Helm value through
which its chart takes the digest, and ``mlops render`` sets it in prod from the lock.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import StringConstraints, model_validator

from generator.spec import yamlio
from generator.spec.errors import Problem, SpecError
from generator.spec.layout import RepoLayout
from generator.spec.loader import parse_document, read_yaml_mapping
from generator.spec.models import Strict

IMAGES_LOCK = "vendor/images.yaml"
IMAGES_TABLE = "apps/IMAGES.md"
CHART_DIGEST_ENVS = ("prod",)
"""Environments whose chart images must run by digest (or be recorded as not yet resolved, with the reason)."""

Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
REFERENCE = re.compile(r"^(?P<repository>(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9._-]+(?:/[a-z0-9._-]+)*)"
                       r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


class LockedImage(Strict):
    """One chart image as prod runs it by tag, and its digest once seen published."""

    image: Annotated[str, StringConstraints(pattern=r"^[^@\s]+:[^@\s/]+$")]
    """``repository:tag`` exactly as the chart renders it."""
    component: str
    digest: Digest | None = None
    source: Annotated[str, StringConstraints(min_length=10)]
    """Where the digest was read (registry and date, or the published page), or why there is none yet."""

    @property
    def repository(self) -> str:
        return self.image.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.image.rsplit(":", 1)[1]


class ImageLock(Strict):
    """``vendor/images.yaml``."""

    images: list[LockedImage]


class ImageDigestValue(Strict):
    """``image_digests`` entry of a component: the Helm value that gives one image its digest."""

    image: str
    """The repository (without tag) as the chart renders it."""
    form: Literal["digest", "hex", "tag@digest", "reference"] = "digest"
    """What the value holds: ``sha256:<hex>`` (e.g. mlflow's image.digest), the bare hex (the Prometheus
    community charts' ``image.sha``), the tag followed by the digest (a chart with only a tag value), or the
    whole reference ``repository:tag@digest`` (a value that takes a full image name, e.g. istiod's ``image``)."""

    @model_validator(mode="after")
    def _repository(self) -> ImageDigestValue:
        match = REFERENCE.match(self.image)
        if match is None or match["tag"] or match["digest"]:
            raise ValueError(f"{self.image!r} must be an image repository without tag or digest")
        return self


def split_reference(image: str) -> tuple[str, str | None, str | None]:
    """``(repository, tag, digest)`` of an image reference (``repository`` is the whole text if it does not
    parse)."""
    match = REFERENCE.match(image)
    if match is None:
        return image, None, None
    return match["repository"], match["tag"], match["digest"]


def digest_value(entry: ImageDigestValue, locked: LockedImage) -> str:
    """The Helm value that gives ``locked`` its digest, in the form the chart takes."""
    assert locked.digest is not None
    if entry.form == "hex":
        return locked.digest.removeprefix("sha256:")
    if entry.form == "tag@digest":
        return f"{locked.tag}@{locked.digest}"
    if entry.form == "reference":
        return f"{locked.image}@{locked.digest}"
    return locked.digest


def load_image_lock(layout: RepoLayout) -> tuple[ImageLock, list[Problem]]:
    """The lock (empty when the file does not exist) and its problems."""
    path = layout.root / IMAGES_LOCK
    if not path.is_file():
        return ImageLock(images=[]), []
    raw, problems = read_yaml_mapping(layout, path)
    if raw is None:
        return ImageLock(images=[]), problems
    lock, problems = parse_document(ImageLock, raw, path, IMAGES_LOCK)
    return (lock or ImageLock(images=[])), problems


def read_image_lock(layout: RepoLayout) -> ImageLock:
    """The lock, for rewriting it.

    Raises:
        SpecError: the file exists but is invalid.
    """
    lock, problems = load_image_lock(layout)
    if problems:
        raise SpecError(problems)
    return lock


def write_image_lock(layout: RepoLayout, lock: ImageLock) -> Path:
    """Write the lock, entries sorted by component and image."""
    path = layout.root / IMAGES_LOCK
    ordered = sorted(lock.images, key=lambda i: (i.component, i.image))
    body = yamlio.dump({"images": [i.model_dump(mode="json", exclude_none=True) for i in ordered]})
    path.write_text("# Digests of the images prod's platform charts run. Written by `mlops images resolve` (asks each\n"
                    "# image's registry) and `mlops images pin` (a digest seen in another published source); an entry\n"
                    "# without digest says why there is none yet. Never write a digest you have not seen published.\n"
                    + body, encoding="utf-8")
    return path


def digest_values(component_name: str, entries: dict[str, ImageDigestValue], lock: ImageLock) -> dict:
    """The nested Helm values that give ``component_name``'s chart images their locked digests."""
    values: dict = {}
    for path, entry in sorted(entries.items()):
        found = [i for i in lock.images if i.component == component_name and i.repository == entry.image
                 and i.digest]
        if len(found) != 1:
            continue  # none resolved yet (validate reports it), or two tags of one repository: ambiguous
        node = values
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = digest_value(entry, found[0])
    return values
