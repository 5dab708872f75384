"""mlops promote on a real Git repository: exact diffs, every refusal, --git with a real remote and a
local stand-in for GitHub's pull-request API."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from fakegithub import FakeGitHub
from generator.spec.naming import RELEASE_ID_LABEL
from gitfixtures import (
    VERSIONS,
    build_repo,
    canary_block,
    changed_files,
    changed_lines,
    commit_all,
    git,
    leaf_changes,
    load_yaml,
    mlops,
    release_id_of,
    release_values,
    rendered_model_files,
    spec_path,
    spec_text,
    tree,
)


def model_paths(env: str) -> set[str]:
    """Everything a promotion into ``env`` may change."""
    return {spec_path(env), f"environments/{env}/rendered/apps/model-churn.yaml"} | {
        f"environments/{env}/rendered/models/churn/{name}" for name in _model_file_names()}


def _model_file_names() -> list[str]:
    from generator.render.renderer import KAFKA_USER_FILES, MODEL_FILES

    return [name for _, name, _ in (*MODEL_FILES, *KAFKA_USER_FILES)]


def release_id(root: Path, env: str) -> str:
    app = load_yaml((root / f"environments/{env}/rendered/apps/model-churn.yaml").read_text())
    return app["metadata"]["labels"][RELEASE_ID_LABEL]


def assert_only_release_changed(before: dict[str, str], after: dict[str, str], version: int, new_id: str) -> None:
    """Every changed rendered value comes from the promoted release (or is the drift config's hash on the
    detector's pod template); a file whose body is unchanged is unchanged, header included; a changed
    file's header carries the hash of its new body."""
    r = release_values(version)
    tokens = [new_id, r["artifact_uri"], r["artifact_sha256"], r["server_image"], r["drift_image"], r["detector_uri"], r["detector_sha256"]]
    assert before.keys() == after.keys()
    for path in before:
        old_head, _, old_body = before[path].partition("\n")
        new_head, _, new_body = after[path].partition("\n")
        assert old_head.split("(sha256:")[0] == new_head.split("(sha256:")[0], path
        assert new_head.split("(sha256:")[1].split(")")[0] == hashlib.sha256(new_body.encode()).hexdigest(), path
        if old_body == new_body:
            assert old_head == new_head, f"{path}: the body is unchanged but the header changed"
        for where, _, value in leaf_changes(load_yaml(old_body), load_yaml(new_body)):
            text = str(value)
            assert text == str(version) or where.endswith("/config-hash") or any(
                token in text for token in tokens), f"{path}{where} = {value!r} is not from the release"


def test_dev_to_staging_to_prod_changes_only_each_targets_release_and_rendered_files(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    dev_id = release_id(root, "dev")
    untouched = {env: rendered_model_files(root, env) for env in ("dev", "prod")}
    staging_before = rendered_model_files(root, "staging")

    result = mlops(root, "promote", "churn", "--from", "dev", "--to", "staging", "--no-git")
    assert result.exit_code == 0, result.output
    assert f"promoted churn release {dev_id} (churn version 3) from dev to staging" in result.output

    # The spec: exactly the seven release values, one line each; comments, flow style and settings kept.
    new_spec = (root / spec_path("staging")).read_text()
    assert new_spec == spec_text("staging", 3)
    assert len(changed_lines(spec_text("staging", 2), new_spec)) == 14
    assert set(changed_files(root)) <= model_paths("staging")
    assert spec_path("staging") in changed_files(root)
    assert_only_release_changed(staging_before, rendered_model_files(root, "staging"), 3, dev_id)
    assert {env: rendered_model_files(root, env) for env in ("dev", "prod")} == untouched
    assert release_id(root, "staging") == dev_id
    assert mlops(root, "render", "--check").exit_code == 0, "promote leaves the tree exactly as render would"
    commit_all(root, "promote churn to staging")  # merged

    prod_before = rendered_model_files(root, "prod")
    result = mlops(root, "promote", "churn", "--from", "staging", "--to", "prod", "--no-git")
    assert result.exit_code == 0, result.output
    assert (root / spec_path("prod")).read_text() == spec_text("prod", 3)
    assert set(changed_files(root)) <= model_paths("prod")
    assert_only_release_changed(prod_before, rendered_model_files(root, "prod"), 3, dev_id)
    assert mlops(root, "render", "--check").exit_code == 0  # renders and validates every manifest


def test_with_rollout_copies_the_candidate_and_traffic(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3, canary_block(4, 20)),
                                          "staging": spec_text("staging", 2), "prod": spec_text("prod", 1)})
    result = mlops(root, "promote", "churn", "--from", "dev", "--to", "staging", "--with-rollout", "--no-git")
    assert result.exit_code == 0, result.output
    assert (root / spec_path("staging")).read_text() == spec_text("staging", 3, canary_block(4, 20))
    sdep = load_yaml((root / "environments/staging/rendered/models/churn/seldondeployment.yaml").read_text())
    assert [(p["name"], p["traffic"]) for p in sdep["spec"]["predictors"]] == [("main", 80), ("candidate", 20)]

    # Without --with-rollout only main's release travels; the target keeps its own (here: no) rollout.
    commit_all(root, "merged")
    result = mlops(root, "promote", "churn", "--from", "staging", "--to", "prod", "--no-git")
    assert result.exit_code == 0, result.output
    assert (root / spec_path("prod")).read_text() == spec_text("prod", 3)


