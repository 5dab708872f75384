"""A CLI that guides: did-you-mean for models and environments, shell completion, dry runs that show the
diff and speak in the conditional, one JSON object per command, refusals for options that would be
silently ignored, and warnings before a likely mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from generator.cli import cli
from generator.spec.errors import ExitCode
from helpers import REPO, copy_example_repo, digest, make_repo, model_spec, snapshot

RELEASE = ["--registry-version", "11", "--artifact-uri", "s3://mlflow-artifacts/1/run11/artifacts/model"]


def run(root: Path, *args: str, **kwargs):
    return CliRunner().invoke(cli, [*args, "--repo-root", str(root)], **kwargs)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """The committed example (dev, staging and prod run fraud-detector); tests that write copy it again."""
    return copy_example_repo(tmp_path_factory.mktemp("example"))


# --- did you mean ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args, hint", [
    (["promote", "fraud-detectr", "--from", "dev", "--to", "staging", "--dry-run"], "did you mean fraud-detector?"),
    (["rollback", "fraud-detectr", "--env", "prod", "--dry-run"], "did you mean fraud-detector?"),
    (["history", "fraud-detectr", "--env", "prod"], "did you mean fraud-detector?"),
    (["status", "--model", "fraud-detectr"], "did you mean fraud-detector?"),
    (["status", "--env", "prdo"], "did you mean prod?"),
    (["render", "--env", "stagin", "--check"], "did you mean staging?"),
    (["promote", "fraud-detector", "--from", "dev", "--to", "stagin", "--dry-run"], "did you mean staging?"),
    (["promote", "fraud-detector", "--from", "dve", "--to", "staging", "--dry-run"], "did you mean dev?"),
    (["render", "--env", "Dev", "--check"], "did you mean dev?"),
    (["status", "--model", "fraud"], "did you mean fraud-detector?"),
    (["generate-model", "fraud-detector", "--env", "prdo", "--traffic", "20"], "did you mean prod?"),
    (["charts", "pull", "mlfow", "--version", "1.0.0"], "did you mean mlflow?"),
])
def test_a_typo_gets_a_suggestion_and_nothing_changes(example, args, hint):
    before = snapshot(example)
    result = run(example, *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert hint in result.output
    assert snapshot(example) == before


def test_generate_model_suggests_the_model_instead_of_steering_to_create_the_typo(example):
    result = run(example, "generate-model", "fraud-detectr", "--env", "dev", "--traffic", "20")
    assert result.exit_code == ExitCode.USAGE
    assert "fraud-detectr.yaml does not exist yet; did you mean fraud-detector?" in result.output


def test_generate_model_outside_dev_suggests_the_model_instead_of_steering_to_create_the_typo(example):
    result = run(example, "generate-model", "fraud-detectr", "--env", "prod", "--traffic", "20")
    assert result.exit_code == ExitCode.USAGE
    assert "environments/prod/models/fraud-detectr.yaml does not exist; did you mean fraud-detector?" in result.output
    assert "mlops generate-model fraud-detectr" not in result.output and "promote fraud-detectr" not in result.output


def test_generate_model_warns_before_creating_a_model_close_to_an_existing_one(tmp_path):
    root = copy_example_repo(tmp_path)
    result = CliRunner().invoke(cli, [
        "generate-model", "fraud-detect0r", "--env", "dev", "--owner", "team-risk", *RELEASE,
        "--server-image", "ghcr.io/acme/model-server:1", "--drift-image", "ghcr.io/acme/drift:1",
        "--detector-uri", "s3://mlflow-artifacts/1/run11/artifacts/drift/detector.npz",
        "--detector-sha256", digest("d"), "--feature", "amount:numeric", "--dry-run", "--repo-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "warning: creating a new model fraud-detect0r; did you mean fraud-detector?" in result.stderr


def test_an_unknown_repository_is_exit_9_not_stale_output(tmp_path):
    result = CliRunner().invoke(cli, ["render", "--check", "--repo-root", str(tmp_path)])
    assert result.exit_code == ExitCode.REPOSITORY == 9
    assert "no environments/<env>/environment.yaml" in result.output


# --- completion -----------------------------------------------------------------------------------


def complete(root: Path, words: str) -> list[str]:
    """What bash completion offers for the last word of ``words`` (click's own completion protocol)."""
    result = CliRunner().invoke(cli, [], prog_name="mlops", env={
        "_MLOPS_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1),
        "MLOPS_REPO_ROOT": str(root)})
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.output.splitlines()]


