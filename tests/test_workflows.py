"""The repository's .github/ (workflows, CODEOWNERS) and pre-commit hook, checked with real linters.

Workflows are validated with check-jsonschema and its vendored GitHub-workflow schema (offline), every
``run:`` script is linted with ShellCheck (what actionlint does for scripts; actionlint itself has no
wheel that installs here), and the pre-commit hook is run by pre-commit on a copy of the repository.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fakegithub import FakeGitHub
from gitfixtures import build_repo, git, release_id_of
from helpers import REPO, copy_example_repo
from services import service_unavailable

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)


def tool(name: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not found:
        service_unavailable(f"{name} is not installed; install the dev extras (pip install -e '.[dev]')")
    return str(found)


def load_workflow(path: Path) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def run_scripts(doc: dict) -> list[tuple[str, str]]:
    """(job/step name, script) of every run: step."""
    return [(f"{job_id}/{step.get('name') or step['run'].splitlines()[0]}", step["run"])
            for job_id, job in doc["jobs"].items() for step in job.get("steps", []) if "run" in step]


def test_there_are_the_three_workflows() -> None:
    assert [p.name for p in WORKFLOWS] == ["images.yml", "promote.yml", "validate.yml"]


@pytest.mark.parametrize("schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"])
def test_workflows_pass_the_github_workflow_schema(schema: str) -> None:
    done = subprocess.run([tool("check-jsonschema"), "--builtin-schema", schema, *map(str, WORKFLOWS)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text((REPO / ".github/workflows/promote.yml").read_text().replace("runs-on:", "runs_on:"))
    done = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "broken.yml" in done.stdout + done.stderr


def shellcheck(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # Expressions are substituted before the shell sees the script; a plain word stands in for them.
    path = tmp_path / "script.sh"
    path.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + EXPRESSION.sub("EXPR", script))
    return subprocess.run([tool("shellcheck"), "--shell=bash", "--severity=style", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_run_script_passes_shellcheck(workflow: Path, tmp_path: Path) -> None:
    scripts = run_scripts(load_workflow(workflow))
    assert scripts
    for name, script in scripts:
        done = shellcheck(script, tmp_path)
        assert done.returncode == 0, f"{workflow.name}: {name}\n{done.stdout}"


def test_shellcheck_catches_an_unquoted_variable(tmp_path: Path) -> None:
    done = shellcheck('echo "x" > $GITHUB_OUTPUT\nrm -rf $DIR/*\n', tmp_path)
    assert done.returncode == 1 and "SC2086" in done.stdout


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_no_untrusted_input_is_pasted_into_a_script(workflow: Path) -> None:
    """Inputs and event fields reach scripts as environment variables (no script injection)."""
    for name, script in run_scripts(load_workflow(workflow)):
        for expression in EXPRESSION.findall(script):
            assert not re.search(r"inputs\.|github\.event\.|github\.head_ref", expression), f"{name}: {expression}"


PINNED_ACTION = re.compile(r"^\s*(?:- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40}  # v\d+\.\d+\.\d+$")


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_release_noted(workflow: Path) -> None:
    """A tag can be moved to other code; a commit SHA cannot. The comment says which release it is."""
    steps = [step for job in load_workflow(workflow)["jobs"].values() for step in job.get("steps", [])]
    used = [step["uses"] for step in steps if "uses" in step]
    lines = [line for line in workflow.read_text().splitlines() if re.match(r"^\s*(?:- )?uses:", line)]
    assert used and len(lines) == len(used)
    for line in lines:
        assert PINNED_ACTION.match(line), f"{workflow.name}: {line.strip()} (pin the commit SHA, note the release)"


def test_dependabot_updates_the_action_pins() -> None:
    config = REPO / ".github" / "dependabot.yml"
    done = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    updates = yaml.safe_load(config.read_text())["updates"]
    assert {"package-ecosystem": "github-actions", "directory": "/"}.items() <= updates[0].items()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_default_token_is_read_only_and_scripts_fail_on_errors(workflow: Path) -> None:
    doc = load_workflow(workflow)
    assert doc["permissions"] == {"contents": "read"}
    # GitHub runs an explicit `shell: bash` as `bash -eo pipefail`; its default shell has no pipefail.
    assert doc["defaults"]["run"]["shell"] == "bash"


def test_validate_runs_tests_render_check_validate_and_summarises_the_diff() -> None:
    doc = load_workflow(REPO / ".github/workflows/validate.yml")
    assert "pull_request" in doc["on"]
    job = doc["jobs"]["validate"]
    runs = [step.get("run", "") for step in job["steps"]]
    order = [next(i for i, r in enumerate(runs) if needle in r)
             for needle in ("make test", "mlops render --check", "mlops validate", "GITHUB_STEP_SUMMARY")]
    assert order == sorted(order)
    assert job["env"]["CI"] == "true"
    assert job["services"]["postgres"]["ports"] == ["5432:5432"]
    assert "git diff --stat" in runs[order[-1]]
    assert "mlops status --output markdown" in runs[order[-1]]  # the promotion board, in the run's summary


def test_promote_is_dispatched_and_gated_by_the_target_environment() -> None:
    doc = load_workflow(REPO / ".github/workflows/promote.yml")
    inputs = doc["on"]["workflow_dispatch"]["inputs"]
    assert {"model", "from", "to"} <= set(inputs)
    environments = ["dev", "staging", "prod"]
    assert inputs["from"]["options"] == environments[:-1] and inputs["to"]["options"] == environments[1:]
    assert all((REPO / "environments" / env / "environment.yaml").is_file() for env in environments)
    job = doc["jobs"]["promote"]
    assert job["environment"] == "${{ inputs.to }}", "prod's required reviewers apply through the environment"
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    [(_, script)] = [(n, s) for n, s in run_scripts(doc) if "mlops" in s and "promote" in s]
    assert 'args=(promote "$MODEL" --from "$FROM_ENV" --to "$TO_ENV" --git)' in script
    step = next(s for s in job["steps"] if s.get("run") == script)
    assert step["env"]["MODEL"] == "${{ inputs.model }}" and "MLOPS_GIT_TOKEN" in step["env"]


def test_images_builds_every_component_dockerfile_and_prints_digests() -> None:
    doc = load_workflow(REPO / ".github/workflows/images.yml")
    job = doc["jobs"]["image"]
    built = {entry["component"] for entry in job["strategy"]["matrix"]["include"]}
    dockerfiles = {p.parent.name for p in (REPO / "components").glob("*/Dockerfile")}
    assert dockerfiles <= built, f"add {sorted(dockerfiles - built)} to .github/workflows/images.yml"
    assert {"model_server", "drift_detector", "retrain"} <= built
    assert all((REPO / "components" / component).is_dir() for component in built)
    build = next(s for s in job["steps"] if s.get("id") == "build")
    assert build["with"]["file"] == "components/${{ matrix.component }}/Dockerfile"
    assert build["with"]["push"] is True
    digest = job["steps"][-1]
    assert digest["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}" and "@${DIGEST}" in digest["run"]
    assert job["permissions"]["packages"] == "write"


# --- CODEOWNERS -----------------------------------------------------------------------------------


def owners_of(path: str, rules: list[tuple[str, list[str]]]) -> list[str]:
    """GitHub's rule: the last matching pattern wins."""
    found: list[str] = []
    for pattern, owners in rules:
        anchored = pattern.startswith("/")
        body = pattern.lstrip("/")
        if body.endswith("/"):
            matches = fnmatch.fnmatch(path, body + "*") if anchored else f"/{body}" in f"/{path}"
        else:
            matches = fnmatch.fnmatch(path, body) or (not anchored and fnmatch.fnmatch(path.rsplit("/", 1)[-1], body))
        if matches:
            found = owners
    return found


