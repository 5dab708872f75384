"""Hostile input cannot crash the CLI, cost the machine, or make it read or write outside the repository:
YAML bombs and deep nesting, huge files, links out of the repository, bytes that are not UTF-8,
characters YAML rewrites, a folder that cannot be written, an unexpected exception, and a run killed in
the middle of a write. Every case exits with its documented code, says where and why, and changes
nothing it should not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import generator.commands.render as render_module
from generator.cli import cli
from generator.spec.errors import ExitCode
from generator.spec.layout import MAX_FILE_BYTES, WRITE_JOURNAL
from generator.spec.yamlio import MAX_DEPTH
from helpers import make_repo, model_spec, snapshot

SPEC = "environments/dev/models/churn.yaml"


def run(root: Path, *args: str):
    return CliRunner().invoke(cli, [*args, "--repo-root", str(root)])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_repo(tmp_path / "repo", models={"dev": {"churn": model_spec()}})
    assert run(root, "render").exit_code == 0
    return root


def refused(root: Path, text: str | bytes, code: ExitCode = ExitCode.SPEC, *args: str) -> str:
    """Write ``text`` as the dev spec, render: refused with ``code``, nothing else changed."""
    spec = root / SPEC
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(root)
    result = run(root, "render", *args)
    assert result.exit_code == code, result.output
    assert snapshot(root) == before
    return result.output


def test_an_alias_bomb_is_refused_at_its_line(repo):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    out = refused(repo, "\n".join(lines) + "\n")
    assert f"{SPEC}:" in out and "expands to more than 250000 nodes" in out


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_500, 100_000])
def test_deep_nesting_is_refused_before_it_recurses(repo, depth):
    out = refused(repo, "model: " + "[" * depth + "]" * depth + "\n")
    assert f"{SPEC}:1: not valid YAML: nesting deeper than {MAX_DEPTH} levels" in out


def test_a_huge_file_is_refused_unread(repo):
    out = refused(repo, "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    assert f"more than the {MAX_FILE_BYTES} the generator reads" in out


def test_bytes_that_are_not_utf8_are_refused_with_their_line(repo):
    out = refused(repo, b"model: churn\nowner: team-\xff\n")
    assert f"{SPEC}:2: is not UTF-8 text (byte 0xff" in out


def test_a_character_yaml_would_rewrite_is_refused(repo):
    text = (repo / SPEC).read_text().replace("artifact_uri: s3://", "artifact_uri: s3://\u0085", 1)
    out = refused(repo, text)
    assert "contains U+0085 (NEXT LINE)" in out and f"{SPEC}:" in out


def test_a_spec_linked_outside_is_refused_and_not_echoed(repo, tmp_path):
    secret = tmp_path / "outside" / "secret.yaml"
    secret.parent.mkdir()
    secret.write_text("model: churn\nowner: TOP-SECRET-VALUE\n")
    (repo / SPEC).unlink()
    (repo / SPEC).symlink_to(secret)
    result = run(repo, "render")
    assert result.exit_code == ExitCode.SPEC
    assert "leads outside the repository" in result.output and "TOP-SECRET-VALUE" not in result.output


def test_a_rendered_file_linked_outside_is_never_printed(repo, tmp_path):
    secret = tmp_path / "environ"
    secret.write_text("AWS_SECRET_ACCESS_KEY=TOP-SECRET-VALUE\n")
    rendered = repo / "environments/dev/rendered/models/churn/seldondeployment.yaml"
    rendered.unlink()
    rendered.symlink_to(secret)
    for args in (["render", "--check"], ["validate"]):
        result = run(repo, *args)
        assert result.exit_code != 0
        assert "TOP-SECRET-VALUE" not in result.output, args
        assert "leads outside the repository" in result.output, args
    assert secret.read_text() == "AWS_SECRET_ACCESS_KEY=TOP-SECRET-VALUE\n"


def test_a_rendered_folder_linked_outside_receives_no_write(repo, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    folder = repo / "environments/dev/rendered/models/churn"
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    result = run(repo, "render")
    assert result.exit_code == ExitCode.SPEC and "leads outside the repository" in result.output
    assert list(outside.iterdir()) == []


def test_a_folder_that_cannot_be_written_changes_nothing(repo):
    (repo / SPEC).write_text((repo / SPEC).read_text().replace("version: 1", "version: 2"))
    folder = repo / "environments/dev/rendered/models/churn"
    before = snapshot(repo)
    # root ignores permission bits; the immutable attribute stops root too
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        result = run(repo, "render")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert result.exit_code == ExitCode.WRITE, result.output
    assert "nothing was changed" in result.output
    assert snapshot(repo) == before
    assert not list(repo.rglob("*.tmp")) and not (repo / WRITE_JOURNAL).exists()


def test_a_missing_repository_is_its_own_exit_code(tmp_path):
    result = CliRunner().invoke(cli, ["validate", "--repo-root", str(tmp_path / "nonexistent")])
    assert result.exit_code == ExitCode.REPOSITORY


def test_an_unexpected_exception_is_one_line_with_its_own_code(repo, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("something impossible")

    monkeypatch.setattr(render_module, "render_all", broken)
    result = CliRunner().invoke(cli, ["render", "--repo-root", str(repo)])
    assert result.exit_code == ExitCode.INTERNAL == 70
    assert "internal error, RuntimeError: something impossible" in result.output
    assert "Traceback" not in result.output and "MLOPS_DEBUG=1" in result.output


KILL_AFTER_RENAMES = textwrap.dedent("""
    # Loaded by Python at start-up (sitecustomize): SIGKILL this process at the Nth os.replace, as an
    # out-of-memory killer or a pulled plug would, in the middle of mlops render's renames.
    import os, signal
    _replace, _count = os.replace, [0]
    def replace(src, dst, *args, **kwargs):
        if not str(dst).endswith(".json"):
            _count[0] += 1
            if _count[0] > int(os.environ["KILL_AFTER_RENAMES"]):
                os.kill(os.getpid(), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)
    os.replace = replace
""")


def test_a_write_killed_midway_is_reported_and_completed(repo, tmp_path):
    # another Kafka address rewrites several files of the model (server, detector, policies)
    env_file = repo / "environments/dev/environment.yaml"
    env = yaml.safe_load(env_file.read_text())
    env["kafka"]["bootstrap_servers"] = "kafka-bootstrap.kafka.svc:9094"
    env_file.write_text(yaml.safe_dump(env))
    planned = run(repo, "render", "--check")
    assert planned.exit_code == ExitCode.CHECK_FAILED and planned.output.count("+++ b/") >= 3
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_AFTER_RENAMES)
    mlops = [str(Path(sys.executable).parent / "mlops")]
    env_vars = {**os.environ, "PYTHONPATH": str(hook), "KILL_AFTER_RENAMES": "1"}
    killed = subprocess.run([*mlops, "render", "--repo-root", str(repo)], env=env_vars, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert (repo / WRITE_JOURNAL).is_file()
    assert list(repo.rglob("*.tmp")), "the kill left staged files, as a real crash would"

    check = run(repo, "render", "--check")
    assert check.exit_code == ExitCode.CHECK_FAILED and "a write was interrupted" in check.output
    status = run(repo, "status")
    assert status.exit_code == ExitCode.CHECK_FAILED and "run `mlops render` to finish it" in status.output

    finished = subprocess.run([*mlops, "render", "--repo-root", str(repo)], capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "completed an interrupted write" in finished.stderr
    assert not (repo / WRITE_JOURNAL).exists() and not list(repo.rglob("*.tmp"))
    assert run(repo, "render", "--check").exit_code == 0

