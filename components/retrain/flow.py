"""The Prefect 3 flow ``retrain(model, reason)``: data → candidate → evaluation → registry → pull request.

Steps, each a Prefect task:

1. clone the GitOps repository and read the target environment's release spec (the live version to
   beat, the drift features, the ``retrain`` policy);
2. fetch the training data version (URI + sha256) and verify its bytes;
3. train, optionally searching hyperparameters (every trial is a nested MLflow run);
4. evaluate candidate and live version on the same held-out split; a candidate that does not beat the
   live version by the spec's ``retrain.min_improvement`` on ``retrain.metric`` is rejected, and the
   reason is recorded on the MLflow run (tags ``mlops.decision``, ``mlops.decision_reason``) and in the
   flow's result. When the environment has no live version yet (the spec's ``release.registry`` names a
   version the registry does not have), there is nothing to compare with: the comparison is skipped,
   why is recorded the same way (``mlops.decision=first_version``), and the candidate is proposed with
   strategy ``replace``;
5. register the new version in MLflow with params, metrics, the dataset (``mlflow.log_input`` with its
   digest) and a fitted, persisted drift detector (``drift/detector.npz`` and its sha256);
6. propose it: ``generate-model`` puts it into the environment as canary (or shadow, per
   ``retrain.propose_as``; ``replace`` for a first version) on a new branch, which is pushed; a pull
   request is opened when a Git host token and repository are configured. The proposal (title, body,
   compare ref, diff summary) is also a Prefect markdown artifact of the run and in its log
   (:mod:`retrain.records`), which is where it is found when no Git host API is configured.

Just before training, the run tags itself ``retrain:training-started``: the trigger's daily limit does not
count a failed run without it (:mod:`retrain.records`).

The flow never talks to Kubernetes; Argo CD applies the change once a person merges it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed
from service_kit.artifact_digest import artifact_sha256
from sklearn.model_selection import train_test_split

from generator.external.registry import ARTIFACT_DIGEST_TAG
from retrain import data as datasets
from retrain.evaluation import Decision, binary_metrics, decide
from retrain.models import FeatureInfo, ModelModule, load_model_module
from retrain.propose import Proposal, Target, clone, git_host, propose, read_target
from retrain.records import mark_training_started, record_proposal
from retrain.settings import RetrainSettings, load_settings

HOLDOUT_FRACTION = 0.25
"""Share of the data kept out of training: candidate and live version are compared on it."""
VALIDATION_FRACTION = 0.2
"""Share of the remaining data the hyperparameter trials are compared on."""
DETECTOR_ARTIFACT = "drift/detector.npz"
DETECTOR_SCHEMES = ("s3://", "file://")
"""Detector URIs the drift detector can download (see components/drift_detector)."""
MLFLOW_DIGEST_CHARS = 32
"""MLflow stores a dataset digest in at most 36 characters: the dataset's sha256, shortened."""
FIRST_VERSION = "first_version"
"""``mlops.decision`` of a run that had no live version to compare with."""


class RetrainError(RuntimeError):
    """A run cannot go on: missing configuration, or a result the next step cannot use."""


@dataclass(frozen=True)
class Splits:
    """Training, validation (trials) and held-out (candidate vs live) rows of one dataset version."""

    train: tuple[pd.DataFrame, pd.Series]
    validation: tuple[pd.DataFrame, pd.Series]
    holdout: tuple[pd.DataFrame, pd.Series]


@dataclass(frozen=True)
class Candidate:
    """The chosen model, the parameters it was trained with, and its validation metrics."""

    model: Any
    params: dict[str, Any]
    validation_metrics: dict[str, float]
    trials: int


@dataclass(frozen=True)
class Registered:
    """A registered model version with its artifact digest and its drift detector."""

    version: int
    detector_uri: str
    detector_sha256: str
    artifact_sha256: str


