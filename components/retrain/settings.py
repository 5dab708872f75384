"""Settings of the retrain flow that belong to where it runs, not to one run: ``RETRAIN_*`` variables.

Per-run choices (the dataset, the margin, images, a different environment) are flow parameters; the
release policy (metric, margin, canary or shadow, canary traffic) is the model spec's ``retrain``
block. Flow parameters win over these settings, the spec's policy fills what neither sets.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetrainSettings(BaseSettings):
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
