"""Settings of the retrain flow and its deploy step that belong to where they run, not to one run.

``RETRAIN_*`` variables (:class:`RetrainSettings`), plus the variables other tools own that the flow
and the deploy step read too: ``MLFLOW_TRACKING_URI``, the S3 endpoint (``AWS_ENDPOINT_URL_S3``, else
``MLFLOW_S3_ENDPOINT_URL``), ``PREFECT_API_URL``, and the Git host's (``MLOPS_GIT_TOKEN``, else
``GITHUB_TOKEN``; ``MLOPS_GIT_REPO``, else ``GITHUB_REPOSITORY``; ``MLOPS_GIT_API_URL``, else
``GITHUB_API_URL``; ``MLOPS_GIT_HOST``), the names :func:`generator.external.githost.host_from_env` reads.
Nothing else in the package reads the environment. :func:`child_environment` hands it on, unread, to a
command the deploy step runs.

Per-run choices (the dataset, the margin, images, a different environment) are flow parameters; the
release policy (metric, margin, canary or shadow, canary traffic) is the model spec's ``retrain``
block. Flow parameters win over these settings, the spec's policy fills what neither sets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from service_kit.settings import ServiceSettings


class ExitCode(IntEnum):
    """Exit status of ``python -m retrain.deploy`` (flow runs end as Prefect states, not exit codes)."""

    OK = 0
    """Every deployment was applied."""
    FAILURE = 1
    """The revision could not be fetched, a work pool is missing, or Prefect refused the file."""
    CONFIG = 2
    """Invalid arguments (argparse's usage error)."""


class RetrainSettings(ServiceSettings):
    """Where the GitOps repository and MLflow are, and who commits."""

    model_config = SettingsConfigDict(env_prefix="RETRAIN_", extra="ignore")

    git_url: str | None = None
    """Clone URL of this GitOps repository (https://..., ssh or a local path). Required to propose a release."""
    git_branch: str = "main"
    """Branch the proposal starts from and the pull request targets."""
    environment: str = "dev"
    """Environment whose live version the candidate must beat and whose spec the proposal changes."""
    mlflow_uri: str | None = None
    """MLflow tracking URL; default ``MLFLOW_TRACKING_URI``, else the environment's ``mlflow.tracking_uri``."""
    git_author_name: str = "mlops-retrain"
    git_author_email: str = "mlops-retrain@users.noreply.localhost"
    work_dir: Path | None = None
    """Where clones and downloads go (a fresh temporary folder per run by default; removed afterwards)."""
    seed: int = Field(default=0, ge=0)
    """Seed of data splits and training, so a rerun on the same data gives the same candidate."""

    # The deploy step (python -m retrain.deploy): where the deployments' flow runs go and start. It fills
    # prefect.yaml's {{ $RETRAIN_WORK_POOL }} and {{ $RETRAIN_CODE_DIR }} with these, so one file serves
    # the cluster (the defaults) and a local process worker.
    work_pool: str = Field(default="mlops-kubernetes", min_length=1)
    """Work pool of every deployment; the default is the pool apps/prefect-worker's worker creates."""
    work_pool_type: Literal["kubernetes", "process"] | None = None
    """Its type, when the deploy step should check it. ``process``: a missing pool is created here (a
    local process worker needs nothing else). Unset or ``kubernetes``: the pool is the in-cluster worker's
    to create (with its base job template), so until it exists the deploy fails and the Job retries."""
    code_dir: Path = Path("/app")
    """Where flow runs start: the folder holding the ``retrain`` package (the image's ``/app``; for a local
    process worker the repository's ``components`` folder)."""

    # Variables of other tools (no prefix).
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    aws_endpoint_url_s3: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL_S3")
    mlflow_s3_endpoint_url: str | None = Field(default=None, validation_alias="MLFLOW_S3_ENDPOINT_URL")
    prefect_api_url: str | None = Field(default=None, validation_alias="PREFECT_API_URL")
    mlops_git_repo: str | None = Field(default=None, validation_alias="MLOPS_GIT_REPO")
    mlops_git_api_url: str | None = Field(default=None, validation_alias="MLOPS_GIT_API_URL")
    mlops_git_host: str | None = Field(default=None, validation_alias="MLOPS_GIT_HOST")
    mlops_git_token: SecretStr | None = Field(default=None, validation_alias="MLOPS_GIT_TOKEN")
    """Pushes over https and opens the pull request (in the cluster from Secret ``retrain-credentials``)."""
    github_token: SecretStr | None = Field(default=None, validation_alias="GITHUB_TOKEN")
    github_repository: str | None = Field(default=None, validation_alias="GITHUB_REPOSITORY")
    github_api_url: str | None = Field(default=None, validation_alias="GITHUB_API_URL")

    @field_validator("code_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # A relative folder would be resolved against wherever the worker happens to start the run.
        if not value.is_absolute():
            raise ValueError("must be an absolute path (the folder holding the retrain package)")
        return value

    @property
    def s3_endpoint_url(self) -> str | None:
        """The S3 endpoint for datasets (MinIO, SeaweedFS), or ``None`` for AWS's."""
        return self.aws_endpoint_url_s3 or self.mlflow_s3_endpoint_url or None

    @property
    def git_token(self) -> str | None:
        """The Git host token: ``MLOPS_GIT_TOKEN``, else ``GITHUB_TOKEN``; ``None`` when neither is set."""
        for secret in (self.mlops_git_token, self.github_token):
            if secret is not None and secret.get_secret_value():
                return secret.get_secret_value()
        return None

    def git_host_variables(self) -> dict[str, str]:
        """The Git host's variables that are set, by name, for
        :func:`generator.external.githost.host_from_env` (which applies the fallbacks)."""
        values = {"MLOPS_GIT_HOST": self.mlops_git_host, "MLOPS_GIT_REPO": self.mlops_git_repo,
                  "GITHUB_REPOSITORY": self.github_repository, "MLOPS_GIT_API_URL": self.mlops_git_api_url,
                  "GITHUB_API_URL": self.github_api_url, "MLOPS_GIT_TOKEN": self.git_token}
        return {name: value for name, value in values.items() if value}


def load_settings(environ: Mapping[str, str] | None = None) -> RetrainSettings:
    """The settings from ``environ`` (default: the process environment)."""
    return RetrainSettings.load(environ)


def child_environment(**extra: str) -> dict[str, str]:
    """The process environment plus ``extra``, for a command the deploy step runs (``prefect deploy``).

    A hand-off, not a read: the child gets every variable this process has (``prefect.yaml``'s
    ``{{ $VARIABLE }}`` placeholders name any of them), and nothing here looks at their values."""
    return {**os.environ, **extra}
