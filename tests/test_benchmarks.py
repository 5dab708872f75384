"""The benchmarks still run against today's generator: a change that breaks one (as per-model Kafka
credentials once broke render.py's generated repository) fails here, not on the day a figure is recorded."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO


def _render_worker(models: int) -> dict:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "render.py"), "--worker", str(models)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def test_the_render_benchmark_renders_validates_and_rechecks_a_generated_repository() -> None:
    one, two = _render_worker(1), _render_worker(2)
    assert (one["renders"], two["renders"]) == (3, 6)
    # The second model adds its own manifests in each of the three environments, the same number in each.
    added = two["files"] - one["files"]
    assert added > 0 and added % 3 == 0, (one["files"], two["files"])
    assert all(run[key] > 0 for run in (one, two) for key in ("render_validate_s", "write_s", "check_s"))
