"""The ``mlops`` command line: a thin click layer over the generator modules.

Each command parses options, calls one module function and prints a summary. Expected failures are
:class:`~generator.errors.MlopsError` subclasses, printed without a traceback and mapped to exit codes
in one place (:func:`main`).
"""

from __future__ import annotations

from pathlib import Path

import click

from generator import __version__
from generator.appgraph import graph_problems, kustomize_problems
from generator.errors import MlopsError, StaleOutputError
from generator.generate import GenerateRequest, ReleaseOptions, generate_model
from generator.layout import RepoLayout
from generator.pipeline import render_all
from generator.render import apply, plan, unified_diff
from generator.validate import Validator, load_rendered_tree

EPILOG_REPO_ROOT = "The repository root is --repo-root, $MLOPS_REPO_ROOT, or the nearest parent with environments/."


class CommandFailed(click.ClickException):
    """An :class:`MlopsError` on its way out of click, carrying the error's own exit code."""

    def __init__(self, error: MlopsError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


class _MapsErrors:
    """Mixin mapping expected errors to exit codes, once, for the group and the stand-alone command."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except MlopsError as exc:
            raise CommandFailed(exc) from None


class MlopsGroup(_MapsErrors, click.Group):
    """The ``mlops`` group."""


class MlopsCommand(_MapsErrors, click.Command):
    """A command that also maps errors when run on its own (``generate-model``)."""


def _layout(repo_root: Path | None) -> RepoLayout:
    return RepoLayout(repo_root.resolve()) if repo_root else RepoLayout.discover()


def _environments(layout: RepoLayout, envs: tuple[str, ...]) -> list[str]:
    known = layout.existing_environments()
    if not known:
        raise MlopsError(f"no environments/<env>/environment.yaml under {layout.root}; run from the repository "
                         "or pass --repo-root")
    if unknown := [e for e in envs if e not in known]:
        raise click.BadParameter(f"{', '.join(unknown)} (known: {', '.join(known)})", param_hint="--env")
    return list(envs) or known


repo_root_option = click.option(
    "--repo-root", type=click.Path(file_okay=False, path_type=Path), envvar="MLOPS_REPO_ROOT",
    help="Root of the GitOps repository (default: discovered from the current directory).",
)


@click.group(cls=MlopsGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mlops-gitops")
def cli() -> None:
    """mlops-gitops: render validated model release specs into GitOps manifests.

    Specs live in environments/<env>/ (environment.yaml, models/<model>.yaml); rendered manifests go to
    environments/<env>/rendered/, are committed, and are synced by Argo CD.

    \b
    Example:
      mlops generate-model fraud-detector --env dev --registry-version 8 --strategy canary --traffic 10
      mlops render --check && mlops validate
    """


@cli.command("generate-model", cls=MlopsCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.option("--env", "env", required=True, help="Environment whose spec to create or update (dev, staging, prod).")
@click.option("--owner", help="Owning team (DNS-1123 name); required when creating a spec.")
@click.option("--registered-name", help="MLflow registered model name (default: the spec's, else NAME).")
@click.option("--registry-version", type=click.IntRange(min=1), help="MLflow model version to release.")
@click.option("--artifact-uri", help="Artifact URI of that version (s3://...). Omit to resolve it through MLflow.")
@click.option("--mlflow-uri", help="MLflow tracking URL for resolution (default: the environment's mlflow.tracking_uri).")
@click.option("--server-image", help="Model-server image; staging and prod need @sha256: digests.")
@click.option("--drift-image", help="Drift-detector image; staging and prod need @sha256: digests.")
@click.option("--detector-uri", help="URI of the fitted drift detector artifact.")
@click.option("--detector-sha256", help="sha256 of the drift detector artifact.")
@click.option("--strategy", type=click.Choice(["replace", "canary", "shadow", "ab"]),
              help="replace: the release becomes main (drops candidates); canary/ab/shadow: the release "
                   "becomes the candidate next to main.")
@click.option("--traffic", type=click.IntRange(1, 99), help="Candidate's traffic percent (canary default 10, ab 50).")
@click.option("--candidate-name", default="candidate", show_default=True, help="Predictor name of the candidate.")
@click.option("--promote-candidate", is_flag=True, help="Make the candidate's release main and end the rollout.")
@click.option("--feature", "features", multiple=True, metavar="NAME:TYPE",
              help="Model input feature (TYPE numeric or categorical), repeatable; when creating a spec.")
@click.option("--dry-run", is_flag=True, help="Validate and show what would be written, write nothing.")
@repo_root_option
def generate_model_command(name: str, env: str, owner: str | None, registered_name: str | None,
                           registry_version: int | None, artifact_uri: str | None, mlflow_uri: str | None,
                           server_image: str | None, drift_image: str | None, detector_uri: str | None,
                           detector_sha256: str | None, strategy: str | None, traffic: int | None,
                           candidate_name: str, promote_candidate: bool, features: tuple[str, ...],
                           dry_run: bool, repo_root: Path | None) -> None:
    """Create or update a model's release spec, then render that model.

    The spec environments/ENV/models/NAME.yaml is edited in place (comments and key order are kept, so
    changing one value is a one-line diff), validated, rendered and validated again; the spec and its
    rendered files are written together, or not at all.

    Given --registry-version without --artifact-uri, the artifact URI is resolved through the MLflow API
    (--mlflow-uri, else the environment's tracking URI), because Seldon cannot read models:/ URIs.

    \b
    Examples:
      # new model in dev (offline: artifact given)
      mlops generate-model fraud-detector --env dev --owner team-risk --registry-version 1 \\
        --artifact-uri s3://mlflow-artifacts/1/<run>/artifacts/model \\
        --server-image ghcr.io/acme/model-server:0.1.0 --drift-image ghcr.io/acme/drift-detector:0.1.0 \\
        --detector-uri s3://mlflow-artifacts/1/<run>/artifacts/drift/detector.npz --detector-sha256 <hex> \\
        --feature amount:numeric --feature merchant_category:categorical
      # version 8 as a 10% canary, resolved through MLflow
      mlops generate-model fraud-detector --env dev --registry-version 8 --strategy canary --traffic 10 \\
        --mlflow-uri http://localhost:5000
      # the canary won: make it main
      mlops generate-model fraud-detector --env dev --promote-candidate
    """
    layout = _layout(repo_root)
    _environments(layout, (env,))
    parsed = []
    for item in features:
        fname, _, ftype = item.partition(":")
        if ftype not in ("numeric", "categorical"):
            raise click.BadParameter(f"{item!r}: use NAME:numeric or NAME:categorical", param_hint="--feature")
        parsed.append((fname, ftype))
    request = GenerateRequest(
        model=name, env=env, owner=owner, strategy=strategy, traffic=traffic, candidate_name=candidate_name,
        promote_candidate=promote_candidate, features=tuple(parsed), mlflow_uri=mlflow_uri,
        release=ReleaseOptions(registered_name, registry_version, artifact_uri, server_image, drift_image,
                               detector_uri, detector_sha256),
    )
    result = generate_model(layout, request, dry_run=dry_run)
    verb = "would write" if dry_run else "wrote"
    click.echo(f"{'created' if result.created else 'updated'} {result.spec_path}")
    for path in sorted(result.change.writes):
        click.echo(f"  {verb} {path}")
    click.echo(f"{env}: {len(result.change.writes)} written, {result.change.unchanged} unchanged, "
               f"{len(result.files)} manifests validated")


@cli.command("render")
@click.option("--env", "envs", multiple=True, help="Render only this environment (repeatable; default: all).")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 with a unified diff if the committed output is stale.")
@click.option("-v", "--verbose", is_flag=True, help="List every rendered file with its kind and whether it changed.")
@click.option("--jobs", type=click.IntRange(min=1), envvar="MLOPS_JOBS",
              help="Worker processes [default: one per CPU for 60+ model renders, else 1].")
@repo_root_option
def render_command(envs: tuple[str, ...], check: bool, verbose: bool, jobs: int | None,
                   repo_root: Path | None) -> None:
    """Render every model of every environment into environments/<env>/rendered/.

    Loads and checks all specs, renders every template, validates every manifest, and only then writes;
    on any error the tree is left untouched. Rendered folders of models whose spec is gone are removed.
    Output is deterministic: rendering twice gives byte-identical files.

    \b
    Examples:
      mlops render                 # all environments
      mlops render --env dev
      mlops render --check         # CI: fail on stale or hand-edited output
      mlops render -v              # list every file, its kind and whether it changed
    """
    layout = _layout(repo_root)
    selected = _environments(layout, envs)
    files = render_all(layout, selected, jobs=jobs)
    change = plan(layout, selected, files)
    if verbose:
        for f in files:
            status = ("stale" if check else "written") if f.path in change.writes else "unchanged"
            click.echo(f"{status:9}  {f.path}  {f.summary}")
    if check:
        if not change.empty:
            click.echo(unified_diff(layout, change), nl=False)
            raise StaleOutputError(
                f"rendered output is stale: {len(change.writes)} file(s) differ, {len(change.deletes)} should be "
                "removed; run `mlops render` and commit the result")
        click.echo(f"up to date: {len(files)} files in {', '.join(selected)}")
        return
    apply(layout, change)
    for path in [] if verbose else sorted(change.writes):
        click.echo(f"wrote {path}")
    for path in change.deletes:
        click.echo(f"removed {path}")
    click.echo(f"{len(files)} files rendered and validated in {', '.join(selected)}: {len(change.writes)} written, "
               f"{len(change.deletes)} removed, {change.unchanged} unchanged")


@cli.command("validate")
@click.option("--env", "envs", multiple=True, help="Validate only this environment (repeatable; default: all).")
@click.option("--kubernetes-version", default="1.33", show_default=True, help="Kubernetes version of the built-in schemas.")
@repo_root_option
def validate_command(envs: tuple[str, ...], kubernetes_version: str, repo_root: Path | None) -> None:
    """Validate everything under environments/<env>/rendered/ and list every problem.

    Checks: Kubernetes schemas for built-in kinds (strict), the vendored CRD schemas in schemas/ in a
    strict mode that rejects unknown keys, Grafana's alert provisioning format and dashboards, Seldon's
    admission rules, and platform policies (non-root, resource limits, no Secrets, digest-pinned images
    in staging and prod, generated-file headers). Then the app-of-apps graph from each root app:
    projects exist and allow every destination, namespace and kind; sources are paths in this repo or
    charts pinned to exact versions; prod never syncs automatically; `kubectl kustomize bootstrap/argocd`
    builds offline. Exits 5 when anything is wrong.

    \b
    Example:
      mlops validate --env prod
    """
    from generator.errors import ValidationError

    layout = _layout(repo_root)
    selected = _environments(layout, envs)
    manifests, problems = load_rendered_tree(layout.root, selected)
    problems += Validator(layout.schemas_dir, kubernetes_version).validate(manifests)
    problems += graph_problems(layout, selected)
    if (layout.bootstrap_dir / "argocd").is_dir():
        problems += kustomize_problems(layout)
    if problems:
        raise ValidationError(problems)
    click.echo(f"valid: {len(manifests)} manifests in {', '.join(selected)}")


def main() -> None:
    """Entry point of ``mlops``."""
    cli()


def generate_model_main() -> None:
    """Entry point of the stand-alone ``generate-model`` script (same as ``mlops generate-model``)."""
    generate_model_command()
