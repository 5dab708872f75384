"""Small helpers over the real ``git`` binary: branches, commits of chosen paths, push, file history.

Promotion, rollback and the retrain flow change a few files and commit exactly those, so these helpers
never stage anything else: other changes in the working tree or the index stay where they are. Each
call runs ``git`` as a subprocess (no library, no shell) in the repository given, and every failure is
a :class:`~generator.spec.errors.GitError` naming the command and git's own message.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from generator.spec.errors import GitError

GIT_TIMEOUT_SECONDS = 120
"""Generous for a push over a slow link; local commands take milliseconds."""

# Unit and record separators: they cannot appear in hashes, dates or one-line subjects.
_FIELD, _RECORD = "\x1f", "\x1e"


@dataclass(frozen=True)
class FileVersion:
    """One committed version of a file: the commit that wrote it and the file's text there."""

    commit: str
    date: str
    """Committer date, ISO 8601 with offset."""
    subject: str
    text: str
    trailers: dict[str, str] = field(default_factory=dict)
    """The commit message's trailers (``Key: value`` lines at its end), e.g. ``Mlops-Change``."""


def run_git(repo: Path, *args: str) -> str:
    """Run ``git -C repo ARGS`` and return its standard output.

    Prompts are switched off (a push without credentials fails instead of waiting for a password) and
    messages are in English, so errors read the same everywhere.

    Raises:
        GitError: git is not installed, timed out, or exited non-zero (the message carries its stderr).
    """
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "C"}
    command = ["git", "-C", str(repo), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", env=env,
                              timeout=GIT_TIMEOUT_SECONDS, check=False)
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH; install git (apt-get install git)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"`git {' '.join(args)}` in {repo} took longer than {GIT_TIMEOUT_SECONDS}s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise GitError(f"`git {' '.join(args)}` failed in {repo}: {detail}")
    return done.stdout


def repository_root(path: Path) -> Path:
    """The top-level directory of the Git working tree that contains ``path``.

    Raises:
        GitError: ``path`` is not inside a Git working tree.
    """
    try:
        return Path(run_git(path, "rev-parse", "--show-toplevel").strip())
    except GitError:
        raise GitError(f"{path} is not inside a Git repository; run from a clone of the GitOps repository "
                       "or pass --repo-root") from None


def current_branch(repo: Path) -> str:
    """The checked-out branch's short name.

    Raises:
        GitError: HEAD is detached (no branch to commit on or to return to).
    """
    try:
        return run_git(repo, "symbolic-ref", "--quiet", "--short", "HEAD").strip()
    except GitError:
        raise GitError(f"{repo} has a detached HEAD; check out a branch first (git switch main)") from None


def head_commit(repo: Path) -> str:
    """The full hash of ``HEAD``."""
    return run_git(repo, "rev-parse", "HEAD").strip()


def branch_exists(repo: Path, branch: str) -> bool:
    """True when a local branch of that name exists."""
    try:
        run_git(repo, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}")
    except GitError:
        return False
    return True


def create_branch(repo: Path, branch: str, start_point: str = "HEAD") -> None:
    """Create ``branch`` at ``start_point`` and check it out; uncommitted changes carry over.

    Raises:
        GitError: the name is not a valid branch name, or the branch already exists.
    """
    try:
        run_git(repo, "check-ref-format", "--branch", branch)
    except GitError:
        raise GitError(f"{branch!r} is not a valid Git branch name") from None
    if branch_exists(repo, branch):
        raise GitError(f"branch {branch!r} already exists in {repo}; delete it (git branch -D {branch}) "
                       "or finish the work on it first")
    run_git(repo, "switch", "--quiet", "--create", branch, start_point)


def switch_branch(repo: Path, branch: str) -> None:
    """Check out an existing branch; uncommitted changes carry over when they do not conflict."""
    run_git(repo, "switch", "--quiet", branch)


