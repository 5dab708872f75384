"""Metrics of a binary classifier and the decision whether a candidate beats the live version.

Every metric here is "higher is better", so one rule decides: the candidate is accepted when its
value of the configured metric (the spec's ``retrain.metric``) exceeds the live version's by at least
``retrain.min_improvement`` (and by more than nothing at all). Anything else is rejected with a reason
that names both values, the improvement and the margin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

THRESHOLD = 0.5
"""Score above which a prediction counts as positive, for the threshold metrics (accuracy, f1, ...)."""

METRICS = ("roc_auc", "average_precision", "accuracy", "f1", "precision", "recall")


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`METRICS` for positive-class ``scores`` against 0/1 ``labels``.

    Raises:
        ValueError: the labels hold a single class (ranking metrics are undefined), or lengths differ.
    """
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=float)
    if labels.shape != scores.shape:
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    if len(np.unique(labels)) < 2:
        raise ValueError("the evaluation set holds a single class; ranking metrics need both (use more data)")
    predicted = (scores >= THRESHOLD).astype(int)
    return {
        "roc_auc": float(skm.roc_auc_score(labels, scores)),
        "average_precision": float(skm.average_precision_score(labels, scores)),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
    }


@dataclass(frozen=True)
class Decision:
    """Whether the candidate goes forward, and why."""

    accepted: bool
    metric: str
    candidate: float
    live: float
    live_version: int
    margin: float
    reason: str

    @property
    def improvement(self) -> float:
        return self.candidate - self.live


def decide(metric: str, candidate: Mapping[str, float], live: Mapping[str, float], live_version: int,
           margin: float) -> Decision:
    """Accept the candidate when ``candidate[metric] - live[metric] >= margin`` and the difference is positive.

    Raises:
        ValueError: ``metric`` is not one both sides report.
    """
    if metric not in candidate or metric not in live:
        raise ValueError(f"retrain.metric {metric!r} is not computed; use one of {', '.join(sorted(candidate))}")
    new, old = float(candidate[metric]), float(live[metric])
    improvement = new - old
    accepted = improvement > 0 and improvement >= margin
    if accepted:
        reason = (f"candidate {metric} {new:.4f} beats live version {live_version} ({old:.4f}) by {improvement:.4f}, "
                  f"at least the margin {margin:.4f}")
    else:
        reason = (f"candidate {metric} {new:.4f} is not better than live version {live_version} ({old:.4f}) by the "
                  f"margin {margin:.4f} (improvement {improvement:+.4f})")
    return Decision(accepted, metric, new, old, live_version, margin, reason)
