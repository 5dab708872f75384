"""The ``mlops`` command line: a thin click layer over the generator modules.

Each command parses options, calls one module function and prints a summary. Expected failures are
:class:`~generator.errors.MlopsError` subclasses, printed without a traceback and mapped to exit codes
in one place (:func:`main`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
from click.core import ParameterSource

from generator import __version__
from generator.changes.publish import publish
from generator.commands.board import board_html, board_markdown, pending_proposals
from generator.commands.charts import pull, write_sources
from generator.commands.generate import FeatureOption, GenerateRequest, ReleaseOptions, generate_model
from generator.commands.history import history_report, history_table, release_history
from generator.commands.promote import PromoteRequest, promote
from generator.commands.render import render_environments
from generator.commands.report import (
    change_report,
    envelope,
    error_report,
    plan_report,
    published_report,
    release_report,
)
from generator.commands.rollback import RollbackRequest, rollback
from generator.commands.status import check_statuses, collect, status_report, to_table
from generator.commands.validate import DEFAULT_KUBERNETES_VERSION, validate_environments
from generator.external.githost import host_from_env
from generator.spec.errors import CheckFailedError, MlopsError, RepositoryError, UsageError, did_you_mean
from generator.spec.layout import RepoLayout, env_file_path
from generator.write.plan import apply, unified_diff

EPILOG_REPO_ROOT = "The repository root is --repo-root, $MLOPS_REPO_ROOT, or the nearest parent with environments/."


class CommandFailed(click.ClickException):
    """An :class:`MlopsError` on its way out of click, carrying the error's own exit code."""

    def __init__(self, error: MlopsError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


class _MapsErrors:
    """Mixin mapping expected errors to exit codes, once, for the group and the stand-alone command; with
    ``--output json`` the error is a JSON report on stdout (same exit code)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except MlopsError as exc:
            if ctx.meta.get(OUTPUT_KEY) == "json":
                click.echo(json.dumps(error_report(ctx.meta.get(COMMAND_KEY, ctx.info_name), exc), indent=2))
                ctx.exit(exc.exit_code)
            raise CommandFailed(exc) from None


class MlopsGroup(_MapsErrors, click.Group):
    """The ``mlops`` group."""


class MlopsCommand(_MapsErrors, click.Command):
    """A command that also maps errors when run on its own (``generate-model``)."""


OUTPUT_KEY, COMMAND_KEY = "mlops.output", "mlops.command"


def _remember_output(ctx: click.Context, _param: click.Parameter, value: str) -> str:
    ctx.meta[OUTPUT_KEY], ctx.meta[COMMAND_KEY] = value, ctx.info_name
    return value


def output_option(*formats: str):
    """``--output``: text for people (default), json for scripts (one object; README: Machine use)."""
    return click.option("--output", type=click.Choice(["text", "json", *formats]), default="text",
                        show_default=True, is_eager=True, callback=_remember_output,
                        help="text for people; json for scripts (one object, see README: Machine use)"
                             + (f"; {', '.join(formats)}" if formats else "") + ".")


def _report(output: str, data: dict, lines: list[str]) -> None:
    """Print the command's result as JSON or as its text lines."""
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        for line in lines:
            click.echo(line)


def _echo_diff(diff: str) -> None:
    """A unified diff, coloured when stdout is a terminal (click strips the colour otherwise)."""
    colours = {"+": "green", "-": "red", "@": "cyan"}
    for line in diff.splitlines():
        bold = line.startswith(("+++", "---"))
        click.echo(click.style(line, bold=True) if bold else click.style(line, fg=colours.get(line[:1])))


def _layout(repo_root: Path | None) -> RepoLayout:
    return RepoLayout(repo_root.resolve()) if repo_root else RepoLayout.discover()


def _environments(layout: RepoLayout, envs: tuple[str, ...]) -> list[str]:
    known = layout.existing_environments()
    if not known:
        raise RepositoryError(f"no {env_file_path('<env>')} under {layout.root}; run from the repository "
                              "or pass --repo-root")
    if unknown := [e for e in envs if e not in known]:
        raise click.BadParameter(f"{', '.join(unknown)}{did_you_mean(unknown[0], known)} "
                                 f"(known: {', '.join(known)})", param_hint="--env")
    return list(envs) or known


def _complete_environments(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    layout = _layout(ctx.params.get("repo_root"))
    return [env for env in layout.existing_environments() if env.startswith(incomplete)]


def _complete_models(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    layout = _layout(ctx.params.get("repo_root"))
    env = ctx.params.get("env") or ctx.params.get("source")
    return [model for model in layout.known_models([env] if env else None) if model.startswith(incomplete)]


repo_root_option = click.option(
    "--repo-root", type=click.Path(file_okay=False, path_type=Path), envvar="MLOPS_REPO_ROOT", is_eager=True,
    help="Root of the GitOps repository (default: discovered from the current directory).",
)


def env_option(*names: str, help: str, required: bool = True, multiple: bool = False):
    """An environment option that completes the repository's environments."""
    return click.option(*names, required=required, multiple=multiple, help=help,
                        shell_complete=_complete_environments)


def model_argument(name: str = "model"):
    """A model name argument that completes the repository's models."""
    return click.argument(name, shell_complete=_complete_models)


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
@model_argument("name")
@env_option("--env", "env", help="Environment whose spec to create or update; releases enter at dev (staging and "
                                 "prod receive them by mlops promote).")
@click.option("--owner", help="Owning team (DNS-1123 name); required when creating a spec.")
@click.option("--registered-name", help="MLflow registered model name (default: the spec's, else NAME).")
@click.option("--registry-version", type=click.IntRange(min=1), help="MLflow model version to release.")
@click.option("--artifact-uri", help="Artifact URI of that version (s3://...). Omit to resolve it through MLflow.")
@click.option("--mlflow-uri", help="MLflow tracking URL for resolution (default: the environment's mlflow.tracking_uri).")
@click.option("--server-image", help="Model-server image; staging and prod need @sha256: digests.")
@click.option("--drift-image", help="Drift-detector image; staging and prod need @sha256: digests.")
@click.option("--detector-uri", help="URI of the fitted drift detector artifact (one per model version).")
@click.option("--detector-sha256", help="sha256 of the drift detector artifact.")
@click.option("--strategy", type=click.Choice(["replace", "canary", "shadow", "ab"]),
              help="replace: the release becomes main (drops candidates); canary/ab/shadow: the release "
                   "becomes the candidate next to main.")
@click.option("--traffic", type=click.IntRange(1, 99),
              help="Candidate's traffic percent (canary default 10, ab 50); not for a shadow.")
@click.option("--candidate-name", default="candidate", show_default=True, help="Predictor name of the candidate.")
@click.option("--promote-candidate", is_flag=True, help="Make the candidate's release main and end the rollout.")
@click.option("--feature", "features", multiple=True, metavar="NAME:TYPE[:CATEGORIES]",
              help="Model input feature, repeatable, when creating a spec: NAME:numeric, NAME:categorical, or "
                   "NAME:categorical:a,b,c with its categories.")
@click.option("--dry-run", is_flag=True, help="Validate and show the diff that would be written; write nothing.")
@output_option()
@repo_root_option
def generate_model_command(name: str, env: str, owner: str | None, registered_name: str | None,
                           registry_version: int | None, artifact_uri: str | None, mlflow_uri: str | None,
                           server_image: str | None, drift_image: str | None, detector_uri: str | None,
                           detector_sha256: str | None, strategy: str | None, traffic: int | None,
                           candidate_name: str, promote_candidate: bool, features: tuple[str, ...],
                           dry_run: bool, output: str, repo_root: Path | None) -> None:
    """Create or update a model's release spec, then render that model.

    The spec environments/ENV/models/NAME.yaml is edited in place (comments and key order are kept, so
    changing one value is a one-line diff), validated, rendered and validated again; the spec and its
    rendered files are written together, or not at all. Releases enter at dev: in staging and prod only
    environment-local settings change here (traffic, finishing or dropping a rollout, owner).

    Given --registry-version without --artifact-uri, the artifact URI is resolved through the MLflow API
    (--mlflow-uri, else the environment's tracking URI), because Seldon cannot read models:/ URIs.

    \b
    Examples:
      # new model in dev (offline: artifact given)
      mlops generate-model fraud-detector --env dev --owner team-risk --registry-version 1 \\
        --artifact-uri s3://mlflow-artifacts/1/<run>/artifacts/model \\
        --server-image ghcr.io/acme/model-server:0.1.0 --drift-image ghcr.io/acme/drift-detector:0.1.0 \\
        --detector-uri s3://mlflow-artifacts/1/<run>/artifacts/drift/detector.npz --detector-sha256 <hex> \\
        --feature amount:numeric --feature merchant_category:categorical:grocery,travel,online
      # version 8 as a 10% canary, resolved through MLflow
      mlops generate-model fraud-detector --env dev --registry-version 8 --strategy canary --traffic 10 \\
        --mlflow-uri http://localhost:5000
      # the canary won: make it main (show the diff first)
      mlops generate-model fraud-detector --env dev --promote-candidate --dry-run
    """
    layout = _layout(repo_root)
    _environments(layout, (env,))
    request = GenerateRequest(
        model=name, env=env, owner=owner, strategy=strategy, traffic=traffic, candidate_name=candidate_name,
        promote_candidate=promote_candidate, features=tuple(FeatureOption.parse(f) for f in features),
        mlflow_uri=mlflow_uri,
        release=ReleaseOptions(registered_name, registry_version, artifact_uri, server_image, drift_image,
                               detector_uri, detector_sha256),
    )
    result = generate_model(layout, request, dry_run=dry_run)
    change = result.change.plan
    if output == "text":
        for warning in result.warnings:
            click.echo(click.style(f"warning: {warning}", fg="yellow"), err=True)
        if dry_run:
            _echo_diff(unified_diff(layout, change))
    verb = ("would create" if result.created else "would update") if dry_run else (
        "created" if result.created else "updated")
    written = "would be written" if dry_run else "written"
    _report(output, envelope("generate-model", dry_run=dry_run, created=result.created,
                             warnings=list(result.warnings), **change_report(result.change)),
            [f"{verb} {result.spec_path}",
             *(f"  {'would write' if dry_run else 'wrote'} {path}" for path in sorted(change.writes)),
             f"{env}: {len(change.writes)} {written}, {change.unchanged} unchanged, "
             f"{len(result.change.files)} manifests validated"])


@cli.command("render")
@env_option("--env", "envs", required=False, multiple=True,
            help="Render only this environment (repeatable; default: all).")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 with a unified diff if the committed output is stale.")
@click.option("-v", "--verbose", is_flag=True, help="List every rendered file with its kind and whether it changed.")
@click.option("--jobs", type=click.IntRange(min=1), envvar="MLOPS_JOBS",
              help="Worker processes [default: one per CPU for 60+ model renders, else 1].")
@output_option()
@repo_root_option
def render_command(envs: tuple[str, ...], check: bool, verbose: bool, jobs: int | None, output: str,
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
    report = envelope("render", environments=result.envs, check=check, files=len(result.files),
                      stale=check and not change.empty, **plan_report(change))
    if output == "text" and verbose:
        for f in result.files:
            status = ("stale" if check else "written") if f.path in change.writes else "unchanged"
            click.echo(f"{status:9}  {f.path}  {f.summary}")
    if check:
        if not change.empty:
            if output == "text":
                click.echo(unified_diff(layout, change), nl=False)
            raise CheckFailedError(
                f"rendered output is stale: {len(change.writes)} file(s) differ, {len(change.deletes)} should be "
                "removed; run `mlops render` and commit the result")
        _report(output, report, [f"up to date: {len(result.files)} files in {selected}"])
        return
    apply(layout, change)
    _report(output, report, [
        *(f"wrote {path}" for path in ([] if verbose else sorted(change.writes))),
        *(f"removed {path}" for path in change.deletes),
        f"{len(result.files)} files rendered and validated in {selected}: {len(change.writes)} written, "
        f"{len(change.deletes)} removed, {change.unchanged} unchanged"])


@cli.command("validate")
@env_option("--env", "envs", required=False, multiple=True,
            help="Validate only this environment (repeatable; default: all).")
@click.option("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION, show_default=True,
              help="Kubernetes version of the built-in schemas.")
@output_option()
@repo_root_option
def validate_command(envs: tuple[str, ...], kubernetes_version: str, output: str, repo_root: Path | None) -> None:
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
    _report(output, envelope("validate", environments=selected, manifests=count),
            [f"valid: {count} manifests in {', '.join(selected)}"])


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


def publish_options(*, branch: str):
    """--git/--no-git, --dry-run and --remote: how a verb that proposes a change delivers it (the same
    options and default for every such verb). A dry run writes nothing, so it cannot commit: with
    --dry-run, the default --git is dropped and an explicit --git is refused."""
    options = [
        click.option("--git/--no-git", "use_git", default=True, show_default=True,
                     help=f"Commit on branch {branch}; with a Git host configured (MLOPS_GIT_REPO), push it and "
                          "open a pull request. --no-git only writes the files."),
        click.option("--dry-run", is_flag=True, help="Check, render and validate; show the diff that would be "
                                                      "written, write nothing."),
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
            raise UsageError("--dry-run writes nothing, so it cannot commit; drop --git or --dry-run")
        return result
    if use_git:
        return dataclasses.replace(result, published=publish(layout, result, remote=remote, host=host_from_env()))
    apply(layout, result.change.plan)
    return result


def _delivered(layout: RepoLayout, result, dry_run: bool, output: str) -> list[str]:
    """The text lines of what a promote or rollback wrote, committed, pushed and opened (and, for a dry run,
    the diff it would write, printed first)."""
    published, change = result.published, result.change.plan
    if dry_run and output == "text":
        _echo_diff(unified_diff(layout, change))
    verb = "would write" if dry_run else "committed" if published is not None else "wrote"
    lines = [*(f"  {verb} {path}" for path in sorted(change.writes)),
             *(f"  {'would remove' if dry_run else 'removed'} {path}" for path in change.deletes)]
    if published is None:
        return lines
    lines.append(f"committed {published.commit[:12]} on branch {published.branch} (back on {published.base})")
    if published.pull_request is not None:
        lines.append(f"pushed {published.branch}; pull request #{published.pull_request.number}: "
                     f"{published.pull_request.url}")
    else:
        lines.append(f"no Git host configured (MLOPS_GIT_REPO): push with `git push -u origin {published.branch}` "
                     "and open the pull request by hand")
    return lines


@cli.command("promote")
@model_argument()
@env_option("--from", "source", help="Environment whose release is promoted (e.g. staging).")
@env_option("--to", "target", help="The next environment in promotion order (e.g. prod).")
@click.option("--release", "release_id", metavar="RELEASE_ID",
              help="Refuse unless the source runs this release id (as shown by mlops status).")
@click.option("--with-rollout", is_flag=True,
              help="Also copy the rollout (strategy, traffic, candidates): the target runs the same canary.")
@publish_options(branch="promote/<model>/<env>/<release-id>")
@output_option()
@repo_root_option
def promote_command(model: str, source: str, target: str, release_id: str | None, with_rollout: bool,
                    use_git: bool, dry_run: bool, remote: str, output: str, repo_root: Path | None) -> None:
    """Promote a model's release from one environment to the next (dev → staging → prod).

    Copies the immutable release block of environments/FROM/models/MODEL.yaml into the TO spec with a
    round-trip edit (one changed line per changed value); the target's own settings (replicas,
    resources, thresholds) stay. With --with-rollout the candidates and traffic come along too. The
    target is re-rendered and validated; spec and rendered files are written together, or not at all.

    Refuses (exit 2, nothing written) when the release is not what FROM runs (uncommitted, not
    rendered, or not --release), when staging or prod would get an image without a digest, and when
    TO already runs the release.

    The change is committed on promote/MODEL/TO/RELEASE-ID (message: model version, artifact, image
    digests) and the current branch is checked out again; --no-git only writes the files. With a Git
    host configured (MLOPS_GIT_REPO=owner/name and MLOPS_GIT_TOKEN, or GitHub Actions' GITHUB_REPOSITORY
    and GITHUB_TOKEN), the branch is pushed and a pull request opened.

    \b
    Examples:
      mlops promote fraud-detector --from dev --to staging --dry-run
      mlops promote fraud-detector --from staging --to prod --release 486525e0c85f
    """
    layout = _layout(repo_root)
    result = promote(layout, PromoteRequest(model, source, target, release_id, with_rollout))
    result = _deliver(layout, result, use_git=use_git, dry_run=dry_run, remote=remote)
    release = result.release
    lines = _delivered(layout, result, dry_run, output)
    summary = (f"{'would promote' if dry_run else 'promoted'} {model} release {release.release_id} "
               f"({release.registry.name} version {release.registry.version}) from {source} to {target}"
               + (f", replacing {result.previous.release_id}" if result.previous else f" (new in {target})"))
    if dry_run:
        lines.append("commit message would be:\n" + result.commit_message().rstrip("\n"))
    _report(output, envelope("promote", dry_run=dry_run, source=source, target=target,
                             release=release_report(release),
                             previous=release_report(result.previous) if result.previous else None,
                             published=published_report(result.published), **change_report(result.change)),
            [summary, *lines])


@cli.command("rollback")
@model_argument()
@env_option("--env", "env", help="Environment to roll back (dev, staging, prod).")
@click.option("--to", "to_release", metavar="RELEASE_ID",
              help="Release id (or a unique prefix of at least 4 characters) to return to; default: the "
                   "release the environment ran before the current one.")
@publish_options(branch="rollback/<model>/<env>/<release-id>")
@output_option()
@repo_root_option
def rollback_command(model: str, env: str, to_release: str | None, use_git: bool, dry_run: bool, remote: str,
                     output: str, repo_root: Path | None) -> None:
    """Restore a model's previous release from the spec's Git history, re-render and commit.

    Walks back through the releases ENV actually ran (`git log` of environments/ENV/models/MODEL.yaml,
    see mlops history): the default is the release before the current one, never one the environment
    was rolled back from; --to RELEASE_ID picks any release it ran. Its release and rollout blocks are
    copied into the spec with a round-trip edit; the environment's own settings stay, so the rendered
    output is what that version rendered. Spec and rendered files are validated first and written
    together, then committed on rollback/MODEL/ENV/RELEASE-ID (with a pull request when a Git host is
    configured, see mlops promote); the current branch is checked out again.

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
    summary = (f"{'would roll back' if dry_run else 'rolled back'} {model} in {env} from release "
               f"{current.release_id} (version {current.registry.version}) to {old.release_id} "
               f"(version {old.registry.version}, as of commit {result.restored.commit[:12]})")
    lines = _delivered(layout, result, dry_run, output)
    _report(output, envelope("rollback", dry_run=dry_run, release=release_report(old),
                             previous=release_report(current), restored_commit=result.restored.commit,
                             published=published_report(result.published), **change_report(result.change)),
            [summary, *lines])


@cli.command("history")
@model_argument()
@env_option("--env", "env", help="Environment whose history to show (dev, staging, prod).")
@output_option()
@repo_root_option
def history_command(model: str, env: str, output: str, repo_root: Path | None) -> None:
    """List the releases a model ran in an environment, newest first, from the spec's Git history.

    One line per commit that changed what runs (main's release or the rollout): when, which commit, how
    it came (generate, promote, rollback, retrain), the release id and version, the candidates, and
    whether it runs now or was rolled back from. mlops rollback walks back through this list and never
    returns to a release the environment was rolled back from (unless --to names it).

    \b
    Examples:
      mlops history fraud-detector --env prod
      mlops history fraud-detector --env prod --output json
    """
    layout = _layout(repo_root)
    _environments(layout, (env,))
    entries = release_history(layout, env, model)
    if output == "json":
        click.echo(json.dumps(envelope("history", environment=env, model=model, changes=history_report(entries)),
                              indent=2))
    else:
        click.echo(history_table(entries), nl=False)


@cli.command("status")
@env_option("--env", "envs", required=False, multiple=True,
            help="Show only this environment (repeatable; default: all).")
@click.option("--model", "models", multiple=True, shell_complete=_complete_models,
              help="Show only this model (repeatable; default: all).")
@click.option("--mlflow-uri", help="MLflow URL: also check that the aliases dev/staging/prod match Git.")
@click.option("--check", is_flag=True,
              help="Exit 1 when a spec's rendered output is stale or an environment lags dev by more than "
                   "--max-behind versions (and, with --mlflow-uri, when an alias disagrees with Git).")
@click.option("--max-behind", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --check: how many model versions an environment may lag dev.")
@output_option("markdown", "html")
@repo_root_option
def status_command(envs: tuple[str, ...], models: tuple[str, ...], mlflow_uri: str | None, check: bool,
                   max_behind: int, output: str, repo_root: Path | None) -> None:
    """Show what runs where: release, MLflow version, rollout, and whether staging or prod lag behind dev.

    Reads the specs and rendered output in Git. For each environment and model: the release id (the
    one in rendered labels, commits and pull requests), the MLflow model version, the rollout with
    each candidate's traffic, and how the release compares with dev's (same, behind, ahead, differs).
    A release whose rendered output is stale is flagged. With --mlflow-uri, each model's MLflow alias
    named after the environment is checked against the version Git deploys there (the PostSync alias
    Job moves it after each sync, so a mismatch means a sync is pending or failed). --output markdown
    and html draw the promotion board: per model, its environments left to right and the proposals
    (unmerged promote/rollback/retrain branches) awaiting approval.

    \b
    Examples:
      mlops status
      mlops status --env prod --output json
      mlops status --check --max-behind 2          # CI: fail when prod is more than 2 versions behind dev
      mlops status --mlflow-uri http://localhost:5000
      mlops status --output html > board.html       # the promotion board, one self-contained page
    """
    layout = _layout(repo_root)
    selected = _environments(layout, envs)
    known = layout.known_models(selected)
    if unknown := [m for m in models if m not in known]:
        raise click.BadParameter(f"{', '.join(unknown)}{did_you_mean(unknown[0], known)} "
                                 f"(models: {', '.join(known)})", param_hint="--model")
    statuses = [s for s in collect(layout, selected, mlflow_uri) if not models or s.model in models]
    findings = check_statuses(statuses, max_behind) if check else []
    if output in ("markdown", "html"):  # the promotion board, for pull-request summaries and a browser
        pending = pending_proposals(layout, layout.existing_environments()[0])
        board = board_markdown if output == "markdown" else board_html
        click.echo(board(statuses, pending, selected), nl=False)
    elif output == "json":  # one object, the findings in it; the exit code says whether the check passed
        report = envelope("status", **status_report(statuses), findings=findings)
        click.echo(json.dumps({**report, "ok": not findings}, indent=2))
        if findings:
            click.get_current_context().exit(CheckFailedError.exit_code)
        return
    else:
        click.echo(to_table(statuses), nl=False)
    if findings:
        raise CheckFailedError("status check failed:\n" + "\n".join(f"  - {finding}" for finding in findings))


def main() -> None:
    """Entry point of ``mlops``."""
    cli()


def generate_model_main() -> None:
    """Entry point of the stand-alone ``generate-model`` script (same as ``mlops generate-model``)."""
    generate_model_command()
