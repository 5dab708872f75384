"""``python -m retrain.trigger`` runs the retrain trigger (configured by ``RETRAIN_TRIGGER_*`` variables)."""

from __future__ import annotations

import sys


def run(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("Variables, files and endpoints: components/retrain/README.md, section 'Retrain trigger'.")
        return 0
    from .app import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
