"""``mlops promote``: copy the immutable release block from one environment's spec into the next one's.

Only the release (and, with ``with_rollout``, the rollout: strategy, traffic and candidates) is
copied, with a round-trip edit that assigns just the values that differ; the target's own settings
(replicas, resources, thresholds) stay as they are. The target model is re-rendered and validated in
memory, and spec and rendered files are written together or not at all.

Promotion refuses, before anything is written, when the release is not what the source environment
runs (its committed, rendered state), when staging or prod would get an image without a digest, and
when the target already runs the release.
"""

from __future__ import annotations

from dataclasses import dataclass

from ruamel.yaml.comments import CommentedMap

from generator.changes.edit import copy_release, dump_round_trip, load_round_trip, remove_key
from generator.changes.prepare import ModelChange, describe_release, prepare_model_change, rendered_release_id
from generator.changes.publish import Published, refuse_uncommitted
from generator.commands.history import change_trailer
from generator.spec.errors import Problem, UsageError, did_you_mean
from generator.spec.layout import RepoLayout, model_application_path, model_spec_path, rendered_model_path
from generator.spec.loader import load_environment_file, load_one_model
from generator.spec.models import Environment, ModelSpec, Release, is_digest_pinned, requires_digest


@dataclass(frozen=True)
class PromoteRequest:
    """What to promote: a model from one environment to the next."""

    model: str
    source: str
    target: str
    release_id: str | None = None
    """When given, the release the caller expects the source to run; promotion refuses otherwise."""
    with_rollout: bool = False
    """Also copy the rollout (strategy, main traffic, candidates), so the target runs the same canary."""


@dataclass(frozen=True)
class PromoteResult:
    """A prepared (and possibly written or published) promotion."""

    request: PromoteRequest
    release: Release
    previous: Release | None
    """What the target ran before; ``None`` when the model is new there."""
    change: ModelChange
    created: bool
    published: Published | None = None

    @property
    def branch(self) -> str:
        return branch_name(self.request.model, self.request.target, self.release.release_id)

    def commit_message(self) -> str:
        """Subject with the release id, then model version, artifact and image digests (and candidates)."""
        req, release = self.request, self.release
        lines = [f"Promote {req.model} release {release.release_id} from {req.source} to {req.target}", "",
                 *describe_release(release)]
        if self.previous is not None:
            lines.append(f"replaces: release {self.previous.release_id} "
                         f"({self.previous.registry.name} version {self.previous.registry.version})")
        spec = self.change.model.spec
        if req.with_rollout:
            lines.append(f"rollout: {spec.rollout.strategy}, main {spec.rollout.effective_main_traffic}%")
            for candidate in spec.rollout.candidates:
                share = "shadow" if candidate.shadow else f"{candidate.traffic}%"
                lines += ["", f"candidate {candidate.name} ({share}):",
                          *(f"  {line}" for line in describe_release(candidate.release))]
        lines += ["", f"Spec: {self.change.spec_path}", "", change_trailer("promote")]
        return "\n".join(lines) + "\n"

    def pull_request_title(self) -> str:
        req, release = self.request, self.release
        return (f"Promote {req.model} {release.release_id} to {req.target} "
                f"(version {release.registry.version}, from {req.source})")

    def pull_request_body(self) -> str:
        """Markdown for reviewers: what changes, from where, and what to check before merging."""
        req = self.request
        body = [f"Promotes release `{self.release.release_id}` of **{req.model}** from `{req.source}` to "
                f"`{req.target}` with `mlops promote`.", "", "```", self.commit_message().rstrip(), "```", "",
                f"Only `{self.change.spec_path}` (its release block) and the model's rendered files change; "
                f"CI re-renders with `mlops render --check` and runs `mlops validate`."]
        if req.target == "prod":
            body += ["", "Prod Applications sync by hand: after merging, a release manager syncs "
                     f"`model-{req.model}-prod` in Argo CD. The PostSync hook then moves the MLflow alias `prod`."]
        return "\n".join(body) + "\n"


def branch_name(model: str, env: str, release_id: str) -> str:
    """The promotion branch: ``promote/<model>/<env>/<release-id>``."""
    return f"promote/{model}/{env}/{release_id}"


def promote(layout: RepoLayout, request: PromoteRequest) -> PromoteResult:
    """Prepare a promotion in memory: checks, round-trip edit of the target spec, render, validate.

    Nothing is written; write ``result.change.plan`` or publish the result
    (:func:`generator.changes.publish.publish`).

    Raises:
        UsageError: the environments are not next to each other in promotion order, the source has
            no such model, the release is not what the source runs, an image is not digest-pinned for
            staging or prod, or the target already runs the release.
        GitError: the source spec or its rendered files have uncommitted changes.
        SpecError, RenderError, ValidationError: the promoted spec or its manifests would be invalid.
    """
    _check_order(layout, request)
    source_env = load_environment_file(layout, request.source)
    target_env = load_environment_file(layout, request.target)
    source_spec, source_text = _source(layout, source_env, request)
    _check_runs(layout, request, source_spec)
    _check_digests(request, source_spec, target_env)

    target_path = layout.model_spec(request.target, request.model)
    source_doc = load_round_trip(source_text, model_spec_path(request.source, request.model))
    if target_path.is_file():
        target_text = layout.read_text(target_path)
        previous = load_one_model(layout, target_env, request.model, target_text).spec
        _check_not_running(request, source_spec, previous)
        target_doc = load_round_trip(target_text, layout.relative(target_path))
        copy_release(target_doc, source_doc, with_rollout=request.with_rollout)
    else:
        previous = None
        target_doc = _new_target(source_doc, request)
    change = prepare_model_change(layout, target_env, request.model, dump_round_trip(target_doc))
    return PromoteResult(request, source_spec.release, previous.release if previous else None, change,
                         previous is None)


