"""Helm renders in worker processes: both cores busy, each with a Go runtime tuned for rendering.

Helm's Go SDK releases the GIL, but renders in threads of one process share one Go heap: with the default
``GOGC=100`` and a live heap of a few MB, the collector runs every few milliseconds of a kube-prometheus-stack
render, and two renders at once mostly wait on each other. A worker process has its own runtime, started
with ``GOGC=400`` (unless the caller set ``GOGC``): the same renders cost ~25 % less CPU and two workers use
two cores (measured in benchmarks/RESULTS.md, charts.py).

Protocol: one JSON request per line on the worker's stdin (archive path, values, the options of ``helm
template``, and ``skip``: ``null`` for the output itself, or the templates to leave out of its digest), one
JSON answer per line on stdout (``files``, ``digest`` or ``error``). The worker imports only the standard
library and ``helm_python``, so it starts in a fraction of a second; it exits when its stdin closes.

This module is also the worker's program (``python -m generator.render.helm_pool``), so :func:`keep_file` and :func:`digest`
live here, shared by the workers and :mod:`generator.render.charts`.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

GOGC_DEFAULT = "400"
"""Go's GC target for the workers (Go's default is 100): fewer collections, ~100 MB more per worker."""


def keep_file(path: str, text: str) -> bool:
    """What counts as a template's output: non-empty, and not ``NOTES.txt`` (Argo CD applies neither)."""
    return bool(text.strip()) and not path.endswith("/NOTES.txt")


def digest(files: dict[str, str], skip: frozenset[str] | set[str] = frozenset()) -> str:
    """sha256 of a render's output without the templates in ``skip``, independent of dict order."""
    payload = json.dumps({k: v for k, v in files.items() if k not in skip}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def render_files(helm: Any, chart: Any, values: dict, options: dict) -> dict[str, str]:
    """Helm's output per template (raises ``helm.HelmError``). The package's ``Chart.render`` has no
    kube_version/api_versions keywords; its native call takes them, as ``helm template`` does."""
    files = json.loads(helm._native.call_string("helm_render", chart._raw(), json.dumps(values),
                                                 json.dumps(options)))
    return {path: text for path, text in files.items() if keep_file(path, text)}


def _serve() -> None:
    """The worker: answer render requests until stdin closes."""
    import helm_python as helm

    charts: dict[str, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            archive = request["archive"]
            if archive not in charts:
                charts[archive] = helm.Chart.load(archive)
            files = render_files(helm, charts[archive], request["values"], request["options"])
            skip = request.get("skip")
            answer: dict[str, Any] = {"files": files} if skip is None else {"digest": digest(files, set(skip))}
        except helm.HelmError as exc:
            answer = {"error": " ".join(str(exc).split())}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class WorkerError(RuntimeError):
    """A worker process died or answered nonsense (not Helm refusing the values)."""


class HelmRenderError(Exception):
    """Helm refused the values or a template failed; the message is Helm's."""


class _Worker:
    def __init__(self) -> None:
        # -S: no site module (a faster start; helm_python and this package are found on this process's own
        # path); -P: no working directory on the path.
        package_root = str(Path(__file__).resolve().parents[2])  # an editable install is no sys.path entry
        paths = [package_root, *(p for p in sys.path if p and os.path.isdir(p) and p != package_root)]
        env = {**os.environ, "GOGC": os.environ.get("GOGC", GOGC_DEFAULT), "PYTHONPATH": os.pathsep.join(paths)}
        self.process = subprocess.Popen([sys.executable, "-P", "-S", "-m", __name__], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, text=True, encoding="utf-8")

    def call(self, request: dict) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (OSError, ValueError) as exc:
            raise WorkerError(f"Helm worker process failed: {exc}") from exc
        if not line:
            raise WorkerError(f"Helm worker process exited (status {self.process.poll()})")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class HelmPool:
    """Up to ``size`` worker processes, started on the first render (a warm run starts none)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[_Worker] = []
        self._started = 0
        self._ready = threading.Condition()

    def _acquire(self) -> _Worker:
        with self._ready:
            while not self._idle and self._started >= self.size:
                self._ready.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return _Worker()
        except OSError as exc:
            self._release(None)
            raise WorkerError(f"cannot start a Helm worker process: {exc}") from exc

    def _release(self, worker: _Worker | None) -> None:
        """Back to the idle list; ``None``: a worker that died (a waiting render may start another)."""
        with self._ready:
            if worker is None:
                self._started -= 1
            else:
                self._idle.append(worker)
            self._ready.notify()

    def render(self, archive: str, values: dict, options: dict, skip: list[str] | None = None) -> Any:
        """The output's files (``skip`` None) or its digest without ``skip``.

        Raises:
            HelmRenderError: Helm refused the values or a template failed.
            WorkerError: the worker process died or could not start.
        """
        worker = self._acquire()
        try:
            answer = worker.call({"archive": archive, "values": values, "options": options, "skip": skip})
        except WorkerError:
            worker.close()
            self._release(None)
            raise
        self._release(worker)
        if "error" in answer:
            raise HelmRenderError(answer["error"])
        return answer["files"] if skip is None else answer["digest"]

    def close(self) -> None:
        """Stop the idle workers (every worker also exits by itself when this process ends: its stdin closes)."""
        with self._ready:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for worker in idle:
            worker.close()


_pool: HelmPool | None = None
_pool_lock = threading.Lock()


def default_workers() -> int:
    """``$MLOPS_JOBS``, else one per CPU (at most 4); 1 renders in this process, without workers."""
    if env_jobs := os.environ.get("MLOPS_JOBS"):
        return max(1, int(env_jobs))
    return max(1, min(os.cpu_count() or 1, 4))


def shared_pool() -> HelmPool | None:
    """The process's pool (``None`` with one job: renders stay in this process)."""
    global _pool
    with _pool_lock:
        if _pool is None and default_workers() > 1:
            _pool = HelmPool(default_workers())
            atexit.register(_pool.close)
        return _pool


if __name__ == "__main__":
    _serve()
