"""What every ``mlops`` command shares: the group and its one mapping of errors to exit codes (and to a
JSON report with ``--output json``), the common options (repository root, environments and models with
completion, output format, how a change is delivered), and the printing of reports and diffs."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from generator import __version__
from generator.changes.publish import publish
from generator.commands.report import (
    error_report,
)
from generator.external.githost import host_from_env
from generator.spec.errors import (
    CheckFailedError,
    ExitCode,
    MlopsError,
    RepositoryError,
    UsageError,
    did_you_mean,
)
from generator.spec.layout import RepoLayout, env_file_path
from generator.write.plan import apply, interrupted, recover, unified_diff


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
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # `mlops ... | head`: the reader has all it wanted
            _silence_stdout()
            ctx.exit(ExitCode.PIPE)
        except Exception as exc:  # a bug: one line and a hint, not a traceback, unless asked for
            if os.environ.get("MLOPS_DEBUG"):
                raise
            click.echo(f"Error: internal error, {type(exc).__name__}: {exc} (this is a bug in mlops-gitops; "
                       "rerun with MLOPS_DEBUG=1 for the traceback and report it)", err=True)
            ctx.exit(ExitCode.INTERNAL)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the output still buffered is not written to the closed pipe at exit
    (Python would print a BrokenPipeError there)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's captured output)
        pass


class MlopsGroup(_MapsErrors, click.Group):
    """The ``mlops`` group."""


class MlopsCommand(_MapsErrors, click.Command):
    """A command that also maps errors when run on its own (``generate-model``)."""


OUTPUT_KEY, COMMAND_KEY = "mlops.output", "mlops.command"


def _remember_output(ctx: click.Context, _param: click.Parameter, value: str) -> str:
    # the command as typed after the program's name: "render", "charts pull" (or "generate-model" on its own)
    ctx.meta[OUTPUT_KEY], ctx.meta[COMMAND_KEY] = value, " ".join(ctx.command_path.split()[1:]) or ctx.info_name
    return value


def output_option(*formats: str):
    """``--output``: text for people (default), json for scripts (one object; README: Machine use)."""
    return click.option("--output", type=click.Choice(["text", "json", *formats]), default="text",
                        show_default=True, is_eager=True, callback=_remember_output,
                        help="text for people; json for scripts (one object, see README: Machine use)"
                             + (f"; {', '.join(formats)}" if formats else "") + ".")


def print_report(output: str, data: dict, lines: list[str]) -> None:
    """Print the command's result as JSON or as its text lines."""
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        for line in lines:
            click.echo(line)


def echo_diff(diff: str) -> None:
    """A unified diff, coloured when stdout is a terminal (click strips the colour otherwise)."""
    colours = {"+": "green", "-": "red", "@": "cyan"}
    for line in diff.splitlines():
        bold = line.startswith(("+++", "---"))
        click.echo(click.style(line, bold=True) if bold else click.style(line, fg=colours.get(line[:1])))


def layout_of(repo_root: Path | None, *, writes: bool = False) -> RepoLayout:
    """The repository; for a command that ``writes``, an interrupted earlier write is completed first (and
    said), for one that only reads, it is refused (the tree may be half old, half new)."""
    layout = RepoLayout(repo_root.resolve()) if repo_root else RepoLayout.discover()
    if writes:
        if recover(layout):
            click.echo("completed an interrupted write (its journal was left by a killed run)", err=True)
    elif interrupted(layout):
        raise CheckFailedError(f"a write was interrupted ({layout.relative(layout.write_journal)} is left): the "
                               "rendered tree may be part old, part new; run `mlops render` to finish it")
    return layout


def environments_of(layout: RepoLayout, envs: tuple[str, ...]) -> list[str]:
    known = layout.existing_environments()
    if not known:
        raise RepositoryError(f"no {env_file_path('<env>')} under {layout.root}; run from the repository "
                              "or pass --repo-root")
    if unknown := [e for e in envs if e not in known]:
        raise click.BadParameter(f"{', '.join(unknown)}{did_you_mean(unknown[0], known)} "
                                 f"(known: {', '.join(known)})", param_hint="--env")
    return list(envs) or known


def complete_environments(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    layout = layout_of(ctx.params.get("repo_root"))
    return [env for env in layout.existing_environments() if env.startswith(incomplete)]


def complete_models(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    layout = layout_of(ctx.params.get("repo_root"))
    env = ctx.params.get("env") or ctx.params.get("source")
    return [model for model in layout.known_models([env] if env else None) if model.startswith(incomplete)]


repo_root_option = click.option(
    "--repo-root", type=click.Path(file_okay=False, path_type=Path), envvar="MLOPS_REPO_ROOT", is_eager=True,
    help="Root of the GitOps repository (default: discovered from the current directory).",
)


def env_option(*names: str, help: str, required: bool = True, multiple: bool = False):
    """An environment option that completes the repository's environments."""
    return click.option(*names, required=required, multiple=multiple, help=help,
                        shell_complete=complete_environments)


def model_argument(name: str = "model"):
    """A model name argument that completes the repository's models."""
    return click.argument(name, shell_complete=complete_models)


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


def deliver(layout: RepoLayout, result, *, use_git: bool, dry_run: bool, remote: str):
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


def delivered_lines(layout: RepoLayout, result, dry_run: bool, output: str) -> list[str]:
    """The text lines of what a promote or rollback wrote, committed, pushed and opened (and, for a dry run,
    the diff it would write, printed first)."""
    published, change = result.published, result.change.plan
    if dry_run and output == "text":
        echo_diff(unified_diff(layout, change))
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