# --- tasks -----------------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE)
def checkout_repository(git_url: str, branch: str, directory: Path, settings: RetrainSettings) -> Path:
    """Clone the GitOps repository (the base branch of the proposal)."""
    return clone(git_url, branch, directory, author_name=settings.git_author_name,
                 author_email=settings.git_author_email, token=settings.git_token)


@task(cache_policy=NO_CACHE)
def read_live_release(checkout: Path, env: str, model: str) -> Target:
    """The target environment's release spec: live version, features and retrain policy."""
    target = read_target(checkout, env, model)
    get_run_logger().info("%s in %s names %s version %d as its release", model, env, target.registered_name,
                          target.live_version)
    return target


@task(cache_policy=NO_CACHE)
def missing_live_version(target: Target, tracking_uri: str) -> str | None:
    """Why there is no live version to beat (the spec's release is not in the registry), or ``None``.

    Only the registry's own "does not exist" answer counts: an unreachable registry fails the run
    instead of passing for an empty one.
    """
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient().get_model_version(target.registered_name, str(target.live_version))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        why = (f"no live version to compare with: {target.environment.name} names {target.registered_name} version "
               f"{target.live_version}, which the MLflow registry at {tracking_uri} does not have; comparison "
               "skipped, the candidate is proposed as the first version (strategy replace)")
        get_run_logger().warning("%s", why)
        return why
    get_run_logger().info("live version: %s version %d", target.registered_name, target.live_version)
    return None


@task(cache_policy=NO_CACHE)
def load_training_data(uri: str, sha256: str | None, directory: Path) -> datasets.DatasetVersion:
    """Fetch the dataset version and verify it against its sha256."""
    version = datasets.fetch_dataset(uri, directory, sha256)
    get_run_logger().info("dataset %s verified (sha256 %s)", uri, version.sha256)
    return version


@task(cache_policy=NO_CACHE)
def train_candidate(plugin: ModelModule, splits: Splits, features: list[FeatureInfo], *, search: bool,
                    params: dict[str, Any] | None, metric: str, seed: int, experiment_id: str,
                    parent_run_id: str) -> Candidate:
    """Train one model per parameter set (each a nested MLflow run) and keep the best on validation."""
    client = MlflowClient()
    if params is not None:
        trials = [dict(params)]
    else:
        trials = plugin.search_space if search else [plugin.default_params]
    best: Candidate | None = None
    x_train, y_train = splits.train
    x_val, y_val = splits.validation
    for index, trial in enumerate(trials):
        model = plugin.train(x_train, y_train, params=trial, seed=seed, feature_info=features)
        scores = binary_metrics(y_val.to_numpy(), plugin.score(model, x_val))
        if metric not in scores:
            raise RetrainError(f"retrain.metric {metric!r} is not computed; use one of {', '.join(sorted(scores))}")
        run = client.create_run(experiment_id, run_name=f"trial-{index}",
                                tags={MLFLOW_PARENT_RUN_ID: parent_run_id, "mlops.trial": str(index)})
        client.log_batch(run.info.run_id, params=_params(trial), metrics=_metrics(scores, "validation_"))
        client.set_terminated(run.info.run_id, "FINISHED")
        if best is None or scores[metric] > best.validation_metrics[metric]:
            best = Candidate(model, trial, scores, len(trials))
    assert best is not None  # trials is never empty (load_model_module checks SEARCH_SPACE)
    get_run_logger().info("best of %d trial(s): %s with validation %s %.4f", len(trials), best.params, metric,
                          best.validation_metrics[metric])
    return best


@task(cache_policy=NO_CACHE)
def evaluate_against_live(plugin: ModelModule, candidate: Candidate, target: Target, splits: Splits,
                          metric: str, margin: float) -> tuple[Decision, dict[str, float], dict[str, float]]:
    """Score candidate and live version on the held-out rows and decide."""
    x_holdout, y_holdout = splits.holdout
    live_model = plugin.load_model(f"models:/{target.registered_name}/{target.live_version}")
    live = binary_metrics(y_holdout.to_numpy(), plugin.score(live_model, x_holdout))
    new = binary_metrics(y_holdout.to_numpy(), plugin.score(candidate.model, x_holdout))
    decision = decide(metric, new, live, target.live_version, margin)
    get_run_logger().info("%s: %s", "accepted" if decision.accepted else "rejected", decision.reason)
    return decision, new, live


