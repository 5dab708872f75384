"""The per-model retrain policy, rendered by ``mlops render`` from the model specs' ``retrain`` blocks.

The file (``policy.json`` in the ConfigMap ``retrain-trigger-policy``) holds the environment's
default (``defaults.retrain`` of ``environment.yaml``) and only the models whose policy differs from
it. A model created by ``mlops generate-model`` takes the default, so adding one never makes this
environment-wide file stale; a spec that overrides its ``retrain`` block is rendered into it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .settings import ConfigError, describe


class ModelPolicy(BaseModel):
    """What the trigger enforces for one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on_drift: bool
    """Drift alerts may start a retrain at all."""
    max_runs_per_day: int = Field(ge=0)
    """Most runs the trigger starts for the model in any 24 hours (0: none)."""


class Policy(BaseModel):
    """The whole file: the environment it belongs to, the default and the overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: str = Field(min_length=1)
    default: ModelPolicy
    models: dict[str, ModelPolicy] = {}

    def for_model(self, model: str) -> ModelPolicy:
        """The policy of ``model``: its override, else the environment's default."""
        return self.models.get(model, self.default)

    @classmethod
    def from_file(cls, path: Path) -> Policy:
        """Read and validate ``path``; any problem becomes a :class:`ConfigError` naming the file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the retrain policy ({exc.strerror or exc})") from exc
        except ValueError as exc:
            raise ConfigError(f"{path}: the retrain policy is not valid JSON ({exc})") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: invalid retrain policy:\n{describe(exc)}") from exc
