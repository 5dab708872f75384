"""Built-in two-sample Kolmogorov-Smirnov (``ks``): all numeric features of a window at once.

Computes what alibi-detect's ``KSDrift`` computes (``scipy.stats.ks_2samp(..., method="asymp")`` per
feature) from one sort of the window and one search per feature of the reference.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st


def ks_columns(ref_rows: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    # Sorting along the rows of the C-ordered window is about twice as fast as sorting its transpose;
    # the copy gives searchsorted contiguous needles.
    w = np.ascontiguousarray(np.sort(window, axis=0).T)  # (d, n2)
    r_left = np.empty((d, n2), dtype=np.int64)
    for j in range(d):
        r_left[j] = np.searchsorted(ref_rows[j], w[j], side="left")
    equal = np.take_along_axis(ref_rows, np.minimum(r_left, n1 - 1), axis=1) == w
    r_right = r_left
    if equal.any():
        r_right = r_left.copy()
        for j in np.flatnonzero(equal.any(axis=1)):
            r_right[j] = np.searchsorted(ref_rows[j], w[j], side="right")
    if (w[:, 1:] == w[:, :-1]).any():  # a repeated value: equal values share their rank
        w_right, w_left = _tie_ranks(w.T)
        minus = r_right / n1 - w_right.T / n2  # F_ref - F_win at window points (scipy's cddiffs there)
        plus = r_left / n1 - w_left.T / n2  # F_ref - F_win just below window points
    else:  # the common case: ranks are positions, the same floats without the tie bookkeeping
        below, at = _window_steps(n2)
        minus = r_right / n1 - at
        plus = r_left / n1 - below
    min_s = np.clip(-minus.min(axis=1), 0, 1)
    max_s = np.maximum(plus.max(axis=1), 0.0)  # 0.0: the value at the largest point of both samples
    dist = np.where(min_s > max_s, min_s, max_s)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return dist, _ks_p_values(dist, n1, n2, float(np.round(m * n / (m + n))))


_STEPS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _window_steps(n2: int) -> tuple[np.ndarray, np.ndarray]:
    """``i / n2`` and ``(i + 1) / n2`` for ``i < n2``: the window's ECDF just below and at its i-th
    point when no value repeats (computed as the tie bookkeeping divides, so the floats are equal)."""
    steps = _STEPS.get(n2)
    if steps is None:
        ranks = np.arange(n2 + 1)
        steps = _STEPS[n2] = (ranks[:-1] / n2, ranks[1:] / n2)
    return steps


_KS_SF_CACHE: dict[tuple[int, int, float], float] = {}
_KS_SF_CACHE_LIMIT = 1 << 16
_EXACT_STEPS = 1 << 50  # below this, dist * n1 * n2 rounds to its integer numerator without doubt


def _ks_p_values(dist: np.ndarray, n1: int, n2: int, en: float) -> np.ndarray:
    """``kstwo.sf(dist, en)`` clipped to [0, 1], memoised per distance.

    scipy evaluates the distribution element by element (about 0.2 ms each), while a distance is a
    difference of two ECDFs, ``k / (n1 n2)`` for an integer ``k``, so few distinct values recur from
    window to window. The memo is keyed by that ``k`` and holds scipy's value at ``k / (n1 n2)``: the
    same statistic reached through different float roundings of ``r/n1 - c/n2`` shares one entry (a
    per-float key missed for every such rounding: about one scipy call per window in a long stream),
    and the value differs from scipy's at the computed float by rounding only (about 1e-15
    relative). Where ``n1 n2`` is too large to recover ``k`` exactly, the exact float is the key.
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