@task(cache_policy=NO_CACHE)
def register_candidate(plugin: ModelModule, candidate: Candidate, target: Target, dataset: datasets.DatasetVersion,
                       frame: pd.DataFrame, labels: pd.Series, splits: Splits, features: list[FeatureInfo],
                       parent_run_id: str, reason: str, decision_reason: str, compared_with: str,
                       workspace: Path) -> Registered:
    """Log the model, the dataset and the fitted drift detector in the run, and register the version."""
    from drift_detector.artifacts import save
    from drift_detector.detector import FeatureSpec, fit
    from drift_detector.fit import read_reference

    spec = target.spec
    with mlflow.start_run(run_id=parent_run_id) as run:
        artifact_root = run.info.artifact_uri.rstrip("/")
        detector_uri = f"{artifact_root}/{DETECTOR_ARTIFACT}"
        if not detector_uri.startswith(DETECTOR_SCHEMES):
            raise RetrainError(f"MLflow stores this run's artifacts at {artifact_root}, which the drift detector "
                               f"cannot download (it reads {', '.join(DETECTOR_SCHEMES)}); run the MLflow server "
                               "with --no-serve-artifacts and an s3:// --default-artifact-root")
        training = mlflow.data.from_pandas(
            frame.assign(**{plugin.label: labels.to_numpy()}), source=dataset.uri, targets=plugin.label,
            name=f"{spec.model}-training-data", digest=dataset.sha256[:MLFLOW_DIGEST_CHARS])
        mlflow.log_input(training, context="training",
                         tags={"mlops.sha256": dataset.sha256, "mlops.uri": dataset.uri})

        # The detector's reference is what the model learned from: the training split, in spec order.
        reference_csv = workspace / "drift-reference.csv"
        splits.train[0].to_csv(reference_csv, index=False)
        feature_specs = [FeatureSpec(f.name, f.type, list(f.categories) if f.categories else None) for f in features]
        drift = spec.drift
        detector = fit(read_reference(reference_csv, feature_specs), feature_specs, drift.method,
                       p_value=drift.p_value, correction=drift.correction, window=drift.window, ert=drift.ert)
        detector.meta.update({"model": spec.model, "dataset_uri": dataset.uri, "dataset_sha256": dataset.sha256})
        detector_path = workspace / "drift" / "detector.npz"
        detector_sha256 = save(detector, detector_path)
        Path(f"{detector_path}.sha256").write_text(f"{detector_sha256}  detector.npz\n", encoding="utf-8")
        mlflow.log_artifact(str(detector_path), artifact_path="drift")
        mlflow.log_artifact(f"{detector_path}.sha256", artifact_path="drift")

        info = plugin.log_model(candidate.model, splits.train[0], target.registered_name)
        version = int(info.registered_model_version)

    client = MlflowClient()
    # The digest of what the store now holds, downloaded as the model server will download it: the
    # release pins exactly these bytes, and generate-model reads the tag.
    stored = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(target.registered_name, str(version)),
        dst_path=str(workspace / "registered-model"))
    model_sha256 = artifact_sha256(stored)
    tags = {ARTIFACT_DIGEST_TAG: model_sha256, "mlops.reason": reason, "mlops.data_uri": dataset.uri, "mlops.data_sha256": dataset.sha256,
            "mlops.detector_uri": detector_uri, "mlops.detector_sha256": detector_sha256,
            "mlops.run_id": parent_run_id, "mlops.compared_with": compared_with,
            "mlops.decision_reason": decision_reason}
    for key, value in tags.items():
        client.set_model_version_tag(target.registered_name, str(version), key, value)
    client.update_model_version(target.registered_name, str(version),
                                description=f"Retrained ({reason}): {decision_reason}")
    get_run_logger().info("registered %s version %d, detector %s", target.registered_name, version, detector_uri)
    return Registered(version, detector_uri, detector_sha256, model_sha256)


