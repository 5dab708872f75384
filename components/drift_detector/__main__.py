"""``python -m drift_detector`` runs the service; ``python -m drift_detector fit ...`` fits a detector."""

from __future__ import annotations

import sys
from collections.abc import Callable

from service_kit import run_entry_point


def _service() -> Callable[[list[str]], int]:
    from .app import main

    return main


def run(argv: list[str]) -> int:
    """``fit ...``, the help, or the service; returns the exit code."""
    if argv and argv[0] == "fit":
        from .fit import main as fit_main

        return fit_main(argv[1:])
    usage = (f"{__doc__.strip()}\nThe service is configured by DRIFT_* environment variables; "
             "see components/drift_detector/README.md.")
    return run_entry_point(argv, usage, _service)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