def test_completion_offers_models_and_environments(example):
    assert complete(example, "mlops promote fr") == ["fraud-detector"]
    assert complete(example, "mlops rollback fraud-detector --env p") == ["prod"]
    assert complete(example, "mlops promote fraud-detector --from dev --to s") == ["staging"]
    assert "history" in complete(example, "mlops hi")


# --- dry runs -------------------------------------------------------------------------------------


def test_generate_model_dry_run_shows_the_diff_and_speaks_in_the_conditional(example):
    before = snapshot(example)
    result = run(example, "generate-model", "fraud-detector", "--env", "dev", "--traffic", "20", "--dry-run")
    assert result.exit_code == 0, result.output
    assert snapshot(example) == before
    out = result.output
    assert "would update environments/dev/models/fraud-detector.yaml" in out
    assert "--- a/environments/dev/models/fraud-detector.yaml" in out
    assert "-  main_traffic: 90\n+  main_traffic: 80" in out and "-      traffic: 10\n+      traffic: 20" in out
    assert "dev: 2 would be written" in out and "updated " not in out and "wrote " not in out


def test_a_dry_run_is_coloured_only_on_a_terminal(example):
    args = ["generate-model", "fraud-detector", "--env", "dev", "--traffic", "20", "--dry-run",
            "--repo-root", str(example)]
    plain = CliRunner().invoke(cli, args)
    coloured = CliRunner().invoke(cli, args, color=True)
    assert "\x1b[" not in plain.output
    assert "\x1b[31m-  main_traffic: 90" in coloured.output and "\x1b[32m+  main_traffic: 80" in coloured.output


# --- JSON -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fields", [
    (["render", "--check"], {"environments", "files", "writes", "deletes", "unchanged", "stale"}),
    (["status"], {"models", "findings"}),
    (["generate-model", "fraud-detector", "--env", "dev", "--traffic", "20", "--dry-run"],
     {"environment", "model", "spec", "writes", "deletes", "unchanged", "validated", "created", "warnings"}),
])
def test_every_command_can_answer_with_one_json_object(example, args, fields):
    result = run(example, *args, "--output", "json")
    report = json.loads(result.output)  # exactly one object, nothing else on stdout
    assert report["schema"] == 1 and report["command"] == args[0]
    assert result.exit_code == 0 and report["ok"] is True, result.output
    assert fields <= set(report)


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += leaf_commands(command, (*prefix, name))
        else:
            found.append(((*prefix, name), command))
    return found


@pytest.mark.parametrize("path, command", leaf_commands(cli), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_takes_output_json(path, command):
    [option] = [p for p in command.params if p.name == "output"]
    assert "json" in option.type.choices, f"mlops {' '.join(path)} has no --output json"


def test_charts_sources_answers_in_json(example):
    result = run(example, "charts", "sources", "--output", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"schema": 1, "command": "charts sources", "ok": True,
                                         "writes": ["vendor/charts/SOURCES.md"]}


def test_a_failure_in_json_is_one_object_with_the_exit_code_and_problems(tmp_path):
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec(owner="Team_Growth")}})
    result = run(root, "render", "--output", "json")
    assert result.exit_code == ExitCode.SPEC
    report = json.loads(result.output)
    assert report["ok"] is False and report["exit_code"] == 3 and report["error"] == "SpecError"
    assert report["problems"][0]["file"] == "environments/dev/models/churn.yaml"
    assert report["problems"][0]["field"] == "owner"


