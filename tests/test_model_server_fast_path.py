"""The common-predictions fast path (components/model_server/fast_path.py and its pinned patch in
seldon_patch.py) against Seldon's own Flask app, in the model server image's venv (seldon-core 1.17.1,
Flask 2.2.5): the same status line, headers (in order) and body bytes for every kind of request, the
same counts in our series and the same inference-log records; the patch refused on a changed Seldon
function or another Flask; every request sent to Flask when the app has request hooks (tracing) or
Seldon's debug log is on."""

from __future__ import annotations

import json
import subprocess

import pytest

from imagebuild import ImageEnv, build_image

CHECK = r"""
import io, json, logging, os, sys, tempfile
import numpy as np, pandas as pd
import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression
from werkzeug.test import EnvironBuilder
from seldon_core import wrapper
from seldon_core.metrics import SeldonMetrics
import model_server.seldon_patch as patch
from model_server.server import ModelServer

logs = []
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
logging.getLogger(patch.__name__).addHandler(type("H", (logging.Handler,), {"emit": lambda h, r: logs.append(r.getMessage())})())
seldons_own = wrapper.get_rest_microservice
# Refused, loudly, Seldon untouched: a changed Seldon function, another Flask.
fingerprint = patch.FINGERPRINTS["seldon_core.flask_utils:get_request"]
patch.FINGERPRINTS["seldon_core.flask_utils:get_request"] = "0" * 64
refused = [patch.answer_common_predictions_in_front()]
patch.FINGERPRINTS["seldon_core.flask_utils:get_request"] = fingerprint
real_version = patch.version
patch.version = lambda name: "2.3.0" if name == "flask" else real_version(name)
refused.append(patch.answer_common_predictions_in_front())
patch.version = real_version
unchanged = wrapper.get_rest_microservice is seldons_own

# A regressor (float outputs, so float formatting is compared too) on two features.
frame = pd.DataFrame({"amount": np.linspace(0, 100, 50), "hour": np.arange(50) % 24})
model = LinearRegression().fit(frame, frame.amount * 0.37 - frame.hour / 3)
folder = tempfile.mkdtemp()
mlflow.sklearn.save_model(model, folder + "/m", signature=infer_signature(frame, model.predict(frame)))
os.environ["MODEL_SERVER_MODEL_URI"] = folder + "/m"
server = ModelServer()  # applies both patches
applied = wrapper.get_rest_microservice is not seldons_own
server.load()
server.shipper.stop()  # no broker here: the records stay in the buffer, where they are compared
metrics = SeldonMetrics(worker_id_func=lambda: 1)
fast = wrapper.get_rest_microservice(server, metrics)
plain = seldons_own(server, metrics)
not_loaded = ModelServer()
failing = ModelServer()
failing.__dict__.update({k: v for k, v in server.__dict__.items()})
failing._predict = lambda frame: (_ for _ in ()).throw(ZeroDivisionError("boom"))
apps = {"loaded": (fast, plain),
        "not loaded": (wrapper.get_rest_microservice(not_loaded, metrics), seldons_own(not_loaded, metrics)),
        "failing": (wrapper.get_rest_microservice(failing, metrics), seldons_own(failing, metrics))}

common = {"data": {"names": ["amount", "hour"], "ndarray": [[80.5, 3]]}}
J = "application/json"
cases = [
    # (name, which apps, method, path, content type, body, query string, extra headers)
    ("names and ndarray", "loaded", "POST", "/api/v1.0/predictions", J, common, "", {}),
    ("no names, two rows", "loaded", "POST", "/api/v1.0/predictions", J, {"data": {"ndarray": [[1.5, 2], [3, 4]]}}, "", {}),
    ("meta passed on", "loaded", "POST", "/api/v1.0/predictions", J,
     {"data": {"names": ["hour", "amount"], "ndarray": [[3, 80.5]]},
      "meta": {"puid": "p-1", "tags": {"client": "caf\u00e9 \u2713"}, "requestPath": {"router": "img:1"}}}, "", {}),
    ("v0.1 path", "loaded", "POST", "/api/v0.1/predictions", J, common, "", {}),
    ("/predict", "loaded", "POST", "/predict", J, common, "", {}),
    ("unknown feature name", "loaded", "POST", "/api/v1.0/predictions", J,
     {"data": {"names": ["amount", "colour"], "ndarray": [[1.0, 2]]}}, "", {}),
    ("bad value", "loaded", "POST", "/api/v1.0/predictions", J, {"data": {"ndarray": [[1.0, "x"]]}}, "", {}),
    ("not loaded", "not loaded", "POST", "/api/v1.0/predictions", J, common, "", {}),
    ("model raises", "failing", "POST", "/api/v1.0/predictions", J, common, "", {}),
    ("not JSON", "loaded", "POST", "/api/v1.0/predictions", J, b"{data", "", {}),
    ("null", "loaded", "POST", "/api/v1.0/predictions", J, b"null", "", {}),
    ("empty body", "loaded", "POST", "/api/v1.0/predictions", J, b"", "", {}),
    ("a JSON list", "loaded", "POST", "/api/v1.0/predictions", J, [[80.5, 3]], "", {}),
    ("nested too deep", "loaded", "POST", "/api/v1.0/predictions", J, b"[" * 100000 + b"]" * 100000, "", {}),
    ("tensor", "loaded", "POST", "/api/v1.0/predictions", J,
     {"data": {"names": ["amount", "hour"], "tensor": {"shape": [1, 2], "values": [80.5, 3]}}}, "", {}),
    ("jsonData", "loaded", "POST", "/api/v1.0/predictions", J, {"jsonData": [{"amount": 80.5, "hour": 3}]}, "", {}),
    ("custom metrics", "loaded", "POST", "/api/v1.0/predictions", J,
     {"data": {"ndarray": [[80.5, 3]]}, "meta": {"metrics": [{"key": "c", "type": "COUNTER", "value": 1}]}}, "", {}),
    ("Origin header", "loaded", "POST", "/api/v1.0/predictions", J, common, "", {"Origin": "https://a.example"}),
    ("json in the query", "loaded", "POST", "/api/v1.0/predictions", J, common,
     "json=" + json.dumps({"data": {"ndarray": [[1.0, 2]]}}), {}),
    ("charset", "loaded", "POST", "/api/v1.0/predictions", J + "; charset=utf-8", common, "", {}),
    ("charset, upper case", "loaded", "POST", "/api/v1.0/predictions", J + ";charset=UTF-8", common, "", {}),
    ("JSON, another charset", "loaded", "POST", "/api/v1.0/predictions", J + "; charset=latin-1", common, "", {}),
    ("+json", "loaded", "POST", "/api/v1.0/predictions", "application/seldon+json", common, "", {}),
    ("form", "loaded", "POST", "/api/v1.0/predictions", "application/x-www-form-urlencoded",
     b"json=" + json.dumps(common).encode(), "", {}),
    ("GET /predict", "loaded", "GET", "/predict", None, None, "json=" + json.dumps(common), {}),
    ("preflight", "loaded", "OPTIONS", "/api/v1.0/predictions", None, None, "",
     {"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}),
    ("trailing slash", "loaded", "POST", "/api/v1.0/predictions/", J, common, "", {}),
    ("status", "loaded", "GET", "/health/status", None, None, "", {}),
    ("ping", "loaded", "GET", "/health/ping", None, None, "", {}),
]


def call(app, case, chunked=False):
    name, _, method, path, content_type, body, query, headers = case
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    environ = EnvironBuilder(path=path, method=method, data=data, content_type=content_type,
                             query_string=query, headers=headers).get_environ()
    if chunked:  # a body without Content-Length, as gunicorn passes a chunked request
        environ.pop("CONTENT_LENGTH")
        environ["wsgi.input_terminated"] = True
    started = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: started.append([status, headers])))
    status, headers = started[0]
    return [status, [list(h) for h in headers], body.decode("latin-1")]


def counts():
    s = server.series
    return [s.ok._value.get(), s.bad_request._value.get(), s.error._value.get()]


def records():
    # Ids made up for requests without a puid count up per request: compared by kind, not value.
    return [[e.request_id if not e.request_id.startswith(server._id_prefix) else "made up", e.rows, e.predictions]
            for e in server.buffer.take(10**6)]


results = []
for case in cases:
    pair = apps[case[1]]
    taken = pair[0].wsgi_app.answered
    out = []
    for app in pair:
        before = counts()
        response = call(app, case)
        out.append([response, [a - b for a, b in zip(counts(), before)], records()])
    results.append([case[0], pair[0].wsgi_app.answered - taken, out[0], out[1]])
chunked = [call(app, cases[0], chunked=True) for app in (fast, plain)]
records()

# Request hooks (what Flask-OpenTracing registers) or Seldon's debug log: every request goes to Flask.
hooked = wrapper.get_rest_microservice(server, metrics)
hooked.before_request(lambda: None)
call(hooked, cases[0])
debug = wrapper.get_rest_microservice(server, metrics)
wrapper.logger.setLevel(logging.DEBUG)
call(debug, cases[0])
wrapper.logger.setLevel(logging.WARNING)
call(debug, cases[0])
print(json.dumps({"refused": refused, "unchanged": unchanged, "applied": applied, "logs": logs,
                  "results": results, "chunked": chunked,
                  "hooked": hooked.wsgi_app.answered, "debug": debug.wsgi_app.answered}))
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    """components/model_server/Dockerfile's venv (Python 3.11, seldon-core 1.17.1) and /app."""
    return build_image("model_server", tmp_path_factory.mktemp("model-server-image"))


