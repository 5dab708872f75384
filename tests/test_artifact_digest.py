"""The artifact digest (components/service_kit/artifact_digest.py): its definition, checked against the
``sha256sum`` pipeline the README gives, on real MLflow model directories and on edge cases."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from service_kit.artifact_digest import ArtifactDigestError, artifact_sha256, main

PIPELINE = "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64"


def shell_digest(folder: Path) -> str:
    """The README's coreutils definition, run by the shell."""
    if not (shutil.which("find") and shutil.which("sha256sum")):
        pytest.fail("GNU find and sha256sum are needed to check the digest's definition")
    return subprocess.run(["bash", "-c", PIPELINE], cwd=folder, check=True, capture_output=True,
                          text=True).stdout.strip()


def mlflow_model(folder: Path) -> Path:
    """A real MLflow sklearn model directory, saved by this venv's MLflow."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    path = folder / "model"
    mlflow.sklearn.save_model(model, str(path), pip_requirements=["scikit-learn"])
    return path


def test_the_digest_is_the_sha256sum_manifest_of_a_real_mlflow_model(tmp_path: Path) -> None:
    model = mlflow_model(tmp_path)
    (model / "code" / "sub dir").mkdir(parents=True)
    (model / "code" / "sub dir" / "é.py").write_text("x = 1\n")  # spaces and non-ASCII in paths
    assert artifact_sha256(model) == shell_digest(model)


def test_any_change_of_bytes_names_or_files_changes_it(tmp_path: Path) -> None:
    model = mlflow_model(tmp_path)
    before = artifact_sha256(model)
    (model / "MLmodel").write_bytes((model / "MLmodel").read_bytes() + b"\n")
    edited = artifact_sha256(model)
    (model / "extra.txt").write_text("")
    added = artifact_sha256(model)
    (model / "extra.txt").rename(model / "other.txt")
    assert len({before, edited, added, artifact_sha256(model)}) == 4
    (model / "empty").mkdir()  # only files count
    assert artifact_sha256(model) == shell_digest(model)


def test_links_empty_and_missing_directories_are_refused(tmp_path: Path) -> None:
    model = mlflow_model(tmp_path)
    (model / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArtifactDigestError, match="link in .* is a symbolic link"):
        artifact_sha256(model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactDigestError, match="holds no files"):
        artifact_sha256(tmp_path / "empty")
    with pytest.raises(ArtifactDigestError, match="is not a directory"):
        artifact_sha256(tmp_path / "missing")


def test_the_command_prints_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = mlflow_model(tmp_path)
    assert main([str(model)]) == 0
    assert capsys.readouterr().out.strip() == shell_digest(model)
    assert main([str(tmp_path / "missing")]) == 3
