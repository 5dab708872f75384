"""Drift detector service: Kafka inference log in, Prometheus metrics out, persisted detectors.

The pure core is importable without the service's I/O dependencies: :mod:`drift_detector.detector`
(fit and score, one module per method under :mod:`drift_detector.methods`), :mod:`drift_detector.artifacts`
(safe, hash-checked artifacts) and :mod:`drift_detector.fit` (the ``python -m drift_detector fit``
subcommand). The service: :mod:`~drift_detector.settings`, :mod:`~drift_detector.windows` (windows and
offsets, no I/O), :mod:`~drift_detector.consumer` (Kafka), :mod:`~drift_detector.metrics` and
:mod:`~drift_detector.app`.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit status of ``python -m drift_detector`` (and of its ``fit`` subcommand); see the README."""

    OK = 0
    """Stopped by SIGTERM or SIGINT, or a clean stop; ``fit``: the artifact was written."""
    FAILURE = 1
    """An unexpected runtime error (the HTTP port is taken, the consumer failed); ``fit``: bad reference
    data or config file."""
    CONFIG = 2
    """Invalid settings, config file or arguments."""
    ARTIFACT = 3
    """A detector artifact is missing, unreadable, or not the one the config pins (sha256)."""
