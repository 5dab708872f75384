"""Golden-file tests: rendered output for each rollout strategy, byte for byte.

Run ``pytest tests/test_golden.py --update-golden`` after an intended template change and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.cli import cli
from helpers import environment, make_repo, model_spec, release

GOLDEN = Path(__file__).parent / "golden"

CASES = {
    "replace-prod": ("prod", model_spec(serving={"replicas": {"min": 3, "max": 6}, "workers": 2},
                                        alerts={"latency_p95_ms": 120, "severity": "critical"})),
    "canary-dev": ("dev", model_spec(rollout={"strategy": "canary", "main_traffic": 80, "candidates": [
        {"name": "canary", "traffic": 20, "release": release(2)}]})),
    "shadow-staging": ("staging", model_spec(rollout={"strategy": "shadow", "candidates": [
        {"name": "shadow", "shadow": True, "release": release(2)}]})),
    "ab-prod": ("prod", model_spec(rollout={"strategy": "ab", "main_traffic": 50, "candidates": [
        {"name": "variant-b", "traffic": 30, "release": release(2)},
        {"name": "variant-c", "traffic": 20, "release": release(3)},
        {"name": "shadow", "shadow": True, "release": release(4)}]})),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_output_matches_golden(tmp_path, case, update_golden):
    env, spec = CASES[case]
    root = make_repo(tmp_path, envs={env: environment(env)}, models={env: {"churn": spec}})
    result = CliRunner().invoke(cli, ["render", "--repo-root", str(root)])
    assert result.exit_code == 0, result.output

    rendered = root / "environments" / env / "rendered"
    actual = {p.relative_to(rendered).as_posix(): p.read_text() for p in sorted(rendered.rglob("*.yaml"))}
    golden_dir = GOLDEN / case
    if update_golden:
        for old in golden_dir.rglob("*.yaml"):
            old.unlink()
        for name, text in actual.items():
            (golden_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (golden_dir / name).write_text(text)
    expected = {p.relative_to(golden_dir).as_posix(): p.read_text() for p in sorted(golden_dir.rglob("*.yaml"))}
    assert expected, f"no golden files for {case}: run pytest --update-golden"
    assert sorted(actual) == sorted(expected)
    for name in expected:
        assert actual[name] == expected[name], f"{case}/{name} differs from golden (review, then --update-golden)"


def test_platform_applications_match_golden(tmp_path, update_golden):
    """The real apps/ pins rendered for prod: every platform Application and manifest, byte for byte."""
    import shutil

    from helpers import REPO

    for folder in ("templates", "schemas", "apps"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    (tmp_path / "components/retrain").mkdir(parents=True)  # the retrain-pipeline component reads prefect.yaml
    shutil.copy(REPO / "components/retrain/prefect.yaml", tmp_path / "components/retrain/prefect.yaml")
    (tmp_path / "environments/prod").mkdir(parents=True)
    shutil.copy(REPO / "environments/prod/environment.yaml", tmp_path / "environments/prod/environment.yaml")
    shutil.copytree(REPO / "environments/prod/secrets", tmp_path / "environments/prod/secrets")
    result = CliRunner().invoke(cli, ["render", "--repo-root", str(tmp_path)])
    assert result.exit_code == 0, result.output

    rendered = tmp_path / "environments/prod/rendered"
    actual = {p.relative_to(rendered).as_posix(): p.read_text() for p in sorted(rendered.rglob("*.yaml"))
              if p.name.startswith("platform-") or "platform/" in p.relative_to(rendered).as_posix()}
    golden_dir = GOLDEN / "platform-prod"
    if update_golden:
        shutil.rmtree(golden_dir, ignore_errors=True)
        for name, text in actual.items():
            (golden_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (golden_dir / name).write_text(text)
    expected = {p.relative_to(golden_dir).as_posix(): p.read_text() for p in sorted(golden_dir.rglob("*.yaml"))}
    assert sorted(actual) == sorted(expected)
    for name in expected:
        assert actual[name] == expected[name], f"platform-prod/{name} differs from golden (review, then --update-golden)"
