"""The inference-log record: the one schema the model server writes and the drift detector reads.

Two modules, whose public names are re-exported here:

* :mod:`inference_log.record`: the schema (:class:`InferenceRecord`), :func:`encode` and
  :func:`encode_fields` for producers (the model server), :func:`decode` of one payload raising
  :class:`RecordError` with a short machine ``reason``;
* :mod:`inference_log.batch`: :func:`decode_batch`, which the drift detector's consumer calls once per
  ``getmany`` batch (a typed msgspec path for all-numeric features, the general orjson path for
  everything else; both give the same verdicts).

Rejection reasons (label values of the rejected-records metric): ``not_json``, ``schema``,
``unsupported_version`` (all three from :func:`decode` too), and from :func:`decode_batch` also
``feature_count`` (the list has the wrong length) and ``feature_type`` (a numeric feature that is not a
number, or a categorical value that is not a scalar).
"""

from .batch import UNKNOWN_CATEGORY, DecodedBatch, decode_batch
from .record import REASONS, SCHEMA_VERSION, InferenceRecord, RecordError, decode, encode, encode_fields

__all__ = [
    "REASONS",
    "SCHEMA_VERSION",
    "UNKNOWN_CATEGORY",
    "DecodedBatch",
    "InferenceRecord",
    "RecordError",
    "decode",
    "decode_batch",
    "encode",
    "encode_fields",
]
