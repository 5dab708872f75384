"""The ``mlops`` command line: a thin click layer over the library functions in :mod:`generator.commands`.

Each command parses options, calls one library function and prints its report (text, or one JSON object
with ``--output json``). Expected failures are :class:`~generator.spec.errors.MlopsError` subclasses,
printed without a traceback and mapped to exit codes in one place (:mod:`generator.cli.shared`).
"""

from __future__ import annotations

from generator.cli import images, release, tree  # noqa: F401  (importing them registers their commands on the group)
from generator.cli.release import generate_model_command
from generator.cli.shared import cli

__all__ = ["cli", "generate_model_command", "generate_model_main", "main"]


def main() -> None:
    """Entry point of ``mlops``."""
    cli()


def generate_model_main() -> None:
    """Entry point of the stand-alone ``generate-model`` script (same as ``mlops generate-model``)."""
    generate_model_command()
