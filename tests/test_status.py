"""mlops status: releases, versions, rollouts, lag behind dev, stale output, and MLflow aliases checked
against a real MLflow server."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from gitfixtures import (
    build_repo,
    canary_block,
    commit_all,
    mlops,
    release_id_of,
    release_values,
    spec_path,
    spec_text,
)
from services import MlflowServer, free_port


def status_json(root: Path, *args: str) -> list[dict]:
    result = mlops(root, "status", "--output", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["models"]


def by_env(models: list[dict]) -> dict[str, dict]:
    return {m["environment"]: m for m in models}


def test_json_reports_release_version_rollout_and_lag(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3, canary_block(4, 25)),
                                          "staging": spec_text("staging", 3), "prod": spec_text("prod", 1)})
    models = status_json(root)
    assert [(m["environment"], m["model"]) for m in models] == [("dev", "churn"), ("staging", "churn"),
                                                                ("prod", "churn")]
    dev, staging, prod = (by_env(models)[e] for e in ("dev", "staging", "prod"))
    assert dev == {
        "environment": "dev", "model": "churn", "release_id": release_id_of(3), "registered_model": "churn",
        "version": 3, "strategy": "canary", "main_traffic": 75,
        "candidates": [{"name": "candidate", "release_id": release_id_of(4), "version": 4, "traffic": 25,
                        "shadow": False}],
        "rendered_release_id": release_id_of(3), "baseline": None, "mlflow": None,
        "rendered_current": True, "behind_dev": None}
    assert staging["baseline"] == {"environment": "dev", "release_id": release_id_of(3), "version": 3, "state": "same",
                                   "releases_behind": 0}
    assert staging["behind_dev"] is False and staging["strategy"] == "replace" and staging["main_traffic"] == 100
    assert prod["baseline"]["state"] == "behind" and prod["behind_dev"] is True
    assert prod["baseline"]["releases_behind"] == 1  # dev's history holds one release newer than 1: 3
    assert prod["version"] == 1 and prod["release_id"] == release_id_of(1)


def test_ahead_and_differs_and_env_filter(tmp_path: Path) -> None:
    # Same model version as dev, rebuilt drift image: another release, neither older nor newer.
    other_image = spec_text("prod", 3).replace(release_values(3)["drift_image"],
                                               "ghcr.io/acme/drift-detector@sha256:" + "0" * 64)
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3), "staging": spec_text("staging", 4),
                                          "prod": other_image})
    staging = status_json(root, "--env", "staging")
    assert [m["environment"] for m in staging] == ["staging"]
    assert staging[0]["baseline"]["state"] == "ahead" and staging[0]["behind_dev"] is False
    [prod] = status_json(root, "--env", "prod")
    assert prod["baseline"]["state"] == "differs" and prod["behind_dev"] is True


def test_stale_rendered_output_is_flagged(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    (root / spec_path("staging")).write_text(spec_text("staging", 5))
    staging = by_env(status_json(root))["staging"]
    assert staging["release_id"] == release_id_of(5)
    assert staging["rendered_release_id"] == release_id_of(2) and staging["rendered_current"] is False
    table = mlops(root, "status").output
    assert f"{release_id_of(5)} (rendered: {release_id_of(2)}, run mlops render)" in table


def test_table_for_people(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3, canary_block(4)), "prod": spec_text("prod", 1)})
    result = mlops(root, "status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ENV", "MODEL", "RELEASE", "VERSION", "ROLLOUT", "VS", "DEV"]
    assert lines[1].split()[:4] == ["dev", "churn", release_id_of(3), "churn"]
    assert f"canary: main 90%, candidate 10% (v4 {release_id_of(4)})" in lines[1]
    assert lines[2].split()[:3] == ["prod", "churn", release_id_of(1)]
    assert lines[2].endswith(f"behind (dev: v3 {release_id_of(3)})")


@pytest.mark.mlflow
def test_mlflow_aliases_are_checked_against_git(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    name = f"status-{uuid.uuid4().hex[:8]}"
    specs = {env: spec_text(env, version).replace("{name: churn,", f"{{name: {name},")
             for env, version in (("dev", 3), ("staging", 2), ("prod", 1))}
    root = build_repo(tmp_path / "repo", specs)
    client = mlflow_server.client()
    client.create_registered_model(name)
    for i in range(3):
        client.create_model_version(name, f"s3://{mlflow_server.bucket}/{name}/{i}")
    client.set_registered_model_alias(name, "dev", "3")       # what Git deploys in dev
    client.set_registered_model_alias(name, "staging", "1")   # stale: Git deploys 2

    models = by_env(status_json(root, "--mlflow-uri", mlflow_server.tracking_uri))
    assert models["dev"]["mlflow"] == {"alias": "dev", "version": 3, "matches": True}
    assert models["staging"]["mlflow"] == {"alias": "staging", "version": 1, "matches": False}
    assert models["prod"]["mlflow"] == {"alias": "prod", "version": None, "matches": False}

    table = mlops(root, "status", "--mlflow-uri", mlflow_server.tracking_uri).output
    assert "MLFLOW ALIAS" in table.splitlines()[0]
    assert "@dev ok" in table and "@staging -> v1 (sync pending or failed)" in table and "@prod -> unset" in table


@pytest.mark.mlflow
def test_a_model_mlflow_does_not_know_has_no_alias(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3).replace("{name: churn,", "{name: unknown-x9,")})
    [dev] = status_json(root, "--mlflow-uri", mlflow_server.tracking_uri)
    assert dev["mlflow"] == {"alias": "dev", "version": None, "matches": False}


def test_unreachable_mlflow_is_a_registry_error(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3)})
    result = mlops(root, "status", "--mlflow-uri", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 6
    assert "cannot reach MLflow" in result.output


def test_check_fails_when_an_environment_lags_dev_by_more_releases_than_allowed(tmp_path: Path) -> None:
    """dev ran 3, then 7 (4 to 6 never ran there); staging runs 3, prod 1: prod lags by 2 releases, not 6."""
    root = build_repo(tmp_path / "repo", {"dev": spec_text("dev", 3), "staging": spec_text("staging", 3),
                                          "prod": spec_text("prod", 1)})
    (root / spec_path("dev")).write_text(spec_text("dev", 7))
    assert mlops(root, "render", "--env", "dev").exit_code == 0
    commit_all(root, "churn v7 in dev")

    strict = mlops(root, "status", "--check")
    assert strict.exit_code == 1
    assert "churn in prod: runs version 1" in strict.output and "behind by 2 releases (allowed: 0)" in strict.output
    assert "churn in staging: runs version 3" in strict.output and "behind by 1 release (allowed: 0)" in strict.output
    assert mlops(root, "status", "--check", "--max-behind", "2").exit_code == 0
    lenient = mlops(root, "status", "--check", "--max-behind", "1", "--output", "json")
    assert lenient.exit_code == 1
    report = json.loads(lenient.output)
    assert report["ok"] is False and len(report["findings"]) == 1 and "churn in prod" in report["findings"][0]
    assert by_env(report["models"])["prod"]["baseline"]["releases_behind"] == 2

    # Outside Git there is no history to read: the difference of the version numbers.
    shutil.rmtree(root / ".git")
    assert "behind by 6 releases (allowed: 2)" in mlops(root, "status", "--check", "--max-behind", "2").output


def test_check_fails_on_a_spec_whose_output_was_not_rendered(tmp_path: Path) -> None:
    root = build_repo(tmp_path / "repo")
    (root / spec_path("dev")).write_text(spec_text("dev", 4))
    result = mlops(root, "status", "--check", "--env", "dev")
    assert result.exit_code == 1
    assert f"churn in dev: the spec names release {release_id_of(4)} but the rendered output deploys " \
           f"{release_id_of(3)}; run mlops render --env dev" in result.output
