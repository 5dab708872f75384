"""The model server: a Seldon Core Python wrapper that serves an MLflow model and logs every
prediction to Kafka in the inference-log schema the drift detector reads.

Run by ``python -m model_server``, which starts ``seldon-core-microservice model_server.server.ModelServer``
(see ``__main__.py`` and README.md).
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit status of ``python -m model_server`` (Seldon's microservice with our class); see the README."""

    OK = 0
    """Stopped by SIGTERM (gunicorn's graceful stop)."""
    FAILURE = 1
    """An unexpected runtime error (Seldon's or gunicorn's own)."""
    CONFIG = 2
    """Invalid settings: nothing listens."""
    ARTIFACT = 3
    """The pinned model cannot be loaded: a worker exits with it and gunicorn stops with it."""
