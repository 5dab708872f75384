"""The inference-log record: schema, encoding and the validation of one payload.

One Kafka message carries one JSON object (UTF-8, compact)::

    {"schema_version": 1, "model": "fraud-detector", "version": "7", "predictor": "main",
     "request_id": "3f2a…", "timestamp": 1767225600.123, "features": [12.5, 3, "grocery", 1],
     "prediction": 0.03}

``features`` are the model's inputs in the order of the release spec's ``drift.features``; numeric
features are JSON numbers, categorical features one of the listed categories. ``prediction`` is any
JSON value. Unknown keys are refused, so a producer that changes the format must bump
``schema_version`` (readers refuse versions they do not know rather than misread them).

Producers (the model server) call :func:`encode` of an :class:`InferenceRecord` (or a plain ``dict``
that is validated first), or :func:`encode_fields` on the hot path; a reader that wants one validated
object calls :func:`decode`, raising :class:`RecordError` with a short machine ``reason``. Batches are
decoded by :mod:`inference_log.batch`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

try:  # orjson is 5-10x faster than json on these records; the service image installs it
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is absent
    _orjson = None

SCHEMA_VERSION = 1

#: Every reason a payload can be rejected for, in the order the checks run.
REASONS = ("not_json", "schema", "unsupported_version", "feature_count", "feature_type")

FeatureValue = float | int | str | bool | None


class RecordError(ValueError):
    """A payload that is not a valid inference-log record; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InferenceRecord(BaseModel):
    """One logged prediction. Strict types: a producer bug should surface here, not as odd drift."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    schema_version: int = SCHEMA_VERSION
    model: str
    version: str
    predictor: str
    request_id: str
    timestamp: float
    features: list[FeatureValue]
    prediction: Any

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {value}, this reader knows {SCHEMA_VERSION}")
        return value

    @field_validator("timestamp")
    @classmethod
    def _finite_timestamp(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("timestamp must be finite")
        return value


REQUIRED_KEYS = frozenset({"model", "version", "predictor", "request_id", "timestamp", "features", "prediction"})
KEYS_WITH_VERSION = REQUIRED_KEYS | {"schema_version"}


def _refuse_constant(name: str) -> Any:
    # The stdlib parser accepts NaN/Infinity, which are not JSON; orjson refuses them, so must we.
    raise ValueError(f"{name} is not valid JSON")


if _orjson is not None:
    loads = _orjson.loads
    JSON_ERRORS: tuple[type[Exception], ...] = (_orjson.JSONDecodeError,)

    def _dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj)
else:  # pragma: no cover

    def loads(payload: bytes | str) -> Any:
        return json.loads(payload, parse_constant=_refuse_constant)

    JSON_ERRORS = (ValueError, UnicodeDecodeError)

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def encode(record: InferenceRecord | Mapping[str, Any]) -> bytes:
    """Serialise ``record`` to compact UTF-8 JSON (a mapping is validated as an InferenceRecord first)."""
    if not isinstance(record, InferenceRecord):
        record = InferenceRecord.model_validate(dict(record))
    return _dumps(record.model_dump(mode="json"))


def encode_fields(model: str, version: str, predictor: str, request_id: str, timestamp: float,
                  features: list[FeatureValue], prediction: Any) -> bytes:
    """:func:`encode` for a producer that builds the values itself (the model server's hot path).

    Same bytes as ``encode(InferenceRecord(...))`` for valid values (same keys, same order) without
    pydantic's validation: about 15x cheaper. The caller guarantees the types (``str`` identifiers, a
    finite ``float`` timestamp, plain JSON scalars in ``features``, a JSON value as ``prediction``);
    tests compare the two encoders.
    """
    return _dumps({"schema_version": SCHEMA_VERSION, "model": model, "version": version, "predictor": predictor,
                   "request_id": request_id, "timestamp": timestamp, "features": features,
                   "prediction": prediction})



def version_problem(obj: dict) -> str | None:
    version = obj.get("schema_version", SCHEMA_VERSION)
    if type(version) is int and version != SCHEMA_VERSION:
        return f"schema_version {version} is not supported (this reader knows {SCHEMA_VERSION})"
    return None


def decode(payload: bytes) -> InferenceRecord:
    """Parse and validate one payload; raise :class:`RecordError` (``not_json``, ``schema``,
    ``unsupported_version``) if it is not a valid record."""
    try:
        obj = loads(payload)
    except JSON_ERRORS as exc:
        raise RecordError("not_json", str(exc)) from None
    if type(obj) is not dict:
        raise RecordError("schema", f"expected a JSON object, got {type(obj).__name__}")
    # The version is looked at before the rest: a newer record may legitimately have other fields.
    problem = version_problem(obj)
    if problem:
        raise RecordError("unsupported_version", problem)
    try:
        return InferenceRecord.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise RecordError("schema", f"{where}: {first['msg']}") from None

