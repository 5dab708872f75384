"""The serving floors of benchmarks/peers.py: our model server's handler without Seldon.

Run from the model server image's venv (Python 3.11, Flask 2.2.5, gunicorn 20.1.0, Starlette 0.48.0,
uvicorn 0.55.0 are all in it) with the same settings as the server (``MODEL_SERVER_*``): one
:class:`model_server.server.ModelServer`, loaded after the fork, answers ``POST /api/v1.0/predictions``
with a Seldon-shaped body. What Seldon's request handling does around ``predict`` is done the plain way
(the JSON body, ``data.ndarray`` through ``np.array`` as Seldon does, ``data.names``, the response's
``data`` and ``meta.tags``), so the difference to ours is Seldon's wrapper and nothing else: the payload
contract, the model call, the Prometheus series and the inference log are the same code.

    gunicorn -w 1 -b HOST:PORT 'floor_app:flask_app()'         # sync worker, as Seldon runs gunicorn
    uvicorn --factory floor_app:starlette_app --host HOST --port PORT
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def _server():
    from model_server.server import ModelServer

    server = ModelServer()
    server.load()
    return server


def _answer(server: Any, body: bytes) -> tuple[int, bytes]:
    from seldon_core.flask_utils import SeldonMicroserviceException

    try:
        request = json.loads(body)
        data = request["data"]
        output = server.predict(np.array(data["ndarray"]), data.get("names"), request.get("meta") or {})
    except SeldonMicroserviceException as exc:
        return exc.status_code, json.dumps({"status": {"code": exc.status_code, "info": exc.message,
                                                       "reason": exc.reason}}).encode()
    except (ValueError, KeyError, TypeError) as exc:
        return 400, json.dumps({"status": {"code": 400, "info": str(exc)}}).encode()
    response = {"data": {"names": [], "ndarray": output.tolist()}, "meta": {"tags": server.tags()}}
    return 200, json.dumps(response).encode()


def flask_app():
    """The Flask app (gunicorn's ``'floor_app:flask_app()'``): the server is loaded in the worker."""
    from flask import Flask, Response, request

    app = Flask("floor")
    server = _server()

    @app.route("/api/v1.0/predictions", methods=["POST"])
    def predictions():
        status, body = _answer(server, request.get_data())
        return Response(body, status=status, mimetype="application/json")

    @app.route("/health/ping")
    def ping():
        return "pong"

    return app


def starlette_app():
    """The Starlette app (``uvicorn --factory floor_app:starlette_app``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    server = _server()

    async def predictions(request: Request) -> Response:
        status, body = _answer(server, await request.body())
        return Response(body, status_code=status, media_type="application/json")

    async def ping(request: Request) -> Response:
        return PlainTextResponse("pong")

    return Starlette(routes=[Route("/api/v1.0/predictions", predictions, methods=["POST"]),
                             Route("/health/ping", ping)])
