"""The common prediction request, answered in front of Seldon's Flask app with the bytes that app sends.

Seldon's REST app (``seldon_core.wrapper.get_rest_microservice``) is Flask: per request a request and an
app context, URL routing, ``get_request`` (which parses the form and the query string before the JSON
body), ``seldon_methods.predict``, ``jsonify``, and Flask-CORS's ``after_request`` hook. For the request
a Seldon executor sends a model, ``POST /api/v1.0/predictions`` with a JSON body, all of that produces
one JSON document from what ``predict_raw`` returns. :class:`CommonPredictions` is WSGI middleware on
the app (``app.wsgi_app``, Flask's place for middleware) that produces that response itself: Seldon's
``json.loads`` of the body, the model's ``predict_raw``, Seldon's ``handle_raw_custom_metrics``, the
body Flask's ``jsonify`` writes (the app's JSON provider's ``default``, ASCII, sorted keys, compact,
a newline) and the headers Flask and Flask-CORS send (``Content-Type``, ``Content-Length``,
``Access-Control-Allow-Origin: *``), in that order.

Everything else goes to the Flask app unchanged: any other method, path, content type (other than
``application/json`` with or without a UTF-8 charset) or query string, a request with an ``Origin`` header (Flask-CORS then echoes it), a body that is not JSON or
that ``predict_raw`` hands back to Seldon (``SeldonNotImplementedError``: tensors, ``jsonData``,
``meta.metrics``), an app with request hooks or signal receivers (tracing: Flask-OpenTracing's), and
every request while Seldon's or Flask-CORS's debug log is on (they log each request). When
``predict_raw`` raises anything else (a 400 for a bad payload, a 503, a 500), the request goes to the
Flask app too, which raises that same exception in Seldon's ``Predict`` view instead of predicting
again, so Seldon's own error handlers write the response and the log line.

It assumes Seldon's app as seldon-core 1.17.1 builds it with Flask 2.2.5, Werkzeug 2.2.3 and
Flask-Cors 3.0.10: ``seldon_patch.answer_common_predictions_in_front`` installs it only on those
versions and when the Seldon functions it stands in for are the code it was written against.
"""

from __future__ import annotations

import functools
import io
import json
import logging
from typing import Any

log = logging.getLogger(__name__)

PREDICTION_PATHS = frozenset(("/api/v1.0/predictions", "/api/v0.1/predictions", "/predict"))
"""The paths Seldon's app routes to its ``Predict`` view, for POST."""
JSON_CONTENT_TYPES = frozenset(("application/json", "application/json; charset=utf-8", "application/json;charset=utf-8",
                                "application/json; charset=UTF-8", "application/json;charset=UTF-8"))
"""Content types taken here: Seldon's executor passes the client's on. Werkzeug reads each as the mimetype
``application/json`` (no form parsing, ``get_json`` parses the bytes), and ``json.loads`` of bytes ignores
the charset parameter, as Flask's ``get_json`` does."""
RAISED_BY_PREDICT = "mlops.model_server.raised_by_predict"
"""WSGI environ key: the exception ``predict_raw`` raised here, for Seldon's view to raise in Flask."""
_JSON_CONFIG = ("JSON_AS_ASCII", "JSON_SORT_KEYS", "JSONIFY_PRETTYPRINT_REGULAR", "JSONIFY_MIMETYPE")
_SIGNALS = ("request_started", "request_finished", "request_tearing_down", "got_request_exception",
            "appcontext_tearing_down", "appcontext_pushed", "appcontext_popped")


def install(app: Any, user_model: Any, seldon_metrics: Any) -> str | None:
    """Put :class:`CommonPredictions` in front of Seldon's Flask ``app``; None when installed, else why not.

    Refused when the app would not answer the common request the way the middleware does: Flask's
    JSON settings changed (Seldon copies ``FLASK_*`` variables into the config), a debug app, Seldon's
    payload passthrough, Flask-CORS options, a model class Seldon would not call ``predict_raw`` on.
    """
    from flask import Response
    from flask.json.provider import DefaultJSONProvider
    from seldon_core import wrapper

    provider = app.json
    if app.debug or type(provider) is not DefaultJSONProvider or app.response_class is not Response:
        return "the app is in debug mode or has its own JSON provider or response class"
    settings = (provider.ensure_ascii, provider.sort_keys, provider.compact, provider.mimetype)
    if settings != (True, True, None, "application/json") or getattr(app, "_json_encoder", None) is not None \
            or any(app.config.get(key) is not None for key in _JSON_CONFIG):
        return "Flask's JSON settings are not its defaults (FLASK_JSON_* or FLASK_JSONIFY_* set)"
    if wrapper.PAYLOAD_PASSTHROUGH:
        return "PAYLOAD_PASSTHROUGH is on"
    if any(key.startswith("CORS_") for key in app.config):
        return "Flask-CORS has options in the app's config"
    if not hasattr(user_model, "predict_raw") or hasattr(user_model, "predict_rest"):
        return "Seldon does not answer this model's requests with predict_raw"
    if "Predict" not in app.view_functions:
        return "the app has no Predict view"
    app.view_functions["Predict"] = _raising_view(app.view_functions["Predict"])
    app.wsgi_app = CommonPredictions(app, user_model, seldon_metrics)
    return None


