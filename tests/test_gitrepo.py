"""generator.external.gitrepo against real git repositories in tmp_path (and a bare repository as the remote)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from generator.external import gitrepo
from generator.spec.errors import GitError


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    git(path, "config", "user.name", "Test")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "commit.gpgsign", "false")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = init_repo(tmp_path / "repo")
    (root / "spec.yaml").write_text("version: 1\n")
    (root / "other.txt").write_text("a\n")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "initial")
    return root


def test_current_branch_and_create_branch(repo: Path) -> None:
    assert gitrepo.current_branch(repo) == "main"
    gitrepo.create_branch(repo, "promote/churn/prod/0123456789ab")
    assert gitrepo.current_branch(repo) == "promote/churn/prod/0123456789ab"
    assert gitrepo.branch_exists(repo, "main")
    with pytest.raises(GitError, match="already exists"):
        gitrepo.create_branch(repo, "promote/churn/prod/0123456789ab")
    with pytest.raises(GitError, match="not a valid Git branch name"):
        gitrepo.create_branch(repo, "bad..name")
    gitrepo.switch_branch(repo, "main")
    assert gitrepo.current_branch(repo) == "main"


def test_detached_head_is_explained(repo: Path) -> None:
    git(repo, "switch", "--quiet", "--detach", "HEAD")
    with pytest.raises(GitError, match="detached HEAD"):
        gitrepo.current_branch(repo)


def test_commit_paths_commits_only_those_paths(repo: Path) -> None:
    (repo / "spec.yaml").write_text("version: 2\n")
    (repo / "rendered").mkdir()
    (repo / "rendered" / "new.yaml").write_text("kind: Job\n")
    (repo / "other.txt").write_text("someone else's edit\n")
    (repo / "staged.txt").write_text("staged by someone else\n")
    git(repo, "add", "staged.txt")

    commit = gitrepo.commit_paths(repo, ["spec.yaml", repo / "rendered"], "Promote churn\n\nbody line")

    assert commit == git(repo, "rev-parse", "HEAD").strip()
    assert git(repo, "log", "-1", "--format=%B", commit) == "Promote churn\n\nbody line\n\n"
    assert git(repo, "show", "--name-status", "--format=", commit).splitlines() == [
        "A\trendered/new.yaml", "M\tspec.yaml"]
    # Everything else is exactly as it was: unstaged edit unstaged, staged file still staged.
    status = git(repo, "status", "--porcelain")
    assert " M other.txt" in status.splitlines()
    assert "A  staged.txt" in status.splitlines()


def test_commit_paths_records_deletions(repo: Path) -> None:
    (repo / "gone").mkdir()
    (repo / "gone" / "a.yaml").write_text("a: 1\n")
    git(repo, "add", "gone")
    git(repo, "commit", "--quiet", "-m", "add")
    (repo / "gone" / "a.yaml").unlink()
    (repo / "gone").rmdir()
    gitrepo.commit_paths(repo, ["gone"], "remove")
    assert git(repo, "show", "--name-status", "--format=", "HEAD").strip() == "D\tgone/a.yaml"


def test_nothing_to_commit_is_an_error(repo: Path) -> None:
    with pytest.raises(GitError, match="nothing to commit in spec.yaml"):
        gitrepo.commit_paths(repo, ["spec.yaml"], "no-op")


def test_path_outside_the_repository_is_refused(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="outside the repository"):
        gitrepo.commit_paths(repo, [tmp_path / "elsewhere.yaml"], "x")


def test_file_history_newest_first_with_text(repo: Path) -> None:
    for version in (2, 3):
        (repo / "spec.yaml").write_text(f"version: {version}\n")
        git(repo, "commit", "--quiet", "-am", f"spec v{version}")
        (repo / "other.txt").write_text(f"{version}\n")
        git(repo, "commit", "--quiet", "-am", f"unrelated {version}")

    history = gitrepo.file_history(repo, "spec.yaml")

    assert [(v.subject, v.text) for v in history] == [
        ("spec v3", "version: 3\n"), ("spec v2", "version: 2\n"), ("initial", "version: 1\n")]
    assert all(len(v.commit) == 40 and "T" in v.date for v in history)
    assert [v.subject for v in gitrepo.file_history(repo, repo / "spec.yaml", max_count=1)] == ["spec v3"]


def test_file_history_from_a_subfolder_of_the_working_tree(repo: Path) -> None:
    (repo / "sub").mkdir()
    (repo / "sub" / "f.txt").write_text("x\n")
    git(repo, "add", "sub")
    git(repo, "commit", "--quiet", "-m", "sub")
    [version] = gitrepo.file_history(repo / "sub", "f.txt")
    assert version.text == "x\n"
    assert gitrepo.repository_root(repo / "sub") == repo.resolve()


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="is not inside a Git repository"):
        gitrepo.repository_root(tmp_path)


def test_push_sets_upstream_on_a_real_remote(repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    gitrepo.create_branch(repo, "promote/x")
    (repo / "spec.yaml").write_text("version: 9\n")
    commit = gitrepo.commit_paths(repo, ["spec.yaml"], "v9")

    gitrepo.push(repo, "origin", "promote/x")

    assert git(remote, "rev-parse", "refs/heads/promote/x").strip() == commit
    assert git(repo, "rev-parse", "--abbrev-ref", "promote/x@{upstream}").strip() == "origin/promote/x"
    with pytest.raises(GitError, match="has no remote 'upstream'"):
        gitrepo.push(repo, "upstream", "promote/x")
