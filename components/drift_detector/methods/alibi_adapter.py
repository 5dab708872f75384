"""The ``alibi`` backend: alibi-detect's own detectors on our persisted state.

alibi-detect is BSL 1.1 and optional: it is imported lazily, only when ``backend="alibi"`` is asked
for, so the service image runs the built-in backend without it. It serves for comparison (the tests
hold the built-in backend to it) and for the benchmarks' baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

_LICENCE_NAMED = False


def import_alibi() -> Any:
    """alibi-detect's ``cd`` module, or a ``RuntimeError`` saying how to install it."""
    try:
        from alibi_detect import cd  # noqa: PLC0415 - optional, BSL-licensed, slow to import
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "backend 'alibi' needs alibi-detect (pip install 'alibi-detect>=0.13,<0.14'; BSL 1.1); "
            "the 'builtin' backend needs no extra package"
        ) from exc
    global _LICENCE_NAMED
    if not _LICENCE_NAMED:  # once per process: the choice of backend, not each detector, is what to flag
        _LICENCE_NAMED = True
        from importlib.metadata import version  # noqa: PLC0415

        logging.getLogger(__name__).warning(
            "backend 'alibi' uses alibi-detect %s, licensed under the Business Source License 1.1 (BSL 1.1): "
            "production use needs a licence from Seldon; the default 'builtin' backend is Apache-2.0",
            version("alibi-detect"))
    return cd


def offline_detector(method: str, reference: np.ndarray, p_value: float, correction: str,
                     categorical: Sequence[int]) -> Any:
    """alibi-detect's ``KSDrift``, ``ChiSquareDrift`` or ``TabularDrift`` on a copy of ``reference``."""
    cd = import_alibi()
    ref = reference.copy()
    if method == "ks":
        return cd.KSDrift(ref, p_val=p_value, correction=correction)
    if method == "chi2":
        return cd.ChiSquareDrift(ref, p_val=p_value, correction=correction)
    cats = {int(j): None for j in categorical}
    return cd.TabularDrift(ref, p_val=p_value, correction=correction, categories_per_feature=cats or None)


def score_offline(detector: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature p-values and distances of the window ``x`` from an :func:`offline_detector`."""
    out = detector.predict(x, drift_type="batch", return_p_val=True, return_distance=True)
    data = out["data"]
    return np.asarray(data["p_val"], dtype=np.float64), np.asarray(data["distance"], dtype=np.float64)


def cvm_from_state(reference: np.ndarray, ert: int, window_sizes: Sequence[int], n_bootstraps: int,
                   thresholds: np.ndarray) -> Any:
    """An alibi-detect CVMDriftOnline with our persisted thresholds, without re-running its threshold
    simulation (which is what makes alibi-detect's own ``load_detector`` as slow as fitting)."""
    cd = import_alibi()
    from alibi_detect.cd.base_online import BaseUniDriftOnline  # noqa: PLC0415

    online = cd.CVMDriftOnline.__new__(cd.CVMDriftOnline)
    BaseUniDriftOnline.__init__(
        online,
        x_ref=reference.copy(),
        ert=ert,
        window_sizes=list(window_sizes),
        n_bootstraps=max(n_bootstraps, 1),
        verbose=False,
    )
    online.batch_size = 1
    online._initialise_state()
    online.thresholds = np.asarray(thresholds).reshape(-1, 1).copy()
    online._configure_ref()
    return online


def score_cvm(online: Any, x: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-record statistics ``(records, features)`` and thresholds of ``x`` from a :func:`cvm_from_state`."""
    stats = np.empty((x.shape[0], n_features))
    thr = np.empty(x.shape[0])
    for i in range(x.shape[0]):  # alibi-detect's online API takes one record at a time
        out = online.predict(x[i], return_test_stat=True)
        stats[i] = np.fmax.reduce(np.asarray(out["data"]["test_stat"], dtype=np.float64), axis=0)
        thr[i] = float(np.asarray(out["data"]["threshold"]).reshape(-1)[0])
    return stats, thr


def configure_cvm(reference: np.ndarray, ert: int, window_sizes: Sequence[int], n_bootstraps: int,
                  seed: int | None) -> np.ndarray:
    """Thresholds from alibi-detect's own ``CVMDriftOnline`` configuration (its full matrix)."""
    cd = import_alibi()
    if seed is not None:
        np.random.seed(seed)  # alibi-detect draws from numpy's global generator
    online = cd.CVMDriftOnline(
        reference, ert=ert, window_sizes=list(window_sizes), n_bootstraps=n_bootstraps, verbose=False
    )
    return np.asarray(online.thresholds, dtype=np.float64).reshape(-1)