def _raising_view(view: Any) -> Any:
    """Seldon's ``Predict`` view, which first raises what ``predict_raw`` raised in the middleware."""
    from flask import request

    @functools.wraps(view)
    def predict_view() -> Any:
        raised = request.environ.pop(RAISED_BY_PREDICT, None)
        if raised is not None:
            raise raised
        return view()

    return predict_view


class CommonPredictions:
    """WSGI middleware answering ``POST`` predictions with a JSON body; the rest goes to Flask."""

    def __init__(self, app: Any, user_model: Any, seldon_metrics: Any) -> None:
        from seldon_core import wrapper
        from seldon_core.metrics import PREDICT_METRIC_METHOD_TAG
        from seldon_core.seldon_methods import handle_raw_custom_metrics
        from seldon_core.user_model import SeldonNotImplementedError

        self.app = app
        self.flask = app.wsgi_app
        self.predict_raw = user_model.predict_raw
        self.seldon_metrics = seldon_metrics
        self._custom_metrics = functools.partial(handle_raw_custom_metrics, is_proto=False,
                                                 method=PREDICT_METRIC_METHOD_TAG)
        self._not_here = SeldonNotImplementedError
        # What json.dumps builds for Flask's jsonify (DefaultJSONProvider.dumps and .response, compact).
        self._encode = json.JSONEncoder(ensure_ascii=True, sort_keys=True, separators=(",", ":"),
                                        default=app.json.default).encode
        self._debug_logs = (wrapper.logger, logging.getLogger("flask_cors.core"),
                            logging.getLogger("flask_cors.extension"))
        self._cors_hook = list(app.after_request_funcs.get(None, ()))
        self._plain: bool | None = None
        self.answered = 0
        """Requests this worker answered here (the tests read it)."""

    def __call__(self, environ: dict, start_response: Any) -> Any:
        """Answer the common request; hand anything else to Seldon's Flask app."""
        if (environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") not in PREDICTION_PATHS
                or environ.get("CONTENT_TYPE") not in JSON_CONTENT_TYPES or environ.get("QUERY_STRING")
                or "HTTP_ORIGIN" in environ or not self._plain_app()
                or any(logger.isEnabledFor(logging.DEBUG) for logger in self._debug_logs)):
            return self.flask(environ, start_response)
        length = environ.get("CONTENT_LENGTH", "")
        if not length.isdigit():
            return self.flask(environ, start_response)
        body = environ["wsgi.input"].read(int(length))
        try:
            request = json.loads(body)  # what Flask's get_json does with the body: json.loads of the bytes
        except Exception:  # not JSON (or nested too deep): Flask and Seldon answer it their own way
            return self._to_flask(environ, start_response, body)
        if type(request) is not dict:
            return self._to_flask(environ, start_response, body)
        try:
            response = self.predict_raw(request)
            self._custom_metrics(response, self.seldon_metrics)
            if type(response) is not dict or "status" in response:
                # Seldon would take the HTTP status from it; ModelServer.predict_raw never sends one.
                raise TypeError("predict_raw answered with something other than a SeldonMessage dict "
                                "without status")
            payload = (self._encode(response) + "\n").encode()
        except self._not_here:  # raised before predicting: Seldon's handling of the request runs instead
            return self._to_flask(environ, start_response, body)
        except Exception as exc:  # raised again by Seldon's view: its error handlers answer
            return self._to_flask(environ, start_response, body, raised=exc)
        self.answered += 1
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                                  ("Access-Control-Allow-Origin", "*")])
        return [payload]

    def _to_flask(self, environ: dict, start_response: Any, body: bytes, raised: Exception | None = None) -> Any:
        # The body was read here: Flask reads it again from a copy (same bytes, same Content-Length).
        environ["wsgi.input"] = io.BytesIO(body)
        if raised is not None:
            environ[RAISED_BY_PREDICT] = raised
        return self.flask(environ, start_response)

    def _plain_app(self) -> bool:
        """True when Flask would run nothing around the view but Flask-CORS's hook: decided on the first
        request, as Flask refuses setup (hooks) from its first request on; Flask's flag is set here too."""
        if self._plain is None:
            from flask import signals

            app = self.app
            hooks = (app.before_request_funcs, app.url_value_preprocessors, app.teardown_request_funcs)
            self._plain = (not app.before_first_request_funcs and not app.teardown_appcontext_funcs
                           and not any(funcs for hook in hooks for funcs in hook.values())
                           and {k: v for k, v in app.after_request_funcs.items() if v} == {None: self._cors_hook}
                           and len(self._cors_hook) == 1
                           and not any(getattr(getattr(signals, name), "receivers", None) for name in _SIGNALS))
            if self._plain:
                # What Flask's full_dispatch_request does on a first request without before_first_request
                # functions: from now on a setup method raises, as it would had Flask served this request.
                app._got_first_request = True
            else:
                log.info("the app has request hooks or signal receivers (tracing?): every request goes "
                         "through Seldon's Flask app")
        return self._plain