def test_first_promotion_creates_the_target_spec(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3)})
    result = mlops(root, "promote", "churn", "--from", "dev", "--to", "staging", "--no-git")
    assert result.exit_code == 0, result.output
    assert "(new in staging)" in result.output
    text = (root / spec_path("staging")).read_text()
    assert text.startswith("# Release spec of churn in staging: generator input.\n# Created by `mlops promote` "
                           "from dev")
    assert text.split("model: churn", 1)[1] == spec_text("dev", 3).split("model: churn", 1)[1]
    assert mlops(root, "render", "--check").exit_code == 0


def test_git_commits_on_a_branch_pushes_and_opens_a_pull_request(tmp_path: Path, github: FakeGitHub) -> None:
    root = build_repo(tmp_path / "repo")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", str(remote))
    git(root, "remote", "add", "origin", str(remote))
    git(root, "push", "--quiet", "origin", "main")
    dev_id = release_id(root, "dev")
    (root / "notes.txt").write_text("someone's unrelated work in progress\n")

    result = mlops(root, "promote", "churn", "--from", "dev", "--to", "staging", "--git", env=github.environ())
    assert result.exit_code == 0, result.output

    branch = f"promote/churn/staging/{dev_id}"
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert (root / spec_path("staging")).read_text() == spec_text("staging", 2), "main is untouched until merged"
    assert changed_files(root) == ["notes.txt"]
    assert git(remote, "rev-parse", f"refs/heads/{branch}").strip() == git(root, "rev-parse", branch).strip()
    files = git(root, "show", "--name-only", "--format=", branch).split()
    assert set(files) <= model_paths("staging") and spec_path("staging") in files
    assert git(root, "show", f"{branch}:{spec_path('staging')}") == spec_text("staging", 3)

    message = git(root, "log", "-1", "--format=%B", branch)
    r = release_values(3)
    assert message.splitlines()[0] == f"Promote churn release {dev_id} from dev to staging"
    for line in (f"release id: {dev_id}", "model version: churn version 3 (MLflow)", f"artifact: {r['artifact_uri']}",
                 f"server image: {r['server_image']}", f"drift image: {r['drift_image']}",
                 f"replaces: release {release_id(root, 'staging')} (churn version 2)"):
        assert line in message.splitlines()

    [request] = github.requests
    assert request["path"] == "/api/v3/repos/acme/gitops/pulls"
    assert request["body"]["head"] == branch and request["body"]["base"] == "main"
    assert request["body"]["title"] == f"Promote churn {dev_id} to staging (version 3, from dev)"
    assert f"server image: {r['server_image']}" in request["body"]["body"]
    assert "pull request #1: https://github.example.com/acme/gitops/pull/1" in result.output

    # Merged: staging now runs it, so staging -> prod may follow; its PR title carries the same release id.
    git(root, "merge", "--quiet", "--ff-only", branch)
    result = mlops(root, "promote", "churn", "--from", "staging", "--to", "prod", "--git", env=github.environ())
    assert result.exit_code == 0, result.output
    assert github.requests[1]["body"]["title"] == f"Promote churn {dev_id} to prod (version 3, from staging)"
    assert "release manager syncs `model-churn-prod`" in github.requests[1]["body"]["body"]


