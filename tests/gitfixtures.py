"""A small GitOps repository under Git in tmp_path: dev, staging and prod each run a different release
of the model ``churn``, with hand-written specs (comments, flow style) as people keep them.

Used by the promote, rollback and status tests.
"""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from generator.cli import cli
from generator.spec.models import Release
from helpers import digest, environment, make_repo

REPLICAS = {"dev": (1, 2), "staging": (2, 4), "prod": (3, 10)}
LATENCY = {"dev": 400, "staging": 300, "prod": 200}
VERSIONS = {"dev": 3, "staging": 2, "prod": 1}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def release_values(version: int, pinned: bool = True) -> dict[str, Any]:
    """Release fields of model version ``version``: every value differs between versions; ``pinned``: images
    by digest and the artifact by ``artifact_sha256`` (as staging and prod require), else tags and no digest."""
    image = (lambda name: f"ghcr.io/acme/{name}@sha256:{digest(f'{name}{version}')}") if pinned else \
        (lambda name: f"ghcr.io/acme/{name}:0.{version}.0")
    return {"version": version, "artifact_uri": f"s3://mlflow-artifacts/3/run{version}/artifacts/model",
            "server_image": image("model-server"), "drift_image": image("drift-detector"),
            "detector_uri": f"s3://mlflow-artifacts/3/run{version}/artifacts/drift/detector.npz",
            "detector_sha256": digest(f"detector{version}"),
            "artifact_sha256": digest(f"model{version}") if pinned else None}


def release_id_of(version: int, pinned: bool = True) -> str:
    """The release id of :func:`release_values` (what rendered labels carry)."""
    r = release_values(version, pinned)
    return Release.model_validate({
        "registry": {"name": "churn", "version": version}, "artifact_uri": r["artifact_uri"],
        "artifact_sha256": r["artifact_sha256"], "server_image": r["server_image"], "drift_image": r["drift_image"],
        "detector": {"uri": r["detector_uri"], "sha256": r["detector_sha256"]}}).release_id


def release_block(version: int, indent: str = "", pinned: bool = True) -> str:
    r = release_values(version, pinned)
    return "\n".join(f"{indent}{line}" for line in [
        f"registry: {{name: churn, version: {r['version']}}}",
        f"artifact_uri: {r['artifact_uri']}",
        *([f"artifact_sha256: {r['artifact_sha256']}"] if r["artifact_sha256"] else []),
        f"server_image: {r['server_image']}",
        f"drift_image: {r['drift_image']}",
        "detector:",
        f"  uri: {r['detector_uri']}",
        f"  sha256: {r['detector_sha256']}",
    ]) + "\n"


def canary_block(version: int, traffic: int = 10) -> str:
    return ("rollout:\n  strategy: canary\n" f"  main_traffic: {100 - traffic}\n  candidates:\n"
            f"    - name: candidate\n      traffic: {traffic}\n      release:\n"
            + release_block(version, "        "))


def spec_text(env: str, version: int, rollout: str = "", pinned: bool = True) -> str:
    """The churn spec of ``env`` running ``version``; everything but the release (and rollout) is the env's own."""
    low, high = REPLICAS[env]
    return (f"# Release spec of churn in {env}: generator input.\n"
            "model: churn\nowner: team-growth\n"
            "release:   # copied as a whole by mlops promote\n"
            + release_block(version, "  ", pinned) + rollout
            + f"serving:\n  replicas: {{min: {low}, max: {high}}}   # {env} capacity\n"
            "drift:\n  method: tabular\n  features:\n"
            "    - {name: tenure, type: numeric}\n"
            "    - {name: plan, type: categorical, categories: [basic, pro]}\n"
            f"alerts:\n  latency_p95_ms: {LATENCY[env]}\n")


def spec_path(env: str) -> str:
    return f"environments/{env}/models/churn.yaml"


def build_repo(root: Path, specs: dict[str, str] | None = None) -> Path:
    """A rendered, committed repository on branch ``main``; ``specs`` maps env to spec text (default: VERSIONS)."""
    make_repo(root, envs={e: environment(e) for e in ("dev", "staging", "prod")})
    for env, text in (specs if specs is not None else {e: spec_text(e, v) for e, v in VERSIONS.items()}).items():
        (root / spec_path(env)).write_text(text)
    rendered = mlops(root, "render")
    assert rendered.exit_code == 0, rendered.output
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "config", "user.name", "Release Manager")
    git(root, "config", "user.email", "rm@example.com")
    git(root, "config", "commit.gpgsign", "false")
    commit_all(root, "initial state")
    return root


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


NO_GIT_HOST = {name: None for name in ("MLOPS_GIT_HOST", "MLOPS_GIT_REPO", "MLOPS_GIT_TOKEN", "MLOPS_GIT_API_URL",
                                         "GITHUB_REPOSITORY", "GITHUB_TOKEN", "GITHUB_API_URL")}
"""Unset for every test run, so a CI runner's own GitHub variables never reach a test."""


def mlops(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``mlops ARGS --repo-root root`` with no Git host configured unless ``env`` configures one."""
    return CliRunner().invoke(cli, [*args, "--repo-root", str(root)], env={**NO_GIT_HOST, **(env or {})})


def tree(root: Path) -> dict[str, bytes]:
    """Every file outside .git with its bytes, to prove a refused command wrote nothing."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts}


def changed_files(root: Path) -> list[str]:
    """Uncommitted changes (paths), from git status."""
    return sorted(line[3:] for line in git(root, "status", "--porcelain", "--untracked-files=all").splitlines())


def changed_lines(old: str, new: str) -> list[str]:
    """The -/+ lines of a unified diff without context."""
    return [line for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("---", "+++"))]


def leaf_changes(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, old, new) of every leaf value that differs between two parsed documents."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in dict.fromkeys([*old, *new])
                for change in leaf_changes(old.get(key), new.get(key), f"{path}.{key}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [change for i, (a, b) in enumerate(zip(old, new, strict=True))
                for change in leaf_changes(a, b, f"{path}[{i}]")]
    return [] if old == new else [(path, old, new)]


def rendered_model_files(root: Path, env: str) -> dict[str, str]:
    """The model's rendered files (its folder and its Application) by path."""
    folder = root / "environments" / env / "rendered"
    paths = [*sorted((folder / "models" / "churn").glob("*.yaml")), folder / "apps" / "model-churn.yaml"]
    return {p.relative_to(root).as_posix(): p.read_text() for p in paths}


def load_yaml(text: str) -> Any:
    return yaml.safe_load(text)
