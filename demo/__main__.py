"""``python -m demo run|up|down``: the whole MLOps loop on this machine (``make demo`` runs ``run``).

run   start everything, walk the scenario, write the report, stop everything (exit 0 when every stage passed)
up    start everything and serve the first version; keep running until Ctrl-C or ``down``
down  stop a running ``up`` (from another terminal)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import click

from demo.stack import Ports, Stack, StackError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "output" / "demo"
DEFAULT_CACHE = REPO / "output" / "cache"
"""Kept between runs (unlike the output folder): the component images' venvs and the chart-render cache."""


class Display:
    """One status line that updates in place on a terminal (stage, elapsed, what is awaited)."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.last = 0.0

    def say(self, line: str) -> None:
        if self.tty:
            sys.stdout.write("\r\033[K")
        print(line, flush=True)

    def waiting(self, what: str, seconds: float) -> None:
        now = time.monotonic()
        if self.tty:
            sys.stdout.write(f"\r\033[K  … waiting for {what} ({seconds:.0f} s)")
            sys.stdout.flush()
        elif now - self.last > 15:
            print(f"  … waiting for {what} ({seconds:.0f} s)", flush=True)
            self.last = now


def make_demo(output: Path, display: Display):
    from demo.scenario import Demo

    # Nothing outside output/ (and .venv): the image venvs and the workspace checks' chart renders (keyed
    # by their inputs; a cold cache costs each `mlops validate` ~20 s) are kept in output/cache/.
    os.environ.setdefault("MLOPS_IMAGE_CACHE", str(DEFAULT_CACHE / "imagebuild"))
    os.environ.setdefault("MLOPS_CACHE_DIR", str(DEFAULT_CACHE / "mlops"))
    stack = Stack(output, Ports.from_environment(), os.environ.get("MLOPS_DEMO_DATABASE_URL"),
                  progress=lambda name, target, seconds: display.waiting(f"{name} at {target}", seconds))
    return Demo(REPO, output, stack, say=display.say, progress=display.waiting)


def prepare_output(output: Path) -> None:
    if (output / "demo.pid").exists():
        pid = int((output / "demo.pid").read_text())
        if Path(f"/proc/{pid}").exists():
            raise click.ClickException(f"a demo is already running (pid {pid}): run `python -m demo down` first")
    if output.exists():
        import shutil

        shutil.rmtree(output)
    output.mkdir(parents=True)
    (output / "demo.pid").write_text(str(os.getpid()))


def _stop_on_signals() -> None:
    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _start(output: Path):
    """What `run` and `up` both do first: an emptied output folder owned by this process, SIGTERM as
    Ctrl-C, and the demo (nothing started yet)."""
    display = Display()
    prepare_output(output)
    _stop_on_signals()
    return display, make_demo(output, display)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The whole MLOps loop on this machine, from the rendered manifests (make demo runs `run`).

    \b
    run   start everything, walk the scenario, write the report, stop everything
          (exit 0 when every stage passed; the report is in the output folder)
    up    start everything and serve the first version; keep running until Ctrl-C or `down`
    down  stop a running `up` (from another terminal)

    Settings: MLOPS_DEMO_PORT_<S3|KAFKA|MLFLOW|PREFECT|PROMETHEUS|ALERTMANAGER>, MLOPS_DEMO_DATABASE_URL
    (PostgreSQL instead of SQLite), MLOPS_IMAGE_CACHE; see demo/README.md.
    """


@cli.command(help="Start everything, walk the scenario, write the report, stop everything.")
@click.option("--output", type=click.Path(path_type=Path), default=DEFAULT_OUTPUT, show_default=True,
              help="Folder for the workspace, logs, data and report (emptied first).")
def run(output: Path) -> None:
    from demo import loop, report

    display, demo = _start(output)
    failure = None
    try:
        demo.up()
        loop.run(demo)
    except KeyboardInterrupt:
        failure = "interrupted"
    except (StackError, TimeoutError, RuntimeError, OSError) as exc:
        failure = str(exc)
    finally:
        stopped = demo.down()
        demo.facts["stopped"] = [{"name": n, "seconds": round(s, 2), "sigterm": g} for n, s, g in stopped]
        (output / "demo.pid").unlink(missing_ok=True)
    path = report.write(demo, failure)
    display.say(f"report: {path}")
    if failure:
        raise click.ClickException(failure.splitlines()[0] + f" (details: {path}, logs: {output / 'logs'})")
    display.say("demo: every stage passed; everything it started is stopped")


@cli.command(help="Start everything and serve the first version; keep running until Ctrl-C or `down`.")
@click.option("--output", type=click.Path(path_type=Path), default=DEFAULT_OUTPUT, show_default=True,
              help="Folder for the workspace, logs and data (emptied first).")
def up(output: Path) -> None:
    from demo import loop

    display, demo = _start(output)
    try:
        demo.up()
        loop.first_version(demo)
        stack = demo.stack
        display.say(json.dumps({"mlflow": stack.mlflow_url, "prefect": stack.prefect_api.removesuffix("/api"),
                                "prometheus": stack.prometheus_url, "alertmanager": stack.alertmanager_url,
                                "predictors": {p.predictor: p.url() for p in demo.predictors()}}, indent=2))
        display.say("running: Ctrl-C or `python -m demo down` stops everything")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except (StackError, TimeoutError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from exc
    finally:
        demo.down()
        (output / "demo.pid").unlink(missing_ok=True)


@cli.command(help="Stop a running `up` (SIGTERM to it; it stops everything it started).")
@click.option("--output", type=click.Path(path_type=Path), default=DEFAULT_OUTPUT, show_default=True,
              help="The output folder of the `up` to stop.")
def down(output: Path) -> None:
    pid_file = output / "demo.pid"
    if not pid_file.exists():
        click.echo("no demo is running")
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        click.echo("no demo is running (stale pid file removed)")
        return
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    click.echo("stopped")


if __name__ == "__main__":
    cli()
