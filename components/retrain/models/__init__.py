"""One small module per model: how to read its training data and how to train it.

The retrain flow imports ``retrain.models.<model name with - as _>`` (``fraud-detector`` →
:mod:`retrain.models.fraud_detector`) and wraps it in a :class:`ModelModule`. Everything that is not
model-specific stays in the flow: fetching and verifying the data, splitting it, the search loop,
evaluation against the live version, MLflow registration, the drift detector and the pull request.

Required in a model module: ``LABEL``, ``DEFAULT_PARAMS``, ``SEARCH_SPACE``, ``load_data`` and
``train``. Optional: ``SKOPS_TRUSTED_TYPES`` (types the estimator's skops file holds that skops does
not trust by default), and, for models that are not scikit-learn classifiers, ``score``, ``log_model``
and ``load_model`` (the defaults here use ``predict_proba`` and MLflow's ``sklearn`` flavour).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

REQUIRED = ("LABEL", "DEFAULT_PARAMS", "SEARCH_SPACE", "load_data", "train")


class ModelModuleError(RuntimeError):
    """The model has no retrain module, or the module lacks something the flow needs."""


@dataclass(frozen=True)
class FeatureInfo:
    """One model input as the release spec's ``drift.features`` declares it."""

    name: str
    type: str
    """``numeric`` or ``categorical``."""
    categories: tuple[Any, ...] | None = None


def module_name(model: str) -> str:
    """The Python module of a model's retraining: ``retrain.models.<model with - as _>``."""
    return f"retrain.models.{model.replace('-', '_')}"


@dataclass(frozen=True)
class ModelModule:
    """A model module with the optional hooks filled in by defaults."""

    name: str
    module: ModuleType

    @property
    def label(self) -> str:
        return self.module.LABEL

    @property
    def default_params(self) -> dict[str, Any]:
        return dict(self.module.DEFAULT_PARAMS)

    @property
    def search_space(self) -> list[dict[str, Any]]:
        return [dict(trial) for trial in self.module.SEARCH_SPACE]

    def load_data(self, path: Path, features: Sequence[FeatureInfo]) -> tuple[pd.DataFrame, pd.Series]:
        """The module's ``load_data``, checked to return the spec's feature columns and one label per row."""
        frame, labels = self.module.load_data(path, features)
        names = [f.name for f in features]
        if list(frame.columns) != names:
            raise ModelModuleError(f"{self.module.__name__}.load_data returned columns {list(frame.columns)}, "
                                   f"expected the spec's features {names} in that order")
        if len(frame) != len(labels):
            raise ModelModuleError(f"{self.module.__name__}.load_data returned {len(frame)} rows but "
                                   f"{len(labels)} labels")
        return frame, labels

    def train(self, features: pd.DataFrame, labels: pd.Series, *, params: dict[str, Any], seed: int,
              feature_info: Sequence[FeatureInfo]) -> Any:
        return self.module.train(features, labels, params=params, seed=seed, feature_info=feature_info)

    def score(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        """Scores of the positive class, the input of the evaluation metrics."""
        custom: Callable | None = getattr(self.module, "score", None)
        if custom is not None:
            return np.asarray(custom(model, features), dtype=float)
        return np.asarray(model.predict_proba(features)[:, 1], dtype=float)

    def log_model(self, model: Any, example: pd.DataFrame, registered_name: str) -> Any:
        """Log ``model`` in the active MLflow run and register it as a new version of ``registered_name``.

        Returns MLflow's ``ModelInfo`` (``registered_model_version`` is the new version).
        """
        custom: Callable | None = getattr(self.module, "log_model", None)
        if custom is not None:
            return custom(model, example, registered_name)
        import mlflow.sklearn
        import sklearn
        import skops
        from mlflow.models import infer_signature

        return mlflow.sklearn.log_model(
            model, name="model", registered_model_name=registered_name,
            signature=infer_signature(example, model.predict_proba(example)), input_example=example.head(5),
            # The model server answers with probabilities, not hard labels.
            pyfunc_predict_fn="predict_proba",
            # skops (MLflow's safe default format) refuses types it cannot vouch for; a module names the
            # ones its estimator needs after reviewing them. MLflow stores the list with the model.
            skops_trusted_types=list(getattr(self.module, "SKOPS_TRUSTED_TYPES", ())) or None,
            # Given, not inferred: inference imports every module and takes seconds.
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}",
                              f"pandas=={pd.__version__}", f"numpy=={np.__version__}"],
        )

    def load_model(self, uri: str) -> Any:
        """Load a registered version (``models:/<name>/<version>``) for evaluation."""
        custom: Callable | None = getattr(self.module, "load_model", None)
        if custom is not None:
            return custom(uri)
        import mlflow.sklearn

        return mlflow.sklearn.load_model(uri)


def load_model_module(model: str) -> ModelModule:
    """The retrain module of ``model``.

    Raises:
        ModelModuleError: there is no such module, or it lacks a required name.
    """
    name = module_name(model)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in (name, "retrain.models"):
            raise  # the module exists but one of its own imports is missing: show that
        raise ModelModuleError(f"model {model!r} has no retrain module {name}; add "
                               f"components/retrain/models/{model.replace('-', '_')}.py (see "
                               "components/retrain/README.md, 'Retraining a new model')") from None
    if missing := [attr for attr in REQUIRED if not hasattr(module, attr)]:
        raise ModelModuleError(f"{name} lacks {', '.join(missing)}; a model module defines {', '.join(REQUIRED)}")
    if not module.SEARCH_SPACE:
        raise ModelModuleError(f"{name}.SEARCH_SPACE is empty; give at least one parameter set")
    return ModelModule(model, module)


def read_csv_dataset(path: Path, features: Sequence[FeatureInfo], label: str) -> tuple[pd.DataFrame, pd.Series]:
    """A CSV file with a header → the feature columns in spec order and the label column.

    Categorical values are checked against the spec's categories (compared as text, so ``0`` in the
    file matches a YAML ``0``); numeric columns must parse as finite numbers.

    Raises:
        ValueError: a missing column, a value outside the categories or a non-numeric value, naming
            the file, the column and the first bad row (the header is row 1).
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [name for name in [*(f.name for f in features), label] if name not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(frame.columns)})")
    columns: dict[str, pd.Series] = {}
    for feature in features:
        raw = frame[feature.name]
        if feature.type == "categorical":
            allowed = {str(c): c for c in feature.categories or ()}
            bad = ~raw.isin(list(allowed))
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                raise ValueError(f"{path}: column {feature.name!r} row {row + 2}: {raw.iloc[row]!r} is not one of "
                                 f"the spec's categories {list(allowed)}")
            columns[feature.name] = raw.map(allowed)
        else:
            numbers = pd.to_numeric(raw, errors="coerce")
            bad = ~np.isfinite(numbers.to_numpy(dtype=float))
            if bad.any():
                row = int(np.argmax(bad))
                raise ValueError(f"{path}: column {feature.name!r} row {row + 2}: {raw.iloc[row]!r} is not a number")
            columns[feature.name] = numbers.astype(float)
    labels = pd.to_numeric(frame[label], errors="coerce")
    if labels.isna().any():
        row = int(np.argmax(labels.isna().to_numpy()))
        raise ValueError(f"{path}: column {label!r} row {row + 2}: {frame[label].iloc[row]!r} is not a number")
    return pd.DataFrame(columns), labels.astype(int)
