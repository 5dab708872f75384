"""Local processes: start one, wait until it answers, stop it and everything it spawned.

The one process supervisor of the repository: ``make demo`` runs the platform with it, and the test
fixtures (tests/services.py) start their real services with it. Every process runs in its own session
(its own process group), so stopping it also ends the children it started (a Prefect worker's flow runs,
gunicorn's workers); output goes to one log file per process. Every process starts with SIGINT and
SIGQUIT at their default action, as in a container, even under a shell that ignores them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOCALHOST = "127.0.0.1"
OUTPUT_TAIL_CHARS = 20_000
"""How much of a failed service's output goes into an error message."""
STOP_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL when stopping a process group."""

_PROBE_TLS = ssl.create_default_context()
_PROBE_TLS.check_hostname = False
_PROBE_TLS.verify_mode = ssl.CERT_NONE
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_PROBE_TLS))
"""Readiness probes go straight to the service, whatever proxy the environment configures. An ``https://``
probe does not verify the certificate, as the kubelet's HTTPS probes do not: a probe asks whether the
process serves, and carries no credential (the clients that do verify, with the CA they are given)."""

_DEFAULTED_SIGNALS = (signal.SIGINT, signal.SIGQUIT)
"""Signals a shell ignores in its background jobs, and which then stay ignored across ``exec``."""
_EXEC_WITH_DEFAULT_SIGNALS = ("import os, signal, sys\n"
                              "for number in sys.argv[1].split(','):\n"
                              "    signal.signal(int(number), signal.SIG_DFL)\n"
                              "os.execv(sys.argv[2], sys.argv[3:])\n")

running: dict[int, ManagedProcess] = {}
"""Every process started here and not yet stopped, by pid (the atexit hook stops what is left)."""
startup_times: list[tuple[str, float]] = []
"""(name, seconds until ready) of every start, for slow-start reports."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_taken(port: int, host: str = LOCALHOST) -> bool:
    """Whether something already listens on ``host:port``.

    SO_REUSEADDR as the servers set it: connections of a previous run left in TIME_WAIT do not count, a
    listening socket does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class ServiceStartError(RuntimeError):
    """A service process exited or did not answer in time; the message carries its output."""


@dataclass
class ManagedProcess:
    """A process started by :func:`start_service`, in its own process group, output in ``log_path``."""

    name: str
    args: list[str]
    process: subprocess.Popen
    log_path: Path
    owns_log: bool = field(default=False, repr=False)
    stop_seconds: float | None = field(default=None, repr=False)
    """How long the last :meth:`stop` took (SIGTERM to the group being gone)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self, limit: int = OUTPUT_TAIL_CHARS) -> str:
        """The last ``limit`` characters the process wrote to stdout and stderr."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"<output unavailable: {exc}>"
        return text if len(text) <= limit else f"...[{len(text) - limit} characters cut]...\n{text[-limit:]}"

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Terminate the process and its whole group: SIGTERM, then SIGKILL after ``timeout``.

        Safe to call twice. Returns once no member of the group is left running; True when SIGTERM was
        enough, False when SIGKILL was needed.
        """
        group = self.process.pid  # start_new_session=True: the process leads its own group
        started, graceful = time.monotonic(), True
        try:
            if group_alive(group):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while group_alive(group) and time.monotonic() < deadline:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(timeout=0.05)
                if group_alive(group):
                    graceful = False
                    self._note_lingering(group, timeout)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(group, signal.SIGKILL)
                    deadline = time.monotonic() + 5
                    while group_alive(group) and time.monotonic() < deadline:
                        time.sleep(0.05)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        finally:
            running.pop(group, None)
            self.stop_seconds = time.monotonic() - started
        return graceful

    def _note_lingering(self, group: int, timeout: float) -> None:
        """Append to the process's log which members of its group outlived SIGTERM, so a SIGKILL says whom
        it was for (the process itself, or a child it started and did not wait for)."""
        members = "; ".join(f"{pid} {command}" for pid, command in group_members(group))
        with contextlib.suppress(OSError), self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"[supervisor] still running {timeout:.0f} s after SIGTERM, sent SIGKILL: {members}\n")

    def cleanup_log(self) -> None:
        """Delete the output file if :func:`start_service` created it (not when the caller chose a log_dir)."""
        if self.owns_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


