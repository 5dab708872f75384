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
this repository), with a ``shift`` for drift scenarios; ``publish_synthetic`` and ``python -m
retrain.models.fraud_detector`` publish it as a dataset version. They are not part of the pattern.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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
MERCHANT_MIX = (0.35, 0.1, 0.3, 0.15, 0.1)
"""Share of each merchant category in the synthetic data, in ``MERCHANT_CATEGORIES`` order."""
SHIFTED_MERCHANT_MIX = (0.2, 0.1, 0.5, 0.1, 0.1)
"""The mix at ``shift=1``: online takes share from grocery and fuel."""
SHIFT_AMOUNT_LOG = 0.7
"""At ``shift=1`` amounts are multiplied by e**0.7 (about 2x)."""
SHIFT_DISTANCE = 1.5
"""At ``shift=1`` distances are multiplied by 1 + 1.5."""


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


def synthetic_dataset(rows: int = 4000, seed: int = 7, shift: float = 0.0) -> pd.DataFrame:
    """Card transactions with a known fraud mechanism: large, remote, night-time, card-not-present
    purchases (online and travel more so) are likelier fraud. The same arguments give the same bytes,
    so a dataset's sha256 is stable.

    ``shift`` (0 to 1) moves the world the way a drift scenario needs: amounts roughly double and
    distances grow by up to 2.5x (what the drift detector sees), online purchases take a larger share,
    and the labels follow a changed relation (card testing: small online, card-not-present purchases,
    not large ones, become the fraud). A model trained on shifted rows therefore beats one trained at
    ``shift=0`` on shifted held-out rows; ``shift=0`` is exactly the original data. The random draws are
    the same at every ``shift``, so two datasets differ only by the shift.
    """
    if not 0.0 <= shift <= 1.0:
        raise ValueError(f"shift must be between 0 and 1, not {shift}")
    rng = np.random.default_rng(seed)
    amount = np.round(rng.lognormal(mean=3.6, sigma=1.0, size=rows) * np.exp(SHIFT_AMOUNT_LOG * shift), 2)
    hour = rng.integers(0, 24, size=rows)
    distance_km = np.round(rng.exponential(scale=25.0, size=rows) * (1 + SHIFT_DISTANCE * shift), 1)
    mix = (1 - shift) * np.asarray(MERCHANT_MIX) + shift * np.asarray(SHIFTED_MERCHANT_MIX) if shift else MERCHANT_MIX
    merchant = rng.choice(MERCHANT_CATEGORIES, size=rows, p=mix)
    card_present = (rng.random(rows) < np.where(merchant == "online", 0.05, 0.8)).astype(int)
    night = (hour < 6) | (hour >= 23)
    logit = (-5.0 + 0.9 * np.log1p(amount) - 0.9 + 1.2 * night + 0.02 * distance_km
             + 1.1 * (card_present == 0) + 0.8 * (merchant == "travel") + 0.4 * (merchant == "online"))
    if shift:
        card_testing = (-2.6 + 2.5 * (amount < 40) - 0.12 * np.log1p(amount) + 1.2 * (merchant == "online")
                        + 0.8 * (card_present == 0) + 0.8 * (merchant == "fuel") - 0.8 * night)
        logit = (1 - shift) * logit + shift * card_testing
    is_fraud = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"amount": amount, "hour": hour, "distance_km": distance_km, "merchant_category": merchant,
                         "card_present": card_present, LABEL: is_fraud})


def publish_synthetic(uri: str, *, rows: int = 4000, seed: int = 7, shift: float = 0.0,
                      directory: Path | None = None) -> tuple[str, str]:
    """Write :func:`synthetic_dataset` as CSV and publish it at ``uri`` with its ``.sha256`` sidecar, the
    way a data pipeline publishes a dataset version (:func:`retrain.data.publish_dataset`); returns
    ``(uri, sha256)``, what the flow's ``data_uri``/``data_sha256`` take."""
    from retrain.data import publish_dataset

    with tempfile.TemporaryDirectory(prefix="fraud-detector-data-", dir=directory) as scratch:
        path = Path(scratch) / "transactions.csv"
        synthetic_dataset(rows, seed, shift).to_csv(path, index=False)
        return uri, publish_dataset(path, uri)


def main(argv: list[str] | None = None) -> int:
    """``python -m retrain.models.fraud_detector --uri URI [--rows N] [--seed S] [--shift X]``: publish one
    synthetic dataset version (S3 endpoint and keys from the usual variables, see retrain.data) and print
    ``<uri> <sha256>``."""
    parser = argparse.ArgumentParser(prog="python -m retrain.models.fraud_detector", description=main.__doc__)
    parser.add_argument("--uri", required=True, help="s3://bucket/key.csv, file:///path or a path")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shift", type=float, default=0.0, help="0 (the original world) to 1 (fully shifted)")
    args = parser.parse_args(argv)
    uri, sha256 = publish_synthetic(args.uri, rows=args.rows, seed=args.seed, shift=args.shift)
    print(f"{uri} {sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
