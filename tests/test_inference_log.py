"""The inference-log record schema: encoding, decoding one payload, and batch decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inference_log import (
    UNKNOWN_CATEGORY,
    InferenceRecord,
    RecordError,
    decode,
    decode_batch,
    encode,
)


def _record(**over):
    base = dict(
        model="fraud-detector", version="7", predictor="main", request_id="r-1", timestamp=1767225600.5,
        features=[12.5, 3, "grocery", 1], prediction={"fraud": 0.03},
    )  # fmt: skip
    base.update(over)
    return base


def _payload(**over) -> bytes:
    return json.dumps(_record(**over)).encode()


# ------------------------------------------------------------------------------------------------
# inference-log records


def test_record_round_trip():
    rec = InferenceRecord(**_record())
    data = encode(rec)
    assert b" " not in data  # compact
    assert decode(data) == rec
    assert decode(encode(_record())) == rec  # a plain mapping is validated and encoded the same
    assert json.loads(data)["schema_version"] == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b'{"a": NaN}', "not_json"),
        (b"[1, 2]", "schema"),
        (json.dumps({k: v for k, v in _record().items() if k != "request_id"}).encode(), "schema"),
        (_payload(extra="field"), "schema"),
        (_payload(version=7), "schema"),  # strict: the version is a string
        (_payload(features="12.5"), "schema"),
        (_payload(schema_version=2, features={"new": "layout"}), "unsupported_version"),
    ],
)
def test_decode_reasons(payload, reason):
    with pytest.raises(RecordError) as err:
        decode(payload)
    assert err.value.reason == reason


def test_decode_batch_validates_and_encodes_categories():
    cats = [None, None, ["grocery", "travel"], [0, 1]]
    payloads = [
        _payload(),  # 0 ok
        b"garbage",  # 1 not_json
        _payload(features=[1.0, 2.0, "travel"]),  # 2 feature_count
        _payload(features=["1.0", 2.0, "travel", 0]),  # 3 feature_type: numeric given as text
        _payload(schema_version=3),  # 4 unsupported_version
        _payload(version="8", predictor="candidate", features=[1, 2, "casino", True]),  # 5 ok, unknown cat
        _payload(request_id=None),  # 6 schema
        _payload(features=[None, 2.0, "travel", 0]),  # 7 feature_type: missing numeric
        _payload(features=[1.0, 2.0, ["travel"], 0]),  # 8 feature_type: categorical not a scalar
        None,  # 9 a tombstone
    ]
    batch = decode_batch(payloads, 4, cats)
    assert batch.errors == [
        (1, "not_json"), (2, "feature_count"), (3, "feature_type"), (4, "unsupported_version"),
        (6, "schema"), (7, "feature_type"), (8, "feature_type"), (9, "not_json"),
    ]  # fmt: skip
    assert batch.positions.tolist() == [0, 5]
    assert batch.rows.tolist() == [[12.5, 3.0, 0.0, 1.0], [1.0, 2.0, UNKNOWN_CATEGORY, 1.0]]
    assert batch.keys == [("fraud-detector", "7", "main"), ("fraud-detector", "8", "candidate")]
    assert batch.timestamps.tolist() == [1767225600.5, 1767225600.5]
    groups = batch.groups()
    assert {k: v.tolist() for k, v in groups.items()} == {
        ("fraud-detector", "7", "main"): [0],
        ("fraud-detector", "8", "candidate"): [1],
    }
    # every payload decode_batch accepts, decode accepts too (one schema)
    for pos in batch.positions:
        decode(payloads[pos])


def test_decode_batch_numeric_fast_path_and_rejects():
    rows = np.arange(12, dtype=float).reshape(4, 3)
    payloads = [_payload(features=r.tolist()) for r in rows]
    payloads.insert(2, _payload(features=[1.0, "x", 2.0]))
    payloads.append(_payload(features=[1, 2, 3]))  # ints are numbers
    batch = decode_batch(payloads, 3)
    assert batch.errors == [(2, "feature_type")]
    assert batch.positions.tolist() == [0, 1, 3, 4, 5]
    assert batch.rows.tolist() == [*rows.tolist(), [1.0, 2.0, 3.0]]
    empty = decode_batch([], 3)
    assert empty.rows.shape == (0, 3) and empty.errors == []
