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