@task(cache_policy=NO_CACHE)
def propose_release(target: Target, registered: Registered, settings: RetrainSettings, *, mlflow_uri: str,
                    strategy: str, traffic: int | None, server_image: str | None, drift_image: str | None,
                    title: str, body: str, remote: str) -> tuple[Proposal, str | None]:
    """Branch, ``generate-model``, commit, push, and a pull request against the cloned branch when a Git host
    is configured; the proposal is recorded in the run either way. Returns it and its artifact's key."""
    proposal = propose(target, version=registered.version, detector_uri=registered.detector_uri,
                       detector_sha256=registered.detector_sha256, artifact_sha256=registered.artifact_sha256,
                       mlflow_uri=mlflow_uri, strategy=strategy,
                       traffic=traffic, server_image=server_image, drift_image=drift_image,
                       title=title, body=body, host=git_host(settings))
    logger = get_run_logger()
    logger.info("pushed %s (%s): %s", proposal.branch, proposal.commit[:12], ", ".join(proposal.files))
    if proposal.pull_request:
        logger.info("pull request #%d: %s", proposal.pull_request.number, proposal.pull_request.url)
    else:
        logger.info("no Git host API configured (MLOPS_GIT_REPO and a token): no pull request; the proposal is "
                    "this run's artifact, compare %s", proposal.compare)
    return proposal, record_proposal(proposal, target.spec.model, remote, logger)


# --- the flow --------------------------------------------------------------------------------------


