"""Built-in Chi² on category counts (``chi2``): the table alibi-detect's ``ChiSquareDrift`` builds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


@dataclass(frozen=True)
class CatRef:
    """A categorical feature's reference: its distinct codes and how often each occurs."""

    values: np.ndarray  # sorted distinct reference values (codes)
    counts: np.ndarray  # reference count of each


def cat_ref(column: np.ndarray) -> CatRef:
    """The :class:`CatRef` of one reference column (category codes)."""
    values, counts = np.unique(column, return_counts=True)
    return CatRef(values=values, counts=counts.astype(np.float64))


def chi2_columns(refs: Sequence[CatRef], window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

