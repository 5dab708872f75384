"""Built-in two-sample Kolmogorov-Smirnov (``ks``): all numeric features of a window at once.

Computes what alibi-detect's ``KSDrift`` computes (``scipy.stats.ks_2samp(..., method="asymp")`` per
feature) from one sort of the window and, per feature, the reference's grid (:mod:`.refgrid`) or one
search of the reference.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

from .refgrid import RefGrid


def ks_columns(
    ref_rows: np.ndarray, window: np.ndarray, grid: RefGrid | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided KS distance and asymptotic p-value per column of ``window`` ``(n_window, d)`` against
    ``ref_rows`` ``(d, n_ref)`` (each feature's reference values ascending, one contiguous row per
    feature), equal to ``scipy.stats.ks_2samp(..., method="asymp")`` (what alibi-detect calls).

    sup |F_ref - F_win| of two step functions is reached at a sample point. Scanning only the window's
    points is enough: F_win - F_ref peaks at a window point (right limit), F_ref - F_win just before one
    (left limit, i.e. ``#ref < w``), and beyond the last window point it is <= 0. So one or two
    searchsorted calls of n_window points replace scipy's four over n_ref + n_window points, and the
    integers (counts) are the ones scipy divides, giving identical floats. ``#ref <= w`` needs its own
    search only for a feature where some window value equals a reference value. With ``grid`` (the
    reference's :class:`~.refgrid.RefGrid`) and no repeated value in the window, only the few points
    that can hold the extremes are counted (:func:`_ks_extremes_by_grid`), with the same result.
    """
    d, n1 = ref_rows.shape
    n2 = window.shape[0]
    # Sorting along the rows of the C-ordered window is about twice as fast as sorting its transpose;
    # the copy gives the searches contiguous rows.
    w = np.ascontiguousarray(np.sort(window, axis=0).T)  # (d, n2)
    tied = bool((w[:, 1:] == w[:, :-1]).any())  # a repeated value: equal values share their rank
    if grid is not None and not tied:
        min_s, max_s = _ks_extremes_by_grid(grid, ref_rows, w)
    else:
        min_s, max_s = _ks_extremes(ref_rows, w, tied)
    dist = np.where(min_s > max_s, min_s, max_s)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return dist, _ks_p_values(dist, n1, n2, float(np.round(m * n / (m + n))))