@flow(name="retrain", log_prints=True)
def retrain(model: str, reason: str = "manual", data_uri: str | None = None, data_sha256: str | None = None,
            search: bool = True, params: dict[str, Any] | None = None, min_improvement: float | None = None,
            propose_as: str | None = None, environment: str | None = None, git_url: str | None = None,
            server_image: str | None = None, drift_image: str | None = None) -> Any:
    """Retrain ``model`` and propose the new version to the environment as a pull request.

    Args:
        model: the model's name (its spec ``environments/<env>/models/<model>.yaml`` and its module
            ``retrain.models.<model with - as _>``).
        reason: why this run started (the alert, or ``manual``); recorded in MLflow and the pull request.
        data_uri: the training data version (``s3://``, ``file://`` or a path); required.
        data_sha256: its sha256; default: the published ``<data_uri>.sha256``.
        search: try every parameter set of the module's ``SEARCH_SPACE`` (else ``DEFAULT_PARAMS``).
        params: train with exactly these hyperparameters (no search).
        min_improvement: margin over the live version; default the spec's ``retrain.min_improvement``.
        propose_as: ``canary`` or ``shadow``; default the spec's ``retrain.propose_as``. A first version
            (no live version in the registry) is always proposed with ``replace``.
        environment: the target environment; default ``RETRAIN_ENVIRONMENT`` (``dev``).
        git_url: clone URL of the GitOps repository; default ``RETRAIN_GIT_URL``.
        server_image, drift_image: images of the candidate; default the live release's.

    Returns:
        A Completed state whose message says what happened and whose result is a dict: ``status``
        (``proposed`` or ``rejected``), ``reason`` (the decision's, or why the comparison was skipped),
        ``first_version``, ``decision`` (``None`` for a first version), ``mlflow_run_id`` and, when
        proposed, ``registered_version``, ``strategy``, ``detector``, ``branch``, ``commit``,
        ``pull_request`` and ``proposal`` (title, body, base, base_commit, compare, diff_stat, artifact).
    """
    logger = get_run_logger()
    settings = load_settings()
    env = environment or settings.environment
    repository = git_url or settings.git_url
    if not repository:
        raise RetrainError("no GitOps repository to read the live release from: set RETRAIN_GIT_URL or pass git_url")
    if not data_uri:
        raise RetrainError(f"no training data for {model}: pass data_uri (the deployment's parameter in "
                           "components/retrain/prefect.yaml)")
    if propose_as not in (None, "canary", "shadow"):
        raise RetrainError(f"propose_as must be canary or shadow, not {propose_as!r}")
    plugin = load_model_module(model)

    with tempfile.TemporaryDirectory(prefix=f"retrain-{model}-", dir=settings.work_dir) as scratch:
        workspace = Path(scratch)
        checkout = checkout_repository(repository, settings.git_branch, workspace / "repo", settings)
        target = read_live_release(checkout, env, model)
        policy = target.spec.retrain
        margin = policy.min_improvement if min_improvement is None else min_improvement
        tracking_uri = settings.mlflow_uri or settings.mlflow_tracking_uri or target.environment.mlflow.tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        first_version = missing_live_version(target, tracking_uri)
        strategy = "replace" if first_version else propose_as or policy.propose_as

        features = [FeatureInfo(f.name, f.type, tuple(f.categories) if f.categories else None)
                    for f in target.spec.drift.features]
        dataset = load_training_data(data_uri, data_sha256, workspace / "data")
        frame, labels = plugin.load_data(dataset.path, features)
        splits = split(frame, labels, settings.seed)

        client = MlflowClient()
        experiment_id = _experiment(client, f"retrain-{model}")
        live_version = "none" if first_version else str(target.live_version)
        run = client.create_run(experiment_id, run_name=f"retrain-{model}", tags={
            "mlops.model": model, "mlops.environment": env, "mlops.reason": reason,
            "mlops.live_version": live_version})
        run_id = run.info.run_id
        client.log_batch(run_id, params=_params({
            "model": model, "environment": env, "reason": reason, "data_uri": dataset.uri,
            "data_sha256": dataset.sha256, "metric": policy.metric, "min_improvement": margin,
            "propose_as": strategy, "live_version": live_version, "seed": settings.seed,
            "holdout_fraction": HOLDOUT_FRACTION, "rows": len(frame)}))
        try:
            mark_training_started()
            candidate = train_candidate(plugin, splits, features, search=search, params=params, metric=policy.metric,
                                        seed=settings.seed, experiment_id=experiment_id, parent_run_id=run_id)
            client.log_batch(run_id, params=_params(candidate.params, prefix="param_"),
                             metrics=_metrics(candidate.validation_metrics, "validation_"))
            if first_version:
                decision = None
                new = binary_metrics(splits.holdout[1].to_numpy(), plugin.score(candidate.model, splits.holdout[0]))
                client.log_batch(run_id, metrics=_metrics(new, "candidate_"))
                decided, why = FIRST_VERSION, first_version
            else:
                decision, new, live = evaluate_against_live(plugin, candidate, target, splits, policy.metric, margin)
                client.log_batch(run_id, metrics=[*_metrics(new, "candidate_"), *_metrics(live, "live_"),
                                                  *_metrics({"improvement": decision.improvement}, "")])
                decided, why = ("accepted" if decision.accepted else "rejected"), decision.reason
            client.set_tag(run_id, "mlops.decision", decided)
            client.set_tag(run_id, "mlops.decision_reason", why)
            result: dict[str, Any] = {"model": model, "environment": env, "reason": why, "trigger": reason,
                                      "first_version": bool(first_version),
                                      "decision": asdict(decision) if decision else None, "mlflow_run_id": run_id,
                                      "data": {"uri": dataset.uri, "sha256": dataset.sha256}}
            if decision is not None and not decision.accepted:
                client.set_terminated(run_id, "FINISHED")
                logger.warning("candidate rejected: %s", decision.reason)
                return Completed(message=f"rejected: {decision.reason}", data={**result, "status": "rejected"})

            registered = register_candidate(plugin, candidate, target, dataset, frame, labels, splits, features,
                                            run_id, reason, why, live_version, workspace)
            traffic = policy.canary_traffic if strategy == "canary" else None
            title, body = _pull_request_text(model, env, strategy, traffic, registered, why, reason, dataset,
                                             tracking_uri, experiment_id, run_id)
            proposal, artifact = propose_release(
                target, registered, settings, mlflow_uri=tracking_uri, strategy=strategy, traffic=traffic,
                server_image=server_image, drift_image=drift_image, title=title, body=body, remote=repository)
            client.set_tag(run_id, "mlops.proposal_branch", proposal.branch)
            client.set_terminated(run_id, "FINISHED")
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
    pull_request = proposal.pull_request
    return Completed(
        message=f"proposed version {registered.version} as {strategy} on {proposal.branch}: {why}",
        data={**result, "status": "proposed", "registered_version": registered.version, "strategy": strategy,
              "artifact_sha256": registered.artifact_sha256,
              "detector": {"uri": registered.detector_uri, "sha256": registered.detector_sha256},
              "branch": proposal.branch, "commit": proposal.commit, "files": list(proposal.files),
              "pull_request": asdict(pull_request) if pull_request else None,
              "proposal": {"title": proposal.title, "body": proposal.body, "base": proposal.base,
                           "base_commit": proposal.base_commit, "branch": proposal.branch,
                           "commit": proposal.commit, "compare": proposal.compare,
                           "diff_stat": proposal.diff_stat, "artifact": artifact}})


