"""The vendored chart archives: ``vendor/charts/charts.yaml`` (the lock) and the ``SOURCES.md`` written from it.

Every Helm pin in ``apps/*/component.yaml`` has one archive in ``vendor/charts/`` and one lock entry that
says where the version was seen published and how the archive was obtained. ``mlops validate`` renders
each platform Application with its archive (``generator.check.charts``); ``mlops charts pull`` writes
archive, lock entry, ``SOURCES.md`` and the pin together (``generator.commands.charts``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import StringConstraints

from generator.spec import yamlio
from generator.spec.components import EXACT_VERSION_RE, LoadedComponent
from generator.spec.errors import Problem, SpecError
from generator.spec.layout import (
    CHARTS_LOCK,
    GENERATED_MARKER,
    RepoLayout,
    chart_archive_path,
)
from generator.spec.loader import parse_document, read_yaml_mapping
from generator.spec.models import Strict

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class LockedChart(Strict):
    """One vendored archive."""

    repo_url: Annotated[str, StringConstraints(pattern=r"^(https://|oci://)")]
    chart: Annotated[str, StringConstraints(min_length=1)]
    version: Annotated[str, StringConstraints(pattern=EXACT_VERSION_RE)]
    app_version: str | None = None
    sha256: Sha256
    """Of the file in ``vendor/charts/``."""
    published_digest: Sha256 | None = None
    """The digest the repository's ``index.yaml`` lists; equal to ``sha256`` when the published archive is vendored."""
    published: Annotated[str, StringConstraints(min_length=10)]
    """Where the version was seen published: the repository index (with its commit) or the release tag."""
    obtained: Annotated[str, StringConstraints(min_length=10)]
    """How the archive was made: the published file unchanged, or packaged with Helm from the release tag's tree."""
    omitted_dependencies: dict[str, str] = {}
    """Dependency charts the archive leaves out, with the reason (each must stay disabled by its condition)."""
    license: str


class ChartLock(Strict):
    """``vendor/charts/charts.yaml``."""

    charts: list[LockedChart]


@dataclass(frozen=True)
class VendoredChart:
    """A lock entry with the archive's path."""

    entry: LockedChart
    path: Path

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.entry.repo_url, self.entry.chart, self.entry.version)


def chart_key(repo_url: str, chart: str, version: str) -> tuple[str, str, str]:
    """How an Application's chart source is matched to a lock entry (a trailing slash does not count)."""
    return (repo_url.rstrip("/"), chart, version)


def load_lock(layout: RepoLayout) -> tuple[dict[tuple[str, str, str], VendoredChart], list[Problem]]:
    """Every lock entry by ``(repo_url, chart, version)``, with problems: a missing or altered archive."""
    if not layout.charts_lock.is_file():
        return {}, [Problem(CHARTS_LOCK, "the chart lock file is missing",
                            fix="vendor the pinned charts with `mlops charts pull <component>`")]
    raw, problems = read_yaml_mapping(layout, layout.charts_lock)
    if raw is None:
        return {}, problems
    lock, problems = parse_document(ChartLock, raw, layout.charts_lock, CHARTS_LOCK)
    if lock is None:
        return {}, problems
    found: dict[tuple[str, str, str], VendoredChart] = {}
    for index, entry in enumerate(lock.charts):
        path = layout.chart_archive(entry.chart, entry.version)
        where = f"charts[{index}]"
        if not path.is_file():
            problems.append(Problem(CHARTS_LOCK, f"{entry.chart} {entry.version}: archive "
                                    f"{chart_archive_path(entry.chart, entry.version)} is missing", field=where,
                                    fix=f"run `mlops charts pull` for the component that pins {entry.chart}"))
            continue
        digest = file_sha256(path)
        if digest != entry.sha256:
            problems.append(Problem(CHARTS_LOCK, f"{entry.chart} {entry.version}: the archive's sha256 is {digest}, "
                                    f"the lock says {entry.sha256}", field=f"{where}.sha256",
                                    fix="restore the archive from Git, or re-vendor it with `mlops charts pull`"))
            continue
        found[chart_key(entry.repo_url, entry.chart, entry.version)] = VendoredChart(entry, path)
    return found, problems


