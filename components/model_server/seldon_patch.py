"""One patch to seldon-core, pinned to the exact version the image installs: no empty metrics round trips.

Seldon's request handling calls ``SeldonMetrics.update(metrics, method)`` on every request, with the
custom metrics the model returned; ours returns none, so it is ``update([], "predict")``. In seldon-core
1.17.1 that is six round trips to the ``multiprocessing.Manager`` process Seldon starts for its metrics
(lock acquire and release, read the worker's dict, lock acquire and release, write the same dict back)
and changes nothing: the loop over the metrics does not run and the dict written back is the one read
(a worker with no custom metrics has either no entry or an empty one, and ``collect`` skips both). It
measured about 0.23 ms of a 1 ms request on the light model.

:func:`skip_empty_metrics_updates` replaces ``SeldonMetrics.update`` with a function that returns at once
when there is nothing to update and otherwise calls Seldon's own ``update`` unchanged, so a request that
does carry custom metrics (and ``update_reward`` on feedback) still reaches Seldon's metrics as before.
It patches only seldon-core :data:`PATCHED_VERSION`, and only when ``update`` is still the function it
was written against (checked by the hash of its source): on any other version it logs a warning
saying so and leaves Seldon alone (the opt-in 1.19.0 build then pays the round trips).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from importlib.metadata import PackageNotFoundError, version

log = logging.getLogger(__name__)

PATCHED_VERSION = "1.17.1"
"""The seldon-core version whose ``SeldonMetrics.update`` this patch was written against and tested with."""
_MARK = "_mlops_skips_empty_updates"


def update_fingerprint(function) -> str:
    """The SHA-256 of a function's source text: it changes when the function's code does."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def skip_empty_metrics_updates() -> bool:
    """Patch ``seldon_core.metrics.SeldonMetrics.update`` to skip empty updates; True when patched (now
    or before). Call it before Seldon's workers fork (the server's constructor does), so they inherit it."""
    try:
        installed = version("seldon-core")
    except PackageNotFoundError:
        log.warning("seldon-core is not installed: the empty-metrics patch is not applied")
        return False
    if installed != PATCHED_VERSION:
        log.warning("seldon-core %s is not %s, the version the empty-metrics patch is pinned to: NOT applied; "
                    "every request pays Seldon's metrics round trips", installed, PATCHED_VERSION)
        return False
    from seldon_core.metrics import SeldonMetrics

    original = SeldonMetrics.update
    if getattr(original, _MARK, False):
        return True
    if update_fingerprint(original) != _EXPECTED_FINGERPRINT:
        log.warning("seldon-core %s's SeldonMetrics.update is not the code the empty-metrics patch was written "
                    "against (modified install?): NOT applied", installed)
        return False

    @functools.wraps(original)
    def update(self, custom_metrics, method):
        if not custom_metrics:
            return None
        return original(self, custom_metrics, method)

    setattr(update, _MARK, True)
    SeldonMetrics.update = update
    log.info("seldon-core %s: empty SeldonMetrics updates are skipped (no metrics-manager round trips)", installed)
    return True


_EXPECTED_FINGERPRINT = "1c71ad114bf124947a7e013312980dd65c182ff537e3939b3984fa5077d37815"
"""SHA-256 of ``SeldonMetrics.update``'s source in seldon-core 1.17.1."""
