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


def _ks_columns(ref_rows: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided KS distance and asymptotic p-value per column of ``window`` ``(n_window, d)`` against
    ``ref_rows`` ``(d, n_ref)`` (each feature's reference values ascending, one contiguous row per
    feature), equal to ``scipy.stats.ks_2samp(..., method="asymp")`` (what alibi-detect calls).

    sup |F_ref - F_win| of two step functions is reached at a sample point. Scanning only the window's
    points is enough: F_win - F_ref peaks at a window point (right limit), F_ref - F_win just before one
    (left limit, i.e. ``#ref < w``), and beyond the last window point it is <= 0. So one or two
    searchsorted calls of n_window points replace scipy's four over n_ref + n_window points, and the
    integers (counts) are the ones scipy divides, giving identical floats. ``#ref <= w`` needs its own
    search only for a feature where some window value equals a reference value.
    """
    d, n1 = ref_rows.shape
    n2 = window.shape[0]
    w = np.sort(window.T, axis=1)  # (d, n2), contiguous rows
    r_left = np.empty((d, n2), dtype=np.int64)
    for j in range(d):
        r_left[j] = np.searchsorted(ref_rows[j], w[j], side="left")
    equal = np.take_along_axis(ref_rows, np.minimum(r_left, n1 - 1), axis=1) == w
    r_right = r_left
    if equal.any():
        r_right = r_left.copy()
        for j in np.flatnonzero(equal.any(axis=1)):
            r_right[j] = np.searchsorted(ref_rows[j], w[j], side="right")
    w_right, w_left = _tie_ranks(w.T)
    minus = r_right / n1 - w_right.T / n2  # F_ref - F_win at window points (scipy's cddiffs there)
    plus = r_left / n1 - w_left.T / n2  # F_ref - F_win just below window points
    min_s = np.clip(-minus.min(axis=1), 0, 1)
    max_s = np.maximum(plus.max(axis=1), 0.0)  # 0.0: the value at the largest point of both samples
    dist = np.where(min_s > max_s, min_s, max_s)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return dist, _ks_p_values(dist, float(np.round(m * n / (m + n))))


_KS_SF_CACHE: dict[tuple[float, float], float] = {}
_KS_SF_CACHE_LIMIT = 1 << 16


def _ks_p_values(dist: np.ndarray, en: float) -> np.ndarray:
    """``kstwo.sf(dist, en)`` clipped to [0, 1], memoised per exact (distance, n).

    scipy evaluates the distribution element by element (about 0.2 ms each, most of a KS window's
    scoring time), while a distance is a difference of two ECDFs, so few distinct values recur from
    window to window. Keys are the exact floats, so every value is the one scipy returns for them.
    """
    cache = _KS_SF_CACHE
    out = np.empty(dist.shape[0])
    missing = []
    values = dist.tolist()
    for i, value in enumerate(values):
        hit = cache.get((value, en))
        if hit is None:
            missing.append(i)
        else:
            out[i] = hit
    if missing:
        fresh = np.clip(_st.kstwo.sf(dist[missing], en), 0, 1)
        out[missing] = fresh
        if len(cache) + len(missing) > _KS_SF_CACHE_LIMIT:
            cache.clear()
        for i, value in zip(missing, fresh.tolist(), strict=True):
            cache[(values[i], en)] = value
    return out


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

    ref_sorted: np.ndarray  # (d, n): each feature's reference values, ascending
    run_end: np.ndarray  # (d, n): #ref <= ref_sorted[f, p] (where the run of equal values ends)
    g_suffix: np.ndarray  # (d, n + 1): G for each possible "#ref < x"
    sum_a2: np.ndarray  # (d,)

    @classmethod
    def build(cls, reference: np.ndarray) -> _CvmRef:
        n, d = reference.shape
        ref_sorted = np.sort(np.ascontiguousarray(reference.T), axis=1)  # contiguous rows for searchsorted
        run_end = np.empty((d, n), dtype=np.intp)
        for j in range(d):
            run_end[j] = np.searchsorted(ref_sorted[j], ref_sorted[j], side="right")
        a = run_end / n
        g_suffix = np.zeros((d, n + 1))
        g_suffix[:, :n] = np.cumsum(a[:, ::-1], axis=1)[:, ::-1]
        return cls(ref_sorted=ref_sorted, run_end=run_end, g_suffix=g_suffix, sum_a2=(a * a).sum(axis=1))


@dataclass(frozen=True)
class _CvmSegment:
    """Per-record lookups of a stretch of the stream, shared by all window sizes."""

    values: np.ndarray  # (L, d) the records
    h: np.ndarray  # (L, d) H(x) = #ref >= x
    cdf: np.ndarray  # (L, d) L(x) = F_ref(x) = #ref <= x / n
    g: np.ndarray  # (L, d) G(x)
    # Per window size, the pair sums of _pair_max_sums over #ref < x and, only where some record
    # equals a reference value, over #ref <= x (else None: the same).
    pairs: dict[int, tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]]
    # Repeated values: for each pair of consecutive occurrences of one value in a feature, the
    # feature and both positions (empty when the stretch has no repeated value).
    tie_feature: np.ndarray
    tie_first: np.ndarray
    tie_second: np.ndarray


def _cvm_segment(ref: _CvmRef, seg: np.ndarray, window_sizes: Sequence[int]) -> _CvmSegment:
    d, n = ref.ref_sorted.shape
    values = np.ascontiguousarray(seg.T)  # (d, L): features as contiguous rows
    # One sort per feature serves twice: sorted needles make searchsorted about 2x cheaper, and equal
    # neighbours in sorted order are the repeated values. numpy's default argsort is several times
    # faster than a stable one (SIMD where the CPU has it: 0.16 against 0.95 ms per window on
    # AVX-512), and only the order among equal values differs; the tie pairs below need the earlier
    # position first, so only a feature that has a repeated value is sorted again, stably.
    order = np.argsort(values, axis=1)
    ordered = np.take_along_axis(values, order, axis=1)
    repeated = ordered[:, 1:] == ordered[:, :-1]
    if repeated.any():
        tied_rows = np.flatnonzero(repeated.any(axis=1))
        order[tied_rows] = np.argsort(values[tied_rows], axis=1, kind="stable")
    below_sorted = np.empty(ordered.shape, dtype=np.intp)
    for j in range(d):
        below_sorted[j] = np.searchsorted(ref.ref_sorted[j], ordered[j], side="left")
    below = np.empty_like(below_sorted)  # #ref < x
    np.put_along_axis(below, order, below_sorted, axis=1)
    # "#ref <= x" is "#ref < x" unless x is a reference value: then where its run of equal values ends.
    at = np.minimum(below_sorted, n - 1)
    in_ref = np.take_along_axis(ref.ref_sorted, at, axis=1) == ordered
    at_most = below
    if in_ref.any():
        at_most = np.empty_like(below_sorted)
        at_most_sorted = np.where(in_ref, np.take_along_axis(ref.run_end, at, axis=1), below_sorted)
        np.put_along_axis(at_most, order, at_most_sorted, axis=1)
    below_t = np.ascontiguousarray(below.T)
    pairs_below = _pair_max_sums(below_t, window_sizes)
    pairs_at_most = (
        _pair_max_sums(np.ascontiguousarray(at_most.T), window_sizes) if at_most is not below else {}
    )
    tie_feature, tie_at = np.nonzero(repeated)
    return _CvmSegment(
        values=seg,
        h=(n - below_t).astype(np.float64),
        cdf=np.ascontiguousarray((at_most / n).T),
        g=np.ascontiguousarray(np.take_along_axis(ref.g_suffix, below, axis=1).T),
        pairs={ws: (pairs_below[ws], pairs_at_most.get(ws)) for ws in pairs_below},
        tie_feature=tie_feature,
        tie_first=order[tie_feature, tie_at],
        tie_second=order[tie_feature, tie_at + 1],
    )


def _pair_max_sums(keys: np.ndarray, window_sizes: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Sums of ``max(keys[i], keys[k])`` over the pairs ``i < k`` less than ``ws`` apart, per record
    and per window size ``ws``: ``(later, earlier)``, where ``later[k]`` sums the pairs whose later
    member is ``k`` and ``earlier[i]`` those whose earlier member is ``i``. ``keys`` are non-negative
    integers along axis 0 (the stream), any number of columns.

    The pairs of the window ``[s, e]`` are then ``sum(later[:e + 1]) - sum(earlier[:s])``: the pairs
    that end by ``e`` minus those that start before ``s`` (which all end before ``e``). Pairs are
    visited by lag ``k - i``, one vectorised maximum over the whole stretch per lag, O(L x ws) flat
    integer operations (``keys`` is contiguous along the lag axis) instead of sorting every window;
    the lags of a smaller window size are a prefix of a larger one's, so all sizes share the loop.
    """
    sizes = sorted({int(w) for w in window_sizes})
    m = keys.shape[0]
    top = int(keys.max()) if keys.size else 0
    # A record's sum has at most ws - 1 terms: int32 (twice the SIMD lanes of int64) nearly always.
    acc = np.int32 if (sizes[-1] - 1) * top < np.iinfo(np.int32).max else np.int64
    keys = keys.astype(acc, copy=False)
    later, earlier, buf = np.zeros_like(keys), np.zeros_like(keys), np.empty_like(keys)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    done = 1  # lags 1 .. done - 1 are summed
    for ws in sizes:
        for lag in range(done, min(ws, m)):  # no pair is m or more apart
            pair = buf[: m - lag]
            np.maximum(keys[:-lag], keys[lag:], out=pair)
            later[lag:] += pair
            earlier[:-lag] += pair
        done = max(done, ws)
        out[ws] = (later, earlier) if ws == sizes[-1] else (later.copy(), earlier.copy())
    return out


def _cvm_window_stats(ref: _CvmRef, seg: _CvmSegment, first_end: int, n_ends: int, ws: int) -> np.ndarray:
    """Normalised CvM statistic ``(n_ends, d)`` of the windows of ``ws`` records ending at segment
    positions ``first_end .. first_end + n_ends - 1``.

    Exactly the quantity alibi-detect's ``CVMDriftOnline.score`` computes (sum of squared CDF
    differences over the reference and window points, ties included), for many windows at once.
    With ``H``, ``L`` and ``G`` of :class:`_CvmRef` and ``c_w = #window values <= w``:

        reference half = sum a_i^2 - (2/ws) sum_w G(w) + (1/ws^2) sum_{w,w'} H(max(w, w'))
        window half    = sum_w L(w)^2 - (2/ws) sum_w L(w) c_w + (1/ws^2) sum_w c_w^2

    Without repeated values in the window, ``c`` is the rank (``sum c^2 = sum j^2``) and both pair
    sums are over the larger member of each pair: a pair of distinct records contributes
    ``(2/ws^2) H - (2/ws) L`` of its larger one, which is ``2n/ws^2 - (2/ws^2) max(#ref < x)
    - (2/(ws n)) max(#ref <= x)`` (both counts rise with ``x``), so integer pair sums of the two
    counts (:func:`_pair_max_sums`) give it; every record adds ``H/ws^2 - (2/ws) L`` on its own. The
    window sums come from one running sum over the stretch: each record's terms, minus, ``ws`` records
    later, its terms again and the pairs it opened. Windows that do hold a repeated value of a feature
    are scored for that feature from the sorted window instead (:func:`_cvm_tied_window_stats`),
    where ``c`` counts ties.
    """
    n = ref.ref_sorted.shape[1]
    hi = first_end + n_ends
    inv_ws, inv_ws2 = 1.0 / ws, 1.0 / (ws * ws)
    h, cdf = seg.h[:hi], seg.cdf[:hi]
    record = cdf * cdf + inv_ws2 * h - (2.0 * inv_ws) * (seg.g[:hi] + cdf)
    (later, earlier), at_most = seg.pairs[ws]
    if at_most is None:  # the two counts are equal: one sum, both coefficients
        running = record - (2.0 * inv_ws2 + 2.0 / (ws * n)) * later[:hi]
        opened = record[: hi - ws] - (2.0 * inv_ws2 + 2.0 / (ws * n)) * earlier[: hi - ws]
    else:
        running = record - (2.0 * inv_ws2) * later[:hi] - (2.0 / (ws * n)) * at_most[0][:hi]
        opened = (
            record[: hi - ws]
            - (2.0 * inv_ws2) * earlier[: hi - ws]
            - (2.0 / (ws * n)) * at_most[1][: hi - ws]
        )
    running[ws:] -= opened
    n_pairs, sum_j2 = ws * (ws - 1) / 2, ws * (ws + 1) * (2 * ws + 1) / 6
    constant = ref.sum_a2 + (n_pairs * 2.0 * n + sum_j2) * inv_ws2
    raw = np.cumsum(running, axis=0)[first_end:hi] + constant
    tied = _tied_windows(seg, first_end - ws + 1, n_ends, ws)
    if tied is not None:
        starts, features = tied
        raw[starts, features] = _cvm_tied_window_stats(ref, seg, first_end - ws + 1 + starts, features, ws)
    prod, mu, sd = _cvm_normaliser(n, ws)
    return (raw * prod - mu) / sd


def _tied_windows(seg: _CvmSegment, lo: int, n_windows: int, ws: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(window index, feature) of the windows starting at ``lo .. lo + n_windows - 1`` that hold a
    repeated value of that feature, or ``None``. A window holds one iff it holds two consecutive
    occurrences of it: the windows starting in ``[second - ws + 1, first]``."""
    if seg.tie_first.size == 0:
        return None
    close = seg.tie_second - seg.tie_first < ws
    first = np.minimum(seg.tie_first[close], lo + n_windows - 1) - lo
    begin = np.maximum(seg.tie_second[close] - ws + 1, lo) - lo
    feature = seg.tie_feature[close]
    keep = begin <= first
    if not keep.any():
        return None
    marks = np.zeros((n_windows + 1, seg.values.shape[1]), dtype=np.int64)
    np.add.at(marks, (begin[keep], feature[keep]), 1)
    np.add.at(marks, (first[keep] + 1, feature[keep]), -1)
    return np.nonzero(np.cumsum(marks[:-1], axis=0) > 0)


def _cvm_tied_window_stats(
    ref: _CvmRef, seg: _CvmSegment, starts: np.ndarray, features: np.ndarray, ws: int
) -> np.ndarray:
    """Raw CvM statistic of single (window start, feature) pairs, from the sorted window: the general
    formula of :func:`_cvm_window_stats`, with ``c`` the count of window values ``<=`` each value."""
    rows = starts[:, None] + np.arange(ws)
    cols = features[:, None]
    order = np.argsort(seg.values[rows, cols], axis=1, kind="stable")
    rows = np.take_along_axis(rows, order, axis=1)
    sorted_values = seg.values[rows, cols]
    hs, ls = seg.h[rows, cols], seg.cdf[rows, cols]
    j = np.arange(1, ws + 1, dtype=np.float64)
    pair_h = hs @ (2.0 * j - 1.0)  # sum over window pairs of H(max): 2j-1 pairs have the j-th as max
    # c_j = 1 + the last position of the j-th value's tie group
    end_group = np.ones(rows.shape, dtype=bool)
    end_group[:, :-1] = sorted_values[:, 1:] != sorted_values[:, :-1]
    pos = np.broadcast_to(np.arange(ws), rows.shape)
    c = np.minimum.accumulate(np.where(end_group, pos, ws - 1)[:, ::-1], axis=1)[:, ::-1] + 1.0
    ref_part = ref.sum_a2[features] - (2.0 / ws) * seg.g[rows, cols].sum(axis=1) + pair_h / (ws * ws)
    win_part = (ls * ls).sum(axis=1) - (2.0 / ws) * (ls * c).sum(axis=1) + (c * c).sum(axis=1) / (ws * ws)
    return ref_part + win_part


def _min_bootstraps(beta: float, steps: int) -> int:
    # Each step keeps the streams at or below the (1 - beta) quantile, and the quantile of N samples
    # is only defined for N >= 1 / beta: enough must survive all steps (2% slack for the rounding).
    return math.ceil((1 / beta + 1) / (1 - beta) ** steps * 1.02)


def _null_ref_counts(rng: np.random.Generator, n_ref: int, t_max: int, b: int) -> np.ndarray:
    """``(t_max, b)`` int32: for ``b`` simulated null streams of ``t_max`` records, how many of
    ``n_ref`` reference values lie below each record, reference and stream drawn from one continuous law.

    Only ranks matter, and the ranks of the ``n_ref + t_max`` values are a uniformly random order:
    the records' places in the merged order are a uniformly random sequence of distinct integers in
    ``[0, n_ref + t_max)``, and the count below a record is its place minus the number of records
    placed before it. Distinct integers come from drawing with repetition and keeping each stream's
    first ``t_max`` distinct values in drawing order, which is drawing without replacement.
    """
    total = n_ref + t_max
    width = t_max + 8 + 4 * t_max * t_max // total  # about 4x the expected number of repeats
    # 16-bit integers sort by radix in numpy's stable sort, 4x faster than 64-bit ones.
    small = np.int16 if max(total, width) <= np.iinfo(np.int16).max else np.int64
    out = np.empty((b, t_max), dtype=np.int32)
    todo = np.arange(b)
    while todo.size:
        draws = rng.integers(0, total, size=(todo.size, width), dtype=small)
        by_value = np.argsort(draws, axis=1, kind="stable")  # stable: a value's first draw sorts first
        values = np.take_along_axis(draws, by_value, axis=1)
        first = np.ones(draws.shape, dtype=bool)
        first[:, 1:] = values[:, 1:] != values[:, :-1]
        # draw index of each value's first draw (width for repeats); the t_max earliest are the stream
        first_draw = np.where(first, by_value, width).astype(small)
        stream = np.argsort(first_draw, axis=1, kind="stable")[:, :t_max]  # positions in value order
        cut = np.take_along_axis(first_draw, stream[:, -1:], axis=1)
        taken = first_draw <= cut
        below = values - (np.cumsum(taken, axis=1, dtype=np.int32) - 1)  # taken values sorted before
        enough = cut[:, 0] < width
        out[todo[enough]] = np.take_along_axis(below, stream, axis=1)[enough]
        todo = todo[~enough]  # rare: too many repeats; draw those streams again
    return np.ascontiguousarray(out.T)


def _null_stream_stats(below: np.ndarray, n: int, window_sizes: Sequence[int]) -> np.ndarray:
    """Normalised CvM statistic ``(t_max, b)`` of simulated null streams, maximum over the window
    sizes, ``nan`` until the smallest window is full; ``below`` from :func:`_null_ref_counts`.

    The formula of :func:`_cvm_window_stats` for continuous data (no ties, ``a_i = i/n``): with
    ``b`` the reference count below a record, ``H = n - b``, ``L = b/n`` and
    ``G = (n(n+1)/2 - b(b+1)/2)/n``, every pair's ``min(psi)`` is
    ``2n/ws^2 - kappa max(b)`` with ``kappa = 2/ws^2 + 2/(ws n)``, so the pair sums are integer sums
    of ``max(b)`` (:func:`_pair_max_sums`). Window sums come from one running sum: the record's terms
    minus those of the record ``ws`` earlier.
    """
    t_max, b = below.shape
    sizes = sorted(int(w) for w in window_sizes)
    fb = below.astype(np.float64)
    cdf = fb / n
    g_plus_cdf = (n * (n + 1) / 2 - fb * (fb + 1) / 2) / n + cdf
    cdf2 = cdf * cdf
    out = np.full((t_max, b), np.nan)
    pair_sums = _pair_max_sums(below, sizes)
    for ws in sizes:
        later, earlier = pair_sums[ws]
        kappa = 2.0 / (ws * ws) + 2.0 / (ws * n)
        # per record: its diagonal terms and -kappa x the pairs it closes (as the later member)
        record = cdf2 + (n - fb) / (ws * ws) - (2.0 / ws) * g_plus_cdf
        closing = record - kappa * later
        # ... minus, ws records on, its diagonal terms and the pairs it opens (as the earlier member)
        closing[ws:] -= record[:-ws] - kappa * earlier[:-ws]
        constant = (n + 1) * (2 * n + 1) / (6 * n)  # sum of a_i^2 = (i/n)^2, i = 1..n
        constant += ws * (ws - 1) / 2 * (2.0 * n / (ws * ws)) + (ws + 1) * (2 * ws + 1) / (6 * ws)
        raw = np.cumsum(closing, axis=0)[ws - 1 :] + constant  # windows ending at ws - 1 .. t_max - 1
        prod, mu, sd = _cvm_normaliser(n, ws)
        part = out[ws - 1 :]
        np.fmax(part, (raw * prod - mu) / sd, out=part)
    return out


class _UpperTail:
    """The largest ``keep`` simulated statistics per time step, with the stream each came from.

    At a time step the threshold is an upper quantile of the streams still alive, and a stream dies
    when it exceeds a threshold, so both only ever look at the top of each step's column: keeping the
    top ``keep`` per step (enough for the quantile's order statistics plus every stream that can have
    died before) replaces a ``n_bootstraps x t_max`` matrix. Batches of streams are offered; those
    above the current cut-off of their step wait in a buffer that is merged in when it fills.
    """

    def __init__(self, steps: int, keep: int, buffer: int = 1 << 18) -> None:
        self.values = np.full((steps, keep), -np.inf)
        self.streams = np.full((steps, keep), -1, dtype=np.int32)  # over 2**31 streams would take days
        self._cutoff = np.full((steps, 1), -np.inf)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._n_pending = 0
        self._buffer = buffer

    def add(self, stats: np.ndarray, first_stream: int) -> None:
        """Offer ``stats`` ``(steps, b)`` of streams ``first_stream .. first_stream + b - 1``."""
        step, column = np.nonzero(stats > self._cutoff)
        self._pending.append((step, stats[step, column], column + first_stream))
        self._n_pending += step.size
        if self._n_pending >= self._buffer:
            self.merge()

    def merge(self) -> None:
        """Fold the waiting candidates into the per-step top ``keep``."""
        if not self._pending:
            return
        steps, keep = self.values.shape
        step = np.concatenate([p[0] for p in self._pending])
        value = np.concatenate([p[1] for p in self._pending])
        stream = np.concatenate([p[2] for p in self._pending])
        self._pending, self._n_pending = [], 0
        # One row per step: the kept values, then that step's candidates, padded with -inf.
        by_step = np.argsort(step, kind="stable")
        counts = np.bincount(step, minlength=steps)
        column = keep + np.arange(step.size) - np.repeat(np.cumsum(counts) - counts, counts)
        values = np.full((steps, keep + int(counts.max())), -np.inf)
        streams = np.full(values.shape, -1, dtype=self.streams.dtype)
        values[:, :keep], streams[:, :keep] = self.values, self.streams
        values[step[by_step], column] = value[by_step]
        streams[step[by_step], column] = stream[by_step]
        top = np.argpartition(values, values.shape[1] - keep, axis=1)[:, -keep:]
        self.values = np.take_along_axis(values, top, axis=1)
        self.streams = np.take_along_axis(streams, top, axis=1)
        self._cutoff = self.values.min(axis=1, keepdims=True)

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """Merge what waits; return values and streams per step, largest first."""
        self.merge()
        order = np.argsort(-self.values, axis=1, kind="stable")
        return np.take_along_axis(self.values, order, axis=1), np.take_along_axis(self.streams, order, axis=1)


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
    comparing all pairs, alibi-detect's O((n_ref + t)^2) per stream) we draw the ranks of the
    stream's records among the reference (:func:`_null_ref_counts`): the same joint law at O(t ws)
    per stream (:func:`_null_stream_stats`), so fitting a 5,000-row reference takes seconds.

    Memory does not grow with ``n_bootstraps`` (a full ``n_bootstraps x t_max`` matrix, as
    alibi-detect keeps, is 3.3 GB at the defaults below): streams are simulated ``batch_size`` at a
    time (~15 MB of work arrays per 1,000 streams of 199 records) and each step keeps only its upper
    tail (:class:`_UpperTail`), ``(steps + 1) x (ceil(n_bootstraps x beta) + 3)`` values, beyond which
    a stream can be neither a threshold's order statistic nor dead. At the defaults (ert 10,000,
    20 features, window sizes (20, 100): beta 5.1e-6, 2.06 million streams, 181 steps) that is
    2,534 values per step, 5.5 MB. The tail only approaches the full matrix when most streams die
    before the last step (small ert with long windows), where alibi-detect's matrix is as large.
    """
    rng = np.random.default_rng(seed)
    ws_arr = sorted(int(w) for w in window_sizes)
    max_ws, min_ws = ws_arr[-1], ws_arr[0]
    t_max = 2 * max_ws - 1
    first_step = min_ws - 1
    steps = t_max - first_step
    beta = 1 - (1 - 1 / ert) ** (1 / n_features)
    needed = _min_bootstraps(beta, steps)
    if n_bootstraps < needed:
        raise ValueError(
            f"n_bootstraps={n_bootstraps} is too few to estimate the {1 - beta:.6g} quantile that "
            f"ert={ert} with {n_features} features needs; use at least {needed} (10x that is better)"
        )
    # Per step at most n_alive * beta + 1 streams lie above the quantile's lower order statistic:
    # that bounds both the rank the quantile reads from the top and the deaths of every step.
    per_step = math.ceil(n_bootstraps * beta) + 3
    tail = _UpperTail(steps, min(n_bootstraps, (steps + 1) * per_step))
    for start in range(0, n_bootstraps, batch_size):
        b = min(batch_size, n_bootstraps - start)
        stats = _null_stream_stats(_null_ref_counts(rng, n_ref, t_max, b), n_ref, ws_arr)
        tail.add(stats[first_step:], start)
    values, streams = tail.sorted()
    return _thresholds_from_tail(values, streams, n_bootstraps, 1 - beta, first_step, t_max)


def _thresholds_from_tail(
    values: np.ndarray, streams: np.ndarray, n_streams: int, q: float, first_step: int, t_max: int
) -> np.ndarray:
    """Step by step, the ``q`` quantile of the alive streams' statistics (numpy's default "linear",
    Hyndman-Fan type 7, as alibi-detect), then every stream above it dies. ``values`` and ``streams``
    are each step's upper tail, largest first (:meth:`_UpperTail.sorted`)."""
    thresholds = np.full(t_max, np.nan)
    dead = np.zeros(n_streams, dtype=bool)
    alive = n_streams
    for step in range(values.shape[0]):
        if not (1 / alive <= 1 - q <= (alive - 1) / alive):
            raise ValueError(
                f"n_bootstraps={n_streams} ran out of streams at step {first_step + step}; raise it"
            )
        living = ~dead[streams[step]]
        top = values[step][living]  # every alive stream not in it is <= top[-1]
        # np.quantile(alive values, q) interpolates between the order statistics at floor((n-1)q)
        # and the next; both are in the tail. The 2-point quantile does numpy's own interpolation.
        virtual = (alive - 1) * q
        lower = math.floor(virtual)
        from_top = alive - 1 - lower  # index of the lower order statistic in top (>= 1 by the check)
        if from_top >= top.size:  # cannot happen with the keep of _simulate_thresholds
            raise RuntimeError(f"upper tail too short at step {first_step + step}: {top.size} <= {from_top}")
        threshold = float(np.quantile(np.array([top[from_top], top[from_top - 1]]), virtual - lower))
        died = top > threshold
        dead[streams[step][living][died]] = True
        alive -= int(died.sum())
        thresholds[first_step + step] = threshold
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
                self._ref_rows = np.sort(np.ascontiguousarray(reference[:, self._num].T), axis=1)
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
                dist[self._num], p[self._num] = _ks_columns(self._ref_rows, x[:, self._num])
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
        seg = _cvm_segment(self._cvm, stream, self.window_sizes)
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