def test_git_without_a_host_commits_locally_and_says_how_to_push(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    result = mlops(root, "promote", "churn", "--from", "dev", "--to", "staging", "--git")
    assert result.exit_code == 0, result.output
    assert "no Git host configured" in result.output and "git push -u origin promote/churn/staging/" in result.output
    assert git(root, "branch", "--list", "promote/*").strip().startswith("promote/churn/staging/")
    assert changed_files(root) == []


def test_failed_commit_leaves_no_trace(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    hook = root / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'render --check failed' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = tree(root)
    result = mlops(root, "promote", "churn", "--from", "dev", "--to", "staging", "--git")
    assert result.exit_code == 7
    assert "render --check failed" in result.output
    assert tree(root) == before
    assert changed_files(root) == []
    assert git(root, "branch", "--list").split() == ["*", "main"]


# --- refusals: clear message, non-zero exit, nothing written ------------------------------------


def refused(root: Path, *args: str, code: int = 2) -> str:
    before = tree(root)
    result = mlops(root, "promote", "churn", *args)
    assert result.exit_code == code, result.output
    assert tree(root) == before, "a refused promotion must write nothing"
    return result.output


def test_refuses_a_release_the_source_does_not_run(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    output = refused(root, "--from", "dev", "--to", "staging", "--release", "0123456789ab")
    assert f"dev runs release {release_id(root, 'dev')} (environments/dev/models/churn.yaml), not 0123456789ab" \
        in output


def test_refuses_the_sources_candidate_and_says_how_to_finish_it(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3, canary_block(4)),
                                          "staging": spec_text("staging", 2)})
    candidate_id = release_id_of(4)
    output = refused(root, "--from", "dev", "--to", "staging", "--release", candidate_id)
    assert f"{candidate_id} is dev's candidate 'candidate'" in output and "--promote-candidate" in output


def test_refuses_a_spec_change_that_was_not_rendered(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    (root / spec_path("dev")).write_text(spec_text("dev", 5))
    commit_all(root, "spec edited by hand, not rendered")
    output = refused(root, "--from", "dev", "--to", "staging")
    assert "the spec is not what dev runs; run mlops render --env dev" in output


def test_refuses_uncommitted_source_changes(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    (root / spec_path("dev")).write_text(spec_text("dev", 5))
    assert mlops(root, "render", "--env", "dev").exit_code == 0
    output = refused(root, "--from", "dev", "--to", "staging", code=7)
    assert "uncommitted changes in environments/dev/" in output and "merge the change to dev first" in output


def test_refuses_images_without_digest_for_staging(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3, pinned=False), "staging": spec_text("staging", 2)})
    output = refused(root, "--from", "dev", "--to", "staging")
    assert "environments/dev/models/churn.yaml: release.server_image: 'ghcr.io/acme/model-server:0.3.0' is not " \
           "pinned by digest, which staging requires" in output
    assert "release.drift_image" in output and "--server-image <repository>@sha256:<digest>" in output


def test_refuses_a_candidate_without_digest_with_rollout(tmp_path: Path) -> None:
    unpinned_canary = canary_block(4).replace(release_values(4)["server_image"], "ghcr.io/acme/model-server:0.4.0")
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3, unpinned_canary),
                                          "staging": spec_text("staging", 2)})
    output = refused(root, "--from", "dev", "--to", "staging", "--with-rollout")
    assert "rollout.candidates[0].release.server_image" in output


def test_refuses_when_the_target_already_runs_the_release(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {e: spec_text(e, 3) for e in ("dev", "staging", "prod")})
    output = refused(root, "--from", "dev", "--to", "staging")
    assert "staging already runs release" in output and "nothing to promote" in output


def test_refuses_when_the_target_runs_it_as_candidate(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3), "staging": spec_text("staging", 2, canary_block(3))})
    output = refused(root, "--from", "dev", "--to", "staging")
    assert "staging runs release" in output and "as its candidate 'candidate'" in output


@pytest.mark.parametrize(("source", "target", "message"), [
    ("dev", "prod", "promote dev to staging first"),
    ("prod", "staging", "use mlops rollback churn --env staging"),
    ("dev", "dev", "--from and --to are both dev"),
    ("dev", "qa", "environment 'qa' does not exist"),
    ("prod", "dev", "use mlops rollback churn --env dev"),
])
def test_refuses_out_of_order_promotions(tmp_path: Path, source: str, target: str, message: str) -> None:
    root = build_repo(tmp_path / "repo")
    assert message in refused(root, "--from", source, "--to", target)


def test_refuses_a_model_the_source_does_not_have(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {"staging": spec_text("staging", 2)})
    assert "environments/dev/models/churn.yaml does not exist" in refused(root, "--from", "dev", "--to", "staging")


def test_dry_run_writes_nothing_and_shows_the_commit_message(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    before = tree(root)
    result = mlops(root, "promote", "churn", "--from", "dev", "--to", "staging", "--dry-run")
    assert result.exit_code == 0, result.output
    assert tree(root) == before
    assert f"would write {spec_path('staging')}" in result.output
    assert f"release id: {release_id(root, 'dev')}" in result.output
    # the diff of the spec and of each rendered file, as `git diff` would show it after the write
    assert f"--- a/{spec_path('staging')}\n+++ b/{spec_path('staging')}" in result.output
    assert "\n-  registry: {name: churn, version: 2}\n" in result.output
    assert "\n+  registry: {name: churn, version: 3}\n" in result.output
    assert "+++ b/environments/staging/rendered/models/churn/seldondeployment.yaml" in result.output
    assert "would promote churn" in result.output and "committed" not in result.output
    assert VERSIONS["dev"] == 3


def test_git_outside_a_repository_is_refused(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    shutil.rmtree(root / ".git")
    output = refused(root, "--from", "dev", "--to", "staging", "--git", code=7)
    assert "is not inside a Git repository" in output
