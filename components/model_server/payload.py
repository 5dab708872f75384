"""Turning a Seldon request into model input, or a clear 400.

Seldon hands ``predict`` what the request carried:

* ``{"data": {"names": [...], "ndarray": [[...], ...]}}``: rows, columns named (any order);
* ``{"data": {"ndarray": [[...]]}}`` or ``{"data": {"tensor": ...}}``: rows in the release spec's
  feature order;
* ``{"jsonData": ...}`` in a DataFrame shape: a list of records (``[{"amount": 1, ...}]``), pandas'
  split orient (``{"columns": [...], "data": [[...]]}``), columns (``{"amount": [1, 2], ...}``) or one
  record (``{"amount": 1, ...}``).

:func:`parse_rows` checks names, shape and types against the feature contract and returns plain
Python rows (what the inference log records) plus a DataFrame typed for the model. Anything else is a
:class:`PayloadError` whose message lists the expected features; the server turns it into Seldon's
400 response.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from model_server.settings import FeatureSpec

if TYPE_CHECKING:
    import pandas as pd

# MLflow signature column types that need integers / booleans; everything else numeric is float.
_INTEGER_TYPES = {"long", "integer"}
_BOOLEAN_TYPES = {"boolean"}
_STRING_TYPES = {"string"}


class PayloadError(ValueError):
    """The request does not match the feature contract; the message says what was expected."""


@dataclass(frozen=True)
class ParsedRows:
    """A validated request: rows as logged (contract order, JSON-ready) and the model's DataFrame."""

    rows: list[list[Any]]
    frame: pd.DataFrame


