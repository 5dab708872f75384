"""``python -m retrain_trigger`` runs the retrain trigger (configured by ``RETRAIN_TRIGGER_*`` variables)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from service_kit import run_entry_point


def _service() -> Callable[[list[str]], int]:
    from .app import main

    return main


def run(argv: list[str]) -> int:
    """The help, or the service; returns the exit code."""
    usage = f"{__doc__.strip()}\nVariables, files, endpoints and exit codes: components/retrain_trigger/README.md."
    return run_entry_point(argv, usage, _service)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
