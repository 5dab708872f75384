"""Compare rendered files with the tree, show the difference, and write all or nothing.

Everything the generator owns (``environments/<env>/rendered/`` and the generated AppProjects) is
compared with what was rendered in memory: :func:`plan` lists the writes and deletes, :func:`unified_diff`
shows them, :func:`apply` stages every file before renaming any into place.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from generator.render.renderer import RenderedFile
from generator.spec.errors import WriteError
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
        if target.is_file() and layout.read_text(target) == text:
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
        old = layout.read_text(target).splitlines(keepends=True) if target.is_file() else []
        chunks += difflib.unified_diff(old, text.splitlines(keepends=True),
                                       f"a/{path}" if target.is_file() else "/dev/null", f"b/{path}")
    for path in change.deletes:
        old = _readable(layout, layout.root / path).splitlines(keepends=True)
        chunks += difflib.unified_diff(old, [], f"a/{path}", "/dev/null")
    return "".join(chunks)


def _readable(layout: RepoLayout, path: Path) -> str:
    """A file about to be deleted, for the diff: read inside the repository; bytes that are not UTF-8 shown
    as replacement characters (it goes away either way)."""
    layout.inside(path)
    return path.read_bytes().decode("utf-8", errors="replace")


def apply(layout: RepoLayout, change: Plan) -> None:
    """Write the plan, all or nothing, even across a crash.

    Every file is staged next to its target first (a failure here, such as a full disk or a read-only
    folder, changes nothing); then a journal naming every rename and delete is written atomically, the
    renames and deletes are done, and the journal is removed. A run killed between those steps leaves the
    journal behind: the next command that writes completes it (:func:`recover`), and ``render --check``
    reports it (:func:`interrupted`).

    Raises:
        SpecError: a target leads outside the repository through a link.
        WriteError: a file could not be staged or the journal could not be written; nothing changed.
    """
    staged: list[tuple[Path, Path]] = []
    token = uuid.uuid4().hex[:8]
    try:
        for path, text in change.writes.items():
            target = layout.root / path
            layout.inside(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.{token}.tmp")
            temp.write_text(text, encoding="utf-8")
            staged.append((temp, target))
        for path in change.deletes:
            layout.inside(layout.root / path)
        journal = {"renames": [[layout.relative(temp), layout.relative(target)] for temp, target in staged],
                   "deletes": list(change.deletes)}
        _write_atomically(layout.write_journal, json.dumps(journal, indent=1))
    except OSError as exc:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {layout.relative(Path(exc.filename)) if exc.filename else 'the tree'}: "
                         f"{exc.strerror or exc}; nothing was changed (check permissions and free space)") from None
    except BaseException:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        raise
    _complete(layout, journal)


def interrupted(layout: RepoLayout) -> bool:
    """True when a write was interrupted (its journal is still there): the tree may be half new, half old."""
    return layout.write_journal.is_file()


def recover(layout: RepoLayout) -> bool:
    """Complete an interrupted write from its journal (every file was staged before the journal was
    written, so it can always be finished); True when there was one.

    Raises:
        WriteError: the journal is unreadable, or a staged file is gone and its target not in place.
    """
    if not interrupted(layout):
        return False
    try:
        journal = json.loads(layout.write_journal.read_text(encoding="utf-8"))
        renames, deletes = journal["renames"], journal["deletes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WriteError(f"{layout.relative(layout.write_journal)} records an interrupted write but cannot be "
                         f"read ({exc}); restore the rendered tree from Git (git checkout -- environments "
                         "bootstrap), delete the journal, and render again") from None
    _complete(layout, {"renames": renames, "deletes": deletes})
    return True


def _complete(layout: RepoLayout, journal: dict) -> None:
    for temp_path, target_path in journal["renames"]:
        temp, target = layout.root / temp_path, layout.root / target_path
        if temp.exists():
            os.replace(temp, target)
        elif not target.exists():
            raise WriteError(f"the interrupted write staged {temp_path} but it is gone and {target_path} was not "
                             "written; restore the tree from Git, delete the journal, and render again")
    for path in journal["deletes"]:
        target = layout.root / path
        target.unlink(missing_ok=True)
        _remove_empty_parents(target.parent, stop=layout.environments_dir)
    layout.write_journal.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f"{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _remove_empty_parents(directory: Path, stop: Path) -> None:
    while directory != stop and directory.is_dir() and not any(directory.iterdir()):
        shutil.rmtree(directory)
        directory = directory.parent
