"""The model server's pure parts: the payload contract, the bounded buffer, settings and record encoding
(the dev venv has no seldon-core: what needs it runs from the image, tests/test_model_server.py)."""

from __future__ import annotations

import numpy as np
import pytest
from inference_log import decode
from model_server.buffer import InferenceBuffer, LoggedRequest
from model_server.payload import FeatureContract, PayloadError
from model_server.settings import ConfigError, FeatureSpec, load_settings
from model_server.shipper import encode_requests

FEATURES = [FeatureSpec(name="amount"), FeatureSpec(name="hour"),
            FeatureSpec(name="category", type="categorical", categories=["a", "b"]),
            FeatureSpec(name="present", type="categorical", categories=[0, 1])]
BASE_ENV = {
    "MODEL_SERVER_MODEL_NAME": "m", "MODEL_SERVER_REGISTERED_MODEL": "m", "MODEL_SERVER_MODEL_VERSION": "3",
    "MODEL_SERVER_MODEL_URI": "s3://bucket/model", "PREDICTOR_ID": "candidate",
    "MODEL_SERVER_FEATURES": '[{"name": "amount", "type": "numeric"}, {"name": "hour", "type": "numeric"}]',
    "MODEL_SERVER_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "MODEL_SERVER_KAFKA_TOPIC": "m-inference",
    "PROMETHEUS_MULTIPROC_DIR": "/tmp/prom",
}


# --- payloads ---------------------------------------------------------------------------------------


def test_every_payload_shape_gives_the_same_rows_in_contract_order() -> None:
    contract = FeatureContract(FEATURES, {"hour": "long"})
    expected = [[12.5, 3, "a", 1], [1.0, 23, "b", 0]]
    shapes = [
        (np.array([[12.5, 3, "a", 1], [1.0, 23, "b", 0]], dtype=object), None),
        # Seldon turns a mixed ndarray into text: numbers arrive as strings.
        (np.array([["a", "1", "12.5", "3"], ["b", "0", "1.0", "23"]]), ["category", "present", "amount", "hour"]),
        ([{"hour": 3, "amount": 12.5, "category": "a", "present": 1},
          {"hour": 23, "amount": 1, "category": "b", "present": 0}], None),
        ({"columns": ["amount", "hour", "category", "present"], "data": [[12.5, 3, "a", 1], [1, 23, "b", 0]]}, None),
        ({"amount": [12.5, 1], "hour": [3, 23], "category": ["a", "b"], "present": [1, 0]}, None),
    ]
    for payload, names in shapes:
        parsed = contract.parse(payload, names)
        assert parsed.rows == expected, payload
        assert list(parsed.frame.columns) == ["amount", "hour", "category", "present"]
        assert str(parsed.frame["hour"].dtype) == "int64"  # the signature says long
        assert str(parsed.frame["amount"].dtype) == "float64"
    single = contract.parse({"amount": 2, "hour": 4, "category": "z", "present": 0})
    assert single.rows == [[2.0, 4, "z", 0]]  # an unseen category is the model's (and drift's) business


@pytest.mark.parametrize("payload, names, fragment", [
    ([[1.0, 2, "a"]], None, "row 0 has 3 values"),
    ([[True, 2, "a", 1]], None, "amount=True"),
    ([[float("nan"), 2, "a", 1]], None, "not a finite number"),
    ([[1.0, 2, None, 1]], None, "category=None"),
    ([[1.0, 2, "a", "yes"]], None, "present='yes'"),
    ([[1.0, 2, "a", 1]], ["amount", "hour", "category", "colour"], "missing present; unknown colour"),
    ([[1.0, 2, "a", 1, 5]], ["amount", "hour", "category", "present", "present"], "a name appears twice"),
    ({"amount": [1, 2], "hour": [1]}, None, "different lengths"),
    ([{"amount": 1, "hour": 2, "category": "a", "present": 1}, {"amount": 1}], None, "record 1 has fields"),
    (np.zeros((1, 4, 2)), None, "3 dimensions"),
    ("amount=1", None, "unsupported payload (str)"),
    ([], None, "no rows"),
])
def test_bad_payloads_name_the_problem_and_the_contract(payload, names, fragment) -> None:
    with pytest.raises(PayloadError) as caught:
        FeatureContract(FEATURES, {"hour": "long"}).parse(payload, names)
    message = str(caught.value)
    assert fragment in message
    assert "4 features [amount (numeric), hour (numeric), category (categorical: a, b), present (categorical: 0, 1)]" \
        in message


