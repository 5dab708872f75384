"""One model's spec change, ready to write: the new spec text, its rendered files and the plan.

Every verb that changes a model (``generate-model``, ``promote``, ``rollback``, the retrain proposal)
edits the spec in memory (:mod:`generator.changes.edit`) and hands the text to :func:`prepare_model_change`,
the one load → render → validate → plan path; nothing is written until everything passed. The result is
written with :func:`generator.write.plan.apply` or published with :func:`generator.changes.publish.publish`.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from generator.check.validate import check_rendered_files
from generator.render.renderer import RenderedFile, Renderer
from generator.spec import yamlio
from generator.spec.errors import SpecError
from generator.spec.layout import RepoLayout
from generator.spec.loader import LoadedEnvironment, LoadedModel, load_one_model
from generator.spec.models import Environment, Release
from generator.spec.naming import RELEASE_ID_LABEL
from generator.write.plan import Plan, plan


@dataclass(frozen=True)
class ModelChange:
    """A validated new spec for one model in one environment, with its rendered files and write plan."""

    env: str
    model: LoadedModel
    spec_path: str
    spec_text: str
    files: list[RenderedFile]
    plan: Plan

    def paths(self, layout: RepoLayout) -> list[str]:
        """What a commit of this change covers: the spec, the model's rendered folder and its Application."""
        name = self.model.spec.model
        return [self.spec_path, layout.relative(layout.rendered_model_dir(self.env, name)),
                layout.relative(layout.model_application(self.env, name))]


def prepare_model_change(layout: RepoLayout, env: Environment, model: str, text: str) -> ModelChange:
    """Validate ``text`` as the new spec of ``model`` in ``env`` and render that model, in memory.

    Raises:
        SpecError: the new spec breaks a rule; RenderError: a template failed; ValidationError: a
            rendered manifest fails validation.
    """
    loaded = load_one_model(layout, env, model, text)
    environment = LoadedEnvironment(env.name, env, layout.env_file(env.name), (loaded,))
    files = Renderer(layout).render_model(environment, loaded)
    check_rendered_files(layout, files)
    spec_path = layout.relative(loaded.path)
    spec_file = RenderedFile(spec_path, text, {}, env.name)
    return ModelChange(env.name, loaded, spec_path, text, files, plan(layout, [], [spec_file, *files]))


def rendered_release_id(layout: RepoLayout, env_name: str, model: str) -> str | None:
    """The release id Argo CD syncs for ``model`` in ``env_name``: the label on its rendered Application."""
    try:
        document = yamlio.load(layout.read_text(layout.model_application(env_name, model)))
    except (OSError, SpecError, yaml.YAMLError):  # unreadable: the rendered-tree checks report why
        return None
    labels = ((document or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(RELEASE_ID_LABEL)


def describe_release(release: Release) -> list[str]:
    """The lines a commit message or pull request lists for a release: version, artifact, digests."""
    return [
        f"release id: {release.release_id}",
        f"model version: {release.registry.name} version {release.registry.version} (MLflow)",
        f"artifact: {release.artifact_uri}",
        f"server image: {release.server_image}",
        f"drift image: {release.drift_image}",
        f"drift detector: {release.detector.uri} (sha256:{release.detector.sha256})",
    ]
