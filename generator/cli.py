"""The ``mlops`` command line: a thin click layer over the generator modules.

Each command parses options, calls one module function and prints a summary. Expected failures are
:class:`~generator.errors.MlopsError` subclasses, printed without a traceback and mapped to exit codes
in one place (:func:`main`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
from click.core import ParameterSource

from generator import __version__
from generator.changes.publish import publish
from generator.commands.charts import pull, write_sources
from generator.commands.generate import GenerateRequest, ReleaseOptions, generate_model
from generator.commands.promote import PromoteRequest, promote
from generator.commands.render import render_environments
from generator.commands.rollback import RollbackRequest, rollback
from generator.commands.status import collect, to_json, to_table
from generator.commands.validate import DEFAULT_KUBERNETES_VERSION, validate_environments
from generator.external.githost import host_from_env
from generator.spec.errors import CheckFailedError, MlopsError, RepositoryError
from generator.spec.layout import RepoLayout
from generator.write.plan import apply, unified_diff

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
        raise RepositoryError(f"no environments/<env>/environment.yaml under {layout.root}; run from the repository "
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
    for path in sorted(result.change.plan.writes):
        click.echo(f"  {verb} {path}")
    click.echo(f"{env}: {len(result.change.plan.writes)} written, {result.change.plan.unchanged} unchanged, "
               f"{len(result.change.files)} manifests validated")


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
    result = render_environments(layout, _environments(layout, envs), jobs=jobs)
    change, selected = result.plan, ", ".join(result.envs)
    if verbose:
        for f in result.files:
            status = ("stale" if check else "written") if f.path in change.writes else "unchanged"
            click.echo(f"{status:9}  {f.path}  {f.summary}")
    if check:
        if not change.empty:
            click.echo(unified_diff(layout, change), nl=False)
            raise CheckFailedError(
                f"rendered output is stale: {len(change.writes)} file(s) differ, {len(change.deletes)} should be "
                "removed; run `mlops render` and commit the result")
        click.echo(f"up to date: {len(result.files)} files in {selected}")
        return
    apply(layout, change)
    for path in [] if verbose else sorted(change.writes):
        click.echo(f"wrote {path}")
    for path in change.deletes:
        click.echo(f"removed {path}")
    click.echo(f"{len(result.files)} files rendered and validated in {selected}: {len(change.writes)} written, "
               f"{len(change.deletes)} removed, {change.unchanged} unchanged")


@cli.command("validate")
@click.option("--env", "envs", multiple=True, help="Validate only this environment (repeatable; default: all).")
@click.option("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION, show_default=True, help="Kubernetes version of the built-in schemas.")
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
    layout = _layout(repo_root)
    selected = _environments(layout, envs)
    count = validate_environments(layout, selected, kubernetes_version)
    click.echo(f"valid: {count} manifests in {', '.join(selected)}")


@cli.group("charts")
def charts_group() -> None:
    """Vendored Helm charts (vendor/charts/): pull a pinned chart, rewrite SOURCES.md.

    Every Helm pin in apps/*/component.yaml has its published archive in vendor/charts/, and
    `mlops validate` renders each platform Application with it, offline.

    \b
    Examples:
      mlops charts pull mlflow --version 1.11.5
      mlops charts sources
    """


@charts_group.command("pull")
@click.argument("component")
@click.option("--version", help="Chart version to vendor (default: the newest in the repository's index.yaml).")
@click.option("--archive", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Offline: the published .tgz you downloaded (give --published).")
@click.option("--chart-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Offline: a checkout of the chart at its release tag, packaged with Helm (give --published).")
@click.option("--published", help="Offline: where the version is published (release tag and commit, or index entry).")
@click.option("--license", "license_", help="SPDX licence of the chart (default: the current entry's).")
@repo_root_option
def charts_pull_command(component: str, version: str | None, archive: Path | None, chart_dir: Path | None,
                        published: str | None, license_: str | None, repo_root: Path | None) -> None:
    """Vendor COMPONENT's chart and update its pin, lock entry and SOURCES.md together.

    Reads the chart repository's index.yaml (network), takes --version or the newest, downloads the
    archive and checks its sha256 against the index. Then writes vendor/charts/<chart>-<version>.tgz,
    vendor/charts/charts.yaml, vendor/charts/SOURCES.md and source.version, source.evidence and
    app_version in apps/COMPONENT/component.yaml. Run `mlops render` and `mlops validate` next.

    \b
    Examples:
      mlops charts pull mlflow --version 1.11.5
      mlops charts pull strimzi --chart-dir ~/src/strimzi/packaging/helm-charts/helm3/strimzi-kafka-operator \\
          --version 1.2.0 --published "release tag 1.2.0 of github.com/strimzi/strimzi-kafka-operator (6c7b43c4)"
    """
    result = pull(_layout(repo_root), component, version, archive, chart_dir, published, license_)
    for path in result.written:
        click.echo(f"wrote {path}")
    click.echo(f"{result.component}: {result.chart} {result.previous} -> {result.version}; now run "
               "`mlops render` and `mlops validate`")


@charts_group.command("sources")
@repo_root_option
def charts_sources_command(repo_root: Path | None) -> None:
    """Rewrite vendor/charts/SOURCES.md from vendor/charts/charts.yaml (after correcting provenance by hand).

    \b
    Example:
      mlops charts sources
    """
    click.echo(f"wrote {write_sources(_layout(repo_root))}")


def publish_options(*, git_default: bool, branch: str):
    """--git/--no-git, --dry-run and --remote: how a verb that proposes a change delivers it.

    A dry run writes nothing, so it cannot commit: with --dry-run, a default --git is dropped and an
    explicit --git is refused.
    """
    options = [
        click.option("--git/--no-git", "use_git", default=git_default, show_default=True,
                     help=f"Commit on branch {branch}; with a Git host configured (MLOPS_GIT_REPO), push it and "
                          "open a pull request." + (" --no-git only writes the files." if git_default else "")),
        click.option("--dry-run", is_flag=True, help="Check, render and validate; show what would change, "
                                                      "write nothing."),
        click.option("--remote", default="origin", show_default=True,
                     help="Git remote the branch is pushed to when a Git host is configured."),
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _deliver(layout: RepoLayout, result, *, use_git: bool, dry_run: bool, remote: str):
    """Write, commit (and push with a pull request) or only show a prepared change; returns the result with
    where it was published."""
    if dry_run:
        explicit = click.get_current_context().get_parameter_source("use_git") == ParameterSource.COMMANDLINE
        if use_git and explicit:
            raise click.UsageError("--dry-run writes nothing, so it cannot commit; drop --git or --dry-run")
        return result
    if use_git:
        return dataclasses.replace(result, published=publish(layout, result, remote=remote, host=host_from_env()))
    apply(layout, result.change.plan)
    return result


def _print_published(result, dry_run: bool) -> None:
    """What a promote or rollback wrote, committed, pushed and opened."""
    published, change = result.published, result.change.plan
    verb = "would write" if dry_run else "committed" if published is not None else "wrote"
    for path in sorted(change.writes):
        click.echo(f"  {verb} {path}")
    for path in change.deletes:
        click.echo(f"  {'would remove' if dry_run else 'removed'} {path}")
    if published is None:
        return
    click.echo(f"committed {published.commit[:12]} on branch {published.branch} (back on {published.base})")
    if published.pull_request is not None:
        click.echo(f"pushed {published.branch}; pull request #{published.pull_request.number}: "
                   f"{published.pull_request.url}")
    else:
        click.echo(f"no Git host configured (MLOPS_GIT_REPO): push with `git push -u origin {published.branch}` "
                   "and open the pull request by hand")


@cli.command("promote")
@click.argument("model")
@click.option("--from", "source", required=True, help="Environment whose release is promoted (e.g. staging).")
@click.option("--to", "target", required=True, help="The next environment in promotion order (e.g. prod).")
@click.option("--release", "release_id", metavar="RELEASE_ID",
              help="Refuse unless the source runs this release id (as shown by mlops status).")
@click.option("--with-rollout", is_flag=True,
              help="Also copy the rollout (strategy, traffic, candidates): the target runs the same canary.")
@publish_options(git_default=False, branch="promote/<model>/<env>/<release-id>")
@repo_root_option
def promote_command(model: str, source: str, target: str, release_id: str | None, with_rollout: bool,
                    use_git: bool, dry_run: bool, remote: str, repo_root: Path | None) -> None:
    """Promote a model's release from one environment to the next (dev → staging → prod).

    Copies the immutable release block of environments/FROM/models/MODEL.yaml into the TO spec with a
    round-trip edit (one changed line per changed value); the target's own settings (replicas,
    resources, thresholds) stay. With --with-rollout the candidates and traffic come along too. The
    target is re-rendered and validated; spec and rendered files are written together, or not at all.

    Refuses (exit 2, nothing written) when the release is not what FROM runs (uncommitted, not
    rendered, or not --release), when staging or prod would get an image without a digest, and when
    TO already runs the release.

    With --git the change is committed on promote/MODEL/TO/RELEASE-ID (message: model version,
    artifact, image digests) and the current branch is checked out again. With a Git host configured
    (MLOPS_GIT_REPO=owner/name and MLOPS_GIT_TOKEN, or GitHub Actions' GITHUB_REPOSITORY and
    GITHUB_TOKEN), the branch is pushed and a pull request opened.

    \b
    Examples:
      mlops promote fraud-detector --from dev --to staging --dry-run
      mlops promote fraud-detector --from staging --to prod --release 486525e0c85f --git
    """
    layout = _layout(repo_root)
    result = promote(layout, PromoteRequest(model, source, target, release_id, with_rollout))
    result = _deliver(layout, result, use_git=use_git, dry_run=dry_run, remote=remote)
    release = result.release
    click.echo(f"{'would promote' if dry_run else 'promoted'} {model} release {release.release_id} "
               f"({release.registry.name} version {release.registry.version}) from {source} to {target}"
               + (f", replacing {result.previous.release_id}" if result.previous else " (new in " + target + ")"))
    _print_published(result, dry_run)
    if dry_run:
        click.echo("commit message would be:\n" + result.commit_message())


@cli.command("rollback")
@click.argument("model")
@click.option("--env", "env", required=True, help="Environment to roll back (dev, staging, prod).")
@click.option("--to", "to_release", metavar="RELEASE_ID",
              help="Release id (or a unique prefix of at least 4 characters) to return to; default: the "
                   "previous release in the spec's Git history.")
@publish_options(git_default=True, branch="rollback/<model>/<env>/<release-id>")
@repo_root_option
def rollback_command(model: str, env: str, to_release: str | None, use_git: bool, dry_run: bool, remote: str,
                     repo_root: Path | None) -> None:
    """Restore a model's previous release from the spec's Git history, re-render and commit.

    Reads `git log` of environments/ENV/models/MODEL.yaml, picks the newest committed version whose
    release or rollout differs from the current one (or the newest that ran --to RELEASE_ID), and
    copies its release and rollout blocks into the spec with a round-trip edit. The environment's own
    settings stay, so the rendered output is what that version rendered. Spec and rendered files are
    validated first and written together, then committed on rollback/MODEL/ENV/RELEASE-ID (with a pull
    request when a Git host is configured, see mlops promote); the current branch is checked out again.

    In prod, roll back in the Argo CD UI first when it is urgent (History and Rollback), then merge this
    pull request so Git and the cluster agree.

    \b
    Examples:
      mlops rollback fraud-detector --env prod --dry-run
      mlops rollback fraud-detector --env prod --to 78265c188e04
    """
    layout = _layout(repo_root)
    _environments(layout, (env,))
    result = rollback(layout, RollbackRequest(model, env, to_release))
    result = _deliver(layout, result, use_git=use_git, dry_run=dry_run, remote=remote)
    old, current = result.restored.release, result.current
    click.echo(f"{'would roll back' if dry_run else 'rolled back'} {model} in {env} from release "
               f"{current.release_id} (version {current.registry.version}) to {old.release_id} "
               f"(version {old.registry.version}, as of commit {result.restored.commit[:12]})")
    _print_published(result, dry_run)


@cli.command("status")
@click.option("--env", "envs", multiple=True, help="Show only this environment (repeatable; default: all).")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Table for people, JSON for scripts.")
@click.option("--mlflow-uri", help="MLflow URL: also check that the aliases dev/staging/prod match Git.")
@repo_root_option
def status_command(envs: tuple[str, ...], output: str, mlflow_uri: str | None, repo_root: Path | None) -> None:
    """Show what runs where: release, MLflow version, rollout, and whether staging or prod lag behind dev.

    Reads the specs and rendered output in Git. For each environment and model: the release id (the
    one in rendered labels, commits and pull requests), the MLflow model version, the rollout with
    each candidate's traffic, and how the release compares with dev's (same, behind, ahead, differs).
    A release whose rendered output is stale is flagged. With --mlflow-uri, each model's MLflow alias
    named after the environment is checked against the version Git deploys there (the PostSync alias
    Job moves it after each sync, so a mismatch means a sync is pending or failed).

    \b
    Examples:
      mlops status
      mlops status --env prod --output json
      mlops status --mlflow-uri http://localhost:5000
    """
    layout = _layout(repo_root)
    statuses = collect(layout, _environments(layout, envs), mlflow_uri)
    click.echo(to_json(statuses) if output == "json" else to_table(statuses), nl=False)


def main() -> None:
    """Entry point of ``mlops``."""
    cli()


def generate_model_main() -> None:
    """Entry point of the stand-alone ``generate-model`` script (same as ``mlops generate-model``)."""
    generate_model_command()
