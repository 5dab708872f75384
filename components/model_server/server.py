"""The Seldon Core Python wrapper class: ``seldon-core-microservice model_server.server.ModelServer``.

Life cycle under Seldon's gunicorn server:

1. the main process builds :class:`ModelServer` (settings are read and checked here, so a bad
   configuration stops the container with ``ExitCode.CONFIG`` before anything listens) and empties the
   metrics directory;
2. Seldon starts :meth:`ModelServer.custom_service` in its own process: our ``/metrics`` endpoint;
3. each gunicorn worker calls :meth:`ModelServer.load` after the fork: it downloads the MLflow model,
   checks it against the release's ``artifact_sha256`` (when pinned), loads it and starts the worker's
   own Kafka shipper. A model that cannot be loaded, or does not match its digest, stops the worker with a clear
   message and ``ExitCode.ARTIFACT``, and gunicorn stops the server with it (3 is also gunicorn's "worker
   failed to boot"): a half-loaded model is never served. Until a worker has
   loaded, nothing answers ``/health/status`` (the readiness probe) or ``/health/ping``.

The main process imports neither pandas nor aiokafka (payload parsing and the shipper import them in
the workers): Seldon forks its metrics server (two processes), its metrics manager and our
:meth:`ModelServer.custom_service` from the main process, so everything the main process holds is held
again, in resident memory, by four more processes. Each of the five is about 25-35 MiB smaller for it
(importing Seldon alone: 73 MiB, with this module's old imports 120 MiB; in the demo the main process
went from 118 to 82 MiB and each fork from 84 to 58-60 MiB).
"""

from __future__ import annotations

import atexit
import functools
import itertools
import logging
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
from service_kit.artifact_digest import artifact_sha256

from model_server import ExitCode
from model_server.buffer import InferenceBuffer, LoggedRequest
from model_server.metrics import ServerMetrics, reset_multiprocess_dir, serve_metrics
from model_server.payload import FeatureContract, PayloadError
from model_server.seldon_patch import answer_common_predictions_in_front, skip_empty_metrics_updates
from model_server.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from model_server.shipper import InferenceLogShipper

log = logging.getLogger(__name__)


