"""Benchmark: what installing mlops costs, side by side: the CLI alone (``pip install .``, what a release
manager needs), the CLI with the chart checks (``.[charts]``), and the whole development stack (``.[dev]``,
what ``make test`` installs: the services, their brokers and servers, the test tools).

Each variant goes into a fresh virtualenv in a temporary directory with the retrain image's pins as
constraints (as the Makefile does). It prints, per variant: packages installed, size of the venv on disk
and the wall time of ``pip install``, and the ratios to the CLI alone. pip's wheel cache is disabled so
every run downloads what it installs (from whatever index pip is configured to use).

    .venv/bin/python benchmarks/install.py [--variants cli charts dev]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "components" / "retrain" / "requirements.txt"
VARIANTS = {"cli": ".", "charts": ".[charts]", "dev": ".[dev]"}


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def install(variant: str, work: Path) -> dict:
    venv = work / variant
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    baseline = set(subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                                  check=True).stdout.split())
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    started = time.perf_counter()
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS), VARIANTS[variant]],
                   cwd=REPO, env=env, check=True)
    seconds = time.perf_counter() - started
    installed = set(subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                                   check=True).stdout.split()) - baseline
    return {"variant": variant, "spec": VARIANTS[variant], "packages": len(installed),
            "mib": folder_size(venv) / 2**20, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="mlops-install-") as work:
        rows = [install(variant, Path(work)) for variant in args.variants]
    base = rows[0]
    print(f"{'variant':8} {'pip install':14} {'packages':>9} {'venv MiB':>9} {'seconds':>8} "
          f"{'x packages':>11} {'x size':>7} {'x time':>7}")
    for row in rows:
        print(f"{row['variant']:8} {row['spec']:14} {row['packages']:>9} {row['mib']:>9.1f} {row['seconds']:>8.1f} "
              f"{row['packages'] / base['packages']:>11.1f} {row['mib'] / base['mib']:>7.1f} "
              f"{row['seconds'] / base['seconds']:>7.1f}")


if __name__ == "__main__":
    main()
