"""``mlops generate-model``: create or update one release spec, then render that model.

Releases enter at the first environment of the promotion order (dev); in the others ``generate-model``
changes only environment-local settings (traffic, finishing or dropping a rollout that came by
promotion, the owner) and refuses release options with the command to use instead.

Specs are edited with ruamel.yaml in round-trip mode, so comments, key order and flow style survive
and changing one value is a one-line diff. The new spec is validated and rendered in memory; the spec
and its rendered files are written together only when everything passed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from generator.changes.edit import (
    assign_in_place,
    detached,
    dump_round_trip,
    insert_after,
    load_round_trip,
    remove_key,
    replace_value,
    round_trip_yaml,
)
from generator.changes.prepare import ModelChange, prepare_model_change
from generator.external import registry
from generator.spec import yamlio
from generator.spec.errors import SpecError, UsageError, did_you_mean
from generator.spec.layout import RepoLayout, model_spec_path
from generator.spec.loader import load_environment_file, load_one_model
from generator.spec.models import Environment, ModelSpec
from generator.write.plan import apply

DEFAULT_TRAFFIC = {"canary": 10, "ab": 50}


@dataclass(frozen=True)
class ReleaseOptions:
    """Release fields given on the command line; ``None`` means keep what the spec has."""

    registered_name: str | None = None
    registry_version: int | None = None
    artifact_uri: str | None = None
    server_image: str | None = None
    drift_image: str | None = None
    detector_uri: str | None = None
    detector_sha256: str | None = None
    artifact_sha256: str | None = None

    @property
    def given(self) -> bool:
        return any(value is not None for value in vars(self).values())


@dataclass(frozen=True)
class FeatureOption:
    """One ``--feature NAME:TYPE[:CATEGORY,...]`` of a new spec."""

    name: str
    type: str
    categories: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> FeatureOption:
        """``amount:numeric``, ``plan:categorical`` or ``plan:categorical:basic,pro``.

        Raises:
            UsageError: another shape, an unknown type, or categories on a numeric feature.
        """
        name, _, rest = text.partition(":")
        kind, _, categories = rest.partition(":")
        values = tuple(c.strip() for c in categories.split(",")) if categories else ()
        if not name or kind not in ("numeric", "categorical") or (values and kind != "categorical") or "" in values:
            raise UsageError(f"--feature {text!r}: use NAME:numeric, NAME:categorical or "
                             "NAME:categorical:CATEGORY,CATEGORY,...")
        return cls(name, kind, values)


@dataclass(frozen=True)
class GenerateRequest:
    """Everything ``generate-model`` was asked to change."""

    model: str
    env: str
    release: ReleaseOptions = ReleaseOptions()
    owner: str | None = None
    strategy: str | None = None
    traffic: int | None = None
    candidate_name: str = "candidate"
    promote_candidate: bool = False
    features: tuple[FeatureOption, ...] = ()
    mlflow_uri: str | None = None


@dataclass(frozen=True)
class GenerateResult:
    """What ``generate-model`` prepared: whether the spec is new, the validated change, and what the user
    should look at before merging it."""

    created: bool
    change: ModelChange
    warnings: tuple[str, ...] = ()

    @property
    def spec_path(self) -> str:
        return self.change.spec_path


def prepare_generate(layout: RepoLayout, request: GenerateRequest) -> GenerateResult:
    """Edit (or create) ``environments/<env>/models/<model>.yaml`` in memory and prepare that model's change.

    Nothing is written: write ``result.change.plan`` with :func:`generator.write.plan.apply`, or publish it.

    Raises:
        UsageError: options that contradict each other or the spec.
        RegistryError: the registry version could not be resolved.
        SpecError, RenderError, ValidationError: the result would be invalid.
    """
    env = load_environment_file(layout, request.env)
    spec_path = layout.model_spec(request.env, request.model)
    existing = layout.read_text(spec_path) if spec_path.is_file() else None
    refuse_ignored_options(request)
    refuse_release_outside_entry(layout, request, existing)
    options = _resolve_artifact(request, env.mlflow.tracking_uri, existing)
    others = [m for m in layout.known_models() if m != request.model]
    if existing is None:
        text = new_spec(request, options, hint=did_you_mean(request.model, others))
    else:
        text = update_spec(existing, request, options)
    change = prepare_model_change(layout, env, request.model, text)
    warnings = detector_warnings(_current_spec(layout, env, request.model, existing), change.model.spec)
    if existing is None and (close := did_you_mean(request.model, others)):
        warnings.insert(0, f"creating a new model {request.model}{close} (models: {', '.join(others)})")
    return GenerateResult(existing is None, change, tuple(warnings))


def _current_spec(layout: RepoLayout, env: Environment, model: str, text: str | None) -> ModelSpec | None:
    if text is None:
        return None
    try:
        return load_one_model(layout, env, model, text).spec
    except SpecError:  # the edit is validated on its own; an invalid old spec only loses the warnings
        return None


def detector_warnings(before: ModelSpec | None, after: ModelSpec) -> list[str]:
    """Releases of ``after`` watched by a drift detector that ``before`` used for another model version
    (a new version keeps the detector it inherited unless --detector-uri/--detector-sha256 are given)."""
    if before is None:
        return []
    fitted: dict[tuple[str, str], int] = {}
    for release in [before.release, *(c.release for c in before.rollout.candidates)]:
        fitted.setdefault((release.detector.uri, release.detector.sha256), release.registry.version)
    warnings = []
    for role, release in [("main", after.release), *((f"candidate {c.name}", c.release)
                                                      for c in after.rollout.candidates)]:
        version = fitted.get((release.detector.uri, release.detector.sha256))
        if version is not None and version != release.registry.version:
            warnings.append(f"{role} (version {release.registry.version}) is watched by the drift detector fitted "
                            f"for version {version}: fit one for version {release.registry.version} and pass "
                            "--detector-uri and --detector-sha256")
    return warnings


def generate_model(layout: RepoLayout, request: GenerateRequest, dry_run: bool = False) -> GenerateResult:
    """Create or update a model's release spec and re-render that model: spec and files, all or nothing.

    Raises:
        the errors of :func:`prepare_generate`; nothing is written when one is raised.
    """
    result = prepare_generate(layout, request)
    if not dry_run:
        apply(layout, result.change.plan)
    return result


RELEASE_FLAGS = {"registered_name": "--registered-name", "registry_version": "--registry-version",
                 "artifact_uri": "--artifact-uri", "server_image": "--server-image", "drift_image": "--drift-image",
                 "detector_uri": "--detector-uri", "detector_sha256": "--detector-sha256",
                 "artifact_sha256": "--artifact-sha256"}


def refuse_ignored_options(request: GenerateRequest) -> None:
    """Options the requested change would silently drop are refused, with what to do instead.

    Raises:
        UsageError: --traffic for a shadow, with --strategy replace or with --promote-candidate; release
            options or --strategy together with --promote-candidate.
    """
    if request.strategy == "shadow" and request.traffic is not None:
        raise UsageError("--traffic does not apply to a shadow: it receives a copy of every request and answers "
                         "none; drop --traffic, or use --strategy canary or ab to give it a share")
    if request.strategy == "replace" and request.traffic is not None:
        raise UsageError("--traffic does not apply to --strategy replace: main takes all traffic and the rollout "
                         "ends; drop --traffic")
    if not request.promote_candidate:
        return
    if request.strategy is not None:
        raise UsageError(f"--promote-candidate and --strategy {request.strategy} are two changes: "
                         "--promote-candidate makes the candidate main and ends the rollout; run them one after "
                         "the other")
    if request.traffic is not None:
        raise UsageError("--traffic does not apply with --promote-candidate: the candidate becomes main and takes "
                         "all traffic; drop --traffic")
    if given := [flag for key, flag in RELEASE_FLAGS.items() if getattr(request.release, key) is not None]:
        raise UsageError(f"{', '.join(given)} would be ignored: --promote-candidate makes the candidate's release "
                         "main as it is; run generate-model with them before or after promoting the candidate")


def refuse_release_outside_entry(layout: RepoLayout, request: GenerateRequest, existing: str | None) -> None:
    """Releases enter at the first environment of the promotion order (dev) and reach the others only
    through ``promote`` (and ``rollback``); there ``generate-model`` changes environment-local settings only,
    of a rollout that came by promotion.

    Raises:
        UsageError: a new spec, release options, or a candidate the spec does not have (``existing``: its
            text), outside the first environment; the message names the command to use instead.
    """
    exists = existing is not None
    order = layout.existing_environments()
    if not order or request.env == order[0] or request.env not in order:
        return
    entry, before = order[0], order[order.index(request.env) - 1]
    promote = f"mlops promote {request.model} --from {before} --to {request.env}"
    if not exists and (close := did_you_mean(request.model, layout.models(request.env))):
        raise UsageError(f"{model_spec_path(request.env, request.model)} does not exist{close} ({request.model} "
                         f"does not run in {request.env}; models there: {', '.join(layout.models(request.env))})")
    if not exists:
        raise UsageError(f"{request.model} does not run in {request.env} yet, and releases reach {request.env} only "
                         f"by promotion: create it in {entry} (mlops generate-model {request.model} --env {entry} "
                         f"...), then {promote}")
    if given := [flag for key, flag in RELEASE_FLAGS.items() if getattr(request.release, key) is not None]:
        raise UsageError(f"{', '.join(given)} would change the release {request.env} runs, and releases reach "
                         f"{request.env} only by promotion: release it in {entry} (mlops generate-model "
                         f"{request.model} --env {entry} {given[0]} ...), then {promote}; to return to an earlier "
                         f"release, mlops rollback {request.model} --env {request.env}")
    names = _candidate_names(existing)
    if request.promote_candidate or request.strategy in ("canary", "ab", "shadow"):
        missing = request.candidate_name not in names
    else:  # --traffic alone changes the one candidate there is
        missing = request.traffic is not None and not names
    if missing:
        raise UsageError(f"{model_spec_path(request.env, request.model)} has no candidate "
                         f"{request.candidate_name!r}, and candidates reach {request.env} only by promotion: run the "
                         f"rollout in {entry} (mlops generate-model {request.model} --env {entry} --strategy canary "
                         f"...), then {promote} --with-rollout")


def _candidate_names(text: str | None) -> list[str]:
    try:
        rollout = (yamlio.load(text or "") or {}).get("rollout") or {}
        return [c.get("name") for c in rollout.get("candidates") or [] if isinstance(c, dict)]
    except Exception:  # a broken spec is reported by validation later, with its line
        return []


def _resolve_artifact(request: GenerateRequest, env_mlflow: str, existing: str | None) -> ReleaseOptions:
    """Fill ``artifact_uri`` from MLflow when a version is given without one, and ``artifact_sha256``
    from the digest the retrain flow recorded on that version (unless ``--artifact-sha256`` is given)."""
    options = request.release
    if options.registry_version is None or options.artifact_uri is not None:
        return options
    name = options.registered_name or _existing_registered_name(existing) or request.model
    resolved = registry.resolve_version(request.mlflow_uri or env_mlflow, name, options.registry_version)
    return ReleaseOptions(**{**vars(options), "registered_name": name, "artifact_uri": resolved.artifact_uri,
                             "artifact_sha256": options.artifact_sha256 or resolved.artifact_sha256})


def _existing_registered_name(existing: str | None) -> str | None:
    if existing is None:
        return None
    try:
        return round_trip_yaml().load(existing)["release"]["registry"]["name"]
    except Exception:  # a broken spec is reported by validation later, with its line
        return None


def new_spec(request: GenerateRequest, options: ReleaseOptions, hint: str = "") -> str:
    """A fresh release spec with the fields the generator needs and a header comment; ``hint`` (a
    did-you-mean) is added to the refusal when fields are missing."""
    release_fields = {
        "--owner": request.owner, "--registry-version": options.registry_version,
        "--artifact-uri (or a reachable --mlflow-uri)": options.artifact_uri,
        "--server-image": options.server_image, "--drift-image": options.drift_image,
        "--detector-uri": options.detector_uri, "--detector-sha256": options.detector_sha256,
        "--feature": request.features or None,
    }
    if missing := [flag for flag, value in release_fields.items() if value is None]:
        path = model_spec_path(request.env, request.model)
        if hint:  # most likely a typo: the suggestion first, creating the typo only as the other way out
            raise UsageError(f"{path} does not exist yet{hint} (a new model {request.model} would need "
                             f"{', '.join(missing)})")
        raise UsageError(f"{path} does not exist yet; creating it needs {', '.join(missing)}")
    if request.strategy not in (None, "replace") or request.promote_candidate or request.traffic is not None:
        raise UsageError("a new spec starts with strategy replace (main takes all traffic); add a candidate and "
                         "its --traffic in a second generate-model run")

    doc = CommentedMap()
    doc["model"] = request.model
    doc["owner"] = request.owner
    doc["release"] = _release_map(options, request.model)
    drift = CommentedMap()
    types = {feature.type for feature in request.features}
    drift["method"] = "tabular" if len(types) > 1 else ("chi2" if types == {"categorical"} else "ks")
    features = CommentedSeq()
    for feature in request.features:
        item = CommentedMap([("name", feature.name), ("type", feature.type)])
        if feature.categories:
            categories = CommentedSeq(feature.categories)
            categories.fa.set_flow_style()
            item["categories"] = categories
        item.fa.set_flow_style()
        features.append(item)
    drift["features"] = features
    doc["drift"] = drift
    doc.yaml_set_start_comment(
        f"Release spec of {request.model} in {request.env}: generator input.\n"
        "Edited by people and by `mlops generate-model` / `mlops promote` (comments are kept)."
    )
    return dump_round_trip(doc)


def _release_map(options: ReleaseOptions, model: str) -> CommentedMap:
    registry_ref = CommentedMap([("name", options.registered_name or model), ("version", options.registry_version)])
    registry_ref.fa.set_flow_style()
    release = CommentedMap()
    release["registry"] = registry_ref
    release["artifact_uri"] = options.artifact_uri
    if options.artifact_sha256 is not None:
        release["artifact_sha256"] = options.artifact_sha256
    release["server_image"] = options.server_image
    release["drift_image"] = options.drift_image
    release["detector"] = CommentedMap([("uri", options.detector_uri), ("sha256", options.detector_sha256)])
    return release


def update_spec(existing: str, request: GenerateRequest, options: ReleaseOptions) -> str:
    """Apply the request to an existing spec with minimal, comment-preserving edits."""
    doc = load_round_trip(existing, model_spec_path(request.env, request.model))

    if request.owner is not None:
        doc["owner"] = request.owner
    if request.features:
        raise UsageError("--feature only applies when creating a spec; edit drift.features in the file instead")

    strategy = request.strategy
    if request.promote_candidate:
        _promote_candidate(doc, request)
    elif strategy in ("canary", "ab", "shadow"):
        _set_candidate(doc, request, options, strategy)
    else:
        if options.given:
            _apply_release(doc["release"], options)
        if strategy == "replace":
            remove_key(doc, "rollout")
        elif request.traffic is not None:
            _set_traffic(doc, request)
    return dump_round_trip(doc)


def _apply_release(release: CommentedMap, options: ReleaseOptions) -> None:
    """Assign only the given values, in place, so unchanged lines stay byte-identical."""
    registry_ref = release.setdefault("registry", CommentedMap())
    if options.registered_name is not None:
        registry_ref["name"] = options.registered_name
    if options.registry_version is not None:
        registry_ref["version"] = options.registry_version
    artifact_before = release.get("artifact_uri")
    for key in ("artifact_uri", "server_image", "drift_image"):
        if (value := getattr(options, key)) is not None:
            release[key] = value
    if options.artifact_sha256 is not None:
        if "artifact_sha256" in release:
            release["artifact_sha256"] = options.artifact_sha256
        else:  # right after the URI it pins
            insert_after(release, "artifact_uri", "artifact_sha256", options.artifact_sha256)
    elif "artifact_sha256" in release and artifact_before != release.get("artifact_uri"):
        # Another artifact without its digest: the old digest would stop the server, so it goes, with the
        # comment on its line (it described that value); dev may run unpinned, staging and prod refuse it.
        _drop_line_comment(release, "artifact_sha256")
        remove_key(release, "artifact_sha256")
    detector = release.setdefault("detector", CommentedMap())
    if options.detector_uri is not None:
        detector["uri"] = options.detector_uri
    if options.detector_sha256 is not None:
        detector["sha256"] = options.detector_sha256


def _drop_line_comment(mapping: CommentedMap, key: str) -> None:
    """Forget the end-of-line comment of ``key``; full-line comments after it stay."""
    entry = mapping.ca.items.get(key)
    token = entry[2] if entry and len(entry) > 2 else None
    if token is not None and not token.value.lstrip(" ").startswith("\n"):
        rest = token.value.split("\n", 1)[1] if "\n" in token.value else ""
        if rest.strip():
            token.value = "\n" + rest
        else:
            mapping.ca.items.pop(key)


def _set_candidate(doc: CommentedMap, request: GenerateRequest, options: ReleaseOptions, strategy: str) -> None:
    rollout = doc.get("rollout")
    if not isinstance(rollout, CommentedMap):
        rollout = CommentedMap()
        doc["rollout"] = rollout
    candidates = rollout.get("candidates") or CommentedSeq()
    previous = next((c for c in candidates if isinstance(c, dict) and c.get("name") == request.candidate_name), None)
    if previous is None and not options.given:
        raise UsageError(f"strategy {strategy} needs the candidate's release: give at least --registry-version "
                         "(and --artifact-uri or --mlflow-uri)")
    if previous is None:  # key order of a new candidate: name, traffic/shadow, release
        candidate = CommentedMap([("name", request.candidate_name)])
        candidate["release"] = detached(doc["release"])
    else:
        candidate = previous
    _apply_release(candidate["release"], options)
    if strategy == "shadow":
        remove_key(candidate, "traffic")
        _set_after_name(candidate, "shadow", True)
    else:
        remove_key(candidate, "shadow")
        traffic = request.traffic if request.traffic is not None else candidate.get("traffic", DEFAULT_TRAFFIC[strategy])
        _set_after_name(candidate, "traffic", traffic)
    rollout["strategy"] = strategy
    if strategy == "shadow":
        remove_key(rollout, "main_traffic")
    else:
        rollout["main_traffic"] = 100 - candidate["traffic"]
    # The CLI runs one candidate at a time: the named one replaces any others.
    if "candidates" not in rollout:
        rollout["candidates"] = CommentedSeq([candidate])
    elif list(candidates) != [candidate]:
        replace_value(rollout, "candidates", CommentedSeq([candidate]), keep_comments=True)


def _set_after_name(candidate: CommentedMap, key: str, value: object) -> None:
    """Set ``key``, placing it right after ``name`` when it is new (name, traffic/shadow, release)."""
    if key in candidate:
        candidate[key] = value
    else:
        candidate.insert(1, key, value)


def _set_traffic(doc: CommentedMap, request: GenerateRequest) -> None:
    rollout = doc.get("rollout") or {}
    live = [c for c in rollout.get("candidates") or [] if not c.get("shadow")]
    if len(live) != 1:
        raise UsageError("--traffic without --strategy changes the one live candidate's share, but the spec has "
                         f"{len(live)}; pass --strategy canary or ab")
    if request.candidate_name not in ("candidate", live[0].get("name")):
        raise UsageError(f"there is no live candidate named {request.candidate_name!r} in "
                         f"{model_spec_path(request.env, request.model)} (the live one is {live[0].get('name')!r})")
    live[0]["traffic"] = request.traffic
    rollout["main_traffic"] = 100 - request.traffic


def _promote_candidate(doc: CommentedMap, request: GenerateRequest) -> None:
    candidates = (doc.get("rollout") or {}).get("candidates") or []
    chosen = next((c for c in candidates if c.get("name") == request.candidate_name), None)
    if chosen is None:
        raise UsageError(f"there is no candidate named {request.candidate_name!r} to promote in "
                         f"{model_spec_path(request.env, request.model)}")
    # Main takes the candidate's values in place, as promote and rollback do: one line per changed value.
    release = detached(chosen["release"])
    remove_key(doc, "rollout")
    assign_in_place(doc["release"], release)
