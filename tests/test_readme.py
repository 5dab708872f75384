"""The README runs as written: every ``mlops`` example in a fresh copy of the repository (unless it says
what it needs), and the Operations section's day as one script, in order."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generator.render.renderer import KAFKA_USER_FILES, MODEL_FILES
from helpers import REPO

README = (REPO / "README.md").read_text()
NEEDS = re.compile(r"#\s*needs (MLflow|the chart repository|the image registries|a release history \(see Operations\))\s*$")
"""What an example may say it needs instead of running here."""
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Release Manager", "GIT_AUTHOR_EMAIL": "rm@example.com",
                "GIT_COMMITTER_NAME": "Release Manager", "GIT_COMMITTER_EMAIL": "rm@example.com"}


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def section(heading: str, until: str) -> str:
    start = README.index(heading)
    return README[start:README.index(until, start)]


def example_commands() -> list[str]:
    """Every ``mlops`` command line in the README's sh blocks outside the Operations day; continuation
    lines joined, synopsis lines (with ``[OPTIONS]``) left out."""
    day = section("## Operations\n", "### In the cluster")
    commands = []
    for block in shell_blocks(README.replace(day, "")):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if line.startswith("mlops ") and "[" not in line:
                commands.append(line)
    return commands


def scratch_clone(root: Path) -> Path:
    """A fresh repository with what this checkout tracks (and would track), committed once."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    env = {**os.environ, **GIT_IDENTITY}
    for args in (["init", "--quiet", "--initial-branch=main"], ["add", "--all"],
                 ["commit", "--quiet", "-m", "fresh clone"]):
        subprocess.run(["git", *args], cwd=root, check=True, env=env, capture_output=True)
    return root


def shell_env() -> dict[str, str]:
    """The venv's mlops first on PATH; no Git host; a git identity for the commits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "GITHUB_"))}
    return {**env, **GIT_IDENTITY, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


def runnable_examples() -> list[str]:
    """The examples that say nothing about what they need: every one of them must run here."""
    return [command for command in example_commands() if "# needs" not in command]


def test_the_examples_are_found_and_every_need_is_a_known_one():
    commands = example_commands()
    assert len(commands) >= 10 and len(runnable_examples()) >= 5
    assert any(c.startswith("mlops promote") for c in runnable_examples())
    assert any(c.startswith("mlops rollback") for c in commands)
    unknown = [c for c in commands if "# needs" in c and not NEEDS.search(c)]
    assert unknown == [], "say MLflow, the chart repository or a release history (see Operations)"


@pytest.mark.parametrize("command", runnable_examples())
def test_every_example_runs_as_written_in_a_fresh_clone(command, tmp_path):
    root = scratch_clone(tmp_path / "clone")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=root, env=shell_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"


def test_the_operations_day_runs_as_written(tmp_path):
    assert shutil.which("jq"), "jq is required (Debian package jq; .ci/run installs it)"
    day = section("## Operations\n", "### In the cluster")
    script = "\n".join(shell_blocks(day))
    root = scratch_clone(tmp_path / "clone")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=root, env=shell_env(),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    out = done.stdout
    # rolled back twice: prod runs version 1 again and never went back to 3
    history = out[out.index("DATE "):]
    rows = history.splitlines()[1:6]
    assert [row.split()[3] for row in rows] == ["rollback", "rollback", "promote", "promote", "promote"]
    assert "churn v1" in rows[0] and rows[0].endswith("running") and "churn v2" in rows[1]
    assert (root / "board.html").read_text().count('data-env="prod"') >= 2
    branches = subprocess.run(["git", "branch", "--no-merged"], cwd=root, capture_output=True, text=True).stdout
    assert branches.strip() == "", "every proposal of the day was approved"


def test_the_per_model_file_table_lists_every_rendered_file():
    table = section("| file in `rendered/models/<model>/` |", "\n\n")
    names = {name for _, name, _ in (*MODEL_FILES, *KAFKA_USER_FILES)}
    listed = {name for name in names if f"`{name}`" in table or (name.startswith("networkpolicy-")
                                                                  and "`networkpolicy-*.yaml`" in table)}
    assert listed == names
