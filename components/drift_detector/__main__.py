"""``python -m drift_detector`` runs the service; ``python -m drift_detector fit ...`` fits a detector."""

from __future__ import annotations

import sys


def run(argv: list[str]) -> int:
    if argv and argv[0] == "fit":
        from .fit import main as fit_main

        return fit_main(argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("The service is configured by DRIFT_* environment variables; see components/drift_detector/README.md.")
        return 0
    from .app import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
