"""Benchmark: render and validate N models × 3 environments, for N = 100 and 300, side by side.

Each size runs in a fresh subprocess (so peak memory is that run's own) on a generated repository in a
temporary directory: load every spec, render every template, validate every manifest, write the tree.
It prints a table and the 300/100 time ratios (linear growth means ratios near 3). The figures are:
render alone; render + validate (what the 10 s target is about); the first write of a fresh tree
(disk-bound: 900 new folders); and a re-render of the written, current tree (`mlops render --check`).

    .venv/bin/python benchmarks/render.py [--sizes 100 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
ENVS = ("dev", "staging", "prod")


def build_repo(root: Path, models: int) -> None:
    """A repository with ``models`` copies of the example model in every environment, and the real
    platform (apps/ and sealed credentials), so each run also renders every environment's platform."""
    for folder in ("templates", "schemas", "apps"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "components" / "retrain").mkdir(parents=True)  # the retrain-pipeline component reads prefect.yaml
    shutil.copy(REPO / "components" / "retrain" / "prefect.yaml", root / "components" / "retrain" / "prefect.yaml")
    for env in ENVS:
        source = REPO / "environments" / env
        (root / "environments" / env / "models").mkdir(parents=True)
        shutil.copy(source / "environment.yaml", root / "environments" / env / "environment.yaml")
        secrets = root / "environments" / env / "secrets"
        shutil.copytree(source / "secrets", secrets)
        example = (source / "models" / "fraud-detector.yaml").read_text()
        # Each model's Kafka identities need their SealedSecrets before its first render (README,
        # "Kafka"): the example's, under each model's name, as an operator would have sealed them.
        example_sealed = {path.name: path.read_text() for path in (source / "secrets").glob("*fraud-detector*.yaml")}
        for index in range(models):
            name = f"model-{index:04d}"
            (root / "environments" / env / "models" / f"{name}.yaml").write_text(
                example.replace("model: fraud-detector", f"model: {name}"))
            for file_name, text in example_sealed.items():
                (secrets / file_name.replace("fraud-detector", name)).write_text(text.replace("fraud-detector", name))


def measure(models: int) -> dict:
    """Run one size in this process: build, then time load+render+validate+write."""
    sys.path.insert(0, str(REPO))
    from generator.commands.render import render_all
    from generator.spec.layout import RepoLayout
    from generator.write.plan import apply, plan

    # On the checkout's own disk: that is where `mlops render` writes.
    with tempfile.TemporaryDirectory(dir=REPO / "benchmarks", prefix=".bench-") as tmp:
        root = Path(tmp)
        build_repo(root, models)
        os.sync()  # flush earlier runs' files so their write-back does not land in this run's timing
        layout = RepoLayout(root)
        start = time.perf_counter()
        files = render_all(layout, ENVS, validate=False)
        rendered = time.perf_counter()
        files = render_all(layout, ENVS, validate=True)
        validated = time.perf_counter()
        apply(layout, plan(layout, ENVS, files))
        written = time.perf_counter()
        # What `mlops render --check` does on a current tree: render, validate, read and compare.
        unchanged = plan(layout, ENVS, render_all(layout, ENVS, validate=True))
        checked = time.perf_counter()
        assert unchanged.empty, "a second render must change nothing"
    return {
        "models": models,
        "renders": models * len(ENVS),
        "files": len(files),
        "render_s": rendered - start,
        # render_all(validate=True) renders again, then validates; report both parts of that run.
        "render_validate_s": validated - rendered,
        "write_s": written - validated,
        "check_s": checked - written,
        # The largest of this process and its (pool worker) children: each holds one copy of the work.
        "peak_rss_mib": max(resource.getrusage(who).ru_maxrss
                            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best time is reported")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(measure(args.worker)))
        return

    results = {}
    for _ in range(args.repeat):
        for size in args.sizes:  # interleaved, so background load hits every size alike
            done = subprocess.run([sys.executable, __file__, "--worker", str(size)], capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"render.py: the run of {size} models failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
            run = json.loads(done.stdout)
            if size not in results or run["render_validate_s"] < results[size]["render_validate_s"]:
                results[size] = run

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}, "
          f"python {platform.python_version()}, jobs {os.environ.get('MLOPS_JOBS', 'default')}")
    columns = [("models", "models", "d"), ("renders", "renders", "d"), ("files", "files", "d"),
               ("render s", "render_s", ".2f"), ("render+validate s", "render_validate_s", ".2f"),
               ("first write s", "write_s", ".2f"), ("check (current tree) s", "check_s", ".2f"),
               ("peak RSS MiB", "peak_rss_mib", ".0f")]
    print(" | ".join(title for title, _, _ in columns))
    for size in args.sizes:
        print(" | ".join(format(results[size][key], fmt) for _, key, fmt in columns))
    if len(args.sizes) == 2:
        small, large = (results[s] for s in args.sizes)
        for title, key in (("render+validate", "render_validate_s"), ("check", "check_s"), ("first write", "write_s")):
            print(f"ratio {args.sizes[1]}/{args.sizes[0]} {title}: {large[key] / small[key]:.2f} "
                  f"(linear: {args.sizes[1] / args.sizes[0]:.2f})")


if __name__ == "__main__":
    main()
