"""``mlops status``: what runs where, read from Git (and, given an MLflow URL, whether the aliases agree).

For every environment and model: the release id, the MLflow version, the rollout, whether the
rendered output (what Argo CD syncs) carries the spec's release, and how the environment compares
with the first one in promotion order (dev): the same release, behind (an older version), ahead, or
different. With an MLflow URL, each model's alias named after the environment is checked against the
version Git deploys there (the alias Job moves it after each sync; a mismatch means a sync is pending
or failed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from generator.changes.prepare import rendered_release_id
from generator.commands.history import deployment_history, ran_releases
from generator.external import registry
from generator.render.aliases import alias_for
from generator.spec.errors import GitError
from generator.spec.layout import RepoLayout
from generator.spec.loader import load_environment
from generator.spec.models import ModelSpec, Release


@dataclass(frozen=True)
class CandidateStatus:
    """One predictor next to main."""

    name: str
    release_id: str
    version: int
    traffic: int
    shadow: bool


@dataclass(frozen=True)
class Comparison:
    """How an environment's release compares with the baseline environment's (dev)."""

    environment: str
    release_id: str
    version: int
    state: str
    """``same``, ``behind`` (older version), ``ahead`` (newer), or ``differs`` (same version or another model)."""
    releases_behind: int = 0
    """When ``behind``: how many releases the baseline ran that are newer than this environment's version
    (:func:`releases_since`)."""


@dataclass(frozen=True)
class AliasStatus:
    """The MLflow alias of the environment and whether it points at the version Git deploys."""

    alias: str
    version: int | None
    """The version the alias points at; ``None`` when unset or the model is not registered."""
    matches: bool


@dataclass(frozen=True)
class ModelStatus:
    """One model in one environment."""

    environment: str
    model: str
    release_id: str
    registered_model: str
    version: int
    strategy: str
    main_traffic: int
    candidates: list[CandidateStatus]
    rendered_release_id: str | None
    """The release id on the rendered Application; differs from ``release_id`` when output is stale."""
    baseline: Comparison | None
    """Comparison with the first environment (dev); ``None`` for dev itself or when dev lacks the model."""
    mlflow: AliasStatus | None = None

    @property
    def behind_baseline(self) -> bool | None:
        """True when the environment lags behind dev: an older version, or another release of the same one."""
        return None if self.baseline is None else self.baseline.state in ("behind", "differs")


def compare(release: Release, baseline: Release) -> str:
    """``same``, ``behind``, ``ahead`` or ``differs``: versions of one registered model are ordered."""
    if release.release_id == baseline.release_id:
        return "same"
    if release.registry.name != baseline.registry.name or release.registry.version == baseline.registry.version:
        return "differs"
    return "behind" if release.registry.version < baseline.registry.version else "ahead"


def collect(layout: RepoLayout, envs: list[str], mlflow_uri: str | None = None) -> list[ModelStatus]:
    """The status of every model in ``envs``, in promotion order then by model name.

    Raises:
        SpecError: a spec is invalid (status reads the same validated specs as render).
        RegistryError: ``mlflow_uri`` is given and MLflow cannot be reached.
    """
    order = layout.existing_environments()
    baseline_env = order[0] if order else None
    specs = {env: {m.spec.model: m.spec for m in load_environment(layout, env).models}
             for env in dict.fromkeys([*envs, *([baseline_env] if baseline_env else [])])}
    aliases: dict[str, dict[str, int] | None] = {}
    statuses = []
    for env in envs:
        for name, spec in specs[env].items():
            baseline = specs.get(baseline_env, {}).get(name) if env != baseline_env else None
            alias = None
            if mlflow_uri is not None:
                registered = spec.release.registry.name
                if registered not in aliases:
                    aliases[registered] = registry.registered_model_aliases(mlflow_uri, registered)
                pointed = (aliases[registered] or {}).get(alias_for(env))
                alias = AliasStatus(alias_for(env), pointed, pointed == spec.release.registry.version)
            statuses.append(_status(layout, env, spec, baseline_env, baseline, alias))
    return statuses


def _status(layout: RepoLayout, env: str, spec: ModelSpec, baseline_env: str | None, baseline: ModelSpec | None,
            alias: AliasStatus | None) -> ModelStatus:
    release = spec.release
    comparison = None
    if baseline is not None and baseline_env is not None:
        state = compare(release, baseline.release)
        lag = releases_since(layout, baseline_env, baseline, release.registry.version) if state == "behind" else 0
        comparison = Comparison(baseline_env, baseline.release.release_id, baseline.release.registry.version,
                                state, lag)
    candidates = [CandidateStatus(c.name, c.release.release_id, c.release.registry.version, c.traffic, c.shadow)
                  for c in spec.rollout.candidates]
    return ModelStatus(env, spec.model, release.release_id, release.registry.name, release.registry.version,
                       spec.rollout.strategy, spec.rollout.effective_main_traffic, candidates,
                       rendered_release_id(layout, env, spec.model), comparison, alias)


def releases_since(layout: RepoLayout, env: str, spec: ModelSpec, version: int) -> int:
    """How many releases of ``spec``'s model ``env`` ran as main that are newer than ``version``: the versions
    in the spec's Git history that it went through (not those it was rolled back from) and the one it runs
    now. Registry versions that never ran there (a candidate the gate rejected) do not count; outside Git,
    the difference of the version numbers."""
    current = spec.release.registry.version
    try:
        ran = ran_releases(deployment_history(layout, env, spec.model))
    except GitError:
        return current - version
    versions = {d.release.registry.version for d in ran if d.release.registry.name == spec.release.registry.name}
    return len({v for v in versions | {current} if version < v <= current})


def status_report(statuses: list[ModelStatus]) -> dict[str, Any]:
    """Machine-readable status: ``{"models": [...]}``, one object per (environment, model)."""
    items: list[dict[str, Any]] = []
    for status in statuses:
        item = asdict(status)
        item["rendered_current"] = status.rendered_release_id == status.release_id
        item["behind_dev"] = status.behind_baseline
        items.append(item)
    return {"models": items}


def check_statuses(statuses: list[ModelStatus], max_behind: int = 0) -> list[str]:
    """What ``status --check`` fails on: stale rendered output, an environment more than ``max_behind``
    releases behind dev (or running another release of dev's version), an MLflow alias that disagrees."""
    findings = []
    for s in statuses:
        where = f"{s.model} in {s.environment}"
        if s.rendered_release_id != s.release_id:
            findings.append(f"{where}: the spec names release {s.release_id} but the rendered output deploys "
                            f"{s.rendered_release_id or 'none'}; run mlops render --env {s.environment}")
        if s.baseline is not None and s.baseline.state in ("behind", "differs"):
            lag = s.baseline.releases_behind
            if s.baseline.state == "differs" or lag > max_behind:
                findings.append(f"{where}: runs version {s.version} ({s.release_id}), {s.baseline.environment} runs "
                                f"{s.baseline.version} ({s.baseline.release_id}): {s.baseline.state}"
                                + (f" by {lag} release{'s' * (lag != 1)} (allowed: {max_behind})"
                                   if s.baseline.state == "behind" else ""))
        if s.mlflow is not None and not s.mlflow.matches:
            findings.append(f"{where}: MLflow alias @{s.mlflow.alias} points at "
                            f"{'nothing' if s.mlflow.version is None else f'version {s.mlflow.version}'}, Git "
                            f"deploys version {s.version} (sync pending or failed)")
    return findings


def to_table(statuses: list[ModelStatus]) -> str:
    """A fixed-width table for people."""
    with_mlflow = any(s.mlflow is not None for s in statuses)
    header = ["ENV", "MODEL", "RELEASE", "VERSION", "ROLLOUT", "VS DEV"] + (["MLFLOW ALIAS"] if with_mlflow else [])
    rows = [header]
    for s in statuses:
        release = s.release_id if s.rendered_release_id == s.release_id else \
            f"{s.release_id} (rendered: {s.rendered_release_id or 'none'}, run mlops render)"
        row = [s.environment, s.model, release, f"{s.registered_model} v{s.version}", _rollout(s), _versus(s)]
        if with_mlflow:
            row.append(_alias(s.mlflow))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def _rollout(s: ModelStatus) -> str:
    if not s.candidates:
        return "main 100%"
    parts = [f"main {s.main_traffic}%"] + [
        f"{c.name} {'shadow' if c.shadow else f'{c.traffic}%'} (v{c.version} {c.release_id})" for c in s.candidates]
    return f"{s.strategy}: " + ", ".join(parts)


def _versus(s: ModelStatus) -> str:
    if s.baseline is None:
        return "-"
    if s.baseline.state == "same":
        return "same"
    return f"{s.baseline.state} ({s.baseline.environment}: v{s.baseline.version} {s.baseline.release_id})"


def _alias(alias: AliasStatus | None) -> str:
    if alias is None:
        return "-"
    if alias.matches:
        return f"@{alias.alias} ok"
    return f"@{alias.alias} -> {'unset' if alias.version is None else f'v{alias.version}'} (sync pending or failed)"
