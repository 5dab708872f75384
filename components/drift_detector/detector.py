"""Drift detection core: fit a detector once, score windows fast. Pure: no I/O, no Kafka, no metrics.

Only numpy and scipy are imported here; alibi-detect (BSL 1.1, optional) is imported lazily and only
when ``backend="alibi"`` is asked for, so the service image can run the built-in backend without it.

Methods (``drift.method`` of the release spec), one module each under :mod:`drift_detector.methods`:

``ks``
    numeric features; per-feature two-sample Kolmogorov-Smirnov test against the reference, p-values
    aggregated with the Bonferroni or FDR (Benjamini-Hochberg) correction (alibi-detect ``KSDrift``).
``chi2``
    categorical features; per-feature Chi² test of independence on the 2 x k table of category
    counts (reference vs window), over the union of categories seen in either (``ChiSquareDrift``).
``tabular``
    KS for numeric and Chi² for categorical features, one correction over all (``TabularDrift``).
``cvm_online``
    numeric features; online Cramér-von Mises (``CVMDriftOnline``): every record advances a stream,
    sliding test windows of ``window_sizes`` are compared with the reference after each record, and
    drift is flagged when the normalised statistic of any feature exceeds the threshold configured
    for the expected run time ``ert`` between false alarms.

Data layout: a window is a float64 array ``(n, n_features)`` in feature order; categorical values are
numeric codes (``inference_log.decode_batch`` gives the category's index, -1 for an unlisted one).

Backends: ``builtin`` is our vectorised numpy/scipy implementation and computes the same statistics
and p-values as alibi-detect (tests/test_drift_methods.py and tests/test_drift_cvm_online.py check 1e-6 agreement). ``alibi`` runs
alibi-detect's own detectors on the same persisted state, for comparison and for the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .methods import alibi_adapter
from .methods.base import (
    BACKENDS,
    CORRECTIONS,
    METHODS,
    DriftResult,
    FeatureSpec,
    check_config,
    default_window_sizes,
)
from .methods.cvm_online import CvmRef, cvm_segment, cvm_window_stats, online_result
from .methods.cvm_thresholds import DEFAULT_N_BOOTSTRAPS, min_bootstraps, simulate_thresholds
from .methods.tabular import TabularReference, offline_result

__all__ = [
    "BACKENDS",
    "CORRECTIONS",
    "METHODS",
    "DriftResult",
    "FeatureSpec",
    "FittedDetector",
    "default_window_sizes",
    "fit",
]


class FittedDetector:
    """A configured detector: the reference data, its configuration and, for ``cvm_online``, the
    configured thresholds. Derived lookup tables are rebuilt on construction (milliseconds), so the
    persisted form stays small and plain (see :mod:`drift_detector.artifacts`).

    ``score`` is pure for the offline methods. For ``cvm_online`` it advances the detector's stream
    (the last ``max(window_sizes) - 1`` records and the time step), as the online method requires;
    keep one instance per stream (model version and predictor) and call :meth:`reset` to start over.
    """

    def __init__(
        self,
        *,
        method: str,
        features: Sequence[FeatureSpec],
        reference: np.ndarray,
        p_value: float = 0.01,
        correction: str = "bonferroni",
        window: int = 1000,
        ert: int = 1000,
        backend: str = "builtin",
        window_sizes: Sequence[int] = (),
        thresholds: np.ndarray | None = None,
        n_bootstraps: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        check_config(method, features, p_value, correction, window, ert, backend)
        reference = np.ascontiguousarray(reference, dtype=np.float64)
        if reference.ndim != 2 or reference.shape[1] != len(features) or reference.shape[0] < 2:
            raise ValueError(
                f"reference must be (n >= 2, {len(features)}) for {len(features)} features, "
                f"got shape {reference.shape}"
            )
        if not np.isfinite(reference).all():
            raise ValueError("reference contains NaN or infinite values")
        reference.setflags(write=False)
        self.method = method
        self.features = tuple(features)
        self.reference = reference
        self.p_value = float(p_value)
        self.correction = correction
        self.window = int(window)
        self.ert = int(ert)
        self.backend = backend
        self.meta = dict(meta or {})
        self.n_bootstraps = int(n_bootstraps)
        self._num = np.array([j for j, f in enumerate(features) if f.kind == "numeric"], dtype=np.intp)
        self._cat = np.array([j for j, f in enumerate(features) if f.kind == "categorical"], dtype=np.intp)
        self._names = [f.name for f in features]
        self._alibi: Any = None
        if method == "cvm_online":
            self.window_sizes = tuple(sorted(int(w) for w in (window_sizes or default_window_sizes(window))))
            if thresholds is None:
                raise ValueError("cvm_online needs its configured thresholds (use fit())")
            thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
            if thresholds.shape[0] != 2 * self.window_sizes[-1] - 1:
                raise ValueError(
                    f"cvm_online thresholds have length {thresholds.shape[0]}, expected "
                    f"{2 * self.window_sizes[-1] - 1} for window sizes {self.window_sizes}"
                )
            thresholds.setflags(write=False)
            self.thresholds = thresholds
            self._cvm = CvmRef.build(reference)
            self.reset()
        else:
            self.window_sizes = ()
            self.thresholds = None
            self._tabular = TabularReference(reference, self._num, self._cat)

    @property
    def n_features(self) -> int:
        """Number of features (columns of a window)."""
        return len(self.features)

    def reset(self) -> None:
        """Forget the online stream (``cvm_online``): the next record is time step 1 again."""
        self._t = 0
        self._tail = np.empty((0, self.n_features))
        self._alibi = None

    def __repr__(self) -> str:
        return (
            f"FittedDetector(method={self.method!r}, backend={self.backend!r}, "
            f"features={len(self.features)}, reference={self.reference.shape[0]} rows)"
        )

    # ----------------------------------------------------------------------------------------------

    def score(self, window: np.ndarray) -> DriftResult:
        """Test one window ``(n, n_features)`` (rows in feature order) against the reference."""
        x = np.asarray(window, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features or x.shape[0] == 0:
            raise ValueError(f"window must be (n >= 1, {self.n_features}), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("window contains NaN or infinite values")
        if self.method == "cvm_online":
            return self._score_cvm_alibi(x) if self.backend == "alibi" else self._score_cvm(x)
        if self.backend == "alibi":
            p, dist = alibi_adapter.score_offline(self._alibi_offline(), x)
        else:
            p, dist = self._tabular.scores(x)
        return offline_result(self._names, p, dist, self.p_value, self.correction)

    def _score_cvm(self, x: np.ndarray) -> DriftResult:
        stream = np.concatenate([self._tail, x]) if self._tail.shape[0] else x
        offset = self._tail.shape[0]
        m = x.shape[0]
        t_global = self._t + np.arange(1, m + 1)  # time step of each new record
        stats = np.full((m, self.n_features), np.nan)
        seg = cvm_segment(self._cvm, stream, self.window_sizes)
        for ws in self.window_sizes:
            full = t_global >= ws
            if not full.any():
                continue
            first = int(np.argmax(full))
            s = cvm_window_stats(self._cvm, seg, offset + first, m - first, ws)
            np.fmax(stats[first:], s, out=stats[first:])
        keep = self.window_sizes[-1] - 1
        self._tail = stream[-keep:].copy() if keep else np.empty((0, self.n_features))
        self._t += m
        idx = np.minimum(t_global - 1, self.thresholds.shape[0] - 1)
        return online_result(self._names, stats, self.thresholds[idx])

    # ----------------------------------------------------------------------------------------------
    # alibi-detect backend (lazy import; BSL 1.1, optional)

    def _alibi_offline(self) -> Any:
        if self._alibi is None:
            self._alibi = alibi_adapter.offline_detector(self.method, self.reference, self.p_value,
                                                         self.correction, self._cat)
        return self._alibi

    def _score_cvm_alibi(self, x: np.ndarray) -> DriftResult:
        online = self._alibi
        if online is None:
            online = self._alibi = alibi_adapter.cvm_from_state(self.reference, self.ert, self.window_sizes,
                                                                self.n_bootstraps, self.thresholds)
        stats, thr = alibi_adapter.score_cvm(online, x, self.n_features)
        self._t += x.shape[0]
        return online_result(self._names, stats, thr)


def fit(
    reference: np.ndarray,
    features: list[FeatureSpec],
    method: str,
    p_value: float = 0.01,
    correction: str = "bonferroni",
    window: int = 1000,
    ert: int = 1000,
    backend: str = "builtin",
    *,
    window_sizes: Sequence[int] | None = None,
    n_bootstraps: int | None = None,
    seed: int | None = None,
) -> FittedDetector:
    """Fit a detector on ``reference`` ``(n_ref, n_features)`` (categorical columns as codes).

    For the offline methods fitting only validates and keeps the reference. For ``cvm_online`` it
    configures the thresholds for ``ert`` and ``window_sizes`` (default :func:`default_window_sizes`)
    by simulating ``n_bootstraps`` null streams (default: 10x the minimum the quantile needs, at least
    ``DEFAULT_N_BOOTSTRAPS``); with ``backend="alibi"`` alibi-detect's own configuration is used.
    This is the expensive step that persistence saves.
    """
    det_kwargs: dict[str, Any] = dict(
        method=method, features=features, p_value=p_value, correction=correction,
        window=window, ert=ert, backend=backend,
    )  # fmt: skip
    check_config(method, features, p_value, correction, window, ert, backend)
    reference = np.asarray(reference, dtype=np.float64)
    if method != "cvm_online":
        det = FittedDetector(reference=reference, **det_kwargs)
        if backend == "alibi":
            det._alibi_offline()  # fail at fit time, not at the first window, if alibi is missing
        return det
    sizes = tuple(sorted({int(w) for w in (window_sizes or default_window_sizes(window))}))
    if sizes[0] < 2:
        raise ValueError(f"window sizes must be at least 2, got {sizes}")
    d = len(features)
    beta = 1 - (1 - 1 / ert) ** (1 / d)
    if n_bootstraps is None:
        # alibi-detect advises 10x the ERT; per feature the target rate is beta, hence 10 / beta.
        n_bootstraps = max(DEFAULT_N_BOOTSTRAPS, 10 * min_bootstraps(beta, 2 * sizes[-1] - sizes[0]))
    if backend == "alibi":
        thresholds = alibi_adapter.configure_cvm(reference, ert, sizes, n_bootstraps, seed)
    else:
        thresholds = simulate_thresholds(reference.shape[0], sizes, ert, d, n_bootstraps, seed)
    return FittedDetector(
        reference=reference, window_sizes=sizes, thresholds=thresholds, n_bootstraps=n_bootstraps, **det_kwargs
    )
