"""``mlops history``: the releases an environment ran, read from the spec's Git history.

Each committed version of ``environments/<env>/models/<model>.yaml`` names exactly what ran (main's
release and the rollout). :func:`deployment_history` lists them; :func:`ran_releases` keeps the ones the
environment actually went through, as a stack: returning to an earlier state (a rollback) pops the
states after it, so a second rollback goes further back instead of forward again.

How a change came is read from the commit's ``Mlops-Change`` trailer (``promote``, ``rollback``,
``retrain``; the verbs write it), else from its subject; anything else is a ``generate`` (a
``generate-model`` run or a hand edit).
"""

from __future__ import annotations

from dataclasses import dataclass

import pydantic
import yaml

from generator.external import gitrepo
from generator.spec import yamlio
from generator.spec.errors import UsageError, did_you_mean
from generator.spec.layout import RepoLayout
from generator.spec.models import Release, Rollout

CHANGE_TRAILER = "Mlops-Change"
"""Commit trailer naming the verb that made a spec change; ``promote``, ``rollback`` or ``retrain``."""
SUBJECT_PREFIXES = {"Promote ": "promote", "Roll back ": "rollback", "Retrain ": "retrain"}
"""For commits without the trailer (a squash merge that dropped it): the subjects the verbs write."""


def change_trailer(how: str) -> str:
    """The trailer line a verb's commit message ends with."""
    return f"{CHANGE_TRAILER}: {how}"


@dataclass(frozen=True)
class Deployed:
    """What one committed version of a spec ran: main's release and the rollout, and how it came."""

    commit: str
    date: str
    subject: str
    text: str
    release: Release
    rollout: Rollout
    how: str = "generate"

    @property
    def state(self) -> tuple[str, Rollout]:
        return self.release.release_id, self.rollout


def how_it_came(version: gitrepo.FileVersion) -> str:
    """``promote``, ``rollback``, ``retrain`` or ``generate``: the trailer, else the subject's verb."""
    if (how := version.trailers.get(CHANGE_TRAILER, "").strip()) in {"promote", "rollback", "retrain"}:
        return how
    return next((verb for prefix, verb in SUBJECT_PREFIXES.items() if version.subject.startswith(prefix)),
                "generate")


def deployment_history(layout: RepoLayout, env: str, model: str) -> list[Deployed]:
    """Every committed version of the spec that names a valid release, newest first.

    Raises:
        GitError: the repository is not a Git working tree.
    """
    versions = []
    for version in gitrepo.file_history(layout.root, layout.model_spec(env, model)):
        try:
            raw = yamlio.load(version.text) or {}
            release = Release.model_validate(raw.get("release"))
            rollout = Rollout.model_validate(raw.get("rollout") or {})
        except (yaml.YAMLError, pydantic.ValidationError, AttributeError):
            continue  # a broken commit never ran; it is no rollback target
        versions.append(Deployed(version.commit, version.date, version.subject, version.text, release, rollout,
                                 how_it_came(version)))
    return versions


def ran_releases(history: list[Deployed]) -> list[Deployed]:
    """The states the environment went through, oldest first, each at the commit that brought it.

    A commit that keeps the state (a settings change) adds nothing; one that returns to an earlier state
    drops every state after it: those were rolled back from.
    """
    stack: list[Deployed] = []
    for version in reversed(history):
        earlier = next((i for i, seen in enumerate(stack) if seen.state == version.state), None)
        if earlier is None:
            stack.append(version)
        else:
            del stack[earlier + 1:]
    return stack


@dataclass(frozen=True)
class HistoryEntry:
    """One change of what an environment runs, for ``mlops history``."""

    deployed: Deployed
    running: bool
    """The state the environment runs now."""
    rolled_back: bool
    """A later rollback left this state; the default rollback never returns to it."""


def release_history(layout: RepoLayout, env: str, model: str) -> list[HistoryEntry]:
    """Each commit that changed what ``model`` runs in ``env``, newest first.

    Raises:
        UsageError: the model has no spec in ``env``.
        GitError: not a Git repository.
    """
    if not layout.model_spec(env, model).is_file():
        raise UsageError(f"{layout.relative(layout.model_spec(env, model))} does not exist: {model} does not run "
                         f"in {env}{did_you_mean(model, layout.models(env))}")
    history = deployment_history(layout, env, model)
    changes = [v for i, v in enumerate(history) if i + 1 == len(history) or history[i + 1].state != v.state]
    ran = [v.state for v in ran_releases(history)]  # states hold lists: compared, not hashed
    return [HistoryEntry(v, index == 0, v.state not in ran) for index, v in enumerate(changes)]


def history_report(entries: list[HistoryEntry]) -> list[dict]:
    """``--output json``: one object per change, newest first."""
    return [{"commit": e.deployed.commit, "date": e.deployed.date, "how": e.deployed.how,
             "subject": e.deployed.subject, "release_id": e.deployed.release.release_id,
             "registered_name": e.deployed.release.registry.name, "version": e.deployed.release.registry.version,
             "strategy": e.deployed.rollout.strategy,
             "candidates": [{"name": c.name, "release_id": c.release.release_id,
                             "version": c.release.registry.version} for c in e.deployed.rollout.candidates],
             "running": e.running, "rolled_back": e.rolled_back} for e in entries]


def history_table(entries: list[HistoryEntry]) -> str:
    """A fixed-width table for people, newest first."""
    rows = [["DATE", "COMMIT", "HOW", "RELEASE", "VERSION", "ROLLOUT", ""]]
    for e in entries:
        d = e.deployed
        rollout = ", ".join(f"{c.name} v{c.release.registry.version}" for c in d.rollout.candidates) or "-"
        mark = "running" if e.running else "rolled back from" if e.rolled_back else ""
        rows.append([d.date[:19].replace("T", " "), d.commit[:12], d.how, d.release.release_id,
                     f"{d.release.registry.name} v{d.release.registry.version}", rollout, mark])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows) + "\n"
