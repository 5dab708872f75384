"""``tabular``: KS for numeric and Chi² for categorical features, one correction over all.

``ks`` and ``chi2`` are its one-kind cases (alibi-detect's ``KSDrift`` and ``ChiSquareDrift`` against
its ``TabularDrift``), so the three offline methods score through :class:`TabularReference`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import DriftResult, correct
from .chi2 import cat_ref, chi2_columns
from .ks import ks_columns
from .refgrid import RefGrid


class TabularReference:
    """The lookups of a reference the offline tests need, built once per detector.

    ``numeric`` and ``categorical`` are the column indices of each kind; numeric columns are kept as
    one ascending, contiguous row per feature, categorical ones as category counts.
    """

    def __init__(self, reference: np.ndarray, numeric: np.ndarray, categorical: np.ndarray) -> None:
        self.numeric = numeric
        self.categorical = categorical
        if numeric.size:
            self.ref_rows = np.sort(np.ascontiguousarray(reference[:, numeric].T), axis=1)
            self.ks_grid = RefGrid.build(self.ref_rows)
        self.cat_refs = [cat_ref(reference[:, j]) for j in categorical]

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature p-values and statistics (KS distance or Chi²) of the window ``x``."""
        p = np.empty(x.shape[1])
        dist = np.empty(x.shape[1])
        if self.numeric.size:
            dist[self.numeric], p[self.numeric] = ks_columns(self.ref_rows, x[:, self.numeric], self.ks_grid)
        if self.categorical.size:
            dist[self.categorical], p[self.categorical] = chi2_columns(self.cat_refs, x[:, self.categorical])
        return p, dist


def offline_result(names: Sequence[str], p: np.ndarray, dist: np.ndarray, p_value: float,
                   correction: str) -> DriftResult:
    """The :class:`DriftResult` of one window from its per-feature p-values and statistics."""
    drift, threshold = correct(p, p_value, correction)
    best = int(np.argmin(p))
    return DriftResult(
        drift=drift,
        p_value=float(p[best]),
        statistic=float(dist[best]),
        threshold=float(threshold),
        feature_p_values={n: float(v) for n, v in zip(names, p, strict=True)},
        feature_statistics={n: float(v) for n, v in zip(names, dist, strict=True)},
    )