class ModelServer:
    """Serves one MLflow model version as one Seldon predictor and logs every prediction."""

    def __init__(self, settings: Settings | None = None) -> None:
        if settings is None:
            try:
                settings = load_settings()
            except ConfigError as exc:
                log.error("%s", exc)
                raise SystemExit(ExitCode.CONFIG) from None
        self.settings = settings
        self.model: Any = None
        self.contract = FeatureContract(self.settings.features)
        self.series: ServerMetrics | None = None
        self.buffer: InferenceBuffer | None = None
        self.shipper: InferenceLogShipper | None = None
        self._id_prefix = ""
        self._id_counter = itertools.count()
        self._predict: Any = None
        self._request_path: dict | None = None
        reset_multiprocess_dir(self.settings.prometheus_multiproc_dir)
        # In the main process, before Seldon builds its app and forks its workers: they inherit both.
        skip_empty_metrics_updates()
        answer_common_predictions_in_front()

    # --- Seldon hooks -----------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model and start inference logging (once per worker, after the fork)."""
        s = self.settings
        log.info("loading model %s version %s (predictor %s) from %s", s.model_name, s.model_version,
                 s.predictor, s.model_uri)
        started = time.monotonic()
        local = _verified_download(s)
        try:
            import mlflow.pyfunc

            model = mlflow.pyfunc.load_model(local or s.model_uri)
        except Exception as exc:
            message = (f"could not load model {s.registered_model} version {s.model_version} from "
                       f"{s.model_uri}: {type(exc).__name__}: {exc}. Check MODEL_SERVER_MODEL_URI, the S3 "
                       "endpoint and credentials (MLFLOW_S3_ENDPOINT_URL, AWS_*); the server will not start")
            log.error(message)
            raise SystemExit(ExitCode.ARTIFACT) from None
        types = _signature_types(model)
        self.contract = FeatureContract(s.features, types)
        self._predict = _model_predict(model, self.contract, types)
        self.series = ServerMetrics(s.model_name, s.model_version, s.predictor, s.max_class_labels)
        if s.logging_enabled:
            # Ids for requests that arrive without Seldon's puid: a random prefix per worker (drawn
            # after the fork) and a counter; as unique as a uuid4 each, without a system call per request.
            self._id_prefix = uuid.uuid4().hex[:20]
            from model_server.shipper import InferenceLogShipper

            self.buffer = InferenceBuffer(s.buffer_records)
            self.shipper = InferenceLogShipper(s, self.buffer, self.series)
            self.shipper.start()
            atexit.register(self.shipper.stop)
        self.model = model
        log.info("model loaded in %.1fs; inference logging %s", time.monotonic() - started,
                 f"to topic {s.kafka_topic}" if s.logging_enabled else "off")

    def predict(self, X: Any, features_names: list[str] | None = None, meta: dict | None = None) -> np.ndarray:
        """Validate the request, predict, and hand the rows and predictions to the shipper."""
        from seldon_core.flask_utils import SeldonMicroserviceException

        if self.model is None or self.series is None:
            raise SeldonMicroserviceException("the model is not loaded yet", status_code=503, reason="NOT_READY")
        started = time.perf_counter()
        try:
            parsed = self.contract.parse(X, features_names)
        except PayloadError as exc:
            self.series.bad_request.inc()
            raise SeldonMicroserviceException(str(exc), status_code=400, reason="BAD_PAYLOAD") from None
        try:
            output = self._predict(parsed.frame)
        except Exception as exc:
            if _is_schema_error(exc):
                self.series.bad_request.inc()
                raise SeldonMicroserviceException(
                    f"the model refused the input: {exc}; expected {self.contract.expected}",
                    status_code=400, reason="BAD_PAYLOAD") from None
            self.series.error.inc()
            log.exception("prediction failed")
            # a RuntimeError, not the original: Seldon retries predict without ``meta`` on TypeError
            raise RuntimeError(f"prediction failed: {type(exc).__name__}: {exc}") from None
        predictions = _as_list(output)
        if self.buffer is not None:
            request_id = str((meta or {}).get("puid") or f"{self._id_prefix}{next(self._id_counter):012x}")
            dropped = self.buffer.put(LoggedRequest(request_id, time.time(), parsed.rows, predictions))
            if dropped:
                self.series.dropped_buffer_full.inc(dropped)
        self.series.count_classes(predictions)
        self.series.ok.inc()
        self.series.latency.observe(time.perf_counter() - started)
        return np.asarray(output)

    def predict_raw(self, request: Any) -> dict:
        """Seldon's REST request handling for the common request, ``{"data": {"names": [...], "ndarray":
        [...]}}``, with the response Seldon's ``construct_response_json`` builds for it (same keys and
        values), without its generic steps (``SeldonResponse``, custom-metric and class-name lookups, the
        tensor/tftensor/proto dispatch). Anything else (gRPC messages, tensors, ``jsonData``, a request
        whose ``meta`` carries metrics) raises Seldon's ``SeldonNotImplementedError``, and Seldon then
        handles it its own way, calling :meth:`predict`."""
        from seldon_core.user_model import SeldonNotImplementedError

        if not isinstance(request, dict):  # a gRPC SeldonMessage, a JSON list, bytes
            raise SeldonNotImplementedError("handled by Seldon's request handling")
        data, meta = request.get("data"), request.get("meta")
        if (not isinstance(data, dict) or not isinstance(data.get("ndarray"), list) or "tensor" in data
                or "tftensor" in data or not isinstance(meta or {}, dict) or "metrics" in (meta or {})):
            raise SeldonNotImplementedError("handled by Seldon's request handling")
        output = self.predict(np.array(data["ndarray"]), data.get("names", []), meta=meta)
        response_meta: dict[str, Any] = {}
        tags = {**((meta or {}).get("tags") or {}), **self.tags()}
        if tags:
            response_meta["tags"] = tags
        if (meta or {}).get("puid"):
            response_meta["puid"] = meta["puid"]
        request_path = {**self._seldon_request_path(), **((meta or {}).get("requestPath") or {})}
        if request_path:
            response_meta["requestPath"] = request_path
        names = [f"t:{i}" for i in range(output.shape[1])] if output.ndim > 1 else []
        return {"data": {"ndarray": output.tolist(), "names": names}, "meta": response_meta}

    def _seldon_request_path(self) -> dict:
        if self._request_path is None:
            from seldon_core.utils import get_request_path

            self._request_path = get_request_path()
        return self._request_path

    def health_status(self) -> dict:
        """Readiness: 503 until the model is loaded in this worker."""
        from seldon_core.flask_utils import SeldonMicroserviceException

        if self.model is None:
            raise SeldonMicroserviceException("the model is not loaded yet", status_code=503, reason="NOT_READY")
        return {"model": self.settings.model_name, "version": self.settings.model_version,
                "predictor": self.settings.predictor,
                "inference_log": "off" if self.shipper is None else
                ("connected" if self.shipper.connected else "disconnected")}

    def tags(self) -> dict:
        """Merged into every response's ``meta.tags``: which release answered."""
        return {"model_version": self.settings.model_version, "release_id": self.settings.release_id,
                "predictor": self.settings.predictor}

    def init_metadata(self) -> dict:
        """Seldon's ``/metadata``: the model and its input contract."""
        return {"name": self.settings.model_name, "versions": [self.settings.model_version],
                "platform": "mlflow",
                "inputs": [{"messagetype": "jsonData",
                            "schema": {"names": self.contract.names}}]}

    def custom_service(self) -> None:
        """Our ``/metrics`` endpoint (its own process, started by Seldon); blocks forever."""
        serve_metrics(self.settings.prometheus_multiproc_dir, self.settings.app_metrics_port)


