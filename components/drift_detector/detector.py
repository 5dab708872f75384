"""Drift detection core: fit a detector once, score windows fast. Pure: no I/O, no Kafka, no metrics.

Only numpy and scipy are imported here; alibi-detect (BSL 1.1, optional) is imported lazily and only
when ``backend="alibi"`` is asked for, so the service image can run the built-in backend without it.

Methods (``drift.method`` of the release spec):

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
and p-values as alibi-detect (tests/test_drift_core.py checks 1e-6 agreement). ``alibi`` runs
alibi-detect's own detectors on the same persisted state, for comparison and for the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats as _st

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

METHODS = ("ks", "chi2", "tabular", "cvm_online")
CORRECTIONS = ("bonferroni", "fdr")
BACKENDS = ("builtin", "alibi")

#: Stream length simulated per bootstrap is 2 * max(window_sizes) - 1 (as in alibi-detect): after that
#: the thresholds no longer depend on time.
DEFAULT_N_BOOTSTRAPS = 50_000


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: ``kind`` is ``numeric`` or ``categorical``; ``categories`` lists the values a
    categorical feature may take (their index is the code in windows)."""

    name: str
    kind: Literal["numeric", "categorical"]
    categories: list | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("numeric", "categorical"):
            raise ValueError(f"feature {self.name!r}: kind must be numeric or categorical, not {self.kind!r}")


@dataclass(frozen=True)
class DriftResult:
    """Outcome of scoring one window.

    ``drift`` is always ``p_value < threshold`` for the offline methods: ``p_value`` is the smallest
    feature p-value and ``threshold`` the level it is compared with after the correction (Bonferroni:
    ``p_value / n_features``; FDR: the largest Benjamini-Hochberg cut-off that was passed, or
    ``q / n_features`` when none was). ``statistic`` is the KS distance or Chi² statistic of that most
    significant feature.

    For ``cvm_online`` there are no p-values (``nan``); ``statistic`` and ``threshold`` are the
    normalised CvM statistic (maximum over window sizes and features) and its threshold at the record
    of the window where it came closest to, or furthest past, the threshold; ``drift`` is true if any
    record of the window crossed. During warm-up (no test window full yet) both are ``nan``.
    """

    drift: bool
    p_value: float
    statistic: float
    threshold: float
    feature_p_values: dict[str, float] = field(default_factory=dict)
    feature_statistics: dict[str, float] = field(default_factory=dict)


def default_window_sizes(window: int) -> tuple[int, ...]:
    """CvM test windows used when none are given: a short one reacts to a large shift within tens of
    records, a longer one sees small shifts; both capped at the service window."""
    return tuple(sorted({max(2, min(window, 20)), max(2, min(window, 100))}))


# --------------------------------------------------------------------------------------------------
# Corrections (alibi-detect's semantics: strict "<" comparisons)


def _correct(p_vals: np.ndarray, p_value: float, correction: str) -> tuple[bool, float]:
    d = p_vals.shape[0]
    if correction == "bonferroni":
        threshold = p_value / d
        return bool((p_vals < threshold).any()), threshold
    # Benjamini-Hochberg: reject when some sorted p_(i) < q * i / d.
    q_thresholds = p_value * np.arange(1, d + 1) / d
    below = np.sort(p_vals) < q_thresholds
    if below.any():
        return True, float(q_thresholds[np.flatnonzero(below).max()])
    return False, float(q_thresholds[0])


# --------------------------------------------------------------------------------------------------
# Built-in two-sample KS, all numeric features of a window at once


