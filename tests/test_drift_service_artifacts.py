"""The drift detector refuses to start on a tampered detector artifact, local or on S3 (exit code 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from driftservice import fit_artifact, offline_env, require_service_modules, start_and_fail, write_config

from services import S3Server


@pytest.fixture(autouse=True)
def _service_dependencies() -> None:
    require_service_modules()


# --- tampered artifacts ---------------------------------------------------------------------------


def test_tampered_local_artifact_refuses_to_start(tmp_path: Path) -> None:
    artifact = tmp_path / "detector.npz"
    sha = fit_artifact(artifact)
    config = write_config(tmp_path / "config.yaml", [("main", "1", str(artifact), sha)])
    with artifact.open("ab") as handle:
        handle.write(b"\0")

    code, output, seconds = start_and_fail(offline_env(tmp_path, config))

    assert code == 3, output
    assert "refusing to start" in output and "predictor 'main'" in output, output
    assert f"expects {sha}" in output, output
    assert "Traceback" not in output, output
    assert seconds < 30


def test_tampered_s3_artifact_refuses_to_start(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    uris = {}
    for predictor in ("main", "candidate"):
        artifact = tmp_path / f"{predictor}.npz"
        sha = fit_artifact(artifact)
        body = artifact.read_bytes()
        if predictor == "candidate":
            body = body[:-1] + bytes([body[-1] ^ 1])  # one bit flipped after fitting
        client.put_object(Bucket=bucket, Key=f"1/{predictor}/drift/detector.npz", Body=body)
        uris[predictor] = (f"s3://{bucket}/1/{predictor}/drift/detector.npz", sha)
    config = write_config(tmp_path / "config.yaml", [("main", "1", *uris["main"]), ("candidate", "2", *uris["candidate"])])
    env = {**offline_env(tmp_path, config), **s3_server.env, "DRIFT_S3_ENDPOINT_URL": s3_server.endpoint_url}
    env.pop("AWS_ENDPOINT_URL_S3", None)  # the service must use DRIFT_S3_ENDPOINT_URL

    code, output, _ = start_and_fail(env)

    assert code == 3, output
    assert "refusing to start" in output and "predictor 'candidate'" in output, output
    assert uris["candidate"][1] in output and uris["candidate"][0] in output, output
    assert "loaded detector of predictor 'main'" in output, output  # the intact one loaded from S3
