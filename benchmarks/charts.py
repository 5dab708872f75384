"""How long `mlops validate` takes with the chart checks: the example repository's three environments, every
platform Application rendered with its vendored chart and every value-consumption probe, first with an
empty render cache, then again with unchanged inputs (the cache warm).

Each variant runs in a fresh process (no chart loaded, nothing memoised) on a copy of the repository, with
its own cache directory (MLOPS_CACHE_DIR). Reports wall time of the chart checks alone, of the whole validate
in process, and of the `mlops validate` command (interpreter start and imports included), how many renders
reached Helm, and the machine's load averages after each variant (the machine may be shared).

    .venv/bin/python benchmarks/charts.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, sys, time
from pathlib import Path
from generator.check.charts import chart_problems
from generator.check.manifest import load_rendered_tree
from generator.commands.validate import validate_environments
from generator.render.charts import ChartRenderer
from generator.spec.layout import RepoLayout
layout = RepoLayout(Path(sys.argv[1])); envs = layout.existing_environments()
started = time.perf_counter()
if sys.argv[2] == "charts":
    manifests, _ = load_rendered_tree(layout.root, envs)
    renderer = ChartRenderer(layout.chart_cache_dir, "1.33")
    problems = chart_problems(layout, manifests, envs, "1.33", renderer)
    assert problems == [], problems
    calls = renderer.helm_calls
else:
    validate_environments(layout, envs); calls = None
print(json.dumps({"seconds": time.perf_counter() - started, "helm_calls": calls}))
"""


def run(root: Path, cache: Path, what: str) -> dict:
    env = {**os.environ, "MLOPS_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    if what == "mlops validate":  # the command as a user runs it: interpreter start and imports included
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from generator.cli import main; main()", "validate", "--repo-root",
                        str(root)], env=env, check=True, capture_output=True, text=True)
        return {"seconds": time.perf_counter() - started, "helm_calls": None}
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), what], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}, python {platform.python_version()}")
    print("variant | cold s | warm s | helm renders cold | helm renders warm")
    with tempfile.TemporaryDirectory(dir=REPO / "benchmarks", prefix=".bench-charts-") as scratch:
        root = Path(scratch) / "repo"
        for folder in ("environments", "templates", "schemas", "apps", "bootstrap", "vendor"):
            shutil.copytree(REPO / folder, root / folder)
        (root / "components" / "retrain").mkdir(parents=True)
        shutil.copy2(REPO / "components" / "retrain" / "prefect.yaml", root / "components" / "retrain")
        for what in ("charts", "validate", "mlops validate"):
            best_cold = best_warm = None
            for attempt in range(args.repeat):
                cache = Path(scratch) / f"cache-{what}-{attempt}"
                cold, warm = run(root, cache, what), run(root, cache, what)
                if best_cold is None or cold["seconds"] < best_cold["seconds"]:
                    best_cold = cold
                if best_warm is None or warm["seconds"] < best_warm["seconds"]:
                    best_warm = warm
            print(f"{what} | {best_cold['seconds']:.2f} | {best_warm['seconds']:.2f} | {best_cold['helm_calls']} "
                  f"| {best_warm['helm_calls']} | load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