def codeowners() -> list[tuple[str, list[str]]]:
    rules = []
    for line in (REPO / ".github" / "CODEOWNERS").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pattern, *owners = line.split()
            rules.append((pattern, owners))
    return rules


@pytest.mark.parametrize("path", [
    "environments/prod/models/fraud-detector.yaml",
    "environments/prod/rendered/models/fraud-detector/seldondeployment.yaml",
    "environments/prod/rendered/apps/model-fraud-detector.yaml",
    "environments/staging/models/fraud-detector.yaml",
    "environments/staging/rendered/models/fraud-detector/mlflow-alias-job.yaml",
])
def test_release_managers_own_staging_and_prod_specs_and_rendered_output(path: str) -> None:
    assert (REPO / path).is_file()
    assert owners_of(path, codeowners()) == ["@acme/mlops-release-managers"]


def test_codeowners_patterns_match_files_and_owners_are_teams() -> None:
    # What Git would hold (tracked, and new files it does not ignore): not .venv, not the caches of venvs
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for pattern, owners in codeowners():
        assert owners and all(re.fullmatch(r"@[\w-]+/[\w-]+", owner) for owner in owners), pattern
        assert any(owners_of(path, [(pattern, owners)]) for path in files), f"{pattern} matches no file"
    assert "@acme/mlops-release-managers" in owners_of(".github/workflows/promote.yml", codeowners())


