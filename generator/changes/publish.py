"""Publishing a model change: a branch, a commit of exactly its files, a push, a pull request.

:func:`publish` is the one path every verb that proposes a change takes (``promote --git``,
``rollback``, the retrain flow's proposal). On a failure before the commit, the tree and the branch
list are put back as they were; the branch you started on is checked out again at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from generator.changes.prepare import ModelChange
from generator.external import gitrepo
from generator.external.githost import GitHost, PullRequest
from generator.spec.errors import GitError
from generator.spec.layout import RepoLayout
from generator.write.plan import apply


class Proposal(Protocol):
    """A prepared change with what its commit and pull request say (promotion, rollback, retrain proposal)."""

    @property
    def change(self) -> ModelChange: ...

    @property
    def branch(self) -> str: ...

    def commit_message(self) -> str: ...

    def pull_request_title(self) -> str: ...

    def pull_request_body(self) -> str: ...


@dataclass(frozen=True)
class Published:
    """Where a change went: the branch and commit, and the pull request when one was opened."""

    branch: str
    base: str
    commit: str
    pushed: bool
    pull_request: PullRequest | None


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


def publish(layout: RepoLayout, proposal: Proposal, *, remote: str, host: GitHost | None,
            push: bool | None = None) -> Published:
    """Write the proposal's change on its branch, commit exactly its paths, return to the starting branch,
    then push (by default only when ``host`` is given) and open a pull request when ``host`` is given.

    On any failure before the commit, the written files are put back and the branch is deleted, so
    the working tree and the branch list are as they were.

    Raises:
        GitError: not a repository, uncommitted changes in the change's paths, a detached HEAD, an
            existing branch, no such remote, or a failed commit or push.
        GitHostError: the pull request could not be opened (the branch is pushed by then).
    """
    repo, change, branch = layout.root, proposal.change, proposal.branch
    push = host is not None if push is None else push
    gitrepo.repository_root(repo)  # "not a Git repository" before anything more specific
    base = gitrepo.current_branch(repo)
    paths = change.paths(layout)
    refuse_uncommitted(layout, paths, "commit or stash them first; the change is committed on its own branch")
    if push and remote not in gitrepo.run_git(repo, "remote").split():
        raise GitError(f"the branch is to be pushed but the repository has no remote {remote!r} to push "
                       f"{branch!r} to; add it (git remote add {remote} <url>) or pass --remote")
    originals = {path: _read(layout.root / path) for path in [*change.plan.writes, *change.plan.deletes]}
    gitrepo.create_branch(repo, branch)
    try:
        apply(layout, change.plan)
        commit = gitrepo.commit_paths(repo, paths, proposal.commit_message())
    except BaseException:
        _restore(layout.root, originals)
        gitrepo.run_git(repo, "reset", "--quiet", "--", *paths)  # unstage what the failed commit staged
        gitrepo.switch_branch(repo, base)
        gitrepo.run_git(repo, "branch", "--quiet", "-D", branch)
        raise
    gitrepo.switch_branch(repo, base)
    if not push:
        return Published(branch, base, commit, False, None)
    gitrepo.push(repo, remote, branch)
    pull_request = None if host is None else host.open_pull_request(
        head=branch, base=base, title=proposal.pull_request_title(), body=proposal.pull_request_body())
    return Published(branch, base, commit, True, pull_request)


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
