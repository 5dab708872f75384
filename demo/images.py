"""A component image, built as far as a machine without a container engine allows.

The local runtime of a rendered container (demo/runner.py runs each container from its image built here)
and of the image tests.

:func:`build_image` reads the component's Dockerfile and does what its build stage does, with the
same arguments: ``python -m venv`` with the Python version the base image names (``ARG
PYTHON_IMAGE=python:3.11.14-slim-bookworm`` is this machine's ``python3.11``), the ``pip install`` of
the pinned requirements (wheels only, as written there) and of local packages copied to ``/src``,
``pip check``, the ``COPY`` of the code into ``/app`` and the ``rm -f`` of what the image leaves out,
then ``compileall``. ``ARG`` defaults apply, ``build_args`` override them as ``--build-arg`` would. It
returns the venv, the ``/app`` folder and the final stage's ``ENV``, ``WORKDIR``, ``ENTRYPOINT`` and
``CMD``, with the image's paths mapped to the build folder, so a test can start the service from what
the image holds and nothing else (not the dev venv, not the repository). What it cannot check: the base
image itself and the non-root user (other tests read those lines).

The venv is the slow part (minutes), so it is kept, like a container engine's layer cache, under
``.cache/imagebuild/`` (``MLOPS_IMAGE_CACHE`` moves it), keyed by everything it is made from: the
build-stage lines up to the last ``pip install``, the files those lines copy, and the interpreter's
version. A change to any of them builds a new venv; ``/app`` is copied afresh on every build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ImageBuildError(RuntimeError):
    """The image cannot be built here: a missing interpreter or a failing build step (the message says which)."""


class MissingInterpreter(ImageBuildError):
    """The base image's Python is not installed on this machine."""

_ENV_PAIR = re.compile(r'(\w+)=("[^"]*"|\S+)')
_ARG_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_PYTHON_TAG = re.compile(r"^(?:[\w.\-/]+/)?python:(\d+)\.(\d+)(?:\.\d+)?\b")


@dataclass(frozen=True)
class ImageEnv:
    """A built image's pieces: ``venv`` is ``/opt/venv``, ``app`` is ``/app``."""

    venv: Path
    app: Path
    env: dict[str, str]
    workdir: Path
    entrypoint: list[str]
    cmd: list[str]

    def command(self) -> list[str]:
        """What the container runs (ENTRYPOINT, then CMD), its program taken from the image's venv."""
        program, *args = self.entrypoint + self.cmd
        return [str(self.venv / "bin" / program), *args]

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every line, continuations joined, comments dropped."""
    logical, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            logical.append(current)
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in logical]


def _map(text: str, paths: dict[str, str]) -> str:
    """``text`` with each image path replaced by its local folder, in one pass (longest path first)."""
    pattern = "|".join(re.escape(path) for path in sorted(paths, key=len, reverse=True))
    return re.sub(pattern, lambda match: paths[match.group(0)], text)


def resolved(dockerfile: Path, build_args: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The instructions with ``ARG`` values substituted (defaults, then ``build_args``), ARG lines dropped."""
    values: dict[str, str] = {}
    given = dict(build_args or {})
    out = []
    for instruction, args in instructions(dockerfile):
        args = _ARG_REF.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), args)
        if instruction == "ARG":
            name, _, default = args.partition("=")
            values[name] = given.pop(name, default)
            continue
        out.append((instruction, args))
    if given:
        raise ImageBuildError(f"{dockerfile} declares no ARG {sorted(given)}")
    return out


