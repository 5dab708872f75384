"""mlops rollback on a real Git repository: the previous release comes back byte for byte in the
rendered output, committed on its own branch; every refusal writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from retrain.propose import RetrainChange, branch_name

from fakegithub import FakeGitHub
from generator.changes.publish import publish
from generator.commands.generate import GenerateRequest, ReleaseOptions, prepare_generate
from generator.spec.layout import RepoLayout
from gitfixtures import (
    build_repo,
    canary_block,
    changed_files,
    commit_all,
    git,
    mlops,
    release_id_of,
    release_values,
    rendered_model_files,
    spec_path,
    spec_text,
    tree,
)


def deploy(root: Path, env: str, text: str, message: str) -> str:
    """Commit a new spec for ``env`` with its rendered output, as a merged pull request would."""
    (root / spec_path(env)).write_text(text)
    rendered = mlops(root, "render", "--env", env)
    assert rendered.exit_code == 0, rendered.output
    return commit_all(root, message)


def rendered_at(root: Path, commit: str, env: str) -> dict[str, str]:
    """The model's rendered files as committed in ``commit``."""
    return {path: git(root, "show", f"{commit}:{path}") for path in rendered_model_files(root, env)}


def test_rollback_restores_the_previous_release_byte_for_byte(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    initial = git(root, "rev-parse", "HEAD").strip()
    deploy(root, "prod", spec_text("prod", 2), "prod runs version 2")

    result = mlops(root, "rollback", "churn", "--env", "prod")
    assert result.exit_code == 0, result.output
    old_id = release_id_of(1)
    assert (f"rolled back churn in prod from release {release_id_of(2)} (version 2) to {old_id} (version 1, "
            f"as of commit {initial[:12]})") in result.output

    branch = f"rollback/churn/prod/{old_id}"
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert changed_files(root) == []
    assert rendered_at(root, branch, "prod") == rendered_at(root, initial, "prod")
    assert git(root, "show", f"{branch}:{spec_path('prod')}") == spec_text("prod", 1)
    files = git(root, "show", "--name-only", "--format=", branch).split()
    assert all(f.startswith("environments/prod/") for f in files) and spec_path("prod") in files
    message = git(root, "log", "-1", "--format=%B", branch)
    assert message.splitlines()[0] == f"Roll back churn in prod to release {old_id} (version 1)"
    assert f"from: release {release_id_of(2)} (churn version 2)" in message
    assert f"restores: release and rollout of commit {initial[:12]}" in message


def test_rollback_to_a_named_release_skips_newer_ones(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    initial = git(root, "rev-parse", "HEAD").strip()
    deploy(root, "prod", spec_text("prod", 2), "prod runs version 2")
    deploy(root, "prod", spec_text("prod", 3), "prod runs version 3")

    result = mlops(root, "rollback", "churn", "--env", "prod", "--to", release_id_of(1)[:6], "--no-git")
    assert result.exit_code == 0, result.output
    assert (root / spec_path("prod")).read_text() == spec_text("prod", 1)
    assert rendered_model_files(root, "prod") == rendered_at(root, initial, "prod")
    assert git(root, "branch", "--list").split() == ["*", "main"], "--no-git only writes files"
    assert set(changed_files(root)) >= {spec_path("prod")}


def test_rollback_brings_back_the_earlier_rollout_too(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    canary = deploy(root, "staging", spec_text("staging", 2, canary_block(3)), "canary of version 3")
    deploy(root, "staging", spec_text("staging", 3), "version 3 won the canary")

    result = mlops(root, "rollback", "churn", "--env", "staging", "--no-git")
    assert result.exit_code == 0, result.output
    assert (root / spec_path("staging")).read_text() == spec_text("staging", 2, canary_block(3))
    assert rendered_model_files(root, "staging") == rendered_at(root, canary, "staging")
    assert mlops(root, "render", "--check").exit_code == 0


def test_rollback_keeps_the_environments_own_settings(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    deploy(root, "prod", spec_text("prod", 2), "version 2")
    deploy(root, "prod", spec_text("prod", 2).replace("max: 10}", "max: 12}"), "more replicas")

    result = mlops(root, "rollback", "churn", "--env", "prod", "--no-git")
    assert result.exit_code == 0, result.output
    assert (root / spec_path("prod")).read_text() == spec_text("prod", 1).replace("max: 10}", "max: 12}")


def test_rollback_opens_a_pull_request_when_a_host_is_configured(tmp_path: Path, github: FakeGitHub) -> None:
    root = build_repo(tmp_path / "repo")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", str(remote))
    git(root, "remote", "add", "origin", str(remote))
    deploy(root, "prod", spec_text("prod", 2), "prod runs version 2")

    result = mlops(root, "rollback", "churn", "--env", "prod", env=github.environ())
    assert result.exit_code == 0, result.output
    [request] = github.requests
    assert request["body"]["title"] == f"Roll back churn in prod to {release_id_of(1)} (version 1)"
    assert request["body"]["head"] == f"rollback/churn/prod/{release_id_of(1)}"
    assert "Argo CD UI" in request["body"]["body"]
    assert git(remote, "rev-parse", f"refs/heads/rollback/churn/prod/{release_id_of(1)}").strip()


# --- refusals -------------------------------------------------------------------------------------


def refused(root: Path, *args: str, code: int = 2) -> str:
    before = tree(root)
    result = mlops(root, "rollback", "churn", *args)
    assert result.exit_code == code, result.output
    assert tree(root) == before, "a refused rollback must write nothing"
    return result.output


def test_refuses_without_an_earlier_release(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    assert "there is nothing to roll back to" in refused(root, "--env", "prod")


def test_refuses_an_unknown_release(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    deploy(root, "prod", spec_text("prod", 2), "version 2")
    output = refused(root, "--env", "prod", "--to", "deadbeef")
    assert "never ran release deadbeef" in output
    assert f"{release_id_of(2)} (version 2), {release_id_of(1)} (version 1)" in output


def test_refuses_the_release_that_runs_now(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    deploy(root, "prod", spec_text("prod", 2), "version 2")
    assert "prod already runs release" in refused(root, "--env", "prod", "--to", release_id_of(2))


def test_refuses_a_too_short_release_prefix(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    assert "too short" in refused(root, "--env", "prod", "--to", "ab")


def test_refuses_uncommitted_spec_changes(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    deploy(root, "prod", spec_text("prod", 2), "version 2")
    (root / spec_path("prod")).write_text(spec_text("prod", 3))
    output = refused(root, "--env", "prod", code=7)
    assert "uncommitted changes in environments/prod/models/churn.yaml" in output


def test_refuses_outside_git(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    shutil.rmtree(root / ".git")  # the same files, without their history
    assert "is not inside a Git repository" in refused(root, "--env", "prod", code=7)


def test_refuses_a_model_the_environment_does_not_run(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3)})
    assert "environments/prod/models/churn.yaml does not exist" in refused(root, "--env", "prod")


def test_dry_run_drops_the_default_git_and_refuses_an_explicit_one(tmp_path: Path) -> None:
    """--git/--dry-run/--remote are one shared set of options: a dry run never commits, and asking for both
    is a usage error, as for promote."""
    root = build_repo(tmp_path / "repo")
    deploy(root, "prod", spec_text("prod", 2), "prod runs version 2")
    before, head = tree(root), git(root, "rev-parse", "HEAD").strip()

    dry = mlops(root, "rollback", "churn", "--env", "prod", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would roll back churn in prod from release {release_id_of(2)}" in dry.output
    assert "would write environments/prod/models/churn.yaml" in dry.output
    assert "--- a/environments/prod/models/churn.yaml" in dry.output
    assert "\n-  registry: {name: churn, version: 2}\n" in dry.output
    assert "\n+  registry: {name: churn, version: 1}\n" in dry.output
    assert "+++ b/environments/prod/rendered/models/churn/seldondeployment.yaml" in dry.output

    both = mlops(root, "rollback", "churn", "--env", "prod", "--dry-run", "--git")
    assert both.exit_code == 2
    assert "--dry-run writes nothing, so it cannot commit" in both.output
    assert tree(root) == before and git(root, "rev-parse", "HEAD").strip() == head
    assert "rollback/" not in git(root, "branch", "--list")


def test_a_second_rollback_goes_further_back_not_forward(tmp_path: Path) -> None:
    """v1 → v2 → v3, roll back to v2, merge; the next rollback goes to v1, never to v3 again."""
    root = build_repo(tmp_path / "repo")  # prod runs version 1
    deploy(root, "prod", spec_text("prod", 2), "prod runs version 2")
    deploy(root, "prod", spec_text("prod", 3), "prod runs version 3")

    first = mlops(root, "rollback", "churn", "--env", "prod")
    assert first.exit_code == 0, first.output
    assert f"to {release_id_of(2)} (version 2" in first.output
    git(root, "merge", "--quiet", "--ff-only", f"rollback/churn/prod/{release_id_of(2)}")

    second = mlops(root, "rollback", "churn", "--env", "prod", "--dry-run")
    assert second.exit_code == 0, second.output
    assert f"would roll back churn in prod from release {release_id_of(2)} (version 2) to {release_id_of(1)}" \
        in second.output

    history = mlops(root, "history", "churn", "--env", "prod")
    assert history.exit_code == 0, history.output
    rows = history.output.splitlines()[1:]
    assert [row.split()[3] for row in rows] == ["rollback", "generate", "generate", "generate"]
    assert rows[0].endswith("running") and rows[1].endswith("rolled back from")
    assert release_id_of(3) in rows[1] and not rows[2].endswith("rolled back from")
    # --to still reaches a release the environment was rolled back from
    forward = mlops(root, "rollback", "churn", "--env", "prod", "--to", release_id_of(3), "--dry-run")
    assert forward.exit_code == 0 and f"to {release_id_of(3)} (version 3" in forward.output


def test_history_says_how_each_release_came(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    promoted = mlops(root, "promote", "churn", "--from", "dev", "--to", "staging")  # commits on a branch
    assert promoted.exit_code == 0, promoted.output
    branch = next(b.strip() for b in git(root, "branch", "--list", "promote/*").splitlines())
    git(root, "merge", "--quiet", "--no-ff", "-m", "Merge pull request #1", branch)
    result = mlops(root, "history", "churn", "--env", "staging", "--output", "json")
    assert result.exit_code == 0, result.output
    changes = json.loads(result.output)["changes"]
    assert [(c["how"], c["version"], c["running"]) for c in changes] == [("promote", 3, True),
                                                                        ("generate", 2, False)]
    assert "Mlops-Change: promote" in git(root, "log", "-1", "--format=%B", branch)


def test_history_says_a_retrain_proposal_came_by_retrain(tmp_path: Path) -> None:
    """The retrain flow's proposal, committed by its own publish step (message with the trailer) and merged."""
    root = build_repo(tmp_path / "repo")
    values = release_values(4)
    request = GenerateRequest(model="churn", env="dev", strategy="canary", traffic=10, release=ReleaseOptions(
        registry_version=4, artifact_uri=values["artifact_uri"], artifact_sha256=values["artifact_sha256"],
        detector_uri=values["detector_uri"], detector_sha256=values["detector_sha256"]))
    layout = RepoLayout(root)
    change = prepare_generate(layout, request).change
    proposal = RetrainChange(change, branch_name("churn", 4), "Retrain churn: version 4 as canary in dev", "Drift.")
    published = publish(layout, proposal, remote="origin", host=None, push=False)
    git(root, "merge", "--quiet", "--no-ff", "-m", "Merge pull request #2", published.branch)

    result = mlops(root, "history", "churn", "--env", "dev")
    assert result.exit_code == 0, result.output
    newest = result.output.splitlines()[1].split()
    assert newest[3:5] == ["retrain", release_id_of(3)] and "candidate" in newest and newest[-1] == "running"
