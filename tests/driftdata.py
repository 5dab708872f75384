"""Data and detectors the drift detector's core tests share: generated references and windows."""

from __future__ import annotations

import numpy as np
from drift_detector.detector import FeatureSpec, FittedDetector, fit
from inference_log import UNKNOWN_CATEGORY


def numeric_data(seed: int, shift: float, n_ref: int = 1500, n: int = 400, d: int = 4):
    """Reference and window of ``d`` numeric features, the window shifted by ``shift``; the last is discrete."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n_ref, d))
    win = rng.normal(size=(n, d))
    win[:, 0] += shift
    win[:, 1] *= 1 + shift
    # a discrete feature: ties inside and across the samples
    ref[:, -1] = np.round(ref[:, -1] * 2)
    win[:, -1] = np.round(win[:, -1] * 2)
    return ref, win


def categorical_data(seed: int, shift: bool, n_ref: int = 1500, n: int = 400):
    """Reference and window of the three :data:`CAT` features; a shifted window has an unseen category."""
    rng = np.random.default_rng(seed)
    ref = np.stack([rng.integers(0, 5, n_ref), rng.integers(0, 2, n_ref), rng.choice(4, n_ref, p=[0.7, 0.2, 0.05, 0.05])], axis=1)
    probs = [0.5, 0.2, 0.2, 0.1] if shift else [0.7, 0.2, 0.05, 0.05]
    win = np.stack([rng.integers(0, 5, n), rng.integers(0, 2, n), rng.choice(4, n, p=probs)], axis=1).astype(float)
    if shift:
        win[:7, 0] = UNKNOWN_CATEGORY  # a category the reference never saw
    return ref.astype(float), win


NUM = [FeatureSpec(f"x{i}", "numeric") for i in range(4)]
CAT = [
    FeatureSpec("merchant", "categorical", ["a", "b", "c", "d", "e"]),
    FeatureSpec("present", "categorical", [0, 1]),  # two categories: Yates' correction
    FeatureSpec("channel", "categorical", ["web", "app", "pos", "phone"]),
]


CVM_FEATURES = [FeatureSpec(f"x{i}", "numeric") for i in range(3)]
CVM_SIZES = (10, 30)


def fit_cvm() -> tuple[np.ndarray, FittedDetector]:
    """A continuous reference and a detector whose ERT (records between false alarms) is well above
    the stretches of null data scored below: ERT is counted in records, not windows."""
    rng = np.random.default_rng(11)
    ref = rng.normal(size=(400, 3))
    det = fit(ref, CVM_FEATURES, "cvm_online", window=50, ert=5000, window_sizes=CVM_SIZES, n_bootstraps=60_000, seed=1)
    return ref, det