def interpreter_for(base_image: str) -> str:
    """This machine's Python for ``python:X.Y...`` (the running one if it is X.Y, else ``pythonX.Y``
    on PATH); a missing one raises :class:`MissingInterpreter` naming what to install."""
    match = _PYTHON_TAG.match(base_image)
    if not match:
        raise ImageBuildError(f"base image {base_image!r} is not python:X.Y[.Z]...; cannot pick its Python")
    wanted = f"{match.group(1)}.{match.group(2)}"
    if f"{sys.version_info.major}.{sys.version_info.minor}" == wanted:
        return sys.executable
    found = shutil.which(f"python{wanted}")
    if found:
        done = subprocess.run([found, "-c", "import sys, ensurepip, venv; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and done.stdout.strip() == wanted:
            return found
    raise MissingInterpreter(f"the image's base {base_image} needs Python {wanted} with its venv module to build "
                        f"its environment here: install python{wanted} and python{wanted}-venv (Debian; "
                        f".ci/run does) or put a python{wanted} on PATH (pyenv)")


def build_image(component: str, work: Path, build_args: dict[str, str] | None = None) -> ImageEnv:
    """Build ``components/<component>/Dockerfile``'s venv (cached) and /app (under ``work``)."""
    dockerfile = REPO / "components" / component / "Dockerfile"
    lines = resolved(dockerfile, build_args)
    base = next(args.split()[0] for instruction, args in lines if instruction == "FROM")
    python = interpreter_for(base)
    build_stage = lines[1:next(i for i, (ins, _) in enumerate(lines) if ins == "FROM" and i > 0)]
    last_install = max(i for i, (ins, args) in enumerate(build_stage) if ins == "RUN" and "pip install" in args)
    venv_steps, app_steps = build_stage[:last_install + 1], build_stage[last_install + 1:]
    cache = _cache_dir(component, python, venv_steps)
    venv, app, tmp = cache / "opt-venv", work / "app", work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    paths = {"/opt/venv": str(venv), "/app": str(app), "/src": str(cache / "src")}
    with _locked(cache):
        if not (cache / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            shutil.rmtree(cache / "src", ignore_errors=True)
            _build_stage(venv_steps, paths, app, cache, python)
            (cache / ".complete").write_text(f"{component} {base}\n")
    _build_stage(app_steps, paths, app, work, python)
    env: dict[str, str] = {}
    workdir, entrypoint, cmd = app, [], []
    for instruction, args in lines[len(build_stage) + 2:]:
        if instruction == "ENV":
            for key, value in _ENV_PAIR.findall(args):
                value = value.strip('"').replace("$PATH", os.environ.get("PATH", ""))
                env[key] = _map(value, {**paths, "/tmp": str(tmp)})
        elif instruction == "WORKDIR":
            workdir = Path(_map(args, paths))
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(args)
        elif instruction == "CMD":
            cmd = json.loads(args)
    if not entrypoint + cmd:
        raise ImageBuildError(f"{dockerfile}: expected a final stage that runs something")
    return ImageEnv(venv, app, env, workdir, entrypoint, cmd)


def _cache_dir(component: str, python: str, steps: list[tuple[str, str]]) -> Path:
    """The venv's cache folder, named by a hash of what makes it (lines, copied files, interpreter)."""
    digest = hashlib.sha256()
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    digest.update(version.encode())
    for instruction, args in steps:
        digest.update(f"{instruction} {args}\n".encode())
        if instruction == "COPY":
            source = REPO / args.split()[0]
            files = sorted(source.rglob("*")) if source.is_dir() else [source]
            for path in (f for f in files if f.is_file() and "__pycache__" not in f.parts):
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    root = Path(os.environ.get("MLOPS_IMAGE_CACHE") or REPO / ".cache" / "imagebuild")
    return root / f"{component}-{digest.hexdigest()[:16]}"


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """Hold ``cache``'s lock: two test runs on one machine build a venv once, never into each other."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache.with_name(cache.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_stage(steps: list[tuple[str, str]], paths: dict[str, str], app: Path, work: Path, python: str) -> None:
    """COPY and RUN lines of the build stage (everything else there, ENV included, is pip's own settings)."""
    for instruction, args in steps:
        if instruction == "COPY":
            source, target = args.split()
            if target.startswith("/tmp/"):
                paths[target] = str(REPO / source)
            elif (REPO / source).is_file():
                Path(_map(target, paths)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / source, _map(target, paths))
            else:
                shutil.copytree(REPO / source, _map(target, paths), ignore=shutil.ignore_patterns("__pycache__"))
        elif instruction == "RUN":
            for step in args.split("&&"):
                _run_build_step(shlex.split(_map(step, paths)), app, work, python)


def _run_build_step(argv: list[str], app: Path, work: Path, python: str) -> None:
    """One command of a build-stage RUN: venv, pip, rm of files, find, compileall."""
    if argv[:3] == ["python", "-m", "venv"]:
        argv = [python, *argv[1:]]
    elif argv[0] == "rm":
        for path in (Path(arg) for arg in argv[1:] if not arg.startswith("-")):
            # /tmp/requirements.txt maps to the repository's file: never delete outside the build folder
            if not path.is_relative_to(work):
                raise ImageBuildError(f"the build removes {path}, outside the image's folders")
            path.unlink(missing_ok=True)
        return
    elif argv[0] == "find":  # find /app -name '__pycache__' -prune -exec rm -rf {} +
        for cache in app.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
        return
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if done.returncode != 0:
        raise ImageBuildError(f"{shlex.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
