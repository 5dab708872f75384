"""Detector artifacts: deterministic save, load only at the pinned sha256, never unpickle, score without
alibi-detect. How the service refuses a tampered artifact: test_drift_service_artifacts.py."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from drift_detector import artifacts
from drift_detector.detector import fit
from driftdata import CAT, NUM, categorical_data, fit_cvm, numeric_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cvm_setup():
    return fit_cvm()


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(3)
    ref_n, _ = numeric_data(3, 0.0)
    ref_c, _ = categorical_data(3, False)
    det = fit(np.hstack([ref_n, ref_c]), NUM + CAT, "tabular", p_value=0.02, correction="fdr", window=500)
    path = tmp_path / "detector.npz"
    digest = artifacts.save(det, path)
    return det, path, digest, rng


def test_save_load_round_trip_is_deterministic(saved, tmp_path):
    det, path, digest, rng = saved
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert artifacts.save(det, tmp_path / "again.npz") == digest  # same detector, same bytes
    loaded = artifacts.load(path, digest.upper())
    assert (loaded.method, loaded.correction, loaded.p_value, loaded.window) == ("tabular", "fdr", 0.02, 500)
    assert loaded.features == det.features
    win = np.hstack([numeric_data(8, 0.2)[1], categorical_data(8, True)[1]])
    assert loaded.score(win) == det.score(win)


def test_tampered_artifact_is_refused_before_parsing(saved):
    det, path, digest, _ = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(artifacts.IntegrityError) as err:
        artifacts.load(path, digest)
    message = str(err.value)
    actual = hashlib.sha256(bytes(data)).hexdigest()
    assert str(path) in message and digest in message and actual in message
    with pytest.raises(artifacts.IntegrityError, match="not 64 hex"):
        artifacts.load(path, "abc")


class _Boom:
    """Unpickling this would create a marker file: proof that nothing was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_inside_is_refused_even_with_the_right_hash(tmp_path):
    marker = tmp_path / "unpickled"
    raw = tmp_path / "detector.pkl"
    raw.write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(artifacts.FormatError, match="pickle"):
        artifacts.load(raw, artifacts.sha256_file(raw))
    # an .npz whose members are pickled object arrays
    buf = io.BytesIO()
    header = np.frombuffer(json.dumps({"format": artifacts.FORMAT}).encode(), dtype=np.uint8)
    np.savez(buf, header=header, reference=np.array([_Boom(marker)], dtype=object))
    npz = tmp_path / "objects.npz"
    npz.write_bytes(buf.getvalue())
    with pytest.raises(artifacts.FormatError, match="pickle"):
        artifacts.load(npz, artifacts.sha256_file(npz))
    assert not marker.exists()


def test_scoring_a_loaded_detector_needs_no_alibi(saved, tmp_path, cvm_setup):
    _, path, digest, _ = saved
    cvm_path = tmp_path / "cvm.npz"
    cvm_digest = artifacts.save(cvm_setup[1], cvm_path)
    code = f"""
import sys, numpy as np
sys.modules["alibi_detect"] = None  # any import of it fails
from drift_detector.artifacts import load
d = load({str(path)!r}, {digest!r})
d.score(np.zeros((5, d.n_features)))
c = load({str(cvm_path)!r}, {cvm_digest!r})
c.score(np.random.default_rng(0).normal(size=(80, 3)))
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "components", capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