def test_integer_columns_refuse_fractions_but_float_columns_take_integers() -> None:
    contract = FeatureContract(FEATURES, {"hour": "long"})
    with pytest.raises(PayloadError, match=r"hour=2.5 .*not an integer"):
        contract.parse([[1, 2.5, "a", 1]])
    assert contract.parse([[1, 2.0, "a", 1]]).rows == [[1.0, 2, "a", 1]]
    untyped = FeatureContract(FEATURES)  # no signature: numeric features are floats
    assert untyped.parse([[1, 2, "a", 1]]).rows == [[1.0, 2.0, "a", 1]]


# --- the buffer -------------------------------------------------------------------------------------------


def entry(request_id: str, rows: int) -> LoggedRequest:
    return LoggedRequest(request_id, 1.0, [[float(i)] for i in range(rows)], list(range(rows)))


def test_the_buffer_drops_the_oldest_requests_and_counts_their_rows() -> None:
    buffer = InferenceBuffer(capacity=5)
    assert buffer.put(entry("a", 2)) == 0
    assert buffer.put(entry("b", 2)) == 0
    assert buffer.put(entry("c", 2)) == 2  # "a" makes room
    assert len(buffer) == 4
    assert buffer.put(entry("huge", 7)) == 4 + 2  # everything else, and the oldest 2 of its own 7 rows
    taken = buffer.take(100)
    assert [e.request_id for e in taken] == ["huge"] and len(taken[0].rows) == 5
    assert taken[0].predictions == [2, 3, 4, 5, 6]
    assert len(buffer) == 0 and buffer.take(10) == []


def test_take_returns_whole_requests_up_to_the_batch_size() -> None:
    buffer = InferenceBuffer(capacity=100)
    for name in "abcd":
        buffer.put(entry(name, 3))
    assert [e.request_id for e in buffer.take(7)] == ["a", "b"]
    assert [e.request_id for e in buffer.take(1)] == ["c"]  # at least one request, even if bigger
    assert len(buffer) == 3


# --- settings and records ----------------------------------------------------------------------------------


def test_settings_read_the_rendered_variables_and_seldons_predictor() -> None:
    settings = load_settings(BASE_ENV)
    assert settings.predictor == "candidate"
    assert settings.feature_names == ["amount", "hour"]
    assert settings.logging_enabled and settings.buffer_records == 20_000
    assert load_settings({**BASE_ENV, "MODEL_SERVER_PREDICTOR": "shadow"}).predictor == "shadow"


@pytest.mark.parametrize("change, fragment", [
    ({"MODEL_SERVER_FEATURES": "[not json"}, "MODEL_SERVER_FEATURES: not JSON"),
    ({"MODEL_SERVER_FEATURES": '[{"name": "a"}, {"name": "a"}]'}, "lists a feature twice"),
    ({"MODEL_SERVER_KAFKA_TOPIC": ""}, "MODEL_SERVER_LOGGING_ENABLED=false"),
    ({"PROMETHEUS_MULTIPROC_DIR": ""}, "PROMETHEUS_MULTIPROC_DIR is not set"),
    ({"MODEL_SERVER_BUFFER_RECORDS": "0"}, "MODEL_SERVER_BUFFER_RECORDS"),
    ({"PREDICTOR_ID": None}, "PREDICTOR_ID (Seldon's operator sets it"),
])
def test_bad_settings_are_refused_with_the_variable_named(change: dict, fragment: str) -> None:
    env = {**BASE_ENV, **change}
    env = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert fragment in str(caught.value)


def test_records_are_valid_inference_log_records_one_per_row() -> None:
    settings = load_settings(BASE_ENV)
    payloads = encode_requests(settings, [LoggedRequest("r1", 5.5, [[1.0, 2.0]], [1]),
                                          LoggedRequest("r2", 6.5, [[3.0, 4.0], [5.0, 6.0]], ["x", "y"])])
    records = [decode(p) for p in payloads]
    assert [(r.request_id, r.features, r.prediction) for r in records] == [
        ("r1", [1.0, 2.0], 1), ("r2:0", [3.0, 4.0], "x"), ("r2:1", [5.0, 6.0], "y")]
    assert {(r.model, r.version, r.predictor) for r in records} == {("m", "3", "candidate")}


