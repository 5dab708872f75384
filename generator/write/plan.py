"""Compare rendered files with the tree, show the difference, and write all or nothing.

Everything the generator owns (``environments/<env>/rendered/`` and the generated AppProjects) is
compared with what was rendered in memory: :func:`plan` lists the writes and deletes, :func:`unified_diff`
shows them, :func:`apply` stages every file before renaming any into place.
"""

from __future__ import annotations

import difflib
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from generator.render.renderer import RenderedFile
from generator.spec.layout import PROJECTS_DIR, RepoLayout


@dataclass(frozen=True)
class Plan:
    """What a render would change: files to write (new or different) and files to delete."""

    writes: dict[str, str]
    deletes: list[str]
    unchanged: int

    @property
    def empty(self) -> bool:
        return not self.writes and not self.deletes


def plan(layout: RepoLayout, envs: Iterable[str], files: list[RenderedFile]) -> Plan:
    """Compare rendered files with the tree. Everything under ``environments/<env>/rendered/`` (and the
    generated AppProjects) is owned by the generator, so any file there that was not rendered (a deleted
    model's folder) is deleted."""
    wanted = {f.path: f.text for f in files}
    writes, unchanged = {}, 0
    for path, text in wanted.items():
        target = layout.root / path
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            unchanged += 1
        else:
            writes[path] = text
    owned = [layout.rendered_dir(env) for env in envs]
    if any(path.startswith(f"{PROJECTS_DIR}/") for path in wanted):
        owned.append(layout.projects_dir)
    deletes = sorted(
        layout.relative(p) for folder in owned for p in folder.rglob("*")
        if p.is_file() and layout.relative(p) not in wanted
    )
    return Plan(writes, deletes, unchanged)


def unified_diff(layout: RepoLayout, change: Plan) -> str:
    """A unified diff from the tree to the plan: what ``render --check`` found stale, or what a dry run
    would write (a new file's old side is ``/dev/null``)."""
    chunks = []
    for path, text in sorted(change.writes.items()):
        target = layout.root / path
        old = target.read_text(encoding="utf-8").splitlines(keepends=True) if target.is_file() else []
        chunks += difflib.unified_diff(old, text.splitlines(keepends=True),
                                       f"a/{path}" if target.is_file() else "/dev/null", f"b/{path}")
    for path in change.deletes:
        old = (layout.root / path).read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        chunks += difflib.unified_diff(old, [], f"a/{path}", "/dev/null")
    return "".join(chunks)


def apply(layout: RepoLayout, change: Plan) -> None:
    """Write the plan: stage every file next to its target first, then rename them all into place.

    Staging first means a failure (disk full, permissions) is found before any target changes; the
    renames that follow are atomic per file.
    """
    staged: list[tuple[Path, Path]] = []
    token = uuid.uuid4().hex[:8]
    try:
        for path, text in change.writes.items():
            target = layout.root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.{token}.tmp")
            temp.write_text(text, encoding="utf-8")
            staged.append((temp, target))
    except OSError:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        raise
    for temp, target in staged:
        os.replace(temp, target)
    for path in change.deletes:
        target = layout.root / path
        target.unlink(missing_ok=True)
        _remove_empty_parents(target.parent, stop=layout.environments_dir)


def _remove_empty_parents(directory: Path, stop: Path) -> None:
    while directory != stop and directory.is_dir() and not any(directory.iterdir()):
        shutil.rmtree(directory)
        directory = directory.parent