def _group_pids(pgid: int) -> Iterator[int]:
    """The non-zombie processes of process group ``pgid``, read from ``/proc``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            yield int(entry.name)


def group_members(pgid: int) -> list[tuple[int, str]]:
    """The non-zombie processes of process group ``pgid``: (pid, the start of their command line)."""
    members = []
    for pid in _group_pids(pgid):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            members.append((pid, command[:160].strip()))
    return members


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is still in process group ``pgid``."""
    if Path("/proc").is_dir():
        return next(_group_pids(pgid), None) is not None
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def answers(url: str | None, host: str = LOCALHOST, port: int | None = None) -> bool:
    """Whether ``url`` answers HTTP below 500, else whether ``host:port`` accepts a TCP connection."""
    if url is not None:
        try:
            with _DIRECT.open(url, timeout=2) as response:
                return response.status < 500
        except urllib.error.HTTPError as exc:
            return exc.code < 500
        except (urllib.error.URLError, OSError):
            return False
    assert port is not None
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def with_default_signals(args: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``args``, run so that the process starts with SIGINT and SIGQUIT at their default action, as a
    container's process does, even when this process ignores them.

    A shell starts its background jobs (``cmd &``, CI steps run that way) with SIGINT and SIGQUIT ignored,
    and ``exec`` keeps an ignored signal ignored, so every process started from there would ignore them
    too. That breaks programs that stop by signalling themselves: Prefect's worker turns SIGTERM into a
    SIGINT to itself, which is then lost, and the worker never stops. When nothing is ignored the
    arguments are returned as they are; otherwise a small Python step restores the defaults and ``exec``s
    the program (same pid). A program that is not on ``PATH`` raises :class:`FileNotFoundError` here, as
    :class:`subprocess.Popen` would.
    """
    ignored = [str(int(number)) for number in _DEFAULTED_SIGNALS if signal.getsignal(number) == signal.SIG_IGN]
    if not ignored:
        return list(args)
    search_path = (env if env is not None else os.environ).get("PATH", os.defpath)
    program = args[0] if os.sep in args[0] else shutil.which(args[0], path=search_path)
    if program is None:
        raise FileNotFoundError(2, f"No such file or directory: {args[0]!r}", args[0])
    return [sys.executable, "-I", "-S", "-c", _EXEC_WITH_DEFAULT_SIGNALS, ",".join(ignored), program, *args]


def start_service(name: str, args: Sequence[str], *, port: int | None = None, url: str | None = None,
                  host: str = LOCALHOST, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                  timeout: float = 60.0, log_dir: Path | None = None,
                  waiting: Callable[[str, float], None] | None = None) -> ManagedProcess:
    """Start ``args`` as a service and wait until it answers; the caller stops it (:meth:`ManagedProcess.stop`).

    Ready means: ``url`` answers HTTP with a status below 500, else a TCP connection to ``host:port``
    succeeds. If the process exits first or ``timeout`` seconds pass, it is stopped and
    :class:`ServiceStartError` is raised with its exit status and output. ``waiting(target, elapsed)`` is
    called while it waits (a progress display). ``env`` is the complete environment (default: this
    process's); ``log_dir`` keeps ``<name>.log``, else a temporary file is deleted at :meth:`cleanup_log`.
    """
    if url is None and port is None:
        raise ValueError("start_service needs a port or a url to know when the service is ready")
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path, owns_log = log_dir / f"{name}.log", False
    else:
        import tempfile

        handle, raw_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
        os.close(handle)
        log_path, owns_log = Path(raw_path), True

    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(with_default_signals(args, env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(env) if env is not None else None, cwd=cwd,
                                   start_new_session=True)
    service = ManagedProcess(name, list(args), process, log_path, owns_log)
    running[process.pid] = service
    target = url or f"{host}:{port}"
    deadline = started + timeout
    try:
        while not answers(url, host, port):
            if (code := process.poll()) is not None:
                raise ServiceStartError(f"{name} exited with status {code} before {target} answered.\n"
                                        f"command: {' '.join(args)}\noutput:\n{service.output()}")
            if time.monotonic() > deadline:
                raise ServiceStartError(f"{name} did not answer at {target} within {timeout:.0f}s.\n"
                                        f"command: {' '.join(args)}\noutput:\n{service.output()}")
            if waiting is not None:
                waiting(target, time.monotonic() - started)
            time.sleep(0.1)
    except BaseException:
        service.stop()
        raise
    startup_times.append((name, time.monotonic() - started))
    return service


@contextlib.contextmanager
def run_service(name: str, args: Sequence[str], **options) -> Iterator[ManagedProcess]:
    """:func:`start_service` as a context: the service (and its children) always stop at the end."""
    service = start_service(name, args, **options)
    try:
        yield service
    finally:
        service.stop()
        service.cleanup_log()


@atexit.register
def _stop_leftovers() -> None:
    """Last resort when teardown never ran (for example an interrupted run)."""
    for service in list(running.values()):
        service.stop(timeout=3)
