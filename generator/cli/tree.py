"""``mlops render``, ``mlops validate`` and ``mlops charts``: the commands over the whole tree."""

from __future__ import annotations

from pathlib import Path

import click

from generator.cli.shared import (
    cli,
    env_option,
    environments_of,
    layout_of,
    output_option,
    print_report,
    repo_root_option,
)
from generator.commands.charts import pull, write_sources
from generator.commands.images import unresolved
from generator.commands.render import render_environments
from generator.commands.report import (
    envelope,
    plan_report,
)
from generator.commands.validate import DEFAULT_KUBERNETES_VERSION, validate_environments
from generator.spec.errors import CheckFailedError
from generator.spec.images import CHART_DIGEST_ENVS
from generator.write.plan import apply, unified_diff


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
    layout = layout_of(repo_root, writes=not check)
    result = render_environments(layout, environments_of(layout, envs), jobs=jobs)
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
        print_report(output, report, [f"up to date: {len(result.files)} files in {selected}"])
        return
    apply(layout, change)
    print_report(output, report, [
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
    layout = layout_of(repo_root)
    selected = environments_of(layout, envs)
    count = validate_environments(layout, selected, kubernetes_version)
    # Recorded without a digest (vendor/images.yaml says why): not an error, but said on every run.
    pending = [i.image for i in unresolved(layout)] if set(CHART_DIGEST_ENVS) & set(selected) else []
    print_report(output, envelope("validate", environments=selected, manifests=count, images_without_digest=pending),
                 [f"valid: {count} manifests in {', '.join(selected)}",
                  *([f"{', '.join(CHART_DIGEST_ENVS)}: {len(pending)} chart images run by tag, no digest recorded "
                     f"yet in vendor/images.yaml (`mlops images resolve` where the registries are reachable): "
                     f"{', '.join(pending)}"] if pending else [])])


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
@output_option()
@repo_root_option
def charts_pull_command(component: str, version: str | None, archive: Path | None, chart_dir: Path | None,
                        published: str | None, license_: str | None, output: str, repo_root: Path | None) -> None:
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
    result = pull(layout_of(repo_root), component, version, archive, chart_dir, published, license_)
    print_report(output, envelope("charts pull", component=result.component, chart=result.chart,
                                  previous=result.previous, version=result.version,
                                  app_version=result.app_version, archive=result.archive, writes=result.written),
                 [*(f"wrote {path}" for path in result.written),
                  f"{result.component}: {result.chart} {result.previous} -> {result.version}; now run "
                  "`mlops render` and `mlops validate`"])


@charts_group.command("sources")
@output_option()
@repo_root_option
def charts_sources_command(output: str, repo_root: Path | None) -> None:
    """Rewrite vendor/charts/SOURCES.md from vendor/charts/charts.yaml (after correcting provenance by hand).

    \b
    Example:
      mlops charts sources
    """
    written = write_sources(layout_of(repo_root))
    print_report(output, envelope("charts sources", writes=[written]), [f"wrote {written}"])