def pin_problems(components: list[LoadedComponent], vendored: dict[tuple[str, str, str], VendoredChart]) -> list[Problem]:
    """Every Helm pin has its archive, and every archive belongs to a pin (so a bump leaves no stale file)."""
    problems, used = [], set()
    for component in components:
        source = component.spec.source
        if source.kind != "helm":
            continue
        key = chart_key(source.repo_url, source.chart, source.version)
        used.add(key)
        if key not in vendored:
            problems.append(Problem(f"{component.folder}/component.yaml", f"chart {source.chart} {source.version} "
                                    f"from {source.repo_url} is not vendored in {CHARTS_LOCK}", field="source.version",
                                    fix=f"run `mlops charts pull {component.name}` (it checks the version is published)"))
    for key, chart in sorted(vendored.items()):
        if key not in used:
            problems.append(Problem(CHARTS_LOCK, f"{chart.entry.chart} {chart.entry.version} is vendored but no "
                                    "component pins it", fix="remove the entry and its archive"))
    return problems


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump_lock(lock: ChartLock) -> str:
    """The lock file's text: a header, then the entries sorted by chart and version."""
    ordered = sorted(lock.charts, key=lambda c: (c.chart, c.version))
    body = yamlio.dump({"charts": [c.model_dump(mode="json", exclude_defaults=True) for c in ordered]})
    return ("# Vendored Helm charts: one entry per archive in this folder. Written by `mlops charts pull`;\n"
            "# edit only to correct provenance, then run `mlops charts sources`.\n" + body)


def sources_markdown(lock: ChartLock) -> str:
    """``vendor/charts/SOURCES.md``: one row per archive, written from the lock."""
    rows = [f"<!-- Code generated by mlops-gitops from {CHARTS_LOCK}. {GENERATED_MARKER} -->",
            "# Vendored Helm charts", "",
            "Each archive is the chart of a *published* release, pinned by `apps/<component>/component.yaml`. "
            "`mlops validate` renders every platform Application with it, offline, through Helm's Go SDK "
            "(`helm-python-sdk`). The archives are data: each chart keeps its own licence.", "",
            "| chart | version | app version | repository | published (where confirmed) | obtained | sha256 "
            "| licence |", "|---|---|---|---|---|---|---|---|"]
    for c in sorted(lock.charts, key=lambda c: (c.chart, c.version)):
        digest = f"`{c.sha256}`" + (f" (index: `{c.published_digest}`)" if c.published_digest and
                                     c.published_digest != c.sha256 else "")
        rows.append(f"| {c.chart} | {c.version} | {c.app_version or '—'} | {c.repo_url} | {_cell(c.published)} "
                    f"| {_cell(c.obtained)} | {digest} | {c.license} |")
    omitted = [(c, name, why) for c in lock.charts for name, why in sorted(c.omitted_dependencies.items())]
    if omitted:
        rows += ["", "## Dependency charts left out", "",
                 "`mlops validate` fails if values enable one of these (Helm would then render nothing for it here, "
                 "while Argo CD would install it from the published archive).", "",
                 "| chart | dependency | why it is left out |", "|---|---|---|"]
        rows += [f"| {c.chart} {c.version} | {name} | {_cell(why)} |" for c, name, why in omitted]
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def read_lock_or_empty(layout: RepoLayout) -> ChartLock:
    """The lock as a model (for rewriting it); an empty lock when the file does not exist yet.

    Raises:
        SpecError: the lock file exists but is invalid.
    """
    if not layout.charts_lock.is_file():
        return ChartLock(charts=[])
    raw, problems = read_yaml_mapping(layout, layout.charts_lock)
    lock = None
    if raw is not None:
        lock, problems = parse_document(ChartLock, raw, layout.charts_lock, CHARTS_LOCK)
    if lock is None:
        raise SpecError(problems)
    return lock


__all__ = ["ChartLock", "LockedChart", "VendoredChart", "chart_key", "dump_lock", "file_sha256",
           "load_lock", "pin_problems", "read_lock_or_empty", "sources_markdown"]
