"""``python -m drift_detector fit``: the CLI that fits and persists a detector, and what the core imports."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from drift_detector import artifacts
from drift_detector.fit import load_fit_config, main

ROOT = Path(__file__).resolve().parents[1]
CONFIGMAP = ROOT / "environments/dev/rendered/models/fraud-detector/drift-detector-configmap.yaml"


def _rendered_config(tmp_path: Path) -> Path:
    configmap = yaml.safe_load(CONFIGMAP.read_text())
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    return path


def _write_reference_csv(path: Path, rows: int = 300, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cats = ["grocery", "travel", "online", "fuel", "other"]
    lines = ["amount,hour,distance_km,merchant_category,card_present,label"]
    for _ in range(rows):
        lines.append(
            f"{rng.lognormal(3, 1):.2f},{rng.integers(0, 24)},{rng.exponential(10):.3f},"
            f"{cats[rng.integers(0, 5)]},{rng.integers(0, 2)},{rng.integers(0, 2)}"
        )
    path.write_text("\n".join(lines) + "\n")


def test_fit_cli_writes_hash_pinned_artifact(tmp_path, capsys):
    config = _rendered_config(tmp_path)
    assert [f.name for f in load_fit_config(config)["features"]][-1] == "card_present"
    ref = tmp_path / "reference.csv"
    _write_reference_csv(ref)
    out = tmp_path / "artifacts" / "detector.npz"
    assert main(["fit", "--reference", str(ref), "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0] == str(out) and printed[1] == "sha256"
    digest = printed[2]
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (tmp_path / "artifacts" / "detector.npz.sha256").read_text() == f"{digest}  detector.npz\n"
    det = artifacts.load(out, digest)
    assert det.method == "tabular" and det.n_features == 5
    assert sorted(set(det.reference[:, 3])) == [0.0, 1.0, 2.0, 3.0, 4.0]  # category codes
    # the same data fitted again gives the same artifact (reproducible hashes in release specs)
    assert main(["--reference", str(ref), "--config", str(config), "--out", str(tmp_path / "b.npz")]) == 0
    assert capsys.readouterr().out.split()[2] == digest


def test_fit_cli_npz_reference_and_cvm(tmp_path, capsys):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "ref.npz", a=rng.normal(size=200), b=rng.normal(size=200))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"method": "cvm_online", "ert": 50, "window": 20, "features": [
        {"name": "a", "type": "numeric"}, {"name": "b", "type": "numeric"}]}))  # fmt: skip
    out = tmp_path / "d.npz"
    args = ["--reference", str(tmp_path / "ref.npz"), "--config", str(config), "--out", str(out)]
    assert main([*args, "--window-sizes", "5,10", "--n-bootstraps", "5000", "--seed", "3"]) == 0
    det = artifacts.load(out, capsys.readouterr().out.split()[2])
    assert det.method == "cvm_online" and det.window_sizes == (5, 10) and det.thresholds.shape == (19,)


def _bad_amount_in_second_row(text: str) -> str:
    lines = text.splitlines()
    lines[2] = "abc," + lines[2].split(",", 1)[1]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda text: text.replace("distance_km", "distance"), "missing column(s) 'distance_km'"),
        (_bad_amount_in_second_row, "column 'amount' row 3: 'abc' is not a number"),
        (lambda text: text.replace("grocery", "casino", 1), "column 'merchant_category' row"),
    ],
)
def test_fit_cli_bad_reference_names_the_column(tmp_path, capsys, mutate, message):
    config = _rendered_config(tmp_path)
    ref = tmp_path / "reference.csv"
    _write_reference_csv(ref)
    ref.write_text(mutate(ref.read_text()))
    out = tmp_path / "d.npz"
    assert main(["--reference", str(ref), "--config", str(config), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fit: error: ") and message in err, err
    assert not out.exists()


def test_fit_cli_bad_config_and_usage(tmp_path, capsys):
    ref = tmp_path / "reference.csv"
    _write_reference_csv(ref)
    config = tmp_path / "c.yaml"
    config.write_text("method: ks\nfeatures:\n- name: amount\n  type: numeric\n- name: merchant_category\n  type: categorical\n  categories: [a]\n")
    assert main(["--reference", str(ref), "--config", str(config), "--out", str(tmp_path / "d.npz")]) == 1
    assert "numeric features only; categorical: merchant_category" in capsys.readouterr().err
    config.write_text("method: ks\nwindwo: 10\nfeatures: []\n")
    assert main(["--reference", str(ref), "--config", str(config), "--out", str(tmp_path / "d.npz")]) == 1
    assert "unknown keys windwo" in capsys.readouterr().err
    assert main(["--reference", str(ref)]) == 2
    assert "--config" in capsys.readouterr().err


def test_core_imports_without_alibi():
    code = "import sys, drift_detector.detector, drift_detector.artifacts, drift_detector.fit, inference_log; print('alibi_detect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "components", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