def _verified_download(s: Settings) -> str | None:
    """Download the artifact and check it against the release's digest before anything of it is
    unpickled; ``None`` when the release pins no digest (MLflow then loads from the URI itself).

    The check runs over the very directory that is then loaded, so a swapped artifact is refused however
    it got into the store. A mismatch stops the worker with ``ExitCode.ARTIFACT``, as a missing model does.
    """
    if not s.artifact_sha256:
        log.warning("release pins no artifact digest (MODEL_SERVER_ARTIFACT_SHA256): %s is loaded unchecked",
                    s.model_uri)
        return None
    try:
        import mlflow.artifacts

        # A fresh folder per worker under TMPDIR (the pod's emptyDir): nothing left from an earlier start.
        local = mlflow.artifacts.download_artifacts(artifact_uri=s.model_uri,
                                                    dst_path=tempfile.mkdtemp(prefix="model-"))
        actual = artifact_sha256(local)
    except Exception as exc:
        log.error("could not load model %s version %s from %s: %s: %s. Check MODEL_SERVER_MODEL_URI, the S3 "
                  "endpoint and credentials (MLFLOW_S3_ENDPOINT_URL, AWS_*); the server will not start",
                  s.registered_model, s.model_version, s.model_uri, type(exc).__name__, exc)
        raise SystemExit(ExitCode.ARTIFACT) from None
    if actual != s.artifact_sha256:
        log.error("model artifact %s does not match its release: expected artifact_sha256 %s, actual %s. "
                  "The stored model changed after the release pinned it; the server will not start. Restore "
                  "the artifact, or release the new one through generate-model so its digest is reviewed",
                  s.model_uri, s.artifact_sha256, actual)
        raise SystemExit(ExitCode.ARTIFACT)
    log.info("model artifact matches its release digest %s", actual)
    return local


def _signature_types(model: Any) -> dict[str, str]:
    """Column types from the model's MLflow signature (``{"hour": "long"}``); empty when it has none."""
    try:
        schema = model.metadata.get_input_schema()
    except Exception:
        return {}
    if schema is None or not getattr(schema, "has_input_names", lambda: False)():
        return {}
    types = {}
    for column in schema.inputs:
        kind = getattr(column, "type", None)
        name = getattr(kind, "name", None) or str(kind)
        types[column.name] = name.lower()
    return types


_CONTRACT_DTYPES = {"double": "float64", "long": "int64", "boolean": "bool", "string": "object"}
"""MLflow column type -> the dtype the payload contract gives that column (its signature enforcement's own)."""


def _model_predict(model: Any, contract: FeatureContract, types: dict[str, str]) -> Any:
    """The function to call per request: the model implementation's own ``predict`` when the payload
    contract already did everything MLflow's ``PyFuncModel.predict`` would (enforce the signature on a
    DataFrame: same columns in the same order, each of the dtype the signature asks for; about 70 µs a
    call), otherwise ``PyFuncModel.predict``. The reason is logged either way."""
    predict_fn = getattr(model, "_predict_fn", None)
    metadata = getattr(model, "metadata", None)
    reason = None
    if predict_fn is None or metadata is None:
        reason = "not an MLflow PyFuncModel"
    elif metadata.get_params_schema() is not None:
        reason = "its signature has parameters"
    elif metadata._is_signature_from_type_hint() or metadata._is_type_hint_from_example():
        reason = "its signature comes from type hints"
    elif metadata.get_input_schema() is not None:
        if list(types) != contract.names:
            reason = f"its signature's columns {list(types)} are not the contract's {contract.names} in order"
        else:
            dtypes = contract.dtypes()
            wrong = [f"{name} ({kind})" for name, kind in types.items()
                     if _CONTRACT_DTYPES.get(kind) != dtypes[name]]
            if wrong:
                reason = f"the contract does not give these signature columns their exact type: {', '.join(wrong)}"
    if reason is not None:
        log.info("predicting through MLflow's PyFuncModel.predict (signature enforcement per call): %s", reason)
        return model.predict
    import inspect

    log.info("predicting through the model's own predict: the payload contract enforces its signature")
    params = inspect.signature(predict_fn).parameters.get("params")  # as PyFuncModel calls it
    return functools.partial(predict_fn, params=None) if params and params.kind != params.VAR_KEYWORD else predict_fn


def _is_schema_error(exc: Exception) -> bool:
    # MLflow's schema enforcement raises MlflowException with INVALID_PARAMETER_VALUE for bad input.
    return type(exc).__name__ == "MlflowException" and getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE"


def _as_list(output: Any) -> list:
    """Predictions as JSON-ready Python values, one per row."""
    if hasattr(output, "to_numpy"):
        output = output.to_numpy()
    array = np.asarray(output)
    if array.ndim > 1 and array.shape[1] == 1:
        array = array[:, 0]
    return array.tolist()