# --- options that used to be ignored --------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--strategy", "replace", "--traffic", "30"], "--traffic does not apply to --strategy replace"),
    (["--promote-candidate", "--traffic", "30"], "--traffic does not apply with --promote-candidate"),
    (["--promote-candidate", "--strategy", "ab"], "--promote-candidate and --strategy ab are two changes"),
    (["--promote-candidate", *RELEASE], "--registry-version, --artifact-uri would be ignored: --promote-candidate"),
    (["--candidate-name", "exp", "--traffic", "30"], "there is no live candidate named 'exp'"),
])
def test_an_option_the_change_would_drop_is_refused_not_ignored(example, args, message):
    before = snapshot(example)
    result = run(example, "generate-model", "fraud-detector", "--env", "dev", *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.output
    assert snapshot(example) == before


@pytest.mark.parametrize("args", [["--strategy", "canary", "--traffic", "20"], ["--strategy", "shadow"],
                                  ["--traffic", "20"], ["--promote-candidate"]])
def test_a_candidate_reaches_staging_only_by_promotion(example, args):
    """Staging runs no rollout: a candidate option names promote --with-rollout, not release options that
    staging refuses."""
    before = snapshot(example)
    result = run(example, "generate-model", "fraud-detector", "--env", "staging", *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert ("environments/staging/models/fraud-detector.yaml has no candidate 'candidate', and candidates reach "
            "staging only by promotion") in result.output
    assert "then mlops promote fraud-detector --from dev --to staging --with-rollout" in result.output
    assert snapshot(example) == before


def test_a_rollout_that_came_by_promotion_is_tuned_and_finished_in_staging(tmp_path):
    root = copy_example_repo(tmp_path)  # dev runs version 8 as a 10% canary next to 7
    assert run(root, "promote", "fraud-detector", "--from", "dev", "--to", "staging", "--with-rollout",
               "--no-git").exit_code == 0
    spec = root / "environments/staging/models/fraud-detector.yaml"
    traffic = run(root, "generate-model", "fraud-detector", "--env", "staging", "--traffic", "30")
    assert traffic.exit_code == 0, traffic.output
    assert yaml.safe_load(spec.read_text())["rollout"]["main_traffic"] == 70
    finished = run(root, "generate-model", "fraud-detector", "--env", "staging", "--promote-candidate")
    assert finished.exit_code == 0, finished.output
    data = yaml.safe_load(spec.read_text())
    assert "rollout" not in data and data["release"]["registry"]["version"] == 8


def test_a_new_spec_with_traffic_is_refused(tmp_path):
    root = make_repo(tmp_path)
    result = run(root, "generate-model", "churn", "--env", "dev", "--owner", "team-growth", *RELEASE, "--traffic",
                 "20", "--server-image", "ghcr.io/acme/model-server:1", "--drift-image", "ghcr.io/acme/drift:1",
                 "--detector-uri", "s3://b/d.npz", "--detector-sha256", digest("d"), "--feature", "x:numeric")
    assert result.exit_code == ExitCode.USAGE
    assert "a new spec starts with strategy replace (main takes all traffic)" in result.output
    assert not (root / "environments/dev/models/churn.yaml").exists()


def test_a_run_that_changes_nothing_says_so(example):
    result = run(example, "generate-model", "fraud-detector", "--env", "dev", "--owner", "team-risk", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "nothing to change in environments/dev/models/fraud-detector.yaml" in result.output
    assert "dev: 0 would be written" in result.output


def test_a_shadow_with_traffic_is_refused(example):
    result = run(example, "generate-model", "fraud-detector", "--env", "dev", "--strategy", "shadow",
                 "--traffic", "30", "--dry-run")
    assert result.exit_code == ExitCode.USAGE
    assert "--traffic does not apply to a shadow" in result.output


def test_a_new_version_that_keeps_an_older_versions_detector_gets_a_warning(example):
    result = run(example, "generate-model", "fraud-detector", "--env", "dev", "--strategy", "canary", *RELEASE,
                 "--dry-run")
    assert result.exit_code == 0, result.output
    # the example's candidate (version 8) had its own detector; version 11 would inherit it
    assert ("warning: candidate candidate (version 11) is watched by the drift detector fitted for version 8"
            in result.stderr)
    json_result = run(example, "generate-model", "fraud-detector", "--env", "dev", "--strategy", "canary",
                      *RELEASE, "--detector-uri", "s3://mlflow-artifacts/1/run11/artifacts/drift/detector.npz",
                      "--detector-sha256", digest("d11"), "--dry-run", "--output", "json")
    assert json.loads(json_result.output)["warnings"] == []


def test_categorical_features_with_their_categories_from_the_cli(tmp_path):
    root = make_repo(tmp_path)
    result = run(root, "generate-model", "churn", "--env", "dev", "--owner", "team-growth",
                 "--registry-version", "1", "--artifact-uri", "s3://b/1/r/artifacts/model",
                 "--server-image", "ghcr.io/acme/model-server:0.1.0", "--drift-image", "ghcr.io/acme/drift:0.1.0",
                 "--detector-uri", "s3://b/1/r/artifacts/drift/detector.npz", "--detector-sha256", digest("d"),
                 "--feature", "tenure:numeric", "--feature", "plan:categorical:basic,pro")
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((root / "environments/dev/models/churn.yaml").read_text())
    assert spec["drift"]["features"] == [{"name": "tenure", "type": "numeric"},
                                         {"name": "plan", "type": "categorical", "categories": ["basic", "pro"]}]
    config = yaml.safe_load((root / "environments/dev/rendered/models/churn/drift-detector-configmap.yaml")
                            .read_text())
    assert "basic" in config["data"]["config.yaml"] and "pro" in config["data"]["config.yaml"]
    bad = run(root, "generate-model", "other", "--env", "dev", "--feature", "x:numeric:a,b")
    assert bad.exit_code == ExitCode.USAGE and "NAME:categorical:CATEGORY,CATEGORY" in bad.output


# --- pipes ----------------------------------------------------------------------------------------


def test_a_reader_that_goes_away_stops_the_output_quietly(example):
    """``mlops ... | head``: no 'internal error', no traceback; 141 as for a program stopped by SIGPIPE."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", "from generator.cli import main; main()", "promote",
                                "fraud-detector", "--from", "staging", "--to", "prod", "--dry-run",
                                "--repo-root", str(example)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # the reader is gone before the first line
    error = process.stderr.read().decode()
    assert process.wait(timeout=120) == ExitCode.PIPE == 141
    assert error == ""


# --- secrets --------------------------------------------------------------------------------------


def test_validate_lists_a_secret_that_nothing_committed_provides(tmp_path, monkeypatch):
    """A sealed credential deleted after rendering (the rendered output is unchanged): ``validate`` names the
    Secret, who needs it and the sealing command, as ``render`` does."""
    monkeypatch.setenv("MLOPS_CACHE_DIR", str(REPO / ".cache" / "mlops"))  # the suite's chart-render cache
    root = copy_example_repo(tmp_path)
    (root / "environments/prod/secrets/models-prod-s3-credentials.yaml").unlink()
    result = run(root, "validate", "--env", "prod")
    assert result.exit_code == ExitCode.VALIDATION, result.output
    assert ("environments/prod/environment.yaml: platform.secrets: Secret models-prod/s3-credentials is needed by "
            "model servers (s3.credentials_secret) but nothing in sealed-secrets provides it") in result.output
    assert "> environments/prod/secrets/models-prod-s3-credentials.yaml" in result.output
