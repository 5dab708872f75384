"""Component images for tests: demo/images.py builds them (the same code ``make demo`` runs them from).

A missing interpreter stops the test through :func:`services.service_unavailable`: a skip on a developer
machine, a failure under CI.
"""

from __future__ import annotations

from pathlib import Path

from demo import images
from demo.images import ImageEnv, instructions, resolved  # noqa: F401  (re-exported to the tests)
from services import service_unavailable


def build_image(component: str, work: Path, build_args: dict[str, str] | None = None) -> ImageEnv:
    """``components/<component>/Dockerfile``'s venv (cached) and /app under ``work``; see demo/images.py."""
    try:
        return images.build_image(component, work, build_args)
    except images.MissingInterpreter as exc:
        service_unavailable(str(exc))
