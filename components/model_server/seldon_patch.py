"""The patches to seldon-core, pinned to the exact version the image installs and to the code they replace.

**No empty metrics round trips.** Seldon's request handling calls ``SeldonMetrics.update(metrics,
method)`` on every request, with the custom metrics the model returned; ours returns none, so it is
``update([], "predict")``. In seldon-core 1.17.1 that is six round trips to the ``multiprocessing.Manager``
process Seldon starts for its metrics (lock acquire and release, read the worker's dict, lock acquire and
release, write the same dict back) and changes nothing: the loop over the metrics does not run and the
dict written back is the one read (a worker with no custom metrics has either no entry or an empty one,
and ``collect`` skips both). It measured about 0.23 ms of a 1 ms request on the light model.
:func:`skip_empty_metrics_updates` replaces ``SeldonMetrics.update`` with a function that returns at once
when there is nothing to update and otherwise calls Seldon's own ``update`` unchanged, so a request that
does carry custom metrics (and ``update_reward`` on feedback) still reaches Seldon's metrics as before.

**The common request in front of Flask.** :func:`answer_common_predictions_in_front` makes
``seldon_core.wrapper.get_rest_microservice`` put ``fast_path.CommonPredictions`` in front of the Flask
app it builds: ``POST`` predictions with a JSON body get the response Seldon's app sends, without
Flask's request machinery, ``get_request``'s form and query parsing, Flask-CORS's hook and ``jsonify``
(see ``fast_path``; everything else reaches the app unchanged).

Each patch applies only on seldon-core :data:`PATCHED_VERSION`, and only while the Seldon functions it
replaces or reproduces are the code it was written against (the SHA-256 of their source, in
:data:`FINGERPRINTS`); the fast path also needs the Flask, Werkzeug and Flask-Cors versions whose
response bytes it reproduces (:data:`FAST_PATH_LIBRARIES`). Otherwise it logs a warning saying it was
NOT applied and leaves Seldon alone (the opt-in 1.19.0 build then runs as shipped). Moving to another
version means re-reading those functions, updating the pins and the hashes, and rerunning the tests that
compare patched and unpatched Seldon.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import logging
from importlib.metadata import PackageNotFoundError, version

log = logging.getLogger(__name__)

PATCHED_VERSION = "1.17.1"
"""The seldon-core version whose code these patches were written against and tested with."""
FAST_PATH_LIBRARIES = {"flask": "2.2.5", "werkzeug": "2.2.3", "flask-cors": "3.0.10"}
"""The libraries whose response bytes ``fast_path`` reproduces, at the versions it was checked against."""
FINGERPRINTS = {
    "seldon_core.metrics:SeldonMetrics.update": "1c71ad114bf124947a7e013312980dd65c182ff537e3939b3984fa5077d37815",
    "seldon_core.wrapper:get_rest_microservice": "83ef203c4f7cfc968dd6b141712b0f3d4b94f96713c7c158459700403630d9b9",
    "seldon_core.flask_utils:get_request": "4e2de390f9861b5fdc9325cdace2396210e54fef3a3b2cbc47f1acb4d064d24e",
    "seldon_core.flask_utils:jsonify": "ebd84f44f27243856caf94594d0132aca17b650d67dc04b2fd23662ac88db41b",
    "seldon_core.seldon_methods:predict": "cdbe982f34c3e44fc0cbef8b9132d4667b43809b059f3eb1b4056f013b3428c0",
    "seldon_core.seldon_methods:handle_raw_custom_metrics":
        "7a7449219b47c5b27d720cc691e258675f8637cd2fc66786637b6ce536bebf45",
}
"""SHA-256 of the source of each seldon-core 1.17.1 function a patch replaces or reproduces."""
_METRICS_PATCH = ("seldon_core.metrics:SeldonMetrics.update",)
_FAST_PATH_PATCH = ("seldon_core.wrapper:get_rest_microservice", "seldon_core.flask_utils:get_request",
                    "seldon_core.flask_utils:jsonify", "seldon_core.seldon_methods:predict",
                    "seldon_core.seldon_methods:handle_raw_custom_metrics")
_MARK = "_mlops_patched"


def update_fingerprint(function) -> str:
    """The SHA-256 of a function's source text: it changes when the function's code does."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def _resolve(name: str):
    module, _, path = name.partition(":")
    target = importlib.import_module(module)
    for part in path.split("."):
        target = getattr(target, part)
    return target


