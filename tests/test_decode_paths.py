"""decode_batch's two paths give one answer.

For all-numeric features, ``decode_batch`` lets msgspec's typed decoder take the common record and
hands everything else to the general (orjson) path. That is only an optimisation if, for every
payload, the result is the general path's: the same verdict, the same floats (bit for bit, the
sign of zero included), the same order. These tests compare the two paths on hostile payloads
written by hand and on generated ones, and check that the typed decoder does take the common case.
"""

from __future__ import annotations

import json

import inference_log
import msgspec  # noqa: F401 - the typed path must be testable: a missing msgspec fails here, not skips
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inference_log import decode_batch
from inference_log.batch import _decode_general, _decode_numeric_batch

N = 3
GOOD = {"schema_version": 1, "model": "m", "version": "7", "predictor": "main", "request_id": "r",
        "timestamp": 1767225600.5, "features": [1.5, -2.0, 3.25], "prediction": 0.5}


def _raw(**over: object) -> bytes:
    """GOOD with fields replaced (a value of ``...`` deletes the field), compact JSON text."""
    record = {**GOOD, **over}
    return json.dumps({k: v for k, v in record.items() if v is not ...}, separators=(",", ":")).encode()


def _with(field: str, literal: str) -> bytes:
    """GOOD with ``field``'s value written as the exact JSON text ``literal``."""
    head, sep, tail = _raw(**{field: "@@"}).partition(b'"@@"')
    assert sep
    return head + literal.encode("utf-8", "surrogatepass") + tail


NUMBER_LITERALS = [
    "-0", "-0.0", "0e5", "1E+2", "1e400", "-1e400", "1e-400", "4.9e-324", "2.2250738585072011e-308",
    "9007199254740993", "18446744073709551615", "18446744073709551616", "-9223372036854775809",
    "123456789012345678901234567890", "1" + "0" * 400, "0.1000000000000000055511151231257827021181583404541015625",
    "1.00000000000000011102230246251565404236316680908203125", "7.2057594037927933e16", "01", "1.", ".5",
    "+1", "0x10", "NaN", "Infinity", "-Infinity", "true", "null", '"1.5"',
]

HOSTILE: list[bytes | None] = [
    _raw(),
    *(_with("timestamp", lit) for lit in NUMBER_LITERALS),
    *(_raw(features="@").replace(b'"@"', f"[{lit},1,2]".encode()) for lit in NUMBER_LITERALS),
    *(_with("schema_version", lit) for lit in ["1", "2", "0", "true", "1.0", '"1"', "null", "-1", "1e0"]),
    *(_with("prediction", lit) for lit in [
        "[[1]]", '{"a":{"b":1}}', '{"a":[1]}', "[1,\"x\",null,true]", '{"p":0.9,"q":"x"}', "[]", "{}",
        "[" * 1023 + "]" * 1023, "[" * 1100 + "]" * 1100, "1e400", "123456789012345678901234567890",
        '"\\ud800"', '"\\udc00\\ud800"', '"\\ud83d\\ude00"', '"\\u0000"', '"a\\/b"', "NaN", "-Infinity",
        '"\\x41"', "[1,]", '{"a":1,}', "[1 2]",
    ]),
    *(_with("model", lit) for lit in ['"\\u006d"', '"m\\u0000"', "1", "null", "true", '["m"]', '"\\ud800"']),
    _raw(features=[True, 1, 2]), _raw(features=[None, 1, 2]), _raw(features=["1", 1, 2]),
    _raw(features=[[1], 1, 2]), _raw(features=[1, 2]), _raw(features=[1, 2, 3, 4]), _raw(features=[]),
    _raw(features={"a": 1}), _raw(timestamp=True), _raw(timestamp="1"), _raw(timestamp=None),
    _raw(request_id=7), _raw(request_id=...), _raw(prediction=...), _raw(extra=1), _raw(version=7),
    _raw(schema_version=...),
    _raw().replace(b'"model":"m"', b'"model":"x","model":"m"'),  # duplicate keys: the last one wins
    _raw().replace(b'"model":"m"', b'"model":"m","model":7'),
    _raw().replace(b'"features":[1.5,-2.0,3.25]', b'"features":[true,1,2],"features":[1,2,3]'),
    _raw().replace(b'"features":[1.5,-2.0,3.25]', b'"features":[1,2,3],"features":[true,1,2]'),
    _raw().replace(b'"model"', b'"mod\\u0065l"'),
    _raw(prediction="@").replace(b'"@"', b'"\xff"'), _raw(prediction="@").replace(b'"@"', b'["\xed\xa0\x80"]'),
    _raw().replace(b'"m"', b'"\xff"'), _raw().replace(b'"m"', b'"\xc0\xaf"'), _raw().replace(b'"m"', b'"\xed\xa0\x80"'),
    _raw().replace(b'"m"', b'"\xe2\x82\xac"'), _raw().replace(b'"m"', b'"a\x01b"'), _raw().replace(b'"m"', b'"a\x7fb"'),
    b" \t\r\n" + _raw() + b"\n", b"\f" + _raw(), _raw() + b"\x0b", b"\xef\xbb\xbf" + _raw(), _raw() + b"x",
    _raw() + _raw(), _raw()[:-1], b"", b"null", b"[]", b"{}", b"1", b'"x"', None, bytearray(_raw()),
    _raw().replace(b":", b" : "), _raw().replace(b",", b" ,\n"),
]


