"""One test per class of bad input: each names file, line, field and fix, exits non-zero, writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.cli import cli
from helpers import digest, environment, make_repo, model_spec, release, snapshot

SPEC = "environments/{env}/models/churn.yaml"


def run(root: Path, *args: str):
    return CliRunner().invoke(cli, [*args, "--repo-root", str(root)])


def render_fails(root: Path, expected_code: int) -> str:
    """Render with bad input in place: assert the exit code and that the tree did not change."""
    before = snapshot(root)
    result = run(root, "render")
    assert result.exit_code == expected_code, result.output
    assert snapshot(root) == before
    return result.output


def test_unknown_field_names_file_line_and_suggests_the_right_key(tmp_path):
    spec = model_spec()
    spec["servng"] = {"workers": 2}
    root = make_repo(tmp_path, models={"dev": {"churn": spec}})
    output = render_fails(root, 3)
    line = next(i for i, text in enumerate((root / SPEC.format(env="dev")).read_text().splitlines(), 1)
                if text.startswith("servng"))
    assert f"{SPEC.format(env='dev')}:{line}: servng: unknown field" in output
    assert "did you mean 'serving'?" in output


def test_nested_unknown_field_has_its_full_path(tmp_path):
    spec = model_spec()
    spec["release"] = {**release(1), "artifact": "s3://x/y"}
    root = make_repo(tmp_path, models={"dev": {"churn": spec}})
    output = render_fails(root, 3)
    assert "release.artifact: unknown field" in output
    assert "did you mean 'artifact_uri'?" in output


@pytest.mark.parametrize("name", ["Churn_Model", "-churn", "churn-"])
def test_bad_model_name_is_rejected_with_the_dns_rule(tmp_path, name):
    root = make_repo(tmp_path, models={"dev": {name: model_spec(name)}})
    output = render_fails(root, 3)
    assert f"model: {name!r} is not valid" in output
    assert "lowercase letters, digits and '-'" in output


def test_model_name_longer_than_derived_names_allow(tmp_path):
    name = "m" * 41
    root = make_repo(tmp_path, models={"dev": {name: model_spec(name)}})
    output = render_fails(root, 3)
    assert "model: is 41 characters; at most 40" in output


def test_traffic_not_summing_to_100(tmp_path):
    spec = model_spec(rollout={"strategy": "canary", "main_traffic": 80,
                               "candidates": [{"name": "canary", "traffic": 10, "release": release(2)}]})
    root = make_repo(tmp_path, models={"dev": {"churn": spec}})
    output = render_fails(root, 3)
    assert "rollout.main_traffic: traffic sums to 90%" in output
    assert "make main_traffic 90 so the total is 100" in output


def test_candidates_taking_all_traffic(tmp_path):
    spec = model_spec(rollout={"strategy": "ab", "candidates": [
        {"name": "b", "traffic": 60, "release": release(2)}, {"name": "c", "traffic": 40, "release": release(3)}]})
    root = make_repo(tmp_path, models={"dev": {"churn": spec}})
    assert "leaving main 0%" in render_fails(root, 3)


def test_two_shadows(tmp_path):
    spec = model_spec(rollout={"strategy": "shadow", "candidates": [
        {"name": "s1", "shadow": True, "release": release(2)},
        {"name": "s2", "shadow": True, "release": release(3)}]})
    root = make_repo(tmp_path, models={"dev": {"churn": spec}})
    output = render_fails(root, 3)
    assert "rollout.candidates[1].shadow: 2 candidates are shadows; Seldon allows at most one" in output


def test_mutable_image_tag_in_prod(tmp_path):
    spec = model_spec(release=release(1, digest_pinned=False))
    root = make_repo(tmp_path, models={"prod": {"churn": spec}})
    output = render_fails(root, 3)
    assert "release.server_image: 'ghcr.io/acme/model-server:1.0.0' is a mutable tag; prod runs only " \
           "digest-pinned images" in output
    assert "pin it as ghcr.io/acme/model-server@sha256:<digest>" in output
    assert "release.drift_image" in output


def test_mutable_tag_is_fine_in_dev(tmp_path):
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec(release=release(1, digest_pinned=False))}})
    assert run(root, "render").exit_code == 0


def test_prod_environment_cannot_turn_off_digests(tmp_path):
    root = make_repo(tmp_path, envs={"prod": environment("prod", images={"registry": "r", "require_digest": False})})
    output = render_fails(root, 3)
    assert "environments/prod/environment.yaml" in output and "images.require_digest: must be true in prod" in output


def test_missing_artifact(tmp_path):
    rel = release(1)
    del rel["artifact_uri"]
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec(release=rel)}})
    output = render_fails(root, 3)
    assert "release.artifact_uri: required field is missing (fix: add artifact_uri:)" in output


def test_registry_uri_instead_of_artifact(tmp_path):
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec(release={**release(1), "artifact_uri": "models:/churn/1"})}})
    output = render_fails(root, 3)
    assert "MLflow registry URI, which Seldon cannot download" in output and "--mlflow-uri" in output


def test_missing_template_variable(tmp_path):
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec()}})
    template = root / "templates" / "service.yaml.j2"
    template.write_text(template.read_text().replace("names.drift_detector", "names.no_such_name", 1))
    output = render_fails(root, 4)
    assert "templates/service.yaml.j2: uses an undefined variable" in output
    assert "no_such_name" in output


def test_every_problem_is_reported_in_one_run(tmp_path):
    bad = model_spec(owner="Team Growth", release={**release(1), "server_image": "not an image"})
    root = make_repo(tmp_path, models={"dev": {"churn": bad}, "staging": {"churn": model_spec(colour="blue")}})
    output = render_fails(root, 3)
    assert "owner:" in output and "release.server_image:" in output and "colour: unknown field" in output
    assert "environments/dev/" in output and "environments/staging/" in output


def test_invalid_yaml_names_the_line(tmp_path):
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec()}})
    path = root / SPEC.format(env="dev")
    path.write_text(path.read_text() + "drift: [unclosed\n")
    output = render_fails(root, 3)
    assert f"{SPEC.format(env='dev')}:" in output and "not valid YAML" in output


def test_duplicate_keys_are_an_error_not_a_silent_overwrite(tmp_path):
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec()}})
    path = root / SPEC.format(env="dev")
    path.write_text(path.read_text() + "owner: team-other\n")
    assert "duplicate key 'owner'" in render_fails(root, 3)


def test_file_name_must_match_model(tmp_path):
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec("attrition")}})
    assert "model: is 'attrition' but the file is named churn.yaml" in render_fails(root, 3)


def test_drift_method_must_fit_feature_types(tmp_path):
    spec = model_spec()
    spec["drift"] = {**spec["drift"], "method": "ks"}
    root = make_repo(tmp_path, models={"dev": {"churn": spec}})
    assert "drift.method: method ks takes only numeric features" in render_fails(root, 3)


def test_requests_above_limits(tmp_path):
    spec = model_spec(serving={"resources": {"requests": {"cpu": "2", "memory": "1Gi"},
                                             "limits": {"cpu": "1", "memory": "1Gi"}}})
    root = make_repo(tmp_path, models={"dev": {"churn": spec}})
    assert "serving.resources.requests.cpu: request 2 is above limit 1" in render_fails(root, 3)


def test_inherited_default_problem_says_where_it_comes_from(tmp_path):
    env = environment("dev", defaults={"serving": {"replicas": {"min": 1, "max": 2}}})
    spec = model_spec(serving={"replicas": {"min": 4}})
    root = make_repo(tmp_path, envs={"dev": env}, models={"dev": {"churn": spec}})
    assert "serving.replicas: min 4 is above max 2" in render_fails(root, 3)


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_unpinned_model_artifact_in_staging_and_prod(tmp_path, env):
    rel = release(1)
    del rel["artifact_sha256"]
    root = make_repo(tmp_path, models={env: {"churn": model_spec(release=rel)}})
    output = render_fails(root, 3)
    assert (f"release.artifact_sha256: {env} serves only hash-pinned model artifacts, and the release has no "
            "artifact digest") in output
    assert "--artifact-sha256 HEX" in output
    # dev may run an unpinned artifact (a first try), with the images still pinned
    dev = make_repo(tmp_path / "dev", models={"dev": {"churn": model_spec(release=rel)}})
    assert run(dev, "render").exit_code == 0


def test_bad_artifact_sha256(tmp_path):
    rel = release(1)
    rel["artifact_sha256"] = "ABC"
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec(release=rel)}})
    assert "release.artifact_sha256: 'ABC' is not valid" in render_fails(root, 3)


def test_bad_sha256(tmp_path):
    rel = release(1)
    rel["detector"]["sha256"] = "abc"
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec(release=rel)}})
    assert "release.detector.sha256: 'abc' is not valid" in render_fails(root, 3)


def test_generate_model_with_bad_input_writes_nothing(tmp_path):
    # dev requires digests here, so a tag breaks a spec rule (releases enter at dev; staging and prod refuse
    # release options before any rule runs)
    envs = {"dev": environment("dev", images={"registry": "ghcr.io/acme", "require_digest": True})}
    root = make_repo(tmp_path, envs=envs, models={"dev": {"churn": model_spec()}})
    assert run(root, "render").exit_code == 0
    before = snapshot(root)
    result = run(root, "generate-model", "churn", "--env", "dev", "--server-image", "ghcr.io/acme/model-server:2.0")
    assert result.exit_code == 3
    assert "mutable tag" in result.output
    assert snapshot(root) == before
    assert digest("img") in (root / SPEC.format(env="dev")).read_text()


def test_problem_in_an_inherited_default_says_so(tmp_path):
    env = environment("dev", defaults={"serving": {"resources": {"requests": {"cpu": "2", "memory": "1Gi"},
                                                                 "limits": {"cpu": "2", "memory": "1Gi"}}}})
    spec = model_spec(serving={"resources": {"requests": {"cpu": "4", "memory": "1Gi"},
                                             "limits": {"cpu": "2", "memory": "1Gi"}}})
    other = model_spec("upsell")
    other["drift"] = {**other["drift"], "window": 5}
    root = make_repo(tmp_path, envs={"dev": env}, models={"dev": {"churn": spec, "upsell": other}})
    output = render_fails(root, 3)
    assert "churn.yaml:" in output and "serving.resources.requests.cpu: request 4 is above limit 2" in output
    assert "upsell.yaml:" in output and "drift.window" in output


def test_environment_default_out_of_range_names_environment_file(tmp_path):
    env = environment("dev", defaults={"alerts": {"error_rate": 3}})
    root = make_repo(tmp_path, envs={"dev": env}, models={"dev": {"churn": model_spec()}})
    output = render_fails(root, 3)
    assert "environments/dev/environment.yaml:" in output and "defaults.alerts.error_rate" in output


def test_rule_broken_by_an_environment_default_points_there(tmp_path):
    env = environment("dev", defaults={"alerts": {"interval": "15s"}})
    root = make_repo(tmp_path, envs={"dev": env}, models={"dev": {"churn": model_spec()}})
    output = render_fails(root, 3)
    assert ("environments/dev/models/churn.yaml: alerts.interval: 15s is not a positive multiple of 10s, which "
            "Grafana requires (value inherited from environment.yaml defaults)") in output


def test_online_detector_with_too_short_expected_run_time(tmp_path):
    spec = model_spec(drift={"method": "cvm_online", "window": 1000, "ert": 1000,
                             "features": [{"name": "tenure", "type": "numeric"}]})
    root = make_repo(tmp_path, models={"dev": {"churn": spec}})
    output = render_fails(root, 3)
    assert "drift.ert: 1000 counts records; with window 1000 about 63% of windows would raise a false alarm" in output
    assert "set ert to at least 10000" in output
