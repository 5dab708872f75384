"""The whole loop (``python -m demo run``), measured: cold and warm wall time side by side, the drift
onset → detector metric → alert → flow run → proposal latencies, false drift alerts on clean traffic, and
the stack's memory (the peak of the summed RSS, and of the summed PSS, of every process the demo started,
sampled every 0.5 s; image builds included on a cold run).

    .venv/bin/python benchmarks/loop.py [--runs warm,warm] [--cold]

``--cold`` adds a first run with an empty image cache (``MLOPS_IMAGE_CACHE`` in a temporary folder), as on
a fresh machine after ``make demo`` installed the dev venv. Ports are free ones, so it runs beside anything.
Targets (issue 14): onset → proposal pushed ≤ 60 s; a warm run ≤ 3 min; the stack under 3 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from demo.processes import free_port  # noqa: E402

PORTS = ("S3", "KAFKA", "MLFLOW", "PREFECT", "PROMETHEUS", "ALERTMANAGER")


def memory_of_tree(root: int) -> tuple[int, int, dict[str, int]]:
    """Summed RSS and PSS (bytes) of ``root`` and every live descendant (new sessions included: parents
    stay), and each process's RSS."""
    parent, rss, pss = {}, {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        parent[int(entry.name)] = int(fields[1])
        rss[int(entry.name)] = next((int(line.split()[1]) * 1024 for line in status.splitlines()
                                     if line.startswith("VmRSS:")), 0)
        try:  # PSS: shared pages (forked workers, one venv's libraries) divided among their users
            pss[int(entry.name)] = next((int(line.split()[1]) * 1024 for line in
                                         (entry / "smaps_rollup").read_text().splitlines() if line.startswith("Pss:")), 0)
        except OSError:
            pss[int(entry.name)] = 0
    tree, frontier = {root}, [root]
    while frontier:
        current = frontier.pop()
        for pid, ppid in parent.items():
            if ppid == current and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    each = {str(pid): rss.get(pid, 0) for pid in tree}
    return sum(each.values()), sum(pss.get(pid, 0) for pid in tree), each


def command_of(pid: str) -> str:
    """The first words of a process's command line (program and module), for the peak's composition."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(Path(w.decode(errors="replace")).name if i == 0 else w.decode(errors="replace")
                    for i, w in enumerate(words[:4]) if w)[:80]


def one_run(label: str, cache: str | None) -> dict:
    output = Path(tempfile.mkdtemp(prefix=f"loop-{label}-"))
    env = {**os.environ, **{f"MLOPS_DEMO_PORT_{name}": str(free_port()) for name in PORTS}}
    if cache:
        env["MLOPS_IMAGE_CACHE"] = cache
    peak, peak_pss, per_process_peak, stop = 0, 0, {}, threading.Event()
    at_peak: list[tuple[int, str]] = []
    peak_at = 0.0

    def sample(root: int) -> None:
        nonlocal peak, peak_pss, at_peak, peak_at
        while not stop.is_set():
            total, total_pss, each = memory_of_tree(root)
            if total > peak:
                at_peak = sorted(((rss, command_of(pid)) for pid, rss in each.items()), reverse=True)
                peak_at = time.monotonic() - started
            peak, peak_pss = max(peak, total), max(peak_pss, total_pss)
            for pid, rss in each.items():
                per_process_peak[pid] = max(per_process_peak.get(pid, 0), rss)
            stop.wait(0.5)

    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "demo", "run", "--output", str(output / "out")], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = threading.Thread(target=sample, args=(process.pid,), daemon=True)
    sampler.start()
    log = process.communicate()[0]
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    facts = json.loads((output / "out" / "facts.json").read_text())
    onset = facts.get("drift_onset")
    since = {key: round(facts[key] - onset, 1) for key in ("drift_detected", "alert_fired", "flow_started",
                                                             "proposal_pushed") if onset and key in facts}
    (output / "demo.log").write_text(log)
    (output / "peak.txt").write_text("".join(f"{round(rss / 2**20)} {command}\n" for rss, command in at_peak))
    # The stage the peak fell in: the last one marked before it (the demo's clock starts a little after ours).
    peak_stage = next((event["stage"] for event in reversed(facts.get("timeline", []))
                       if event["seconds"] <= peak_at), "start")
    return {"run": label, "exit": process.returncode, "wall_s": round(wall, 1), "since_onset_s": since,
            "clean_windows_drifted": facts.get("clean_drifted_windows"), "clean_drift_alerts": facts.get("clean_alerts"),
            "peak_rss_sum_mib": round(peak / 2**20), "peak_pss_sum_mib": round(peak_pss / 2**20), "sum_of_peaks_mib": round(sum(per_process_peak.values()) / 2**20),
            "peak_at_s": round(peak_at, 1), "peak_after_stage": peak_stage,
            "largest_at_peak_mib": [f"{round(rss / 2**20)} {command}" for rss, command in at_peak[:8]],
            "processes_at_peak": len(at_peak), "composition": str(output / "peak.txt"),
            "failure": facts.get("failure")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="warm", help="comma-separated labels of warm runs (default: warm)")
    parser.add_argument("--cold", action="store_true", help="first a run with an empty image cache")
    args = parser.parse_args()
    results = []
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="loop-cold-cache-") as cache:
            results.append(one_run("cold", cache))
    for label in args.runs.split(","):
        results.append(one_run(label, None))
    print(json.dumps(results, indent=2))
    warm = [r for r in results if r["run"] != "cold"]
    if args.cold and warm:
        print(f"cold/warm wall time: {results[0]['wall_s'] / warm[0]['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
