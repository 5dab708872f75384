"""The GitOps side of retraining: read the live release from Git, and propose the candidate as a pull request.

The flow clones the repository, reads the target environment's release spec (the version it has to
beat), and after registration prepares the same change ``mlops generate-model`` would make
(:func:`generator.commands.generate.prepare_generate`) in that clone and publishes it the way ``mlops
promote --git`` does (:func:`generator.changes.publish.publish`): a new branch with exactly the change's
files, pushed, with a pull request when a Git host token is configured (otherwise the flow records the
proposal in Prefect, see :mod:`retrain.records`). The token and the Git host come from
:class:`~retrain.settings.RetrainSettings` (:func:`git_host`), never from the environment directly.
Nothing here talks to Kubernetes: Argo CD applies the change after a person merges it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from generator.changes.prepare import ModelChange
from generator.changes.publish import publish
from generator.commands.generate import GenerateRequest, ReleaseOptions, prepare_generate
from generator.commands.history import change_trailer
from generator.external import gitrepo
from generator.external.githost import GitHost, PullRequest, host_from_env
from generator.spec.layout import RepoLayout
from generator.spec.loader import load_environment_file, load_one_model
from generator.spec.models import Environment, ModelSpec
from retrain.settings import RetrainSettings

REMOTE = "origin"
CANDIDATE_NAME = "candidate"
"""Predictor name of the proposed release (generate-model's default)."""


@dataclass(frozen=True)
class Target:
    """The environment the candidate is proposed to, as its spec in Git says it is now."""

    checkout: Path
    environment: Environment
    spec: ModelSpec
    spec_path: str
    """Relative to the repository root."""

    @property
    def registered_name(self) -> str:
        return self.spec.release.registry.name

    @property
    def live_version(self) -> int:
        return self.spec.release.registry.version


@dataclass(frozen=True)
class Proposal:
    """What was pushed: branch, commit, the files it changed, what a pull request says (title, body), the
    compare ref (base branch and commit) with its diff summary, and the pull request if one was opened."""

    branch: str
    commit: str
    files: tuple[str, ...]
    pull_request: PullRequest | None
    title: str = ""
    body: str = ""
    base: str = ""
    """The branch the proposal starts from and a pull request would merge into."""
    base_commit: str = ""
    diff_stat: str = ""
    """``git diff --stat`` of base commit to branch commit: what a reviewer will see."""

    @property
    def compare(self) -> str:
        """The compare ref a reviewer opens (``git diff base...branch``, GitHub's ``/compare/base...branch``)."""
        return f"{self.base}...{self.branch}"


def git_host(settings: RetrainSettings) -> GitHost | None:
    """The Git host that opens the proposal's pull request, from the settings' Git host variables; ``None``
    without a token or a repository (then the branch is pushed and the proposal recorded in Prefect).

    Raises:
        GitHostError: an unknown ``MLOPS_GIT_HOST``, or a repository that is not ``owner/name``.
    """
    return host_from_env(settings.git_host_variables()) if settings.git_token else None


def clone(url: str, branch: str, directory: Path, *, author_name: str, author_email: str,
          token: str | None = None) -> Path:
    """Clone ``branch`` of ``url`` into ``directory`` (shallow for remote URLs) and set the commit identity.

    With a token and an ``https://`` URL, git sends it as HTTP basic auth (``x-access-token``, what GitHub
    expects) from the clone's local config; the clone lives in the run's temporary folder only.

    Raises:
        GitError: the clone failed (URL, branch or credentials).
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    options = []
    header = auth_header(url, token)
    if header:
        options = ["-c", f"http.extraHeader={header}"]
    shallow = ["--depth", "1"] if "://" in url and not url.startswith("file://") else []
    gitrepo.run_git(directory.parent, *options, "clone", "--quiet", *shallow, "--branch", branch, "--", url,
                    str(directory))
    if header:
        gitrepo.run_git(directory, "config", "--local", "http.extraHeader", header)
    gitrepo.run_git(directory, "config", "--local", "user.name", author_name)
    gitrepo.run_git(directory, "config", "--local", "user.email", author_email)
    return directory


def auth_header(url: str, token: str | None) -> str | None:
    """The HTTP header that authenticates git to an ``https://`` host with ``token``; ``None`` otherwise."""
    if not token or urlsplit(url).scheme != "https":
        return None
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return f"Authorization: Basic {basic}"


def read_target(checkout: Path, env: str, model: str) -> Target:
    """The model's release spec in ``env``, validated with the environment's defaults applied.

    Raises:
        SpecError: the environment or the spec is missing or invalid.
    """
    layout = RepoLayout(checkout)
    environment = load_environment_file(layout, env)
    loaded = load_one_model(layout, environment, model)
    return Target(checkout, environment, loaded.spec, layout.relative(loaded.path))


def branch_name(model: str, version: int) -> str:
    """The proposal's branch: one per registered version, so a rerun never reuses another run's branch."""
    return f"retrain/{model}-v{version}"


@dataclass(frozen=True)
class RetrainChange:
    """The candidate's spec change with what its commit and pull request say (a publishable proposal)."""

    change: ModelChange
    branch: str
    title: str
    body: str

    def commit_message(self) -> str:
        return f"{self.title}\n\n{self.body.rstrip()}\n\n{change_trailer('retrain')}\n"

    def pull_request_title(self) -> str:
        return self.title

    def pull_request_body(self) -> str:
        return self.body


def propose(target: Target, *, version: int, detector_uri: str, detector_sha256: str, mlflow_uri: str,
            artifact_sha256: str | None = None,
            strategy: str, traffic: int | None, server_image: str | None, drift_image: str | None,
            title: str, body: str, host: GitHost | None = None) -> Proposal:
    """Put ``version`` into the target spec as the candidate, commit spec and rendered files on a new
    branch, push it, and open a pull request against the checked-out branch on ``host`` (:func:`git_host`;
    ``None``: no pull request).

    ``artifact_sha256`` pins the model artifact (``None``: the version's ``mlops.artifact_sha256`` tag, read
    through MLflow). Images not given are the live release's, so the candidate differs only in model and detector.
    ``traffic`` is the canary share (``None`` for a shadow or a replacement). A failure before the commit leaves the
    checkout as it was.

    Raises:
        GitError: branch, commit or push failed.
        GitHostError: ``host`` could not open the pull request (the branch is pushed).
        RegistryError, SpecError, ValidationError: ``generate-model`` refused the change; nothing is committed.
    """
    spec = target.spec
    request = GenerateRequest(
        model=spec.model, env=target.environment.name, strategy=strategy, traffic=traffic,
        candidate_name=CANDIDATE_NAME, mlflow_uri=mlflow_uri,
        release=ReleaseOptions(
            registered_name=target.registered_name, registry_version=version,
            server_image=server_image or spec.release.server_image,
            drift_image=drift_image or spec.release.drift_image,
            detector_uri=detector_uri, detector_sha256=detector_sha256, artifact_sha256=artifact_sha256),
    )
    layout = RepoLayout(target.checkout)
    change = prepare_generate(layout, request).change
    published = publish(layout, RetrainChange(change, branch_name(spec.model, version), title, body),
                        remote=REMOTE, host=host, push=True)
    files = tuple(sorted([*change.plan.writes, *change.plan.deletes]))
    base_commit = gitrepo.head_commit(target.checkout)  # publish returns to the base branch
    diff_stat = gitrepo.run_git(target.checkout, "diff", "--stat", base_commit, published.commit).rstrip()
    return Proposal(published.branch, published.commit, files, published.pull_request, title=title, body=body,
                    base=published.base, base_commit=base_commit, diff_stat=diff_stat)
