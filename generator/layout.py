"""Where everything lives in the repository: one place for every path and shared label.

Every command receives a :class:`RepoLayout` built from ``--repo-root``; nothing else computes paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENVIRONMENTS = ("dev", "staging", "prod")
"""Environments in promotion order."""

DIGEST_REQUIRED_ENVIRONMENTS = frozenset({"staging", "prod"})
"""Environments whose images must be pinned by ``@sha256:`` digest, whatever their spec says."""

MANAGED_BY = "mlops-gitops"
PART_OF = "mlops-gitops"
GENERATED_MARKER = "DO NOT EDIT."

ENV_FILE = "environment.yaml"
MODELS_DIR = "models"
RENDERED_DIR = "rendered"


@dataclass(frozen=True)
class RepoLayout:
    """Paths of one checkout of the GitOps repository."""

    root: Path

    @classmethod
    def discover(cls, start: Path | None = None) -> RepoLayout:
        """Find the repository root: ``MLOPS_REPO_ROOT``, else the nearest parent holding ``environments/``.

        Falls back to ``start`` itself so that error messages name the directory that was searched.
        """
        if env_root := os.environ.get("MLOPS_REPO_ROOT"):
            return cls(Path(env_root).resolve())
        here = (start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / "environments").is_dir() and (candidate / "templates").is_dir():
                return cls(candidate)
        return cls(here)

    @property
    def environments_dir(self) -> Path:
        return self.root / "environments"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def apps_dir(self) -> Path:
        return self.root / "apps"

    @property
    def bootstrap_dir(self) -> Path:
        return self.root / "bootstrap"

    def secrets_dir(self, env: str) -> Path:
        """Sealed credentials of an environment (input, sealed with kubeseal by an operator)."""
        return self.env_dir(env) / "secrets"

    def rendered_platform_dir(self, env: str) -> Path:
        return self.rendered_dir(env) / "platform"

    @property
    def schemas_dir(self) -> Path:
        return self.root / "schemas"

    def env_dir(self, env: str) -> Path:
        return self.environments_dir / env

    def env_file(self, env: str) -> Path:
        return self.env_dir(env) / ENV_FILE

    def models_dir(self, env: str) -> Path:
        return self.env_dir(env) / MODELS_DIR

    def model_spec(self, env: str, model: str) -> Path:
        return self.models_dir(env) / f"{model}.yaml"

    def rendered_dir(self, env: str) -> Path:
        return self.env_dir(env) / RENDERED_DIR

    def rendered_models_dir(self, env: str) -> Path:
        return self.rendered_dir(env) / "models"

    def rendered_model_dir(self, env: str, model: str) -> Path:
        return self.rendered_models_dir(env) / model

    def rendered_apps_dir(self, env: str) -> Path:
        return self.rendered_dir(env) / "apps"

    def existing_environments(self) -> list[str]:
        """Environments that have an ``environment.yaml``, known ones first in promotion order."""
        found = {p.parent.name for p in self.environments_dir.glob(f"*/{ENV_FILE}")}
        return [e for e in ENVIRONMENTS if e in found] + sorted(found - set(ENVIRONMENTS))

    def relative(self, path: Path) -> str:
        """A path as users see it in messages and headers: relative to the root, with forward slashes."""
        try:  # lexical first: paths built from this layout are under root (and resolve() costs a stat)
            return path.relative_to(self.root).as_posix()
        except ValueError:
            pass
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