def _ks_columns(ref_sorted: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided KS distance and asymptotic p-value per column, equal to ``scipy.stats.ks_2samp(...,
    method="asymp")`` (what alibi-detect calls).

    sup |F_ref - F_win| of two step functions is reached at a sample point. Scanning only the window's
    points is enough: F_win - F_ref peaks at a window point (right limit), F_ref - F_win just before one
    (left limit, i.e. ``#ref < w``), and beyond the last window point it is <= 0. So two searchsorted
    calls of n_window points replace scipy's four over n_ref + n_window points, and the integers
    (counts) are the ones scipy divides, giving identical floats.
    """
    n1 = ref_sorted.shape[0]
    n2, d = window.shape
    w = np.sort(window, axis=0)
    r_right = np.empty((n2, d), dtype=np.int64)
    r_left = np.empty((n2, d), dtype=np.int64)
    for j in range(d):
        r_right[:, j] = np.searchsorted(ref_sorted[:, j], w[:, j], side="right")
        r_left[:, j] = np.searchsorted(ref_sorted[:, j], w[:, j], side="left")
    w_right, w_left = _tie_ranks(w)
    minus = r_right / n1 - w_right / n2  # F_ref - F_win at window points (scipy's cddiffs there)
    plus = r_left / n1 - w_left / n2  # F_ref - F_win just below window points
    min_s = np.clip(-minus.min(axis=0), 0, 1)
    max_s = np.maximum(plus.max(axis=0), 0.0)  # 0.0: the value at the largest point of both samples
    dist = np.where(min_s > max_s, min_s, max_s)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    p = np.clip(_st.kstwo.sf(dist, np.round(en)), 0, 1)
    return dist, p


def _tie_ranks(sorted_cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For columns sorted ascending: ``#values <= v`` and ``#values < v`` at every position (ties share)."""
    n = sorted_cols.shape[0]
    pos = np.arange(n)[:, None]
    new_group = np.ones(sorted_cols.shape, dtype=bool)
    new_group[1:] = sorted_cols[1:] != sorted_cols[:-1]
    end_group = np.ones(sorted_cols.shape, dtype=bool)
    end_group[:-1] = new_group[1:]
    first = np.maximum.accumulate(np.where(new_group, pos, 0), axis=0)
    last = np.minimum.accumulate(np.where(end_group, pos, n - 1)[::-1], axis=0)[::-1]
    return last + 1, first


# --------------------------------------------------------------------------------------------------
# Built-in Chi² on category counts


@dataclass(frozen=True)
class _CatRef:
    values: np.ndarray  # sorted distinct reference values (codes)
    counts: np.ndarray  # reference count of each


def _cat_ref(column: np.ndarray) -> _CatRef:
    values, counts = np.unique(column, return_counts=True)
    return _CatRef(values=values, counts=counts.astype(np.float64))


def _chi2_columns(refs: Sequence[_CatRef], window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chi² statistic and p-value per column, equal to ``scipy.stats.chi2_contingency`` (with Yates'
    correction at one degree of freedom) on the table alibi-detect builds: reference and window
    counts over the union of the reference's and the window's categories."""
    d = len(refs)
    stat = np.zeros(d)
    dof = np.zeros(d)
    for j, ref in enumerate(refs):
        col = window[:, j]
        k = ref.values.shape[0]
        idx = np.searchsorted(ref.values, col)
        known = idx < k
        known[known] = ref.values[idx[known]] == col[known]
        if known.all():
            win = np.bincount(idx, minlength=k).astype(np.float64)
            ref_counts = ref.counts
        else:
            # Categories the reference never saw: extra columns with reference count 0.
            extra, extra_counts = np.unique(col[~known], return_counts=True)
            win = np.concatenate([np.bincount(idx[known], minlength=k), extra_counts]).astype(np.float64)
            ref_counts = np.concatenate([ref.counts, np.zeros(extra.shape[0])])
        # A category of the reference is never empty in both rows, so no expected count is 0.
        observed = np.stack([ref_counts, win])
        total = observed.sum()
        expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
        df = observed.shape[1] - 1
        dof[j] = df
        if df == 0:
            continue  # one category: chi2 = 0, p = 1 (scipy's degenerate case)
        if df == 1:  # Yates' continuity correction, never by more than the difference
            diff = expected - observed
            observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
        stat[j] = ((observed - expected) ** 2 / expected).sum()
    p = np.ones(d)
    some = dof > 0
    if some.any():
        p[some] = _st.chi2.sf(stat[some], dof[some])
    return stat, p


# --------------------------------------------------------------------------------------------------
# Online Cramér-von Mises


def _cvm_normaliser(n: int, ws: int) -> tuple[float, float, float]:
    """(prod, mu, sd) of the CvM normalisation (Anderson 1962, eqs. 3 and 14), as alibi-detect uses."""
    mu = 1 / 6 + 1 / (6 * (n + ws))
    var_num = (n + ws + 1) * (4 * n * ws * (n + ws) - 3 * (n * n + ws * ws) - 2 * n * ws)
    var_denom = 45 * (n + ws) * (n + ws) * 4 * n * ws
    prod = n * ws / ((n + ws) * (n + ws))
    return prod, mu, math.sqrt(var_num / var_denom)


@dataclass(frozen=True)
class _CvmRef:
    """Per-feature functions of the reference that the CvM statistic needs, as lookup tables.

    With ``a_i = F_ref(r_i)``, the reference half of the statistic expands to
    ``sum a_i^2 - (2/ws) sum_w G(w) + (1/ws^2) sum_{w,w'} H(max(w, w'))`` where
    ``G(x) = sum_{r_i >= x} a_i`` and ``H(x) = #{r_i >= x}``; both depend on ``x`` only through
    ``#ref < x``, so a searchsorted per record replaces alibi-detect's n_ref x window comparisons.
    """

    ref_sorted: np.ndarray  # (n, d)
    g_suffix: np.ndarray  # (n + 1, d): G for each possible "#ref < x"
    sum_a2: np.ndarray  # (d,)

    @classmethod
    def build(cls, reference: np.ndarray) -> _CvmRef:
        n, d = reference.shape
        ref_sorted = np.sort(reference, axis=0)
        a = np.empty((n, d))
        for j in range(d):
            a[:, j] = np.searchsorted(ref_sorted[:, j], ref_sorted[:, j], side="right") / n
        g_suffix = np.zeros((n + 1, d))
        g_suffix[:n] = np.cumsum(a[::-1], axis=0)[::-1]
        return cls(ref_sorted=ref_sorted, g_suffix=g_suffix, sum_a2=(a * a).sum(axis=0))


@dataclass(frozen=True)
class _CvmSegment:
    """Per-record lookups of a stretch of the stream, shared by all window sizes."""

    keys: np.ndarray  # (L, d) int codes: same order as the values, ties equal, distinct per feature
    h_of_key: np.ndarray  # H(x) = #ref >= x, per key
    l_of_key: np.ndarray  # L(x) = F_ref(x) = #ref <= x / n, per key
    g_cum: np.ndarray  # (L + 1, d) running sum of G(x) over the records
    l2_cum: np.ndarray  # (L + 1, d) running sum of L(x)^2


def _cvm_segment(ref: _CvmRef, seg: np.ndarray) -> _CvmSegment:
    n, d = ref.ref_sorted.shape
    keys = np.empty(seg.shape, dtype=np.int64)
    g = np.empty(seg.shape)
    h_parts, l_parts = [], []
    offset = 0
    for j in range(d):
        values, inverse = np.unique(seg[:, j], return_inverse=True)
        left = np.searchsorted(ref.ref_sorted[:, j], values, side="left")
        right = np.searchsorted(ref.ref_sorted[:, j], values, side="right")
        inverse = inverse.reshape(-1)
        keys[:, j] = inverse + offset
        g[:, j] = ref.g_suffix[left, j][inverse]
        h_parts.append((n - left).astype(np.float64))
        l_parts.append(right / n)
        offset += values.shape[0]
    l_of_key = np.concatenate(l_parts)
    # Small integer keys sort about 2x faster than floats, and sorting is the bulk of the work.
    keys = keys.astype(np.int16 if offset < np.iinfo(np.int16).max else np.int32)
    zero = np.zeros((1, d))
    return _CvmSegment(
        keys=keys,
        h_of_key=np.concatenate(h_parts),
        l_of_key=l_of_key,
        g_cum=np.concatenate([zero, np.cumsum(g, axis=0)]),
        l2_cum=np.concatenate([zero, np.cumsum(l_of_key[keys] ** 2, axis=0)]),
    )


def _cvm_window_stats(ref: _CvmRef, seg: _CvmSegment, first_end: int, n_ends: int, ws: int) -> np.ndarray:
    """Normalised CvM statistic ``(n_ends, d)`` of the windows of ``ws`` records ending at segment
    positions ``first_end .. first_end + n_ends - 1``.

    Exactly the quantity alibi-detect's ``CVMDriftOnline.score`` computes (sum of squared CDF
    differences over the reference and window points, ties included), for many windows at once: the
    reference half through the G/H lookups of :class:`_CvmRef`, the window half from the sorted window
    (``c_j = #window values <= x_j``, which is ``j`` when there are no ties).
    """
    n = ref.ref_sorted.shape[0]
    lo = first_end - ws + 1
    hi = first_end + n_ends
    sk = np.sort(np.lib.stride_tricks.sliding_window_view(seg.keys[lo:hi], ws, axis=0), axis=-1)
    hs = seg.h_of_key[sk]
    ls = seg.l_of_key[sk]
    j = np.arange(1, ws + 1, dtype=np.float64)
    pair_h = hs @ (2.0 * j - 1.0)  # sum over window pairs of H(max): 2j-1 pairs have the j-th as max
    sum_g = seg.g_cum[lo + ws : hi + 1] - seg.g_cum[lo : hi + 1 - ws]
    sum_l2 = seg.l2_cum[lo + ws : hi + 1] - seg.l2_cum[lo : hi + 1 - ws]
    ties = sk[..., 1:] == sk[..., :-1]
    if ties.any():
        end_group = np.ones(sk.shape, dtype=bool)
        end_group[..., :-1] = ~ties
        pos = np.broadcast_to(np.arange(ws), sk.shape)
        c = np.minimum.accumulate(np.where(end_group, pos, ws - 1)[..., ::-1], axis=-1)[..., ::-1] + 1.0
        sum_lc = (ls * c).sum(axis=-1)
        sum_c2 = (c * c).sum(axis=-1)
    else:
        sum_lc = ls @ j
        sum_c2 = float((j * j).sum())
    ref_part = ref.sum_a2 - (2.0 / ws) * sum_g + pair_h / (ws * ws)
    win_part = sum_l2 - (2.0 / ws) * sum_lc + sum_c2 / (ws * ws)
    prod, mu, sd = _cvm_normaliser(n, ws)
    return ((ref_part + win_part) * prod - mu) / sd


def _min_bootstraps(beta: float, steps: int) -> int:
    # Each step keeps the streams at or below the (1 - beta) quantile, and the quantile of N samples
    # is only defined for N >= 1 / beta: enough must survive all steps (2% slack for the rounding).
    return math.ceil((1 / beta + 1) / (1 - beta) ** steps * 1.02)


def _simulate_thresholds(
    n_ref: int,
    window_sizes: Sequence[int],
    ert: float,
    n_features: int,
    n_bootstraps: int,
    seed: int | None,
    batch_size: int = 1_000,
) -> np.ndarray:
    """Thresholds of the online CvM detector per time step, by the procedure of alibi-detect's
    ``CVMDriftOnline._configure_thresholds`` (Ross & Adams 2012): simulate null streams, take the
    maximum statistic over window sizes, and at each step the (1 - beta) quantile over the streams
    that have not yet alarmed, with ``beta = 1 - (1 - 1/ert) ** (1 / n_features)``.

    The statistic only depends on ranks, so instead of drawing n_ref reference values per stream (and
    comparing all pairs, alibi-detect's O((n_ref + t)^2) per stream) we draw the stream's values and
    the reference counts between them: given the sorted stream, the number of reference values in each
    gap is multinomial in the gap lengths. That is the same joint law, at O(t log t) per stream, so
    fitting a 5,000-row reference takes seconds instead of minutes.
    """
    rng = np.random.default_rng(seed)
    ws_arr = sorted(int(w) for w in window_sizes)
    max_ws, min_ws = ws_arr[-1], ws_arr[0]
    t_max = 2 * max_ws - 1
    beta = 1 - (1 - 1 / ert) ** (1 / n_features)
    needed = _min_bootstraps(beta, t_max - min_ws + 1)
    if n_bootstraps < needed:
        raise ValueError(
            f"n_bootstraps={n_bootstraps} is too few to estimate the {1 - beta:.6g} quantile that "
            f"ert={ert} with {n_features} features needs; use at least {needed} (10x that is better)"
        )
    n = n_ref
    a2 = (n + 1) * (2 * n + 1) / (6 * n)  # sum of (i/n)^2, i = 1..n: continuous data, no ties
    max_stats = np.full((n_bootstraps, t_max), np.nan)
    for start in range(0, n_bootstraps, batch_size):
        b = min(batch_size, n_bootstraps - start)
        u = rng.random((b, t_max))
        order = np.argsort(u, axis=1)
        us = np.take_along_axis(u, order, axis=1)
        gaps = np.diff(us, axis=1, prepend=0.0, append=1.0)
        counts = rng.multinomial(n, gaps)  # reference values in each gap
        below_sorted = np.cumsum(counts[:, :-1], axis=1)  # #ref below each sorted stream value
        below = np.empty_like(below_sorted, dtype=np.int16 if n < np.iinfo(np.int16).max else np.int32)
        np.put_along_axis(below, order, below_sorted, axis=1)
        fb = below.astype(np.float64)  # int16 products would overflow
        g = (n * (n + 1) / 2 - fb * (fb + 1) / 2) / n  # sum of i/n for i > below
        for ws in ws_arr:
            prod, mu, sd = _cvm_normaliser(n, ws)
            win_below = np.sort(np.lib.stride_tricks.sliding_window_view(below, ws, axis=1), axis=-1)
            j = np.arange(1, ws + 1)
            pair_h = (n - win_below) @ (2.0 * j - 1.0)
            sum_g = np.lib.stride_tricks.sliding_window_view(g, ws, axis=1).sum(axis=-1)
            diff = win_below / n - j / ws
            s = a2 - (2.0 / ws) * sum_g + pair_h / (ws * ws) + (diff * diff).sum(axis=-1)
            s = (s * prod - mu) / sd
            part = max_stats[start : start + b, ws - 1 :]
            np.fmax(part, s, out=part)  # max over window sizes; nan until a window is full
    thresholds = np.full(t_max, np.nan)
    alive = max_stats
    for t in range(min_ws - 1, t_max):
        column = alive[:, t]
        if not (1 / column.shape[0] <= 1 - beta <= (column.shape[0] - 1) / column.shape[0]):
            raise ValueError(f"n_bootstraps={n_bootstraps} ran out of streams at step {t}; raise it")
        thr = float(np.quantile(column, 1 - beta))  # "linear" = Hyndman-Fan type 7, as alibi-detect
        alive = alive[column <= thr]
        thresholds[t] = thr
    return thresholds


# --------------------------------------------------------------------------------------------------
# The fitted detector


class FittedDetector:
    """A configured detector: the reference data, its configuration and, for ``cvm_online``, the
    configured thresholds. Derived lookup tables are rebuilt on construction (milliseconds), so the
    persisted form stays small and plain (see :mod:`drift_detector.persistence`).

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
        _check_config(method, features, p_value, correction, window, ert, backend)
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
            self._cvm = _CvmRef.build(reference)
            self.reset()
        else:
            self.window_sizes = ()
            self.thresholds = None
            if self._num.size:
                self._ref_sorted = np.sort(reference[:, self._num], axis=0)
            self._cat_refs = [_cat_ref(reference[:, j]) for j in self._cat]

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
            p, dist = self._score_alibi_offline(x)
        else:
            p = np.empty(self.n_features)
            dist = np.empty(self.n_features)
            if self._num.size:
                dist[self._num], p[self._num] = _ks_columns(self._ref_sorted, x[:, self._num])
            if self._cat.size:
                dist[self._cat], p[self._cat] = _chi2_columns(self._cat_refs, x[:, self._cat])
        return self._offline_result(p, dist)

    def _offline_result(self, p: np.ndarray, dist: np.ndarray) -> DriftResult:
        drift, threshold = _correct(p, self.p_value, self.correction)
        best = int(np.argmin(p))
        return DriftResult(
            drift=drift,
            p_value=float(p[best]),
            statistic=float(dist[best]),
            threshold=float(threshold),
            feature_p_values={n: float(v) for n, v in zip(self._names, p, strict=True)},
            feature_statistics={n: float(v) for n, v in zip(self._names, dist, strict=True)},
        )

    def _score_cvm(self, x: np.ndarray) -> DriftResult:
        stream = np.concatenate([self._tail, x]) if self._tail.shape[0] else x
        offset = self._tail.shape[0]
        m = x.shape[0]
        t_global = self._t + np.arange(1, m + 1)  # time step of each new record
        stats = np.full((m, self.n_features), np.nan)
        seg = _cvm_segment(self._cvm, stream)
        for ws in self.window_sizes:
            full = t_global >= ws
            if not full.any():
                continue
            first = int(np.argmax(full))
            s = _cvm_window_stats(self._cvm, seg, offset + first, m - first, ws)
            np.fmax(stats[first:], s, out=stats[first:])
        keep = self.window_sizes[-1] - 1
        self._tail = stream[-keep:].copy() if keep else np.empty((0, self.n_features))
        self._t += m
        idx = np.minimum(t_global - 1, self.thresholds.shape[0] - 1)
        return self._online_result(stats, self.thresholds[idx])

    def _online_result(self, stats: np.ndarray, thr: np.ndarray) -> DriftResult:
        nan = float("nan")
        per_t = np.fmax.reduce(stats, axis=1)  # max over features, ignoring windows not yet full
        margin = per_t - thr
        finite = np.isfinite(margin)
        if not finite.any():
            return DriftResult(
                drift=False, p_value=nan, statistic=nan, threshold=nan,
                feature_p_values=dict.fromkeys(self._names, nan),
                feature_statistics=dict.fromkeys(self._names, nan),
            )  # fmt: skip
        at = int(np.flatnonzero(finite)[np.argmax(margin[finite])])
        return DriftResult(
            drift=bool((margin[finite] > 0).any()),
            p_value=nan,
            statistic=float(per_t[at]),
            threshold=float(thr[at]),
            feature_p_values=dict.fromkeys(self._names, nan),
            feature_statistics={n: float(v) for n, v in zip(self._names, stats[at], strict=True)},
        )

    # ----------------------------------------------------------------------------------------------
    # alibi-detect backend (lazy import; BSL 1.1, optional)

    def _alibi_offline(self) -> Any:
        if self._alibi is None:
            cd = _import_alibi()
            ref = self.reference.copy()
            if self.method == "ks":
                self._alibi = cd.KSDrift(ref, p_val=self.p_value, correction=self.correction)
            elif self.method == "chi2":
                self._alibi = cd.ChiSquareDrift(ref, p_val=self.p_value, correction=self.correction)
            else:
                cats = {int(j): None for j in self._cat}
                self._alibi = cd.TabularDrift(
                    ref, p_val=self.p_value, correction=self.correction, categories_per_feature=cats or None
                )
        return self._alibi

    def _score_alibi_offline(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._alibi_offline().predict(x, drift_type="batch", return_p_val=True, return_distance=True)
        data = out["data"]
        return np.asarray(data["p_val"], dtype=np.float64), np.asarray(data["distance"], dtype=np.float64)

    def _score_cvm_alibi(self, x: np.ndarray) -> DriftResult:
        det = self._alibi
        if det is None:
            det = self._alibi = _alibi_cvm_from_state(self)
        stats = np.empty((x.shape[0], self.n_features))
        thr = np.empty(x.shape[0])
        for i in range(x.shape[0]):  # alibi-detect's online API takes one record at a time
            out = det.predict(x[i], return_test_stat=True)
            stats[i] = np.fmax.reduce(np.asarray(out["data"]["test_stat"], dtype=np.float64), axis=0)
            thr[i] = float(np.asarray(out["data"]["threshold"]).reshape(-1)[0])
        self._t += x.shape[0]
        return self._online_result(stats, thr)


def _import_alibi() -> Any:
    try:
        from alibi_detect import cd  # noqa: PLC0415 - optional, BSL-licensed, slow to import
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "backend 'alibi' needs alibi-detect (pip install 'alibi-detect>=0.13,<0.14'; BSL 1.1); "
            "the 'builtin' backend needs no extra package"
        ) from exc
    return cd


def _alibi_cvm_from_state(det: FittedDetector) -> Any:
    """An alibi-detect CVMDriftOnline with our persisted thresholds, without re-running its threshold
    simulation (which is what makes alibi-detect's own ``load_detector`` as slow as fitting)."""
    cd = _import_alibi()
    from alibi_detect.cd.base_online import BaseUniDriftOnline  # noqa: PLC0415

    online = cd.CVMDriftOnline.__new__(cd.CVMDriftOnline)
    BaseUniDriftOnline.__init__(
        online,
        x_ref=det.reference.copy(),
        ert=det.ert,
        window_sizes=list(det.window_sizes),
        n_bootstraps=max(det.n_bootstraps, 1),
        verbose=False,
    )
    online.batch_size = 1
    online._initialise_state()
    online.thresholds = np.asarray(det.thresholds).reshape(-1, 1).copy()
    online._configure_ref()
    return online


# --------------------------------------------------------------------------------------------------
# Fitting


def _check_config(
    method: str,
    features: Sequence[FeatureSpec],
    p_value: float,
    correction: str,
    window: int,
    ert: int,
    backend: str,
) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; expected one of {', '.join(CORRECTIONS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if not features:
        raise ValueError("at least one feature is needed")
    if not 0 < p_value < 1:
        raise ValueError(f"p_value must be in (0, 1), got {p_value}")
    if window < 2:
        raise ValueError(f"window must be at least 2, got {window}")
    if ert < 2:
        raise ValueError(f"ert must be at least 2, got {ert}")
    kinds = {f.kind for f in features}
    if method in ("ks", "cvm_online") and kinds != {"numeric"}:
        bad = [f.name for f in features if f.kind != "numeric"]
        raise ValueError(f"method {method} needs numeric features only; categorical: {', '.join(bad)}")
    if method == "chi2" and kinds != {"categorical"}:
        bad = [f.name for f in features if f.kind != "categorical"]
        raise ValueError(f"method chi2 needs categorical features only; numeric: {', '.join(bad)}")


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
    _check_config(method, features, p_value, correction, window, ert, backend)
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
        n_bootstraps = max(DEFAULT_N_BOOTSTRAPS, 10 * _min_bootstraps(beta, 2 * sizes[-1] - sizes[0]))
    if backend == "alibi":
        cd = _import_alibi()
        if seed is not None:
            np.random.seed(seed)  # alibi-detect draws from numpy's global generator
        online = cd.CVMDriftOnline(
            reference, ert=ert, window_sizes=list(sizes), n_bootstraps=n_bootstraps, verbose=False
        )
        thresholds = np.asarray(online.thresholds, dtype=np.float64).reshape(-1)
    else:
        thresholds = _simulate_thresholds(reference.shape[0], sizes, ert, d, n_bootstraps, seed)
    return FittedDetector(
        reference=reference, window_sizes=sizes, thresholds=thresholds, n_bootstraps=n_bootstraps, **det_kwargs
    )
