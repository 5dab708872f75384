"""A component image, built as far as a machine without a container engine allows.

:func:`build_image` reads the component's Dockerfile and does what its build stage does, with the
same arguments: ``python -m venv``, the ``pip install`` of the pinned requirements (wheels only, as
written there) and of local packages copied to ``/src``, ``pip check``, the ``COPY`` of the code into
``/app`` and the ``rm -f`` of what the image leaves out, then ``compileall``. It returns the venv, the
``/app`` folder and the final stage's ``ENV``, ``WORKDIR``, ``ENTRYPOINT`` and ``CMD``, with the image's paths mapped to the build folder, so a test
can start the service from what the image holds and nothing else (not the dev venv, not the
repository). What it cannot check: the base image itself and the non-root user (other tests read
those lines).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers import REPO

_ENV_PAIR = re.compile(r'(\w+)=("[^"]*"|\S+)')


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


def build_image(component: str, work: Path) -> ImageEnv:
    """Build ``components/<component>/Dockerfile``'s venv and /app under ``work``."""
    dockerfile = REPO / "components" / component / "Dockerfile"
    venv, app, tmp = work / "opt-venv", work / "app", work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    paths = {"/opt/venv": str(venv), "/app": str(app), "/src": str(work / "src")}
    stages = 0
    env: dict[str, str] = {}
    workdir, entrypoint, cmd = app, [], []
    for instruction, args in instructions(dockerfile):
        if instruction == "FROM":
            stages += 1
            continue
        if stages == 1 and instruction == "COPY":
            source, target = args.split()
            if target.startswith("/tmp/"):
                paths[target] = str(REPO / source)
            elif (REPO / source).is_file():
                Path(_map(target, paths)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / source, _map(target, paths))
            else:
                shutil.copytree(REPO / source, _map(target, paths), ignore=shutil.ignore_patterns("__pycache__"))
        elif stages == 1 and instruction == "RUN":
            for step in args.split("&&"):
                _run_build_step(shlex.split(_map(step, paths)), app, work)
        elif stages == 2 and instruction == "ENV":
            for key, value in _ENV_PAIR.findall(args):
                value = value.strip('"').replace("$PATH", os.environ.get("PATH", ""))
                env[key] = _map(value, {**paths, "/tmp": str(tmp)})
        elif stages == 2 and instruction == "WORKDIR":
            workdir = Path(_map(args, paths))
        elif stages == 2 and instruction == "ENTRYPOINT":
            entrypoint = json.loads(args)
        elif stages == 2 and instruction == "CMD":
            cmd = json.loads(args)
    assert stages == 2 and entrypoint + cmd, f"{dockerfile}: expected a build stage and a final stage that runs something"
    return ImageEnv(venv, app, env, workdir, entrypoint, cmd)


def _run_build_step(argv: list[str], app: Path, work: Path) -> None:
    """One command of a build-stage RUN: venv, pip, rm of files, find, compileall."""
    if argv[:3] == ["python", "-m", "venv"]:
        argv = [sys.executable, *argv[1:]]
    elif argv[0] == "rm":
        for path in (Path(arg) for arg in argv[1:] if not arg.startswith("-")):
            # /tmp/requirements.txt maps to the repository's file: never delete outside the build folder
            assert path.is_relative_to(work), f"the build removes {path}, outside the image's folders"
            path.unlink(missing_ok=True)
        return
    elif argv[0] == "find":  # find /app -name '__pycache__' -prune -exec rm -rf {} +
        for cache in app.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
        return
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