def _check_order(layout: RepoLayout, request: PromoteRequest) -> None:
    order = layout.existing_environments()
    for env in (request.source, request.target):
        if env not in order:
            raise UsageError(f"environment {env!r} does not exist{did_you_mean(env, order)} "
                             f"(known: {', '.join(order)})")
    if request.source == request.target:
        raise UsageError(f"--from and --to are both {request.source}; promote to the next environment")
    at = order.index(request.source)
    expected = order[at + 1] if at + 1 < len(order) else None
    if request.target != expected:
        if order.index(request.target) < at:
            raise UsageError(f"{request.target} comes before {request.source} in promotion order "
                             f"({' → '.join(order)}); to go back, use mlops rollback {request.model} "
                             f"--env {request.target}")
        raise UsageError(f"promotions go one environment at a time ({' → '.join(order)}): promote "
                         f"{request.source} to {expected} first" if expected else
                         f"{request.source} is the last environment; there is nothing to promote to")


def _source(layout: RepoLayout, env: Environment, request: PromoteRequest) -> tuple[ModelSpec, str]:
    path = layout.model_spec(request.source, request.model)
    if not path.is_file():
        raise UsageError(f"{layout.relative(path)} does not exist: {request.model} does not run in "
                         f"{request.source}{did_you_mean(request.model, layout.models(request.source))}")
    text = layout.read_text(path)
    return load_one_model(layout, env, request.model, text).spec, text


def _check_runs(layout: RepoLayout, request: PromoteRequest, source: ModelSpec) -> None:
    """The release must be what the source environment runs: committed, rendered, and the one asked for."""
    release_id = source.release.release_id
    spec_path = layout.relative(layout.model_spec(request.source, request.model))
    if request.release_id is not None and request.release_id != release_id:
        candidates = {c.release.release_id: c.name for c in source.rollout.candidates}
        hint = (f"; {request.release_id} is {request.source}'s candidate {candidates[request.release_id]!r}, "
                f"finish that rollout first (mlops generate-model {request.model} --env {request.source} "
                "--promote-candidate)" if request.release_id in candidates else "")
        raise UsageError(f"{request.source} runs release {release_id} ({spec_path}), not {request.release_id}"
                         f"{hint}; promote what {request.source} runs, or omit --release")
    rendered = rendered_release_id(layout, request.source, request.model)
    app = model_application_path(request.source, request.model)
    if rendered != release_id:
        raise UsageError(f"{spec_path} names release {release_id} but {app} deploys "
                         f"{rendered or 'no release'}: the spec is not what {request.source} runs; "
                         f"run mlops render --env {request.source}, merge, then promote")
    model_paths = [spec_path, rendered_model_path(request.source, request.model), app]
    refuse_uncommitted(layout, model_paths, f"what {request.source} runs is what is committed and merged; "
                       f"merge the change to {request.source} first, then promote")


def _check_digests(request: PromoteRequest, source: ModelSpec, target_env: Environment) -> None:
    if not requires_digest(request.target, target_env.images.require_digest):
        return
    releases = [("release", source.release)]
    if request.with_rollout:
        releases += [(f"rollout.candidates[{i}].release", c.release) for i, c in enumerate(source.rollout.candidates)]
    spec_path = model_spec_path(request.source, request.model)
    problems = [Problem(spec_path, f"{image!r} is not pinned by digest, which {request.target} requires",
                        field=f"{where}.{field}",
                        fix=f"pin it in {request.source} first (mlops generate-model {request.model} --env "
                            f"{request.source} --{field.replace('_', '-')} <repository>@sha256:<digest>), "
                            "merge, then promote")
                for where, release in releases for field in ("server_image", "drift_image")
                if not is_digest_pinned(image := getattr(release, field))]
    if problems:
        raise UsageError("refusing to promote:\n" + "\n".join(f"  - {p}" for p in problems))


def _check_not_running(request: PromoteRequest, source: ModelSpec, target: ModelSpec) -> None:
    release_id = source.release.release_id
    same_release = target.release.release_id == release_id
    if request.with_rollout:
        if same_release and target.rollout == source.rollout:
            raise UsageError(f"{request.target} already runs release {release_id} with the same rollout as "
                             f"{request.source}; nothing to promote")
        return
    if same_release:
        raise UsageError(f"{request.target} already runs release {release_id} ({target.release.registry.name} "
                         f"version {target.release.registry.version}); nothing to promote")
    for candidate in target.rollout.candidates:
        if candidate.release.release_id == release_id:
            raise UsageError(f"{request.target} runs release {release_id} as its candidate {candidate.name!r}; "
                             f"finish that rollout instead (mlops generate-model {request.model} --env "
                             f"{request.target} --promote-candidate)")


def _new_target(doc: CommentedMap, request: PromoteRequest) -> CommentedMap:
    """A model's first promotion into an environment: the source spec, with the target's header.

    Settings the source states (serving, alerts) come along; review them in the pull request.
    """
    if not request.with_rollout:
        remove_key(doc, "rollout")
    doc.ca.comment = None
    doc.yaml_set_start_comment(
        f"Release spec of {request.model} in {request.target}: generator input.\n"
        f"Created by `mlops promote` from {request.source}; review serving and alert settings for "
        f"{request.target}.\nEdited by people and by `mlops generate-model` / `mlops promote` (comments are kept).")
    return doc
