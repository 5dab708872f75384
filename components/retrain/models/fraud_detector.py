"""Retraining for the example model ``fraud-detector``: how to read its data and how to train it.

The flow finds this module by the model's name (``fraud-detector`` → ``retrain.models.fraud_detector``)
and takes everything else from the release spec: the feature names, types and categories come from
``drift.features`` of ``environments/<env>/models/fraud-detector.yaml``, so the model, the drift
detector and the serving contract read the same list.

A model module provides:

* ``LABEL``: the name of the target column in the training data;
* ``DEFAULT_PARAMS`` and ``SEARCH_SPACE``: the hyperparameters of one training, and the trials of the
  optional search (each a complete parameter set);
* ``load_data(path, features)``: the verified data file → ``(features frame, labels)``;
* ``train(features, labels, *, params, seed, feature_info)``: a fitted model with ``predict_proba``.

Optional: ``SKOPS_TRUSTED_TYPES``, ``score(model, features)`` (default: ``predict_proba(...)[:, 1]``),
``log_model(model, example, registered_name)`` and ``load_model(uri)`` (default: the ``mlflow.sklearn``
flavour). See :mod:`retrain.models`.

``synthetic_dataset`` makes the example's deterministic training data (there is no real card data in
this repository); it is not part of the pattern.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from retrain.models import FeatureInfo, read_csv_dataset

LABEL = "is_fraud"

DEFAULT_PARAMS: dict[str, Any] = {"learning_rate": 0.1, "max_iter": 80, "max_depth": 3, "min_samples_leaf": 20}

# A small grid: each trial is a nested MLflow run, and the best one on the validation split is the candidate.
SEARCH_SPACE: list[dict[str, Any]] = [
    {**DEFAULT_PARAMS, "learning_rate": learning_rate, "max_depth": max_depth}
    for learning_rate in (0.05, 0.1)
    for max_depth in (2, 3)
]

# Reviewed: the fitted trees of HistGradientBoosting, created here by train(); MLflow records the list
# with the model so the model server loads it without trusting anything else.
SKOPS_TRUSTED_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)

MERCHANT_CATEGORIES = ("grocery", "travel", "online", "fuel", "other")


def load_data(path: Path, features: Sequence[FeatureInfo]) -> tuple[pd.DataFrame, pd.Series]:
    """Read the CSV training data: the spec's feature columns in spec order, and the ``is_fraud`` label."""
    return read_csv_dataset(path, features, LABEL)


def train(features: pd.DataFrame, labels: pd.Series, *, params: dict[str, Any], seed: int,
          feature_info: Sequence[FeatureInfo]) -> Pipeline:
    """Gradient boosting over one-hot categoricals (categories as the spec lists them) and raw numerics."""
    categorical = [f for f in feature_info if f.type == "categorical"]
    numeric = [f.name for f in feature_info if f.type == "numeric"]
    encoder = OneHotEncoder(categories=[list(f.categories or []) for f in categorical], handle_unknown="ignore",
                            sparse_output=False)
    columns = ColumnTransformer([("categorical", encoder, [f.name for f in categorical]),
                                 ("numeric", "passthrough", numeric)])
    classifier = HistGradientBoostingClassifier(random_state=seed, **params)
    return Pipeline([("columns", columns), ("classifier", classifier)]).fit(features, labels)


def synthetic_dataset(rows: int = 4000, seed: int = 7) -> pd.DataFrame:
    """Card transactions with a known fraud mechanism: large, remote, night-time, card-not-present
    purchases (online and travel more so) are likelier fraud. The same ``rows`` and ``seed`` give the
    same bytes, so the dataset's sha256 is stable."""
    rng = np.random.default_rng(seed)
    amount = np.round(rng.lognormal(mean=3.6, sigma=1.0, size=rows), 2)
    hour = rng.integers(0, 24, size=rows)
    distance_km = np.round(rng.exponential(scale=25.0, size=rows), 1)
    merchant = rng.choice(MERCHANT_CATEGORIES, size=rows, p=[0.35, 0.1, 0.3, 0.15, 0.1])
    card_present = (rng.random(rows) < np.where(merchant == "online", 0.05, 0.8)).astype(int)
    night = (hour < 6) | (hour >= 23)
    logit = (-5.0 + 0.9 * np.log1p(amount) - 0.9 + 1.2 * night + 0.02 * distance_km
             + 1.1 * (card_present == 0) + 0.8 * (merchant == "travel") + 0.4 * (merchant == "online"))
    is_fraud = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"amount": amount, "hour": hour, "distance_km": distance_km, "merchant_category": merchant,
                         "card_present": card_present, LABEL: is_fraud})
