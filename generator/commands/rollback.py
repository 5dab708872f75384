"""``mlops rollback``: restore a model's previous release from the spec's Git history.

The spec's history (``git log`` of ``environments/<env>/models/<model>.yaml``) is the deployment
history: each committed version names exactly what ran. Rollback picks the newest version whose
release or rollout differs from the current one (or the newest that ran a given release id), copies
its ``release`` and ``rollout`` blocks into the current spec with a round-trip edit, re-renders and
validates in memory, and then writes and commits. The environment's own settings (replicas,
thresholds) stay as they are now, so with unchanged settings the rendered output is byte for byte
what that earlier commit rendered.
"""

from __future__ import annotations

from dataclasses import dataclass

import pydantic

from generator.changes.edit import copy_release, dump_round_trip, load_round_trip
from generator.changes.prepare import ModelChange, describe_release, prepare_model_change
from generator.changes.publish import Published, refuse_uncommitted
from generator.commands.history import Deployed, change_trailer, deployment_history, ran_releases
from generator.external import gitrepo
from generator.spec import yamlio
from generator.spec.errors import GitError, UsageError, did_you_mean
from generator.spec.layout import RepoLayout
from generator.spec.loader import load_environment_file
from generator.spec.models import Release, Rollout

MIN_RELEASE_ID_PREFIX = 4


@dataclass(frozen=True)
class RollbackRequest:
    """Which model to roll back where, and optionally to which release id (or unique prefix)."""

    model: str
    env: str
    to_release: str | None = None


@dataclass(frozen=True)
class RollbackResult:
    """A prepared (and possibly written or published) rollback."""

    request: RollbackRequest
    current: Release
    restored: Deployed
    change: ModelChange
    published: Published | None = None

    @property
    def branch(self) -> str:
        return f"rollback/{self.request.model}/{self.request.env}/{self.restored.release.release_id}"

    def commit_message(self) -> str:
        req, old, current = self.request, self.restored.release, self.current
        lines = [f"Roll back {req.model} in {req.env} to release {old.release_id} (version {old.registry.version})",
                 "",
                 f"from: release {current.release_id} ({current.registry.name} version {current.registry.version})",
                 f"restores: release and rollout of commit {self.restored.commit[:12]} ({self.restored.date}, "
                 f"\"{self.restored.subject}\")", "", *describe_release(old)]
        if self.restored.rollout.candidates:
            lines.append(f"rollout: {self.restored.rollout.strategy}, "
                         f"main {self.restored.rollout.effective_main_traffic}%")
            for candidate in self.restored.rollout.candidates:
                share = "shadow" if candidate.shadow else f"{candidate.traffic}%"
                lines.append(f"candidate {candidate.name} ({share}): release {candidate.release.release_id} "
                             f"(version {candidate.release.registry.version})")
        lines += ["", f"Spec: {self.change.spec_path}", "", change_trailer("rollback")]
        return "\n".join(lines) + "\n"

    def pull_request_title(self) -> str:
        old = self.restored.release
        return (f"Roll back {self.request.model} in {self.request.env} to {old.release_id} "
                f"(version {old.registry.version})")

    def pull_request_body(self) -> str:
        req = self.request
        body = [f"Rolls **{req.model}** in `{req.env}` back with `mlops rollback`.", "", "```",
                self.commit_message().rstrip(), "```"]
        if req.env == "prod":
            body += ["", "If the model was already rolled back in the Argo CD UI (History and Rollback), merging "
                     "this makes Git agree with the cluster again; then sync `model-"
                     f"{req.model}-prod` so the Application follows Git."]
        return "\n".join(body) + "\n"


def rollback(layout: RepoLayout, request: RollbackRequest) -> RollbackResult:
    """Prepare a rollback in memory: pick the earlier version, edit the spec, render, validate.

    Raises:
        UsageError: no spec, no earlier release in the history, or ``to_release`` unknown, ambiguous
            or already running.
        GitError: not a Git repository, or the spec has uncommitted changes.
        SpecError, RenderError, ValidationError: the restored spec would be invalid today.
    """
    spec_path = layout.model_spec(request.env, request.model)
    display = layout.relative(spec_path)
    if not spec_path.is_file():
        raise UsageError(f"{display} does not exist: {request.model} does not run in {request.env}"
                         f"{did_you_mean(request.model, layout.models(request.env))}")
    gitrepo.repository_root(layout.root)  # rollback reads the spec's history: a clear error outside Git
    refuse_uncommitted(layout, [display], "rollback restores committed history; commit or discard them first")
    history = deployment_history(layout, request.env, request.model)
    if not history:
        raise GitError(f"{display} has no committed version; rollback needs the spec's Git history")
    text = layout.read_text(spec_path)
    doc = load_round_trip(text, display)
    current = _current(history, text, display)
    target = _pick(history, current, request, display)

    old = load_round_trip(target.text, f"{display}@{target.commit[:12]}")
    copy_release(doc, old, with_rollout=True)
    env = load_environment_file(layout, request.env)
    change = prepare_model_change(layout, env, request.model, dump_round_trip(doc))
    return RollbackResult(request, current.release, target, change)


def _current(history: list[Deployed], text: str, display: str) -> Deployed:
    raw = yamlio.load(text) or {}
    try:
        release = Release.model_validate(raw.get("release"))
        rollout = Rollout.model_validate(raw.get("rollout") or {})
    except pydantic.ValidationError:
        raise UsageError(f"{display} has an invalid release or rollout block; fix it (mlops render shows "
                         "where) before rolling back") from None
    return Deployed(history[0].commit, history[0].date, history[0].subject, text, release, rollout)


def _pick(history: list[Deployed], current: Deployed, request: RollbackRequest, display: str) -> Deployed:
    if request.to_release is None:
        ran = ran_releases(history)
        if len(ran) > 1 and ran[-1].state == current.state:
            return ran[-2]
        raise UsageError(f"{display}: {request.env} runs release {current.release.release_id} and ran nothing "
                         "before it that it was not rolled back from; there is nothing to roll back to (mlops "
                         f"history {request.model} --env {request.env} lists what it ran; --to picks one)")
    wanted = request.to_release.strip().lower()
    if len(wanted) < MIN_RELEASE_ID_PREFIX:
        raise UsageError(f"--to {request.to_release!r} is too short: give at least {MIN_RELEASE_ID_PREFIX} "
                         "characters of a release id (mlops status shows them)")
    if current.release.release_id.startswith(wanted):
        raise UsageError(f"{request.env} already runs release {current.release.release_id}; nothing to roll back")
    matches = [v for v in history if v.release.release_id.startswith(wanted)]
    ids = sorted({v.release.release_id for v in matches})
    if len(ids) > 1:
        raise UsageError(f"--to {request.to_release} matches releases {', '.join(ids)}; give more characters")
    if not matches:
        known = list(dict.fromkeys(f"{v.release.release_id} (version {v.release.registry.version})"
                                   for v in history))
        raise UsageError(f"{display} never ran release {request.to_release} in its Git history; releases it ran, "
                         f"newest first: {', '.join(known[:10])}")
    return matches[0]