def _ks_extremes(ref_rows: np.ndarray, w: np.ndarray, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    """``max(F_win - F_ref)`` and ``max(F_ref - F_win)`` per feature (each clipped at 0) of the sorted
    window rows ``w``, from every window point."""
    d, n1 = ref_rows.shape
    n2 = w.shape[1]
    r_left = np.empty((d, n2), dtype=np.int64)
    for j in range(d):
        r_left[j] = np.searchsorted(ref_rows[j], w[j], side="left")
    equal = np.take_along_axis(ref_rows, np.minimum(r_left, n1 - 1), axis=1) == w
    r_right = r_left
    if equal.any():
        r_right = r_left.copy()
        for j in np.flatnonzero(equal.any(axis=1)):
            r_right[j] = np.searchsorted(ref_rows[j], w[j], side="right")
    if tied:
        w_right, w_left = _tie_ranks(w.T)
        minus = r_right / n1 - w_right.T / n2  # F_ref - F_win at window points (scipy's cddiffs there)
        plus = r_left / n1 - w_left.T / n2  # F_ref - F_win just below window points
    else:  # ranks are positions: the same floats without the tie bookkeeping
        below, at = _window_steps(n2)
        minus = r_right / n1 - at
        plus = r_left / n1 - below
    min_s = np.clip(-minus.min(axis=1), 0, 1)
    max_s = np.maximum(plus.max(axis=1), 0.0)  # 0.0: the value at the largest point of both samples
    return min_s, max_s


def _ks_extremes_by_grid(grid: RefGrid, ref_rows: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_ks_extremes` for a window without repeated values, counting only where an extreme can be.

    Each point's count of reference values below it lies in its cell's bounds, so ``F_ref - F_win``
    there lies between the bounds' values: a point whose upper bound is below the best lower bound of
    its feature cannot hold the maximum (and the converse for the minimum). Only the remaining points
    (a handful per feature) are counted exactly, inside their cell; the extremes are then the same
    floats :func:`_ks_extremes` finds.
    """
    d, n1 = ref_rows.shape
    n2 = w.shape[1]
    low, high = grid.bounds(w)
    below, at = _window_steps(n2)
    low_f, high_f = low / n1, high / n1
    plus_hi = high_f - below
    plus_cand = plus_hi >= (low_f - below).max(axis=1, keepdims=True)
    minus_lo = low_f - at
    minus_cand = minus_lo <= (high_f - at).min(axis=1, keepdims=True)
    rows, points = np.nonzero(plus_cand | minus_cand)
    left, right = grid.count(rows, w[rows, points], low[rows, points])
    plus = np.full((d, n2), -np.inf)
    minus = np.full((d, n2), np.inf)
    plus[rows, points] = left / n1 - below[points]
    minus[rows, points] = right / n1 - at[points]
    min_s = np.clip(-minus.min(axis=1), 0, 1)
    max_s = np.maximum(plus.max(axis=1), 0.0)
    return min_s, max_s


_STEPS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _window_steps(n2: int) -> tuple[np.ndarray, np.ndarray]:
    """``i / n2`` and ``(i + 1) / n2`` for ``i < n2``: the window's ECDF just below and at its i-th
    point when no value repeats (computed as the tie bookkeeping divides, so the floats are equal)."""
    steps = _STEPS.get(n2)
    if steps is None:
        ranks = np.arange(n2 + 1)
        steps = _STEPS[n2] = (ranks[:-1] / n2, ranks[1:] / n2)
    return steps


_KS_SF_CACHE: dict[tuple[int | float, int, float], float] = {}
_KS_SF_CACHE_LIMIT = 1 << 16
_EXACT_STEPS = 1 << 50  # below this, dist * n1 * n2 rounds to its integer numerator without doubt


def _ks_p_values(dist: np.ndarray, n1: int, n2: int, en: float) -> np.ndarray:
    """``kstwo.sf(dist, en)`` clipped to [0, 1], memoised per distance.

    scipy evaluates the distribution element by element (about 0.2 ms each), while a distance is a
    difference of two ECDFs, ``k / (n1 n2)`` for an integer ``k``, so few distinct values recur from
    window to window. The memo is keyed by that ``k`` and holds scipy's value at ``k / (n1 n2)``: the
    same statistic reached through different float roundings of ``r/n1 - c/n2`` shares one entry (a
    per-float key missed for every such rounding: 1,146 scipy evaluations in the first 1,000 windows
    of the benchmark's stream, 310 with this key). The value differs from scipy's at the computed float
    by that rounding only: at most 1e-11 relative in 300 random cases of 2-3,000 reference and 1-800
    window values (where scipy's exact small-sample algorithms are sensitive), 1e-13 on the benchmark's
    windows; the tests hold it to scipy at 1e-9. Where ``n1 n2`` is too large to recover ``k``
    exactly, the exact float is the key.
    """
    scale = n1 * n2
    if scale < _EXACT_STEPS:
        keys = np.rint(dist * scale).astype(np.int64).tolist()
        at = [k / scale for k in keys]
    else:  # pragma: no cover - a reference and window of more than 2**50 pairs
        keys = at = dist.tolist()
    cache = _KS_SF_CACHE
    out = [cache.get((key, scale, en)) for key in keys]
    missing = [i for i, hit in enumerate(out) if hit is None]
    if missing:
        fresh = np.clip(_st.kstwo.sf(np.array([at[i] for i in missing]), en), 0, 1).tolist()
        if len(cache) + len(missing) > _KS_SF_CACHE_LIMIT:
            cache.clear()
        for i, value in zip(missing, fresh, strict=True):
            out[i] = cache[(keys[i], scale, en)] = value
    return np.array(out, dtype=np.float64)


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