@pytest.fixture(scope="module")
def checked(image: ImageEnv, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """CHECK's findings, run once with the image's Python, ENV and /app."""
    work = tmp_path_factory.mktemp("fast-path")
    env = {"MODEL_SERVER_MODEL_NAME": "m", "MODEL_SERVER_REGISTERED_MODEL": "m", "MODEL_SERVER_MODEL_VERSION": "3",
           "PREDICTOR_ID": "main", "MODEL_SERVER_RELEASE_ID": "r-1", "MODEL_SERVER_LOGGING_ENABLED": "true",
           "MODEL_SERVER_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "MODEL_SERVER_KAFKA_TOPIC": "m-dev-inference-log",
           "MODEL_SERVER_FEATURES": '[{"name": "amount", "type": "numeric"}, {"name": "hour", "type": "numeric"}]',
           "PROMETHEUS_MULTIPROC_DIR": str(work / "prometheus"), "HOME": str(work), "TMPDIR": str(work),
           "PREDICTIVE_UNIT_ID": "fraud-detector", "PREDICTIVE_UNIT_IMAGE": "model-server:1",
           "SELDON_LOG_LEVEL": "WARNING"}
    done = subprocess.run([image.python, "-c", CHECK], env={**image.env, **env}, cwd=image.workdir,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_patch_is_pinned_to_seldons_code_and_flasks_version(checked: dict) -> None:
    """A changed Seldon function or another Flask: not applied, a warning says why, Seldon untouched;
    the image's own seldon-core 1.17.1 and Flask 2.2.5: applied (this test fails if it stops applying)."""
    assert checked["refused"] == [False, False] and checked["unchanged"] is True
    assert "seldon_core.flask_utils:get_request is not the code" in checked["logs"][0]
    assert "flask 2.3.0 is not 2.2.5" in checked["logs"][1]
    assert all("NOT applied" in line for line in checked["logs"][:2])
    assert checked["applied"] is True


def test_every_request_gets_the_same_bytes_counts_and_records_as_from_seldons_app(checked: dict) -> None:
    """Status line, headers in order and body bytes equal to Seldon's Flask app's for every kind of
    request (common ones, 400s, 503, 500, bodies that are not JSON, other payloads, CORS, query and form
    requests, other routes); so are the outcome counts in our series and the inference-log records."""
    for name, _answered, fast, plain in checked["results"]:
        assert fast == plain, name
    by_name = {name: (answered, fast) for name, answered, fast, _ in checked["results"]}
    first = json.loads(by_name["names and ndarray"][1][0][2])
    assert by_name["names and ndarray"][1][0][:2] == ["200 OK", [["Content-Type", "application/json"],
                                                                  ["Content-Length", str(len(by_name["names and ndarray"][1][0][2]))],
                                                                  ["Access-Control-Allow-Origin", "*"]]]
    assert first["meta"]["tags"] == {"model_version": "3", "predictor": "main", "release_id": "r-1"}
    assert isinstance(first["data"]["ndarray"][0], float)
    assert "\\u00e9 \\u2713" in by_name["meta passed on"][1][0][2]  # ASCII, as Flask's jsonify writes
    assert by_name["unknown feature name"][1][0][0] == "400 BAD REQUEST"
    assert by_name["not loaded"][1][0][0] == "503 SERVICE UNAVAILABLE"
    assert by_name["model raises"][1][0][0] == "500 INTERNAL SERVER ERROR"
    assert by_name["not JSON"][1][0][0] == "400 BAD REQUEST"
    assert ["Access-Control-Allow-Origin", "https://a.example"] in by_name["Origin header"][1][0][1]  # echoed
    assert by_name["names and ndarray"][1][1] == [1, 0, 0] and by_name["bad value"][1][1] == [0, 1, 0]
    assert by_name["names and ndarray"][1][2][0][1] == [[80.5, 3.0]]  # the record, in the contract's order
    assert by_name["meta passed on"][1][2][0][0] == "p-1"


def test_only_the_common_request_is_answered_in_front_of_flask(checked: dict) -> None:
    """The common requests are answered by the fast path (so it is in use), every other one by Flask;
    so is every request to an app with request hooks or while Seldon's debug log is on."""
    answered = {name: count for name, count, _, _ in checked["results"]}
    fast = {"names and ndarray", "no names, two rows", "meta passed on", "v0.1 path", "/predict", "charset",
            "charset, upper case"}
    assert {name for name, count in answered.items() if count} == fast
    assert all(answered[name] == 1 for name in fast)
    assert checked["chunked"][0] == checked["chunked"][1]
    assert checked["hooked"] == 0 and checked["debug"] == 1
