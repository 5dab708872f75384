"""``mlops images``: apps/IMAGES.md, and the digests prod's chart images run by (vendor/images.yaml)."""

from __future__ import annotations

from pathlib import Path

import click

from generator.cli.shared import cli, layout_of, output_option, print_report, repo_root_option
from generator.commands.images import pin, refresh, resolve
from generator.commands.report import envelope
from generator.commands.validate import DEFAULT_KUBERNETES_VERSION


@cli.group("images", invoke_without_command=True)
@click.option("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION, show_default=True,
              help="Kubernetes version the charts are rendered for.")
@output_option()
@repo_root_option
@click.pass_context
def images_group(ctx: click.Context, kubernetes_version: str, output: str, repo_root: Path | None) -> None:
    """Write apps/IMAGES.md and record prod's chart images in vendor/images.yaml.

    Renders every platform chart of every environment as `mlops validate` does (offline, vendored
    archives), lists every image a pod or operator runs (charts and our manifests) in apps/IMAGES.md,
    and records each chart image prod runs by tag in vendor/images.yaml: an entry keeps its digest once
    resolved, and says why it has none until then. `mlops validate` fails when either file is stale.

    \b
    Examples:
      mlops images                     # after a chart bump or a values change
      mlops images resolve             # with network: read the digests from the registries
      mlops images pin quay.io/prometheus/prometheus:v3.14.0-distroless sha256:<hex> --source '<where seen>'
    """
    if ctx.invoked_subcommand is not None:
        return
    result = refresh(layout_of(repo_root), kubernetes_version)
    print_report(output, envelope("images", images=result.images, unresolved=result.unresolved,
                                  writes=result.written),
                 [*(f"wrote {path}" for path in result.written),
                  f"{result.images} images; {result.unresolved} prod chart images without a digest yet"])


@images_group.command("resolve")
@click.argument("images", nargs=-1)
@output_option()
@repo_root_option
def images_resolve_command(images: tuple[str, ...], output: str, repo_root: Path | None) -> None:
    """Ask each registry for the digest of the recorded images that have none (network needed).

    Only the IMAGES given (repository:tag), or every unresolved entry of vendor/images.yaml. The digest is
    the manifest (or multi-platform index) the registry serves for the tag, checked against the bytes
    it sent, recorded with the registry and the date. Run `mlops render` next: prod's chart values take
    the digests (apps/<component>/component.yaml image_digests), then `mlops images` and `mlops validate`.

    \b
    Example:
      mlops images resolve
    """
    resolved = resolve(layout_of(repo_root), list(images))
    print_report(output, envelope("images resolve", resolved={i.image: i.digest for i in resolved}),
                 [*(f"{i.image}: {i.digest}" for i in resolved),
                  f"{len(resolved)} digests recorded in vendor/images.yaml; now run `mlops render` and `mlops images`"])


@images_group.command("pin")
@click.argument("image")
@click.argument("digest")
@click.option("--source", required=True, help="Where this digest is published (registry page, release notes, date).")
@output_option()
@repo_root_option
def images_pin_command(image: str, digest: str, source: str, output: str, repo_root: Path | None) -> None:
    """Record DIGEST for IMAGE (repository:tag), read in a published SOURCE; offline.

    \b
    Example:
      mlops images pin docker.io/grafana/grafana:13.2.0 sha256:<hex> --source 'registry page, 2026-12-05'
    """
    entry = pin(layout_of(repo_root), image, digest, source)
    print_report(output, envelope("images pin", image=entry.image, digest=entry.digest),
                 [f"{entry.image}: {entry.digest}; now run `mlops render` and `mlops images`"])
