"""``mlops charts``: vendor a component's chart and keep its pin, lock entry and ``SOURCES.md`` together.

``pull`` fetches the chart repository's ``index.yaml`` (network needed), takes the requested version (or the
newest), downloads the published archive and checks it against the index's digest; offline, it takes a
published archive you downloaded (``--archive``) or packages a checkout of the release tag with Helm's own
packager (``--chart-dir``). Either way it writes ``vendor/charts/<chart>-<version>.tgz``, the lock entry,
``SOURCES.md`` and the component's ``source.version``/``app_version``/``evidence`` in one go; ``mlops render``
and ``mlops validate`` then re-render and re-check everything with the new chart.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import tarfile
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from generator.render.charts import _helm
from generator.spec.charts import (
    ChartLock,
    LockedChart,
    chart_key,
    dump_lock,
    file_sha256,
    read_lock_or_empty,
    sources_markdown,
)
from generator.spec.components import load_components
from generator.spec.errors import RepositoryError, UsageError, did_you_mean
from generator.spec.layout import RepoLayout, chart_archive_path

DOWNLOAD_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class PullResult:
    """What ``pull`` changed."""

    component: str
    chart: str
    previous: str
    version: str
    app_version: str | None
    archive: str
    written: list[str]


def pull(layout: RepoLayout, component: str, version: str | None = None, archive: Path | None = None,
         chart_dir: Path | None = None, published: str | None = None, license: str | None = None) -> PullResult:
    """Vendor ``component``'s chart at ``version`` (default: the newest in the repository's index).

    Raises:
        UsageError: an unknown or non-Helm component, conflicting options, or an archive of another chart.
        RepositoryError: the index or archive cannot be fetched, or its digest does not match.
    """
    by_name = {c.name: c for c in load_components(layout)}
    if component not in by_name or by_name[component].spec.source.kind != "helm":
        helm = sorted(n for n, c in by_name.items() if c.spec.source.kind == "helm")
        raise UsageError(f"{component!r} is not a Helm component{did_you_mean(component, helm)} (use one of: "
                         f"{', '.join(helm)})")
    if archive and chart_dir:
        raise UsageError("give --archive or --chart-dir, not both")
    spec = by_name[component].spec
    source = spec.source
    lock = read_lock_or_empty(layout)
    old = next((c for c in lock.charts if chart_key(c.repo_url, c.chart, c.version) ==
                chart_key(source.repo_url, source.chart, source.version)), None)
    with tempfile.TemporaryDirectory() as scratch:
        if archive is None and chart_dir is None:
            data, entry = _download(source.repo_url, source.chart, version)
            obtained = f"the published archive, unchanged: {entry['url']} (sha256 equals the index digest)"
        else:
            if not published:
                raise UsageError("offline, say where the version is published: --published 'release tag X of "
                                 "<repository> (<commit>)' or 'index.yaml of <repository>: <chart> <version>'")
            if chart_dir is not None:
                made = Path(_helm().package(chart_dir, destination=scratch, version=version))
                obtained = f"helm package (helm-python-sdk) of {chart_dir.name} at the release tag: {published}"
            else:
                made = archive
                obtained = f"the published archive, unchanged ({archive.name})"
            data = made.read_bytes()
            entry = {"digest": None, "published": published}
    metadata = _chart_metadata(data)
    if metadata.get("name") != source.chart:
        raise UsageError(f"the archive holds chart {metadata.get('name')!r}, not {source.chart!r}")
    new_version = str(metadata["version"])
    if version and new_version != version:
        raise UsageError(f"the archive is {source.chart} {new_version}, not {version}")
    app_version = str(metadata["appVersion"]) if metadata.get("appVersion") is not None else None
    target = layout.chart_archive(source.chart, new_version)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    locked = LockedChart(repo_url=source.repo_url, chart=source.chart, version=new_version, app_version=app_version,
                         sha256=file_sha256(target), published_digest=entry.get("digest"),
                         published=entry["published"], obtained=obtained,
                         license=license or (old.license if old else spec.license))
    others = [c for c in lock.charts if chart_key(c.repo_url, c.chart, c.version) not in
              {chart_key(source.repo_url, source.chart, source.version), chart_key(source.repo_url, source.chart,
                                                                                    new_version)}]
    still_used = any(c.spec.source.kind == "helm" and c.name != component and
                     chart_key(c.spec.source.repo_url, c.spec.source.chart, c.spec.source.version) ==
                     chart_key(source.repo_url, source.chart, source.version) for c in by_name.values())
    if old and old.version != new_version:
        if still_used:
            others.append(old)
        else:
            layout.chart_archive(old.chart, old.version).unlink(missing_ok=True)
    write_lock(layout, ChartLock(charts=[*others, locked]))
    _edit_pin(layout.component_file(component), new_version, app_version,
              f"{entry['published']}. Archive and how it was obtained: vendor/charts/SOURCES.md.")
    return PullResult(component, source.chart, source.version, new_version, app_version,
                      chart_archive_path(source.chart, new_version),
                      [chart_archive_path(source.chart, new_version), layout.relative(layout.charts_lock),
                       layout.relative(layout.charts_sources), layout.relative(layout.component_file(component))])


def write_lock(layout: RepoLayout, lock: ChartLock) -> None:
    """Write the lock file and the ``SOURCES.md`` made from it."""
    layout.charts_lock.write_text(dump_lock(lock), encoding="utf-8")
    layout.charts_sources.write_text(sources_markdown(lock), encoding="utf-8")


def write_sources(layout: RepoLayout) -> str:
    """Rewrite ``SOURCES.md`` from the lock (after correcting provenance by hand); returns its path."""
    write_lock(layout, read_lock_or_empty(layout))
    return layout.relative(layout.charts_sources)


def _download(repo_url: str, chart: str, version: str | None) -> tuple[bytes, dict]:
    if not repo_url.startswith("https://"):
        raise UsageError(f"{repo_url}: only https chart repositories can be pulled; for oci:// run `helm pull` and "
                         "pass the archive with --archive")
    index_url = repo_url.rstrip("/") + "/index.yaml"
    index = yaml.safe_load(_get(index_url)) or {}
    entries = (index.get("entries") or {}).get(chart) or []
    if not entries:
        raise RepositoryError(f"{index_url} lists no chart {chart!r}")
    chosen = entries[0] if version is None else next((e for e in entries if str(e.get("version")) == version), None)
    if chosen is None:
        newest = ", ".join(str(e.get("version")) for e in entries[:5])
        raise RepositoryError(f"{index_url} has no {chart} {version} (newest: {newest}): it is not published")
    url = urllib.parse.urljoin(index_url, chosen["urls"][0])
    data = _get(url)
    digest = hashlib.sha256(data).hexdigest()
    if chosen.get("digest") and digest != chosen["digest"]:
        raise RepositoryError(f"{url} has sha256 {digest}, but {index_url} lists {chosen['digest']}")
    today = datetime.date.today().isoformat()
    return data, {"url": url, "digest": chosen.get("digest") or digest,
                  "published": f"{index_url} (read {today}): {chart} {chosen['version']}, appVersion "
                               f"{chosen.get('appVersion')}, created {str(chosen.get('created', '?'))[:10]}"}


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            return response.read()
    except OSError as exc:
        raise RepositoryError(f"cannot fetch {url}: {exc}") from exc


def _chart_metadata(data: bytes) -> dict:
    """``Chart.yaml`` of an archive's top-level chart."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            parts = member.name.split("/")
            if len(parts) == 2 and parts[1] == "Chart.yaml":
                return yaml.safe_load(archive.extractfile(member).read()) or {}
    raise UsageError("the archive has no <chart>/Chart.yaml: not a Helm chart archive")


def _edit_pin(path: Path, version: str, app_version: str | None, evidence: str) -> None:
    """Change ``source.version``, ``source.evidence`` and ``app_version`` in place, keeping comments."""
    editor = YAML()
    editor.preserve_quotes = True
    editor.width = 110
    document = editor.load(path.read_text(encoding="utf-8"))
    document["source"]["version"] = version
    document["source"]["evidence"] = evidence
    if app_version is not None:
        document["app_version"] = app_version
    with path.open("w", encoding="utf-8") as handle:
        editor.dump(document, handle)
