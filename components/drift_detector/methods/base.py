"""What every drift method shares: feature and result types, the corrections, the config checks.

Pure: numpy only. The methods themselves live next to this module (:mod:`.ks`, :mod:`.chi2`,
:mod:`.tabular`, :mod:`.cvm_online` with :mod:`.cvm_thresholds`, and :mod:`.alibi_adapter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

METHODS = ("ks", "chi2", "tabular", "cvm_online")
CORRECTIONS = ("bonferroni", "fdr")
BACKENDS = ("builtin", "alibi")


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


def correct(p_vals: np.ndarray, p_value: float, correction: str) -> tuple[bool, float]:
    """Whether ``p_vals`` drifted after ``correction`` at level ``p_value``, and the level compared with."""
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


def check_config(
    method: str,
    features: Sequence[FeatureSpec],
    p_value: float,
    correction: str,
    window: int,
    ert: int,
    backend: str,
) -> None:
    """Refuse a configuration no detector can run (raises ``ValueError`` naming the field)."""
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