def test_the_fast_encoder_writes_the_same_bytes_as_the_validating_one() -> None:
    from inference_log import encode, encode_fields

    for features, prediction in (([1.5, 2, "a", True, None], 0.25), ([0.0], "fraud"), ([-1e300, "ü"], [1, 2])):
        fields = ("m", "7", "main", "req-1", 1767225600.123, features, prediction)
        keys = ("model", "version", "predictor", "request_id", "timestamp", "features", "prediction")
        assert encode_fields(*fields) == encode(dict(zip(keys, fields, strict=True)))


def test_the_entry_point_hands_the_multiprocess_directory_on_under_the_old_name_without_prometheus() -> None:
    """prometheus-client 0.8 (seldon-core 1.17.1's) reads only ``prometheus_multiproc_dir``, and only when
    first imported: the value comes from the settings, and reading it must not import prometheus-client."""
    import subprocess
    import sys
    from pathlib import Path

    from model_server.settings import legacy_prometheus_variables

    assert legacy_prometheus_variables({"PROMETHEUS_MULTIPROC_DIR": "/tmp/prom"}) == {
        "prometheus_multiproc_dir": "/tmp/prom"}
    assert legacy_prometheus_variables({"PROMETHEUS_MULTIPROC_DIR": ""}) == {}
    assert legacy_prometheus_variables({}) == {}
    probe = ("import sys, model_server.__main__ as entry; "
             "print(entry.legacy_prometheus_variables(), 'prometheus_client' in sys.modules)")
    components = Path(__file__).resolve().parents[1] / "components"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                          env={"PYTHONPATH": str(components), "PROMETHEUS_MULTIPROC_DIR": "/tmp/prom-entry"})
    assert done.stdout.split() == ["{'prometheus_multiproc_dir':", "'/tmp/prom-entry'}", "False"]


# --- the model call -----------------------------------------------------------------------------------


def _saved_pipeline(tmp_path, frame, name: str):
    """A real sklearn pipeline saved and loaded through MLflow, with the signature inferred from ``frame``."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    labels = (frame["amount"] > 50).astype(int)
    model = Pipeline([("encode", ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), ["category"])],
                                                   remainder="passthrough")),
                      ("classify", LogisticRegression())]).fit(frame, labels)
    mlflow.sklearn.save_model(model, str(tmp_path / name), signature=infer_signature(frame, model.predict(frame)))
    return mlflow.pyfunc.load_model(str(tmp_path / name))


def test_the_model_is_called_directly_only_when_the_contract_already_enforces_its_signature(tmp_path) -> None:
    """MLflow's PyFuncModel.predict enforces the signature on every call; when the payload contract's
    DataFrame already has the signature's columns in order and of its dtypes, the server calls the
    model's own predict (same predictions), otherwise PyFuncModel.predict."""
    import pandas as pd
    from model_server.server import _model_predict, _signature_types

    features = [FeatureSpec(name="amount"), FeatureSpec(name="hour"),
                FeatureSpec(name="category", type="categorical", categories=["a", "b"])]
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"amount": rng.uniform(0, 100, 200), "hour": rng.integers(0, 24, 200),
                          "category": rng.choice(["a", "b"], 200)})
    model = _saved_pipeline(tmp_path, frame, "typed")
    types = _signature_types(model)
    assert types == {"amount": "double", "hour": "long", "category": "string"}
    contract = FeatureContract(features, types)
    direct = _model_predict(model, contract, types)
    assert direct != model.predict
    parsed = contract.parse([[12.5, 3, "a"], [99.0, 23, "b"], [60, 7, "z"]], None)
    assert direct(parsed.frame).tolist() == model.predict(parsed.frame).tolist()

    # float32 columns: the contract gives float64, so MLflow's enforcement must still run.
    narrow = frame.astype({"amount": "float32"})
    model32 = _saved_pipeline(tmp_path, narrow, "float32")
    types32 = _signature_types(model32)
    assert _model_predict(model32, FeatureContract(features, types32), types32) == model32.predict
    # The signature's column order is not the contract's: MLflow's path too.
    reordered = features[::-1]
    assert _model_predict(model, FeatureContract(reordered, types), types) == model.predict
