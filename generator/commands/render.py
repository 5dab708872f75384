"""``mlops render`` as a library: load every spec, render models (in parallel when there are many) and
each environment's platform, validate everything, and plan what to write.

Nothing is written here: :func:`render_environments` returns the files and the plan, and
:func:`generator.write.plan.apply` writes the plan once every stage has passed.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Iterable
from dataclasses import dataclass

from generator.check.manifest import Manifest
from generator.check.network import network_problems
from generator.check.policies import conflicts_between
from generator.check.secrets import secret_manifests, secret_problems
from generator.check.validate import Validator, as_manifests
from generator.render.bootstrap import render_bootstrap
from generator.render.platform import render_platform
from generator.render.renderer import RenderedFile, Renderer
from generator.spec.components import LoadedComponent, load_components, override_problems, readme_with_table
from generator.spec.errors import Problem, RenderError, SpecError, ValidationError
from generator.spec.layout import RepoLayout
from generator.spec.loader import LoadedEnvironment, load_environment
from generator.write.plan import Plan, plan

PARALLEL_MIN_MODELS = 60
"""Below this many model renders a process pool costs more than it saves."""


def default_jobs(renders: int) -> int:
    """Worker processes for ``renders`` model renders: ``$MLOPS_JOBS``, else one per CPU (at most 8)."""
    if env_jobs := os.environ.get("MLOPS_JOBS"):
        return max(1, int(env_jobs))
    if renders < PARALLEL_MIN_MODELS or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass(frozen=True)
class RenderResult:
    """A render of some environments, in memory: every file, and what writing them would change."""

    envs: list[str]
    files: list[RenderedFile]
    plan: Plan


def render_environments(layout: RepoLayout, envs: Iterable[str], jobs: int | None = None) -> RenderResult:
    """Render and validate ``envs`` and compare the result with the tree; nothing is written.

    Raises:
        SpecError, RenderError, ValidationError: with every problem of its stage.
    """
    envs = list(envs)
    files = render_all(layout, envs, jobs=jobs)
    return RenderResult(envs, files, plan(layout, envs, files))


def render_all(layout: RepoLayout, envs: Iterable[str], validate: bool = True,
               jobs: int | None = None) -> list[RenderedFile]:
    """Load, render and (by default) validate every environment; raises with every problem found.

    Models are rendered and validated in parallel chunks when there are many (``jobs`` processes);
    results are merged in a fixed order, so the output does not depend on ``jobs``. Each environment's
    platform (component Applications, tenancy, credentials) is rendered in this process.

    Raises:
        SpecError, RenderError, ValidationError: with every problem of its stage.
    """
    loaded, spec_problems = [], []
    components: list[LoadedComponent] = []
    try:
        components = load_components(layout)
    except SpecError as exc:
        spec_problems += exc.problems
    for env in envs:
        try:
            environment = load_environment(layout, env)
        except SpecError as exc:  # keep going so one run reports every environment's problems
            spec_problems += exc.problems
            continue
        loaded.append(environment)
        spec_problems += override_problems(components, environment.env, layout.relative(environment.path))
    if spec_problems:
        raise SpecError(spec_problems)

    results = _render_models(layout, loaded, validate, jobs)
    # Chunks interleave models; put files back in (environment, model, template) order.
    ordered = sorted((key, index, f) for chunk in results for key, files in chunk.files.items()
                     for index, f in enumerate(files))
    files = [f for _, _, f in ordered]
    render_problems = [p for chunk in results for p in chunk.render_problems]

    renderer = Renderer(layout)
    platform_files: list[RenderedFile] = []
    for environment in loaded:
        try:
            platform_files += render_platform(renderer, layout, environment, components)
        except RenderError as exc:
            render_problems += exc.problems
    # Projects and root apps span every environment: rendered only when all of them are.
    if loaded and [e.name for e in loaded] == layout.existing_environments():
        try:
            platform_files += render_bootstrap(renderer, layout, loaded, components)
        except RenderError as exc:
            render_problems += exc.problems
        readme = layout.root / "README.md"
        if readme.is_file() and (text := readme_with_table(layout.read_text(readme), components)):
            platform_files.append(RenderedFile("README.md", text, None, "bootstrap", "README component table"))
    if render_problems:
        raise RenderError(render_problems)
    if not validate:
        return platform_files + files

    problems = [p for chunk in results for p in chunk.validation_problems]
    inputs: list[Manifest] = []
    for environment in loaded:
        sealed, found = secret_manifests(layout, environment)
        inputs += sealed
        problems += found
        problems += secret_problems(layout, environment, components, sealed)
    platform_manifests = as_manifests(f for f in platform_files if f.document is not None)
    platform_problems, platform_claims = Validator(layout.schemas_dir).validate_part(platform_manifests + inputs)
    problems += platform_problems
    problems += network_problems(platform_manifests)
    problems += conflicts_between([platform_claims, *(chunk.claims for chunk in results)])
    if problems:
        raise ValidationError(problems)
    return platform_files + files


def _render_models(layout: RepoLayout, loaded: list[LoadedEnvironment], validate: bool,
                   jobs: int | None) -> list[_ChunkResult]:
    work = [(e, m) for e, environment in enumerate(loaded) for m in range(len(environment.models))]
    jobs = jobs or default_jobs(len(work))
    chunk_count = 1 if jobs == 1 else jobs * 4  # several chunks per worker even out slow models
    chunks = [work[i::chunk_count] for i in range(chunk_count)] if jobs > 1 else [work]
    state = _ChunkRenderer(layout, loaded, validate)
    if jobs == 1:
        return [state.render(chunk) for chunk in chunks]
    global _WORKER_STATE
    _WORKER_STATE = state  # inherited by forked workers, never pickled
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            return pool.map(_render_in_worker, chunks)
    finally:
        _WORKER_STATE = None


@dataclass
class _ChunkResult:
    files: dict[tuple[int, int], list[RenderedFile]]
    render_problems: list[Problem]
    validation_problems: list[Problem]
    claims: dict


class _ChunkRenderer:
    """Renders and validates one chunk of (environment, model) pairs; one per process."""

    def __init__(self, layout: RepoLayout, loaded: list[LoadedEnvironment], validate: bool) -> None:
        self.loaded = loaded
        self.renderer = Renderer(layout)
        self.validator = Validator(layout.schemas_dir) if validate else None

    def render(self, chunk: list[tuple[int, int]]) -> _ChunkResult:
        result = _ChunkResult({}, [], [], {})
        for env_index, model_index in chunk:
            environment = self.loaded[env_index]
            try:
                result.files[env_index, model_index] = self.renderer.render_model(
                    environment, environment.models[model_index])
            except RenderError as exc:
                result.render_problems += exc.problems
        if self.validator is not None and not result.render_problems:
            manifests = as_manifests(f for key in sorted(result.files) for f in result.files[key])
            result.validation_problems, result.claims = self.validator.validate_part(manifests)
        return result


_WORKER_STATE: _ChunkRenderer | None = None


def _render_in_worker(chunk: list[tuple[int, int]]) -> _ChunkResult:
    assert _WORKER_STATE is not None, "worker started without fork"
    result = _WORKER_STATE.render(chunk)
    # Documents are validated here; sending them back would only cost pickling time.
    result.files = {key: [dataclasses.replace(f, document=None) for f in files] for key, files in result.files.items()}
    return result


