"""``mlops generate-model``, ``promote``, ``rollback``, ``history`` and ``status``: the commands that change
or show what a model runs where."""

from __future__ import annotations

import json
from pathlib import Path

import click

from generator.cli.shared import (
    MlopsCommand,
    cli,
    complete_models,
    deliver,
    delivered_lines,
    echo_diff,
    env_option,
    environments_of,
    layout_of,
    model_argument,
    output_option,
    print_report,
    publish_options,
    repo_root_option,
)
from generator.commands.board import board_html, board_markdown, pending_proposals
from generator.commands.generate import FeatureOption, GenerateRequest, ReleaseOptions, generate_model
from generator.commands.history import history_report, history_table, release_history
from generator.commands.promote import PromoteRequest, promote
from generator.commands.report import (
    change_report,
    envelope,
    published_report,
    release_report,
)
from generator.commands.rollback import RollbackRequest, rollback
from generator.commands.status import check_statuses, collect, status_report, to_table
from generator.spec.errors import CheckFailedError, did_you_mean
from generator.write.plan import unified_diff


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
@click.option("--artifact-sha256", help="Digest of the model artifact directory (python -m service_kit.artifact_digest "
                                         "DIR prints it); default with MLflow: the version's mlops.artifact_sha256 tag.")
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
                           detector_sha256: str | None, artifact_sha256: str | None, strategy: str | None, traffic: int | None,
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
    layout = layout_of(repo_root, writes=not dry_run)
    environments_of(layout, (env,))
    request = GenerateRequest(
        model=name, env=env, owner=owner, strategy=strategy, traffic=traffic, candidate_name=candidate_name,
        promote_candidate=promote_candidate, features=tuple(FeatureOption.parse(f) for f in features),
        mlflow_uri=mlflow_uri,
        release=ReleaseOptions(registered_name, registry_version, artifact_uri, server_image, drift_image,
                               detector_uri, detector_sha256, artifact_sha256),
    )
    result = generate_model(layout, request, dry_run=dry_run)
    change = result.change.plan
    if output == "text":
        for warning in result.warnings:
            click.echo(click.style(f"warning: {warning}", fg="yellow"), err=True)
        if dry_run:
            echo_diff(unified_diff(layout, change))
    verb = ("would create" if result.created else "would update") if dry_run else (
        "created" if result.created else "updated")
    if not (result.created or change.writes or change.deletes):
        verb = "nothing to change in"
    written = "would be written" if dry_run else "written"
    print_report(output, envelope("generate-model", dry_run=dry_run, created=result.created,
                                  warnings=list(result.warnings), **change_report(result.change)),
                 [f"{verb} {result.spec_path}",
                  *(f"  {'would write' if dry_run else 'wrote'} {path}" for path in sorted(change.writes)),
                  f"{env}: {len(change.writes)} {written}, {change.unchanged} unchanged, "
                  f"{len(result.change.files)} manifests validated"])


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
      mlops promote fraud-detector --from staging --to prod --release c2287322366b
    """
    layout = layout_of(repo_root, writes=not dry_run)
    result = promote(layout, PromoteRequest(model, source, target, release_id, with_rollout))
    result = deliver(layout, result, use_git=use_git, dry_run=dry_run, remote=remote)
    release = result.release
    lines = delivered_lines(layout, result, dry_run, output)
    summary = (f"{'would promote' if dry_run else 'promoted'} {model} release {release.release_id} "
               f"({release.registry.name} version {release.registry.version}) from {source} to {target}"
               + (f", replacing {result.previous.release_id}" if result.previous else f" (new in {target})"))
    if dry_run:
        lines.append("commit message would be:\n" + result.commit_message().rstrip("\n"))
    print_report(output, envelope("promote", dry_run=dry_run, source=source, target=target,
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
      mlops rollback fraud-detector --env prod --to 759daf92f1f3
    """
    layout = layout_of(repo_root, writes=not dry_run)
    environments_of(layout, (env,))
    result = rollback(layout, RollbackRequest(model, env, to_release))
    result = deliver(layout, result, use_git=use_git, dry_run=dry_run, remote=remote)
    old, current = result.restored.release, result.current
    summary = (f"{'would roll back' if dry_run else 'rolled back'} {model} in {env} from release "
               f"{current.release_id} (version {current.registry.version}) to {old.release_id} "
               f"(version {old.registry.version}, as of commit {result.restored.commit[:12]})")
    lines = delivered_lines(layout, result, dry_run, output)
    print_report(output, envelope("rollback", dry_run=dry_run, release=release_report(old),
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
    layout = layout_of(repo_root)
    environments_of(layout, (env,))
    entries = release_history(layout, env, model)
    if output == "json":
        click.echo(json.dumps(envelope("history", environment=env, model=model, changes=history_report(entries)),
                              indent=2))
    else:
        click.echo(history_table(entries), nl=False)


@cli.command("status")
@env_option("--env", "envs", required=False, multiple=True,
            help="Show only this environment (repeatable; default: all).")
@click.option("--model", "models", multiple=True, shell_complete=complete_models,
              help="Show only this model (repeatable; default: all).")
@click.option("--mlflow-uri", help="MLflow URL: also check that the aliases dev/staging/prod match Git.")
@click.option("--check", is_flag=True,
              help="Exit 1 when a spec's rendered output is stale or an environment lags dev by more than "
                   "--max-behind releases (and, with --mlflow-uri, when an alias disagrees with Git).")
@click.option("--max-behind", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --check: how many of dev's releases (newer versions it ran, from its spec's Git "
                   "history) an environment may lag.")
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
      mlops status --check --max-behind 2          # CI: fail when prod is more than 2 releases behind dev
      mlops status --mlflow-uri http://localhost:5000
      mlops status --output html > board.html       # the promotion board, one self-contained page
    """
    layout = layout_of(repo_root)
    selected = environments_of(layout, envs)
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


