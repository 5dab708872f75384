"""``mlops images``: the table of every image the platform runs, and the digests prod's chart images run by.

``refresh`` renders every platform chart as ``mlops validate`` does, records each chart image prod runs by tag
in ``vendor/images.yaml`` (kept when already there, dropped when no chart runs it any more) and writes
``apps/IMAGES.md``. ``resolve`` asks each unresolved image's registry for the digest its tag points at
(network needed; the registry's answer is the published source, recorded with the date); ``pin`` records a
digest read in another published source, offline. ``mlops render`` then sets the digests in prod through each
component's ``image_digests`` values.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from generator.check.charts import chart_problems
from generator.check.images import ImageUse, images_markdown, lock_entries
from generator.check.manifest import load_rendered_tree
from generator.spec.errors import RepositoryError, UsageError, ValidationError
from generator.spec.images import (
    IMAGES_LOCK,
    IMAGES_TABLE,
    ImageLock,
    LockedImage,
    read_image_lock,
    split_reference,
    write_image_lock,
)
from generator.spec.layout import RepoLayout

REGISTRY_TIMEOUT_SECONDS = 30
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])
DOCKER_HUB = "registry-1.docker.io"
LOOPBACK = re.compile(r"^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$")
"""Registries a client reaches over plain HTTP, as Docker does for local registries."""


@dataclass(frozen=True)
class RefreshResult:
    images: int
    unresolved: int
    written: list[str]


def refresh(layout: RepoLayout, kubernetes_version: str) -> RefreshResult:
    """Write ``vendor/images.yaml``'s entries and ``apps/IMAGES.md`` from every environment's rendered charts.

    Raises:
        ValidationError: a chart does not render or another chart check fails (the table would be wrong).
    """
    envs = layout.existing_environments()
    manifests, problems = load_rendered_tree(layout.root, envs)
    uses: list[ImageUse] = []
    problems += chart_problems(layout, manifests, envs, kubernetes_version, images=uses)
    ours = {IMAGES_TABLE, IMAGES_LOCK}
    blocking = [p for p in problems if p.file not in ours and p.field != "image_digests"]
    if blocking:
        raise ValidationError(blocking)
    lock = lock_entries(uses, read_image_lock(layout))
    write_image_lock(layout, lock)
    (layout.root / IMAGES_TABLE).write_text(images_markdown(uses, lock), encoding="utf-8")
    return RefreshResult(len({(u.component, u.image) for u in uses}), sum(1 for i in lock.images if not i.digest),
                         [IMAGES_LOCK, IMAGES_TABLE])


def pin(layout: RepoLayout, image: str, digest: str, source: str) -> LockedImage:
    """Record ``digest`` for the recorded ``image`` (``repository:tag``), as read in ``source``.

    Raises:
        UsageError: the image is not recorded (run refresh first), or the digest is malformed.
    """
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise UsageError(f"{digest!r} is not a digest (sha256:<64 hex digits>)")
    lock = read_image_lock(layout)
    matches = [i for i in lock.images if i.image == image]
    if not matches:
        raise UsageError(f"{image} is not in {IMAGES_LOCK}; run `mlops images` first (it records every chart "
                         "image prod runs by tag)")
    updated = [i.model_copy(update={"digest": digest, "source": source}) if i.image == image else i
               for i in lock.images]
    write_image_lock(layout, ImageLock(images=updated))
    return next(i for i in updated if i.image == image)


def resolve(layout: RepoLayout, only: list[str] | None = None) -> list[LockedImage]:
    """Ask each unresolved image's registry for its digest and record it; returns the entries resolved.

    Raises:
        RepositoryError: a registry cannot be reached or does not know the tag.
    """
    lock = read_image_lock(layout)
    today = datetime.date.today().isoformat()
    resolved, updated = [], []
    for entry in lock.images:
        if entry.digest is None and (not only or entry.image in only):
            registry, _ = registry_path(entry.repository)
            digest = registry_digest(entry.repository, entry.tag)
            entry = entry.model_copy(update={"digest": digest, "source": f"{registry} answered {digest} for tag "
                                             f"{entry.tag} (manifest digest, read {today} by mlops images resolve)"})
            resolved.append(entry)
        updated.append(entry)
    write_image_lock(layout, ImageLock(images=updated))
    return resolved


def registry_path(repository: str) -> tuple[str, str]:
    """``(registry host, repository path)`` as Docker resolves a name (no host: Docker Hub, ``library/``)."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = DOCKER_HUB, repository if "/" in repository else f"library/{repository}"
    return ("registry-1.docker.io" if host == "docker.io" else host), path


def registry_digest(repository: str, tag: str) -> str:
    """The digest the registry serves for ``repository:tag`` (the index of a multi-platform image): the
    ``Docker-Content-Digest`` header of the manifest, checked against the manifest's own sha256."""
    host, path = registry_path(repository)
    scheme = "http" if LOOPBACK.match(host) else "https"
    url = f"{scheme}://{host}/v2/{path}/manifests/{urllib.parse.quote(tag)}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        body, answer = _get(url, headers)
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            raise RepositoryError(f"{url}: {exc.code} {exc.reason}") from exc
        headers["Authorization"] = f"Bearer {_token(exc.headers.get('WWW-Authenticate', ''), url)}"
        try:
            body, answer = _get(url, headers)
        except urllib.error.HTTPError as again:
            raise RepositoryError(f"{url}: {again.code} {again.reason}") from again
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    announced = answer.get("Docker-Content-Digest")
    if announced and announced != digest:
        raise RepositoryError(f"{url}: the registry says {announced}, the manifest it sent has {digest}")
    return digest


def _get(url: str, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    opener = urllib.request.build_opener()
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=REGISTRY_TIMEOUT_SECONDS) as response:
            return response.read(), dict(response.headers)
    except urllib.error.HTTPError:
        raise
    except OSError as exc:
        raise RepositoryError(f"cannot reach {url}: {exc}") from exc


def _token(challenge: str, url: str) -> str:
    """An anonymous pull token from the registry's token service (the ``Bearer realm=...`` challenge)."""
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if not challenge.lower().startswith("bearer") or "realm" not in fields:
        raise RepositoryError(f"{url}: the registry asks for credentials ({challenge or 'no challenge'}); "
                              "pull the image and record its digest with `mlops images pin`")
    query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
    body, _ = _get(f"{fields['realm']}?{query}", {})
    answer = json.loads(body)
    token = answer.get("token") or answer.get("access_token")
    if not token:
        raise RepositoryError(f"{fields['realm']} gave no token")
    return str(token)


def unresolved(layout: RepoLayout) -> list[LockedImage]:
    """The recorded chart images prod still runs by tag (what `mlops validate` lists)."""
    return [i for i in read_image_lock(layout).images if i.digest is None]


__all__ = ["pin", "refresh", "registry_digest", "registry_path", "resolve", "split_reference", "unresolved"]
