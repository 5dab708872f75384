"""One model's spec change, ready to write: the new spec text, its rendered files and the plan.

``mlops promote`` and ``mlops rollback`` edit a spec in memory (ruamel round trip), then
:func:`prepare_model_change` validates and renders it; nothing is written until everything passed.
:func:`publish` then writes the change on a new branch, commits exactly its files and, when a Git host
is configured, pushes the branch and opens a pull request. The branch you started on is checked out
again at the end: what runs is what is merged, so the next promotion starts from merged state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from generator import gitrepo, yamlio
from generator.errors import GitError, Problem, SpecError, ValidationError
from generator.generate import round_trip_yaml
from generator.githost import GitHost, PullRequest
from generator.layout import RepoLayout
from generator.loader import LoadedEnvironment, LoadedModel, load_environment_file, load_model
from generator.naming import LABEL_PREFIX
from generator.render import Plan, RenderedFile, Renderer, apply, plan
from generator.spec import Release
from generator.validate import Manifest, Validator

RELEASE_ID_LABEL = f"{LABEL_PREFIX}/release-id"


@dataclass(frozen=True)
class ModelChange:
    """A validated new spec for one model in one environment, with its rendered files and write plan."""

    env: str
    model: LoadedModel
    spec_path: str
    spec_text: str
    files: list[RenderedFile]
    plan: Plan

    def paths(self, layout: RepoLayout) -> list[str]:
        """What a commit of this change covers: the spec, the model's rendered folder and its Application."""
        name = self.model.spec.model
        return [self.spec_path, layout.relative(layout.rendered_model_dir(self.env, name)),
                layout.relative(layout.rendered_apps_dir(self.env) / f"model-{name}.yaml")]


@dataclass(frozen=True)
class Published:
    """Where a change went: the branch and commit, and the pull request when one was opened."""

    branch: str
    base: str
    commit: str
    pushed: bool
    pull_request: PullRequest | None


def load_round_trip(text: str, display: str) -> CommentedMap:
    """Parse a spec for a round-trip edit (comments, key order and flow style are kept).

    Raises:
        SpecError: the text is not YAML or has no ``release`` mapping.
    """
    try:
        doc = round_trip_yaml().load(text)
    except Exception as exc:  # ruamel raises many types; all mean "not YAML we can edit"
        raise SpecError([Problem(display, f"cannot be edited, it is not valid YAML: {exc}",
                                 fix="fix the YAML syntax (mlops render reports the line)")]) from None
    if not isinstance(doc, CommentedMap) or not isinstance(doc.get("release"), CommentedMap):
        raise SpecError([Problem(display, "has no release block", field="release", fix="add a release: block")])
    return doc