def assert_same(fast: inference_log.DecodedBatch, general: inference_log.DecodedBatch) -> None:
    assert fast.errors == general.errors
    assert fast.positions.tolist() == general.positions.tolist()
    assert fast.keys == general.keys
    assert fast.rows.shape == general.rows.shape
    assert fast.rows.tobytes() == general.rows.tobytes()  # bit for bit: -0.0 is not 0.0 here
    assert fast.timestamps.tobytes() == general.timestamps.tobytes()


def test_the_typed_decoder_takes_the_common_record():
    """Without this the comparisons below would compare the general path with itself."""
    assert inference_log.batch._msgspec is not None, "msgspec is installed in the dev venv"
    decode = inference_log.batch._typed_decoder(N, None)
    common = [_raw(), _raw(features=[1, 2, 3]), _raw(prediction=[0.1, 0.9]), _raw(prediction={"p": "x"}),
              _raw(schema_version=...), _raw(prediction=None), _raw(timestamp=1767225600)]
    for payload in common:
        decode(payload)  # raises if the typed decoder refused it
    batch = decode_batch(common, N)
    assert batch.errors == [] and len(batch.keys) == len(common)


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_every_hostile_payload_gets_the_general_verdict(index):
    payload = HOSTILE[index]
    assert_same(_decode_numeric_batch([payload], N), _decode_general([payload], N, None))


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_one_hostile_payload_among_common_records_gets_the_general_verdict(index):
    """The typed path decodes a whole batch in one comprehension and sorts it record by record only
    when some payload is refused: one hostile payload anywhere in a batch must still be found."""
    goods = [_raw(request_id=str(i), features=[i, -0.0, 2.5e-300]) for i in range(6)]
    for where in (0, 3, 6):
        batch = goods[:where] + [HOSTILE[index]] + goods[where:]
        assert_same(_decode_numeric_batch(batch, N), _decode_general(batch, N, None))


def test_keys_and_groups_of_a_batch_with_several_predictors():
    """One shared key tuple for a one-predictor batch; per-row keys and groups in arrival order otherwise."""
    one = [_raw(request_id=str(i)) for i in range(5)]
    fast = _decode_numeric_batch(one, N)
    assert_same(fast, _decode_general(one, N, None))
    assert {k: v.tolist() for k, v in fast.groups().items()} == {("m", "7", "main"): [0, 1, 2, 3, 4]}
    mixed = [_raw(predictor="main"), _raw(predictor="canary"), _raw(version="8"), _raw(model="x"),
             _raw(predictor="main"), _raw(predictor="canary", features=[1, 2])]
    fast = _decode_numeric_batch(mixed, N)
    assert_same(fast, _decode_general(mixed, N, None))
    assert fast.keys == [("m", "7", "main"), ("m", "7", "canary"), ("m", "8", "main"), ("x", "7", "main"),
                         ("m", "7", "main")]
    assert {k: v.tolist() for k, v in fast.groups().items()} == {
        ("m", "7", "main"): [0, 4], ("m", "7", "canary"): [1], ("m", "8", "main"): [2], ("x", "7", "main"): [3]}
    assert fast.errors == [(5, "feature_count")]


def test_a_mixed_batch_keeps_input_order():
    batch = [p for pair in zip(HOSTILE, [_raw(request_id=str(i)) for i in range(len(HOSTILE))], strict=True)
             for p in pair]
    fast = _decode_numeric_batch(batch, N)
    assert_same(fast, _decode_general(batch, N, None))
    assert len(fast.errors) > 50 and len(fast.keys) > len(HOSTILE)  # both paths really had work


_number_text = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z")
_odd = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
_feature = st.one_of(_number_text, st.floats(allow_nan=False, allow_infinity=False).map(repr),
                     st.integers(-(2**70), 2**70).map(str), _odd.map(lambda v: json.dumps(v)))