def changed_paths(repo: Path, paths: Iterable[str | Path] = ()) -> list[str]:
    """Paths with uncommitted changes (staged, unstaged or untracked), relative to the working tree's top.

    Limited to ``paths`` (files or folders) when given.
    """
    output = run_git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--",
                     *_pathspecs(repo, paths))
    entries = output.split("\0")
    changed, skip_next = [], False
    for entry in entries:
        if skip_next:  # a rename's second field is its old path
            skip_next = False
            continue
        if not entry:
            continue
        status, path = entry[:2], entry[3:]
        changed.append(path)
        skip_next = "R" in status or "C" in status
    return sorted(changed)


def commit_paths(repo: Path, paths: Iterable[str | Path], message: str) -> str:
    """Commit exactly ``paths`` (files or folders; new, changed and deleted files) and return the commit hash.

    Anything else that is staged or changed in the working tree is left out of the commit and stays
    as it was, so a shared checkout is safe.

    Raises:
        GitError: none of the paths has a change to commit, or git refused (for example no
            ``user.name``/``user.email`` configured).
    """
    specs = _pathspecs(repo, paths)
    if not specs:
        raise GitError("no paths given to commit")
    if not changed_paths(repo, specs):
        raise GitError(f"nothing to commit in {', '.join(specs)}: the files already match the last commit")
    run_git(repo, "add", "--all", "--", *specs)
    # --only (the default with paths): other staged changes stay staged and out of this commit.
    run_git(repo, "commit", "--quiet", "--only", "--message", message, "--", *specs)
    return head_commit(repo)


def push(repo: Path, remote: str, branch: str) -> None:
    """Push ``branch`` to ``remote`` and make it the branch's upstream.

    Raises:
        GitError: the remote does not exist, refuses the push, or needs credentials git does not have.
    """
    remotes = run_git(repo, "remote").split()
    if remote not in remotes:
        raise GitError(f"{repo} has no remote {remote!r} (remotes: {', '.join(remotes) or 'none'}); "
                       f"add it with git remote add {remote} <url>")
    run_git(repo, "push", "--quiet", "--set-upstream", remote, f"refs/heads/{branch}:refs/heads/{branch}")


def show_file(repo: Path, revision: str, path: str | Path) -> str:
    """The text of ``path`` at ``revision`` (a commit, branch or tag).

    Raises:
        GitError: the revision does not exist or has no such file.
    """
    relative = _pathspecs(repo, [path])[0]
    # "./" makes the path relative to `repo`, which may be a folder inside the working tree.
    return run_git(repo, "show", f"{revision}:./{relative}")


def file_history(repo: Path, path: str | Path, revision: str = "HEAD",
                 max_count: int | None = None) -> list[FileVersion]:
    """Every committed version of ``path`` reachable from ``revision``, newest first.

    Only commits that changed the file count (commits that deleted it are skipped); each entry holds
    the file's full text at that commit.

    Raises:
        GitError: not a repository, or the revision does not exist.
    """
    relative = _pathspecs(repo, [path])[0]
    # Added, copied, modified, renamed or type-changed: every change but a deletion.
    args = ["log", f"--format=%H{_FIELD}%cI{_FIELD}%s{_FIELD}%(trailers:unfold,only){_RECORD}",
            "--diff-filter=ACMRT"]
    if max_count is not None:
        args.append(f"--max-count={max_count}")
    output = run_git(repo, *args, revision, "--", relative)
    versions = []
    for record in output.split(_RECORD):
        if not record.strip():
            continue
        commit, date, subject, trailers = record.strip("\n").split(_FIELD, 3)
        pairs = dict(line.split(": ", 1) for line in trailers.splitlines() if ": " in line)
        versions.append(FileVersion(commit, date, subject, show_file(repo, commit, relative), pairs))
    return versions


def _pathspecs(repo: Path, paths: Iterable[str | Path]) -> list[str]:
    """Paths relative to the repository with forward slashes (absolute paths must lie inside it)."""
    root = Path(repo).resolve()
    specs = []
    for path in paths:
        candidate = Path(path)
        if candidate.is_absolute():
            try:
                candidate = candidate.resolve().relative_to(root)
            except ValueError:
                raise GitError(f"{path} is outside the repository {root}") from None
        specs.append(candidate.as_posix())
    return specs