def assign_in_place(target: CommentedMap, source: Any) -> None:
    """Make ``target`` equal to ``source`` by assigning only the values that differ.

    Unchanged lines stay byte-identical and changed scalars keep their place, so the diff of a
    promotion or rollback is one line per changed value. Keys ``source`` lacks are removed; new keys
    are appended; lists of equal length are edited item by item, others replaced whole.
    """
    for key in [k for k in target if k not in source]:
        del target[key]
    for key, value in source.items():
        if key not in target:
            target[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(target[key], CommentedMap):
            assign_in_place(target[key], value)
        elif (isinstance(value, list) and isinstance(target[key], CommentedSeq)
              and len(value) == len(target[key])):
            _assign_items(target[key], value)
        elif not _same(target[key], value):
            target[key] = copy.deepcopy(value)


def _assign_items(target: CommentedSeq, source: list) -> None:
    for index, value in enumerate(source):
        if isinstance(value, dict) and isinstance(target[index], CommentedMap):
            assign_in_place(target[index], value)
        elif not _same(target[index], value):
            target[index] = copy.deepcopy(value)


def _same(left: Any, right: Any) -> bool:
    """Equal and of the same kind: a quoted "7" differs from 7 and true from 1; ruamel's str subclasses
    equal plain strings."""
    return _kind(left) is _kind(right) and left == right


def _kind(value: Any) -> type:
    return next((kind for kind in (bool, int, float, str) if isinstance(value, kind)), type(value))


def prepare_model_change(layout: RepoLayout, env_name: str, model: str, text: str) -> ModelChange:
    """Validate ``text`` as the new spec of ``model`` in ``env_name`` and render that model, in memory.

    Raises:
        SpecError: the new spec breaks a rule; ValidationError: a rendered manifest fails validation.
    """
    env = load_environment_file(layout, env_name)
    spec_path = layout.model_spec(env_name, model)
    loaded, problems = load_model(layout, env, spec_path, text)
    if loaded is None:
        raise SpecError(problems)
    environment = LoadedEnvironment(env_name, env, layout.env_file(env_name), (loaded,))
    files = Renderer(layout).render_model(environment, loaded)
    if found := Validator(layout.schemas_dir).validate(Manifest(f.path, f.document, f.env) for f in files):
        raise ValidationError(found)
    spec_file = RenderedFile(layout.relative(spec_path), text, {}, env_name)
    return ModelChange(env_name, loaded, layout.relative(spec_path), text, files, plan(layout, [], [spec_file, *files]))


def rendered_release_id(layout: RepoLayout, env_name: str, model: str) -> str | None:
    """The release id Argo CD syncs for ``model`` in ``env_name``: the label on its rendered Application."""
    path = layout.rendered_apps_dir(env_name) / f"model-{model}.yaml"
    try:
        document = yamlio.load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    labels = ((document or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(RELEASE_ID_LABEL)


def describe_release(release: Release) -> list[str]:
    """The lines a commit message or pull request lists for a release: version, artifact, digests."""
    return [
        f"release id: {release.release_id}",
        f"model version: {release.registry.name} version {release.registry.version} (MLflow)",
        f"artifact: {release.artifact_uri}",
        f"server image: {release.server_image}",
        f"drift image: {release.drift_image}",
        f"drift detector: {release.detector.uri} (sha256:{release.detector.sha256})",
    ]


def refuse_uncommitted(layout: RepoLayout, paths: list[str], why: str) -> None:
    """Raise when any of ``paths`` has uncommitted changes (only inside a Git working tree).

    Raises:
        GitError: with the changed paths and ``why`` they must be committed first.
    """
    if not is_git_repository(layout.root):
        return
    if changed := gitrepo.changed_paths(layout.root, paths):
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise GitError(f"uncommitted changes in {shown}: {why}")


def is_git_repository(path: Path) -> bool:
    """True when ``path`` is inside a Git working tree."""
    try:
        gitrepo.repository_root(path)
    except GitError:
        return False
    return True


def publish(layout: RepoLayout, change: ModelChange, *, branch: str, message: str, title: str, body: str,
            remote: str, host: GitHost | None) -> Published:
    """Write ``change`` on a new branch, commit exactly its paths, return to the starting branch, then push
    and open a pull request when ``host`` is given.

    On any failure before the commit, the written files are put back and the branch is deleted, so
    the working tree and the branch list are as they were.

    Raises:
        GitError: not a repository, uncommitted changes in the change's paths, a detached HEAD, an
            existing branch, or a failed commit or push.
        GitHostError: the pull request could not be opened (the branch is pushed by then).
    """
    repo = layout.root
    gitrepo.repository_root(repo)  # "not a Git repository" before anything more specific
    base = gitrepo.current_branch(repo)
    paths = change.paths(layout)
    refuse_uncommitted(layout, paths, "commit or stash them first; the change is committed on its own branch")
    if host is not None and remote not in gitrepo.run_git(repo, "remote").split():
        raise GitError(f"a Git host is configured but the repository has no remote {remote!r} to push "
                       f"{branch!r} to; add it (git remote add {remote} <url>) or pass --remote")
    originals = {path: _read(layout.root / path) for path in [*change.plan.writes, *change.plan.deletes]}
    gitrepo.create_branch(repo, branch)
    try:
        apply(layout, change.plan)
        commit = gitrepo.commit_paths(repo, paths, message)
    except BaseException:
        _restore(layout.root, originals)
        gitrepo.run_git(repo, "reset", "--quiet", "--", *paths)  # unstage what the failed commit staged
        gitrepo.switch_branch(repo, base)
        gitrepo.run_git(repo, "branch", "--quiet", "-D", branch)
        raise
    gitrepo.switch_branch(repo, base)
    if host is None:
        return Published(branch, base, commit, False, None)
    gitrepo.push(repo, remote, branch)
    return Published(branch, base, commit, True, host.open_pull_request(head=branch, base=base, title=title, body=body))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _restore(root: Path, originals: dict[str, bytes | None]) -> None:
    for path, content in originals.items():
        target = root / path
        if content is None:
            target.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