@st.composite
def _payloads(draw: st.DrawFn) -> bytes:
    over: dict[str, object] = {}
    for name in draw(st.sets(st.sampled_from(sorted(GOOD) + ["extra"]), max_size=2)):
        over[name] = draw(st.one_of(st.just(...), _odd))
    features = draw(st.lists(_feature, min_size=N - 1, max_size=N + 1))
    text = _raw(**over) if "features" in over else _raw(**over, features="@@")
    text = text.replace(b'"@@"', ("[" + ",".join(features) + "]").encode())
    if draw(st.booleans()):
        text = text.replace(b'"timestamp":1767225600.5', b'"timestamp":' + draw(_number_text).encode())
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_payloads(), min_size=1, max_size=8))
def test_generated_batches_get_the_general_verdict(batch):
    assert_same(_decode_numeric_batch(batch, N), _decode_general(batch, N, None))


# --- categorical features: numeric, categorical, numeric ------------------------------------------

CATEGORIES = [None, ["a", "b", 1, True, None, "1", -2, -(2**63)], None]  # orjson reads -(2**63) - 1 as -(2**63)
CATEGORY_LITERALS = [
    '"a"', '"b"', '"c"', '""', '"1"', '"\\u0061"', "1", "0", "-2", "true", "false", "null", "1.0", "1.5", "-0",
    "1e0", "9223372036854775807", "9223372036854775808", "18446744073709551615", "18446744073709551616",
    "-9223372036854775808", "-9223372036854775809", "123456789012345678901234567890", "1e400", "[1]", "{}",
    '"\\ud800"', '"\\ud83d\\ude00"', '"\xff"', "NaN",
]
HOSTILE_MIXED: list[bytes | None] = [
    *(_raw(features="@").replace(b'"@"', b"[1.5," + lit.encode("utf-8", "surrogateescape") + b",2]")
      for lit in CATEGORY_LITERALS),
    *(_raw(features="@").replace(b'"@"', f'[{lit},"a",2]'.encode()) for lit in NUMBER_LITERALS),
    _raw(features=[1, "a"]), _raw(features=[1, "a", 2, 3]), _raw(features=[]), _raw(features=["a", "a", "a"]),
    *HOSTILE,
]


def _mixed(value: object = "a", **over: object) -> bytes:
    return _raw(features=[1.5, value, -2.0], **over)


def _typed_mixed(batch: list) -> inference_log.DecodedBatch:
    return inference_log.batch._decode_typed_batch(batch, N, CATEGORIES)


def test_the_typed_decoder_takes_the_common_record_with_categories():
    decode = inference_log.batch._typed_decoder(N, (False, True, False))
    common = [_mixed("a"), _mixed("b"), _mixed("zzz"), _mixed(1), _mixed(True), _mixed(None), _mixed("1"),
              _mixed(-2), _mixed(0), _raw(features=[1, "a", 2])]
    for payload in common:
        decode(payload)  # raises if the typed decoder refused it
    batch = decode_batch(common, N, CATEGORIES)
    assert batch.errors == []
    # the category's index, -1 for an unlisted one; True and 1 are one category, "1" another
    assert batch.rows[:, 1].tolist() == [0, 1, -1, 3, 3, 4, 5, 6, -1, 0]
    assert batch.rows[:, [0, 2]].tolist() == [[1.5, -2.0]] * 9 + [[1.0, 2.0]]


@pytest.mark.parametrize("index", range(len(HOSTILE_MIXED)))
def test_every_hostile_payload_with_categories_gets_the_general_verdict(index):
    payload = HOSTILE_MIXED[index]
    assert_same(_typed_mixed([payload]), _decode_general([payload], N, CATEGORIES))
    goods = [_mixed(value) for value in ("a", 1, None)]
    for where in (0, 2, 3):
        batch = goods[:where] + [payload] + goods[where:]
        assert_same(_typed_mixed(batch), _decode_general(batch, N, CATEGORIES))


_category_text = st.one_of(st.sampled_from(CATEGORY_LITERALS), _feature)


@st.composite
def _mixed_payloads(draw: st.DrawFn) -> bytes:
    features = [draw(_feature), draw(_category_text), draw(_feature)][: draw(st.integers(N - 1, N))]
    return _raw(features="@@").replace(b'"@@"', ("[" + ",".join(features) + "]").encode("utf-8", "surrogateescape"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mixed_payloads(), min_size=1, max_size=8))
def test_generated_batches_with_categories_get_the_general_verdict(batch):
    assert_same(_typed_mixed(batch), _decode_general(batch, N, CATEGORIES))
