"""Where everything lives in the repository: one place for every path and shared label.

Every command receives a :class:`RepoLayout` built from ``--repo-root``; nothing else computes paths.
The module-level functions give the same paths relative to the root (what rendered files and messages
show); :class:`RepoLayout` joins them to a checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from generator.spec.errors import Problem, SpecError

ENVIRONMENTS = ("dev", "staging", "prod")
"""Environments in promotion order."""

MANAGED_BY = "mlops-gitops"
PART_OF = "mlops-gitops"
GENERATED_MARKER = "DO NOT EDIT."

ENV_FILE = "environment.yaml"
MODELS_DIR = "models"
RENDERED_DIR = "rendered"
ENVIRONMENTS_DIR = "environments"
WRITE_JOURNAL = ".mlops-write-journal.json"
MAX_FILE_BYTES = 4 * 2**20
"""Largest file the generator reads (specs are a few KB, the largest rendered file ~100 KB)."""
PROJECTS_DIR = "bootstrap/argocd/projects"
"""Generated AppProjects: owned by the generator like ``rendered/`` (see :mod:`generator.render.bootstrap`)."""
CHARTS_DIR = "vendor/charts"
"""Vendored Helm chart archives of every pinned chart, with their lock file and SOURCES.md."""
CHARTS_LOCK = f"{CHARTS_DIR}/charts.yaml"
CHARTS_SOURCES = f"{CHARTS_DIR}/SOURCES.md"
CACHE_DIR = ".cache/mlops"
"""Local caches (chart renders); git-ignored, never committed, safe to delete."""


# Repository-relative paths, as they appear in rendered files, headers and messages. RepoLayout joins
# them to a checkout's root; templates and contexts that have no checkout use them directly.

def env_path(env: str) -> str:
    """``environments/<env>``."""
    return f"{ENVIRONMENTS_DIR}/{env}"


def env_file_path(env: str) -> str:
    """``environments/<env>/environment.yaml``: an environment's settings."""
    return f"{env_path(env)}/{ENV_FILE}"


def model_spec_path(env: str, model: str) -> str:
    """``environments/<env>/models/<model>.yaml``: a model's release spec."""
    return f"{env_path(env)}/{MODELS_DIR}/{model}.yaml"


def rendered_path(env: str) -> str:
    """``environments/<env>/rendered``: everything the generator writes for an environment."""
    return f"{env_path(env)}/{RENDERED_DIR}"


def rendered_model_path(env: str, model: str) -> str:
    """``environments/<env>/rendered/models/<model>``: one model's manifests."""
    return f"{rendered_path(env)}/models/{model}"


def rendered_apps_path(env: str) -> str:
    """``environments/<env>/rendered/apps``: the environment's child Applications."""
    return f"{rendered_path(env)}/apps"


def model_application_path(env: str, model: str) -> str:
    """``environments/<env>/rendered/apps/model-<model>.yaml``: the Application that syncs one model."""
    return f"{rendered_apps_path(env)}/model-{model}.yaml"


def sealed_secret_path(env: str, namespace: str, name: str) -> str:
    """``environments/<env>/secrets/<namespace>-<name>.yaml``: where an operator commits a sealed Secret."""
    return f"{env_path(env)}/secrets/{namespace}-{name}.yaml"


def chart_archive_path(chart: str, version: str) -> str:
    """``vendor/charts/<chart>-<version>.tgz``: a vendored chart archive, named as ``helm package`` names it."""
    return f"{CHARTS_DIR}/{chart}-{version}.tgz"