# --- pre-commit -----------------------------------------------------------------------------------


def test_pre_commit_config_is_valid() -> None:
    done = subprocess.run([tool("pre-commit"), "validate-config", str(REPO / ".pre-commit-config.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_pre_commit_hook_runs_render_check(tmp_path: Path) -> None:
    root = copy_example_repo(tmp_path / "repo")
    shutil.copy(REPO / ".pre-commit-config.yaml", root / ".pre-commit-config.yaml")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PRE_COMMIT_HOME": str(tmp_path / "cache"),
           "MLOPS_REPO_ROOT": str(root)}

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)

    def hook() -> subprocess.CompletedProcess:
        return subprocess.run([tool("pre-commit"), "run", "--all-files"], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300)

    git("init", "--quiet")
    git("add", "--all")
    done = hook()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mlops render --check" in done.stdout and "Passed" in done.stdout

    rendered = root / "environments/prod/rendered/models/fraud-detector/seldondeployment.yaml"
    rendered.write_text(rendered.read_text() + "# a hand edit\n")
    git("add", "--all")
    done = hook()
    assert done.returncode == 1
    assert "rendered output is stale" in done.stdout


# --- the promote job's script, run for real ------------------------------------------------------


def run_promote_step(root: Path, github: FakeGitHub, summary: Path, **inputs: str) -> subprocess.CompletedProcess:
    """Run promote.yml's `mlops promote --git` step in ``root`` as Actions would (bash -eo pipefail)."""
    doc = load_workflow(REPO / ".github/workflows/promote.yml")
    step = next(s for s in doc["jobs"]["promote"]["steps"] if "mlops" in s.get("run", "") and "args=" in s["run"])
    script = root.parent / "step.sh"
    script.write_text(step["run"])
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(root.parent),
           "GITHUB_REPOSITORY": "acme/gitops", "GITHUB_API_URL": github.url, "GITHUB_STEP_SUMMARY": str(summary),
           "MLOPS_GIT_TOKEN": "workflow-token", "RELEASE_ID": "", "WITH_ROLLOUT": "false", **inputs}
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_promote_step_opens_the_pull_request_and_fails_when_promote_refuses(tmp_path: Path,
                                                                          github: FakeGitHub) -> None:
    root = build_repo(tmp_path / "repo")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", str(remote))
    git(root, "remote", "add", "origin", str(remote))
    summary = tmp_path / "summary.md"

    done = run_promote_step(root, github, summary, MODEL="churn", FROM_ENV="dev", TO_ENV="staging")
    assert done.returncode == 0, done.stdout + done.stderr
    [request] = github.requests
    branch = f"promote/churn/staging/{release_id_of(3)}"
    assert request["path"] == "/api/v3/repos/acme/gitops/pulls"
    assert request["headers"]["Authorization"] == "Bearer workflow-token"
    assert request["body"]["head"] == branch and request["body"]["base"] == "main"
    assert git(remote, "rev-parse", f"refs/heads/{branch}").strip()
    assert git(root, "log", "-1", "--format=%an <%ae>", branch).strip() == (
        "github-actions[bot] <41898282+github-actions[bot]@users.noreply.github.com>")
    assert "pull request #1" in summary.read_text()
    # the promotion board follows in the run's summary: where the release is, and what awaits approval
    board = summary.read_text().split("pull request #1", 1)[1]
    assert "## churn" in board and "```mermaid\nflowchart LR" in board
    assert f'(["promote {release_id_of(3)}: awaiting approval"]) -.-> staging' in board

    # A refusal fails the step although its output goes through tee.
    done = run_promote_step(root, github, summary, MODEL="churn", FROM_ENV="dev", TO_ENV="staging",
                            RELEASE_ID="0123456789ab")
    assert done.returncode == 2
    assert "not 0123456789ab" in done.stderr
    assert len(github.requests) == 1