# --- helpers ---------------------------------------------------------------------------------------


def split(frame: pd.DataFrame, labels: pd.Series, seed: int) -> Splits:
    """Stratified training / validation / held-out rows, the same for the same data and seed."""
    x_rest, x_holdout, y_rest, y_holdout = train_test_split(frame, labels, test_size=HOLDOUT_FRACTION,
                                                            random_state=seed, stratify=labels)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=VALIDATION_FRACTION,
                                                      random_state=seed, stratify=y_rest)
    return Splits((x_train, y_train), (x_val, y_val), (x_holdout, y_holdout))


def _experiment(client: MlflowClient, name: str) -> str:
    existing = client.get_experiment_by_name(name)
    return existing.experiment_id if existing is not None else client.create_experiment(name)


def _params(values: dict[str, Any], prefix: str = "") -> list:
    from mlflow.entities import Param

    return [Param(f"{prefix}{key}", str(value)) for key, value in sorted(values.items())]


def _metrics(values: dict[str, float], prefix: str) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(f"{prefix}{key}", float(value), now, 0) for key, value in sorted(values.items())]


def _pull_request_text(model: str, env: str, strategy: str, traffic: int | None, registered: Registered,
                       evaluation: str, reason: str, dataset: datasets.DatasetVersion, tracking_uri: str,
                       experiment_id: str, run_id: str) -> tuple[str, str]:
    share = {"canary": f" ({traffic}% of traffic)", "shadow": " (a copy of all traffic)"}.get(strategy, "")
    role = "the first version (all traffic)" if strategy == "replace" else f"the {strategy}{share}"
    title = f"Retrain {model}: version {registered.version} as {strategy} in {env}"
    finish = ("Merging lets Argo CD roll it out." if strategy == "replace" else
              "Merging lets Argo CD roll it out; `mlops generate-model --promote-candidate` finishes the rollout.")
    body = "\n".join([
        f"The retrain flow proposes {model} version {registered.version} as {role} in {env}.",
        "",
        f"- Why: {reason}",
        f"- Evaluation on held-out data: {evaluation}",
        f"- Training data: {dataset.uri} (sha256 {dataset.sha256})",
        f"- Model artifact digest: {registered.artifact_sha256} (checked by the model server at start)",
        f"- Drift detector: {registered.detector_uri} (sha256 {registered.detector_sha256})",
        f"- MLflow run: {tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}",
        "",
        finish,
    ])
    return title, body
