"""The GitOps side of retraining: read the live release from Git, and propose the candidate as a pull request.

The flow clones the repository, reads the target environment's release spec (the version it has to
beat), and after registration runs ``mlops generate-model`` (:func:`generator.generate.generate_model`,
the function behind the command) in that clone, commits exactly the files it wrote on a new branch,
pushes it and opens a pull request when a Git host token is configured. Nothing here talks to
Kubernetes: Argo CD applies the change after a person merges it.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from generator import gitrepo
from generator.errors import SpecError
from generator.generate import GenerateRequest, ReleaseOptions, generate_model
from generator.githost import PullRequest, host_from_env
from generator.layout import RepoLayout
from generator.loader import load_environment_file, load_model
from generator.spec import Environment, ModelSpec

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
    """What was pushed: branch, commit, the files it changed, and the pull request if one was opened."""

    branch: str
    commit: str
    files: tuple[str, ...]
    pull_request: PullRequest | None


def git_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The Git host token (``MLOPS_GIT_TOKEN``, else ``GITHUB_TOKEN``), as :func:`host_from_env` reads it."""
    environ = os.environ if environ is None else environ
    return environ.get("MLOPS_GIT_TOKEN") or environ.get("GITHUB_TOKEN") or None


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
    spec_path = layout.model_spec(env, model)
    loaded, problems = load_model(layout, environment, spec_path)
    if loaded is None:
        raise SpecError(problems)
    return Target(checkout, environment, loaded.spec, layout.relative(spec_path))


def branch_name(model: str, version: int) -> str:
    """The proposal's branch: one per registered version, so a rerun never reuses another run's branch."""
    return f"retrain/{model}-v{version}"


def propose(target: Target, *, version: int, detector_uri: str, detector_sha256: str, mlflow_uri: str,
            strategy: str, traffic: int | None, server_image: str | None, drift_image: str | None,
            base_branch: str, title: str, body: str,
            environ: Mapping[str, str] | None = None) -> Proposal:
    """Put ``version`` into the target spec as the candidate, commit spec and rendered files, push, open a PR.

    Images not given are the live release's, so the candidate differs only in model and detector.
    ``traffic`` is the canary share (``None`` for a shadow).

    Raises:
        GitError: branch, commit or push failed.
        GitHostError: a token is configured but the pull request could not be opened (the branch is pushed).
        RegistryError, SpecError, ValidationError: ``generate-model`` refused the change; nothing is committed.
    """
    checkout, spec = target.checkout, target.spec
    branch = branch_name(spec.model, version)
    gitrepo.create_branch(checkout, branch)
    request = GenerateRequest(
        model=spec.model, env=target.environment.name, strategy=strategy, traffic=traffic,
        candidate_name=CANDIDATE_NAME, mlflow_uri=mlflow_uri,
        release=ReleaseOptions(
            registered_name=target.registered_name, registry_version=version,
            server_image=server_image or spec.release.server_image,
            drift_image=drift_image or spec.release.drift_image,
            detector_uri=detector_uri, detector_sha256=detector_sha256),
    )
    result = generate_model(RepoLayout(checkout), request)
    files = tuple(sorted(result.change.writes))
    commit = gitrepo.commit_paths(checkout, files, f"{title}\n\n{body}")
    gitrepo.push(checkout, REMOTE, branch)
    pull_request = None
    environ = os.environ if environ is None else environ
    if git_token(environ):
        host = host_from_env(environ)
        if host is not None:
            pull_request = host.open_pull_request(head=branch, base=base_branch, title=title, body=body)
    return Proposal(branch, commit, files, pull_request)