def root_app_path(env: str) -> str:
    """``bootstrap/root-<env>.yaml``: the environment's app-of-apps root Application."""
    return f"bootstrap/root-{env}.yaml"


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
            if (candidate / ENVIRONMENTS_DIR).is_dir() and (candidate / "templates").is_dir():
                return cls(candidate)
        return cls(here)

    @property
    def environments_dir(self) -> Path:
        return self.root / ENVIRONMENTS_DIR

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def apps_dir(self) -> Path:
        return self.root / "apps"

    @property
    def bootstrap_dir(self) -> Path:
        return self.root / "bootstrap"

    @property
    def charts_dir(self) -> Path:
        """Vendored chart archives (``vendor/charts/``)."""
        return self.root / CHARTS_DIR

    @property
    def charts_lock(self) -> Path:
        return self.root / CHARTS_LOCK

    @property
    def charts_sources(self) -> Path:
        return self.root / CHARTS_SOURCES

    def chart_archive(self, chart: str, version: str) -> Path:
        return self.root / chart_archive_path(chart, version)

    @property
    def cache_dir(self) -> Path:
        """What the checks remember between runs (``.cache/mlops``, never committed); ``MLOPS_CACHE_DIR``
        moves it elsewhere."""
        base = os.environ.get("MLOPS_CACHE_DIR")
        return Path(base) if base else self.root / CACHE_DIR

    @property
    def chart_cache_dir(self) -> Path:
        """Cached chart renders (``<cache_dir>/charts``)."""
        return self.cache_dir / "charts"

    def component_file(self, component: str) -> Path:
        """``apps/<component>/component.yaml``."""
        return self.apps_dir / component / "component.yaml"

    def secrets_dir(self, env: str) -> Path:
        """Sealed credentials of an environment (input, sealed with kubeseal by an operator)."""
        return self.env_dir(env) / "secrets"

    def rendered_platform_dir(self, env: str) -> Path:
        return self.rendered_dir(env) / "platform"

    @property
    def schemas_dir(self) -> Path:
        return self.root / "schemas"

    @property
    def write_journal(self) -> Path:
        """Where a write records its renames and deletes until they are all done (never committed)."""
        return self.root / WRITE_JOURNAL

    @property
    def projects_dir(self) -> Path:
        return self.root / PROJECTS_DIR

    def env_dir(self, env: str) -> Path:
        return self.root / env_path(env)

    def env_file(self, env: str) -> Path:
        return self.root / env_file_path(env)

    def models_dir(self, env: str) -> Path:
        return self.env_dir(env) / MODELS_DIR

    def model_spec(self, env: str, model: str) -> Path:
        return self.root / model_spec_path(env, model)

    def rendered_dir(self, env: str) -> Path:
        return self.root / rendered_path(env)

    def rendered_models_dir(self, env: str) -> Path:
        return self.rendered_dir(env) / "models"

    def rendered_model_dir(self, env: str, model: str) -> Path:
        return self.root / rendered_model_path(env, model)

    def rendered_apps_dir(self, env: str) -> Path:
        return self.root / rendered_apps_path(env)

    def model_application(self, env: str, model: str) -> Path:
        return self.root / model_application_path(env, model)

    def models(self, env: str) -> list[str]:
        """Names of the models that have a spec in ``env``, sorted."""
        return sorted(p.stem for p in self.models_dir(env).glob("*.yaml"))

    def known_models(self, envs: list[str] | None = None) -> list[str]:
        """Every model with a spec in any of ``envs`` (default: every environment), sorted."""
        return sorted({m for env in (envs or self.existing_environments()) for m in self.models(env)})

    def existing_environments(self) -> list[str]:
        """Environments that have an ``environment.yaml``, known ones first in promotion order."""
        found = {p.parent.name for p in self.environments_dir.glob(f"*/{ENV_FILE}")}
        return [e for e in ENVIRONMENTS if e in found] + sorted(found - set(ENVIRONMENTS))

    @cached_property
    def resolved_root(self) -> Path:
        """The root with its links resolved (once: every file read checks against it)."""
        return self.root.resolve()

    def inside(self, path: Path) -> Path:
        """``path`` with its links resolved, refused when it leads outside the repository: the generator
        never reads or writes through a link that leaves the root (a linked file could leak into a diff or
        a log, a linked folder could receive writes).

        Raises:
            SpecError: the path, or a folder on the way to it, is a link to somewhere outside the root.
        """
        resolved = path.resolve()
        if not resolved.is_relative_to(self.resolved_root):
            raise SpecError([Problem(self.relative(path), f"leads outside the repository (to {resolved}): the "
                                     "generator reads and writes only inside it",
                                     fix="replace the link with the file it should be, inside the repository")])
        return resolved

    def read_text(self, path: Path) -> str:
        """A repository file as UTF-8 text, read only inside the root and up to :data:`MAX_FILE_BYTES`.

        Raises:
            FileNotFoundError: no such file (callers decide what a missing file means).
            SpecError: the path leaves the repository, the file is too large or is not UTF-8 (with the line).
        """
        target = self.inside(path)
        display = self.relative(path)
        if (size := target.stat().st_size) > MAX_FILE_BYTES:
            raise SpecError([Problem(display, f"is {size} bytes, more than the {MAX_FILE_BYTES} the generator "
                                     "reads", fix="split it, or check it is the file you meant")])
        data = target.read_bytes()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise SpecError([Problem(display, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                                     f"{exc.start})", line=line, fix="save the file as UTF-8")]) from None

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