def _pinned(patch: str, functions: tuple[str, ...], libraries: dict[str, str] | None = None) -> bool:
    """True when seldon-core is :data:`PATCHED_VERSION`, ``libraries`` are at their versions and
    ``functions`` have their :data:`FINGERPRINTS`; otherwise False, with a warning naming what differs."""
    wanted = {"seldon-core": PATCHED_VERSION, **(libraries or {})}
    for package, pinned in wanted.items():
        try:
            installed = version(package)
        except PackageNotFoundError:
            log.warning("%s is not installed: the %s patch is NOT applied", package, patch)
            return False
        if installed != pinned:
            log.warning("%s %s is not %s, the version the %s patch is pinned to: NOT applied; Seldon runs as "
                        "shipped", package, installed, pinned, patch)
            return False
    changed = [name for name in functions if update_fingerprint(_resolve(name)) != FINGERPRINTS[name]]
    if changed:
        log.warning("seldon-core %s's %s is not the code the %s patch was written against (modified install?): "
                    "NOT applied", PATCHED_VERSION, ", ".join(changed), patch)
        return False
    return True


def skip_empty_metrics_updates() -> bool:
    """Patch ``seldon_core.metrics.SeldonMetrics.update`` to skip empty updates; True when patched (now
    or before). Call it before Seldon's workers fork (the server's constructor does), so they inherit it."""
    if not _pinned("empty-metrics", ()):
        return False
    from seldon_core.metrics import SeldonMetrics

    original = SeldonMetrics.update
    if getattr(original, _MARK, False):
        return True
    if not _pinned("empty-metrics", _METRICS_PATCH):
        return False

    @functools.wraps(original)
    def update(self, custom_metrics, method):
        if not custom_metrics:
            return None
        return original(self, custom_metrics, method)

    setattr(update, _MARK, True)
    SeldonMetrics.update = update
    log.info("seldon-core %s: empty SeldonMetrics updates are skipped (no metrics-manager round trips)",
             PATCHED_VERSION)
    return True


def answer_common_predictions_in_front() -> bool:
    """Patch ``seldon_core.wrapper.get_rest_microservice`` so that the app it builds has
    ``fast_path.CommonPredictions`` in front; True when patched (now or before). Call it before Seldon
    builds its app (the server's constructor does: Seldon builds it afterwards, in the same process)."""
    if not _pinned("common-predictions", (), FAST_PATH_LIBRARIES):
        return False
    from seldon_core import wrapper

    original = wrapper.get_rest_microservice
    if getattr(original, _MARK, False):
        return True
    if not _pinned("common-predictions", _FAST_PATH_PATCH, FAST_PATH_LIBRARIES):
        return False

    @functools.wraps(original)
    def get_rest_microservice(user_model, seldon_metrics):
        from model_server import fast_path

        app = original(user_model, seldon_metrics)
        refused = fast_path.install(app, user_model, seldon_metrics)
        if refused:
            log.warning("the common-predictions fast path is NOT installed: %s; Seldon's app answers every "
                        "request", refused)
        else:
            log.info("seldon-core %s: POST predictions with a JSON body are answered in front of Seldon's "
                     "Flask app (same bytes)", PATCHED_VERSION)
        return app

    setattr(get_rest_microservice, _MARK, True)
    wrapper.get_rest_microservice = get_rest_microservice
    return True