class FeatureContract:
    """The model's inputs: names, order and types from the release spec, column dtypes from the model's
    MLflow signature when it has one (so an integer column gets integers)."""

    def __init__(self, features: Sequence[FeatureSpec], column_types: Mapping[str, str] | None = None) -> None:
        self.features = list(features)
        self.names = [f.name for f in self.features]
        self._index = {name: i for i, name in enumerate(self.names)}
        self._converters = [self._converter(f, (column_types or {}).get(f.name)) for f in self.features]

    def dtypes(self) -> dict[str, str]:
        """Each column's dtype in :meth:`parse`'s DataFrame (``object`` for text and mixed categories)."""
        return {name: converter.dtype or "object" for name, converter in zip(self.names, self._converters, strict=True)}

    @property
    def expected(self) -> str:
        """The contract in words, for error messages."""
        return f"{len(self.features)} features [{', '.join(f.describe() for f in self.features)}]"

    def parse(self, payload: Any, names: Sequence[str] | None = None) -> ParsedRows:
        """Validate ``payload`` (what Seldon passed as ``X``) with the request's column ``names``."""
        table, names = self._table(payload, list(names or []))
        if not table:
            raise PayloadError(f"the request has no rows; expected rows of {self.expected}")
        order = self._column_order(names)
        rows: list[list[Any]] = []
        for number, raw in enumerate(table):
            if not isinstance(raw, (list, tuple, np.ndarray)) or len(raw) != len(self.names):
                got = len(raw) if isinstance(raw, (list, tuple, np.ndarray)) else type(raw).__name__
                raise PayloadError(f"row {number} has {got} values; expected {self.expected}")
            values = [raw[i] for i in order] if order is not None else list(raw)
            rows.append([self._convert(column, value, number) for column, value in enumerate(values)])
        columns = zip(*rows, strict=True)
        import pandas as pd  # a worker's import (see model_server.server): the main process stays small

        frame = pd.DataFrame({name: np.array(values, dtype=converter.dtype or object)
                              for name, converter, values in zip(self.names, self._converters, columns, strict=True)},
                             copy=False)
        return ParsedRows(rows, frame)

    # --- shapes ---------------------------------------------------------------------------------

    def _table(self, payload: Any, names: list[str]) -> tuple[list, list[str]]:
        if isinstance(payload, np.ndarray):
            if payload.size == 0:
                return [], names
            if payload.ndim == 1:
                payload = payload.reshape(1, -1)
            if payload.ndim != 2:
                raise PayloadError(f"the ndarray has {payload.ndim} dimensions; send rows of {self.expected}")
            return payload.tolist(), names
        if isinstance(payload, Mapping):
            if set(payload) == {"columns", "data"} or set(payload) == {"columns", "data", "index"}:
                return self._listed(payload["data"], "jsonData.data"), self._names(payload["columns"])
            if payload and all(isinstance(v, list) for v in payload.values()):
                columns = list(payload)
                lengths = {len(v) for v in payload.values()}
                if len(lengths) != 1:
                    raise PayloadError(f"jsonData columns have different lengths {sorted(lengths)}; expected {self.expected}")
                return [list(row) for row in zip(*payload.values(), strict=True)], columns
            if payload and not any(isinstance(v, (list, dict)) for v in payload.values()):
                return [list(payload.values())], list(payload)
        if isinstance(payload, list) and payload and all(isinstance(r, Mapping) for r in payload):
            columns = list(payload[0])
            for number, record in enumerate(payload):
                if set(record) != set(columns):
                    raise PayloadError(f"record {number} has fields {sorted(record)}; expected {self.expected}")
            return [[record[c] for c in columns] for record in payload], columns
        if isinstance(payload, list):
            return (payload if payload and isinstance(payload[0], list) else [payload] if payload else []), names
        raise PayloadError(f"unsupported payload ({type(payload).__name__}); send data.ndarray with data.names, "
                           f"or jsonData records, with {self.expected}")

    def _listed(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise PayloadError(f"{where} must be a list of rows; expected rows of {self.expected}")
        return value

    def _names(self, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise PayloadError(f"jsonData.columns must be a list of feature names; expected {self.expected}")
        return value

    def _column_order(self, names: list[str]) -> list[int] | None:
        """Positions of the contract's features in the request's columns; ``None`` when unnamed."""
        if not names:
            return None
        missing = [n for n in self.names if n not in names]
        unknown = [n for n in names if n not in self._index]
        if missing or unknown or len(names) != len(self.names):
            detail = "; ".join(part for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(unknown)}" if unknown else "",
                "a name appears twice" if len(set(names)) != len(names) else "") if part)
            raise PayloadError(f"feature names do not match ({detail}); expected {self.expected}")
        position = {name: i for i, name in enumerate(names)}
        return [position[name] for name in self.names]

    # --- values ---------------------------------------------------------------------------------

    def _convert(self, column: int, value: Any, row: int) -> Any:
        try:
            return self._converters[column](value)
        except (TypeError, ValueError) as exc:
            feature = self.features[column]
            raise PayloadError(f"row {row}: {feature.name}={value!r} is not valid for {feature.describe()} "
                               f"({exc}); expected {self.expected}") from None

    @staticmethod
    def _converter(feature: FeatureSpec, column_type: str | None) -> _Converter:
        if feature.type == "numeric":
            if column_type in _INTEGER_TYPES:
                return _Converter(_to_integer, "int64")
            if column_type in _BOOLEAN_TYPES:
                return _Converter(_to_boolean, "bool")
            return _Converter(_to_float, "float64")
        categories = feature.categories or []
        if column_type in _STRING_TYPES or (categories and all(isinstance(c, str) for c in categories)):
            return _Converter(_to_category_text, None)
        if column_type in _INTEGER_TYPES or (categories and all(isinstance(c, int) for c in categories)):
            return _Converter(_to_integer, "int64")
        return _Converter(_to_category_scalar, None)


@dataclass(frozen=True)
class _Converter:
    convert: Any
    dtype: str | None

    def __call__(self, value: Any) -> Any:
        return self.convert(value)


def _to_float(value: Any) -> float:
    # Seldon turns a mixed-type ndarray into strings ("12.5"), so numeric text is accepted; bools are not.
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise ValueError("not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _to_integer(value: Any) -> int:
    number = _to_float(value)
    if not number.is_integer():
        raise ValueError("not an integer")
    return int(number)


def _to_boolean(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value in (0, 1, "0", "1", "true", "false", "True", "False"):
        return value in (1, "1", "true", "True")
    raise ValueError("not a boolean")


def _to_category_text(value: Any) -> str:
    if value is None or isinstance(value, (list, dict)):
        raise ValueError("not a category")
    return value if isinstance(value, str) else str(value)


def _to_category_scalar(value: Any) -> Any:
    if value is None or isinstance(value, (list, dict)):
        raise ValueError("not a category")
    return value.item() if isinstance(value, np.generic) else value
