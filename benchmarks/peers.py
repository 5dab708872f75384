"""Serving side by side with the alternatives (``serving.py --peers``): one model, every server, one run.

The light pyfunc model of serving.py (a numpy linear score saved as code, microseconds per call, so the
servers' own cost shows), or ``--peer-model pipeline``. Every server runs one worker process, pinned to
CPU 0 (``taskset``) as in a pod with a one-CPU limit; the bench's clients and the broker run on CPU 1:

* **ours**: ``python -m model_server`` from the model server image's venv (seldon-core 1.17.1, Python
  3.11), one gunicorn worker, inference logging **on** to a real broker (tansu); two identical servers
  (``--peer-replicas``), whose difference is the noise floor;
* **ours @ REV** (``--baseline REV``): the same, with ``components/`` as of git revision REV (the image
  venv is the same): the change against an earlier server, in the same run;
* **floor: Flask + gunicorn**: the same handler (``benchmarks/floor_app.py``: our ``ModelServer`` with its
  payload contract, Prometheus series and inference log on) under Flask 2.2.5 and gunicorn 20.1.0's sync
  worker (as Seldon runs it), without Seldon; the target's reference;
* **floor: Starlette + uvicorn**: the same handler on Starlette 0.48.0 and uvicorn 0.55.0;
* **mlflow models serve**: MLflow's own server (``--env-manager local``, one worker) from the image's
  mlflow-skinny 3.17.2; it has no inference log, so it does less than ours;
* **MLServer** (``--mlserver VENV``): MLServer + mlserver-mlflow from a separate venv, when given.

The load: ``--concurrency`` client threads, each on its own keep-alive connection (gunicorn's sync
worker closes every connection; the client reconnects, as a real client of that server must), one-row
requests back to back. Servers are measured in interleaved rounds (``--rounds`` × ``--seconds``, server
order rotated each round), so a change in the machine's load hits all alike. Server CPU per request is
the CPU time of the server's whole process group during its rounds (main process, workers, Seldon's
metrics processes and manager, our metrics endpoint) over the requests it answered.

Noise, as in drift.py: the larger of the difference between the two identical "ours" servers and the
largest spread ((max - min) / median) between rounds of one server or of one per-round ratio. A ratio is
a difference (or on one side of the target) only when every round says so by more than that floor;
otherwise it is printed as "inside the noise".
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import tarfile
import time
from pathlib import Path

from drift_report import spread
from serving import (
    FEATURES,
    LOCALHOST,
    REPO,
    drive,
    free_port,
    group_cpu_seconds,
    percentile,
    run_service,
    server_env,
)

TARGET = 1.2
"""Ours must cost at most this many times the Flask + gunicorn floor's CPU per request (issue 18)."""
SELDON_PATH = "/api/v1.0/predictions"


def seldon_bodies(rows: list[list]) -> list[bytes]:
    names = [f["name"] for f in FEATURES]
    return [json.dumps({"data": {"names": names, "ndarray": [row]}}).encode() for row in rows[:500]]


def mlflow_bodies(rows: list[list]) -> list[bytes]:
    names = [f["name"] for f in FEATURES]
    return [json.dumps({"dataframe_split": {"columns": names, "data": [row]}}).encode() for row in rows[:500]]


def v2_bodies(rows: list[list]) -> list[bytes]:
    """Open Inference Protocol (MLServer): one tensor per column."""
    bodies = []
    for row in rows[:500]:
        inputs = []
        for feature, value in zip(FEATURES, row, strict=True):
            kind = "BYTES" if isinstance(value, str) else "FP64"
            inputs.append({"name": feature["name"], "shape": [1], "datatype": kind, "data": [value]})
        bodies.append(json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs}).encode())
    return bodies


def components_at(revision: str, folder: Path) -> Path:
    """``components/`` as of git ``revision``, extracted under ``folder``; the folder to put on PYTHONPATH."""
    archive = subprocess.run(["git", "archive", "--format=tar", revision, "components"], cwd=REPO,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "components"


def peer_servers(args, image, model_dir: Path, workdir: Path, broker: str) -> list[dict]:
    """What to start: name, command, env, readiness URL, request path and body kind, per server."""
    pin = ["taskset", "-c", str(args.server_cpu)] if args.server_cpu is not None else []
    venv = image.venv / "bin"
    specs = []

    def env_for(name: str, logging_on: bool = True) -> tuple[dict, int]:
        folder = workdir / name.replace(" ", "-").replace("@", "at")
        folder.mkdir(parents=True)
        env, http_port, _ = server_env(model_dir, folder, "on" if logging_on else "off", broker, 1)
        env = {**image.env, **env, "PYTHONPATH": image.env["PYTHONPATH"], "TMPDIR": str(folder)}
        return env, http_port

    for replica in range(1, args.peer_replicas + 1):
        env, port = env_for(f"ours-{replica}")
        specs.append({"name": f"ours #{replica}", "kind": "ours", "command": [*pin, *image.command()], "env": env,
                      "port": port, "ready": "/health/ping", "path": SELDON_PATH, "bodies": "seldon"})
    if args.baseline:
        env, port = env_for(f"ours-at-{args.baseline}")
        old = components_at(args.baseline, workdir / "baseline")
        env["PYTHONPATH"] = f"{old}:{image.env['PYTHONPATH']}"
        # ``python -m`` puts its working directory first on sys.path: the old code's folder, not /app.
        specs.append({"name": f"ours @ {args.baseline}", "kind": "baseline", "command": [*pin, *image.command()],
                      "env": env, "port": port, "ready": "/health/ping", "path": SELDON_PATH, "bodies": "seldon",
                      "cwd": old})
    floor_path = f"{REPO / 'benchmarks'}:{image.env['PYTHONPATH']}"
    env, port = env_for("floor-flask")
    env.update(PYTHONPATH=floor_path, prometheus_multiproc_dir=env["PROMETHEUS_MULTIPROC_DIR"])
    specs.append({"name": "floor: Flask + gunicorn", "kind": "flask", "env": env, "port": port,
                  "command": [*pin, str(venv / "gunicorn"), "-w", "1", "--keep-alive", "2", "-b",
                              f"{LOCALHOST}:{port}", "floor_app:flask_app()"],
                  "ready": "/health/ping", "path": SELDON_PATH, "bodies": "seldon"})
    env, port = env_for("floor-starlette")
    env.update(PYTHONPATH=floor_path, prometheus_multiproc_dir=env["PROMETHEUS_MULTIPROC_DIR"])
    specs.append({"name": "floor: Starlette + uvicorn", "kind": "starlette", "env": env, "port": port,
                  "command": [*pin, str(venv / "uvicorn"), "--factory", "floor_app:starlette_app", "--host",
                              LOCALHOST, "--port", str(port), "--no-access-log", "--log-level", "warning"],
                  "ready": "/health/ping", "path": SELDON_PATH, "bodies": "seldon"})
    env, port = env_for("mlflow-serve", logging_on=False)
    env["PATH"] = f"{venv}:{env['PATH']}"  # it runs ``uvicorn`` from PATH
    specs.append({"name": "mlflow models serve", "kind": "mlflow", "env": env, "port": port,
                  "command": [*pin, str(venv / "mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager",
                              "local", "-h", LOCALHOST, "-p", str(port), "-w", "1"],
                  "ready": "/ping", "path": "/invocations", "bodies": "mlflow"})
    if args.mlserver:
        specs.append(mlserver_spec(args, pin, model_dir, workdir))
    return specs


def mlserver_spec(args, pin: list[str], model_dir: Path, workdir: Path) -> dict:
    folder = workdir / "mlserver"
    folder.mkdir()
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port, "host": LOCALHOST,
        "parallel_workers": 0, "debug": False}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "m", "implementation": "mlserver_mlflow.MLflowRuntime", "parameters": {"uri": str(model_dir)}}))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(folder), "OMP_NUM_THREADS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    return {"name": "MLServer + mlserver-mlflow", "kind": "mlserver", "env": env, "port": port,
            "command": [*pin, str(Path(args.mlserver) / "bin" / "mlserver"), "start", str(folder)],
            "ready": "/v2/health/ready", "path": "/v2/models/m/infer", "bodies": "v2", "cwd": folder}


def run_peers(args, image, model_dir: Path, rows: list[list], workdir: Path, broker: str) -> dict:
    """Start every server, warm it up, measure interleaved rounds; per server: totals and per-round CPU."""
    import contextlib

    bodies = {"seldon": seldon_bodies(rows), "mlflow": mlflow_bodies(rows), "v2": v2_bodies(rows)}
    specs = peer_servers(args, image, model_dir, workdir, broker)
    with contextlib.ExitStack() as stack:
        for spec in specs:
            process = stack.enter_context(run_service(
                spec["name"].replace(" ", "-").replace(":", "").replace("+", "").replace("@", "at"), spec["command"],
                url=f"http://{LOCALHOST}:{spec['port']}{spec['ready']}", env=spec["env"],
                cwd=spec.get("cwd", image.workdir), timeout=300, log_dir=workdir / "logs"))
            spec["pgid"] = process.pid
        for spec in specs:  # warm-up: imports, first predictions, the producer's connection
            ok, failed, _, _ = drive(spec["port"], spec["path"], bodies[spec["bodies"]], args.concurrency, 2.0)
            if ok == 0:
                raise SystemExit(f"{spec['name']} answered no request in its warm-up ({failed} failed)")
        results = {spec["name"]: {"ok": 0, "failed": 0, "latencies": [], "elapsed": 0.0, "cpu": 0.0, "round_cpu": []}
                   for spec in specs}
        loads = [os.getloadavg()]
        for number in range(args.rounds):
            shift = number % len(specs)
            for spec in specs[shift:] + specs[:shift]:
                before = group_cpu_seconds(spec["pgid"])
                ok, failed, latencies, elapsed = drive(spec["port"], spec["path"], bodies[spec["bodies"]],
                                                       args.concurrency, args.seconds)
                cpu = group_cpu_seconds(spec["pgid"]) - before
                r = results[spec["name"]]
                r["ok"] += ok
                r["failed"] += failed
                r["latencies"] += latencies
                r["elapsed"] += elapsed
                r["cpu"] += cpu
                r["round_cpu"].append(1000 * cpu / max(ok, 1))
            loads.append(os.getloadavg())
        time.sleep(1.5)  # the shippers' last flush
        for spec in specs:
            if "PROMETHEUS_MULTIPROC_DIR" in spec["env"] and spec["kind"] != "mlflow":
                results[spec["name"]]["log"] = logged_and_dropped(image, spec["env"]["PROMETHEUS_MULTIPROC_DIR"])
    return {"specs": specs, "results": results, "loads": loads}


LOG_TOTALS = """
import json, sys
from prometheus_client import CollectorRegistry, multiprocess
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry, path=sys.argv[1])
totals = {"logged": 0.0, "dropped": 0.0}
for family in registry.collect():
    for sample in family.samples:
        if sample.name == "mlops_model_server_inference_records_logged_total":
            totals["logged"] += sample.value
        elif sample.name == "mlops_model_server_inference_records_dropped_total":
            totals["dropped"] += sample.value
print(json.dumps(totals))
"""


def logged_and_dropped(image, directory: str) -> dict:
    """Inference-log records a server's workers counted as logged and dropped (their multiprocess files,
    read with the image's prometheus-client, as our ``/metrics`` endpoint reads them)."""
    done = subprocess.run([image.python, "-c", LOG_TOTALS, directory], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "prometheus_multiproc_dir": directory})
    return json.loads(done.stdout) if done.returncode == 0 else {"logged": float("nan"), "dropped": float("nan")}


def log_cell(result: dict) -> str:
    log = result.get("log")
    return "no inference log" if log is None else f"{log['logged']:,.0f} / {log['dropped']:,.0f}"


def report_peers(args, run: dict) -> None:
    specs, results, loads = run["specs"], run["results"], run["loads"]
    print(f"load averages (1/5/15 min) at the start of each round: "
          f"{'; '.join(' '.join(f'{x:.2f}' for x in load) for load in loads)}\n")
    print("| server | requests/s | p50 ms | p99 ms | server CPU ms/request | per round (min-max) | failed "
          "| records logged / dropped | CPU vs floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    cpu = {name: 1000 * r["cpu"] / max(r["ok"], 1) for name, r in results.items()}
    floor = next(spec["name"] for spec in specs if spec["kind"] == "flask")
    for spec in specs:
        r = results[spec["name"]]
        p50, p99 = percentile(r["latencies"], 0.5) * 1000, percentile(r["latencies"], 0.99) * 1000
        print(f"| {spec['name']} | {r['ok'] / r['elapsed']:,.0f} | {p50:.2f} | {p99:.2f} | {cpu[spec['name']]:.3f} "
              f"| {min(r['round_cpu']):.3f}-{max(r['round_cpu']):.3f} | {r['failed']} "
              f"| {log_cell(r)} | {cpu[spec['name']] / cpu[floor]:.2f} |")
    ours = [spec["name"] for spec in specs if spec["kind"] == "ours"]
    # Ours per round: the mean of the identical 'ours' servers in that round.
    ours_rounds = [statistics.fmean(round_cpu) for round_cpu in zip(*(results[n]["round_cpu"] for n in ours), strict=True)]
    per_round = {name: [x / o for x, o in zip(results[name]["round_cpu"], ours_rounds, strict=True)]
                 for name in results if name not in ours}
    # The noise floor, as drift.py's: the larger of the relative difference between identical servers and
    # the largest spread ((max - min) / median) between rounds of one server or of one per-round ratio.
    noise_pairs = (max(cpu[n] for n in ours) - min(cpu[n] for n in ours)) / (sum(cpu[n] for n in ours) / len(ours)) \
        if len(ours) > 1 else 0.0
    worst_spread = max(spread(values) for values in [*(r["round_cpu"] for r in results.values()), *per_round.values()])
    noise = max(noise_pairs, worst_spread)
    print(f"\nnoise floor: {100 * noise:.1f} % (identical 'ours' servers differ by {100 * noise_pairs:.1f} %; the "
          f"largest spread between rounds of one server or one ratio, (max - min) / median, is "
          f"{100 * worst_spread:.1f} %); a difference is one only when every round shows it beyond that")
    mean_ours = sum(cpu[n] for n in ours) / len(ours)
    for spec in specs:
        if spec["name"] == floor or spec["kind"] == "ours":
            continue
        rounds = per_round[spec["name"]]
        if all(x > 1 + noise for x in rounds):
            verdict = "costs more"
        elif all(x < 1 - noise for x in rounds):
            verdict = "costs less"
        else:
            verdict = "inside the noise"
        print(f"{spec['name']} / ours: CPU per request {cpu[spec['name']] / mean_ours:.2f}x (per round "
              f"{min(rounds):.2f}-{max(rounds):.2f}x; {verdict})")
    to_floor = [1 / x for x in per_round[floor]]
    if all(x > TARGET * (1 + noise) for x in to_floor):
        verdict = "NOT met (every round above the target by more than the noise floor)"
    elif all(x <= TARGET * (1 - noise) for x in to_floor):
        verdict = "met (every round below the target by more than the noise floor)"
    else:
        verdict = "inside the noise of the target: not shown either way"
    print(f"ours / {floor}: CPU per request {mean_ours / cpu[floor]:.2f}x (per round {min(to_floor):.2f}-"
          f"{max(to_floor):.2f}x; target <= {TARGET}x, inference logging on): {verdict}")


def peers_main(args) -> None:
    """``serving.py --peers``: build the image's venv, save the model, start the broker, measure, report."""
    import platform
    import tempfile
    from datetime import datetime

    from serving import TOPIC, build_image, run_kafka_broker, save_light_model, save_model

    from machine import cpu_model

    args.server_cpu = None
    if not args.no_pin and len(os.sched_getaffinity(0)) >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        args.server_cpu = cpus[0]
        os.sched_setaffinity(0, set(cpus[1:]))  # the clients and the broker inherit it
    with tempfile.TemporaryDirectory(prefix="serving-peers-") as tmp:
        workdir = Path(tmp)
        rows = save_model(workdir / "pipeline")
        save_light_model(workdir / "light")
        model_dir = workdir / ("light" if args.peer_model == "light" else "pipeline")
        image = build_image("model_server", workdir / "image", None)
        with run_kafka_broker("memory://tansu/", log_dir=workdir / "tansu") as broker:
            broker.create_topic(TOPIC, partitions=2)
            run = run_peers(args, image, model_dir, rows, workdir, broker.bootstrap_servers)
    print(f"# serving.py --peers — {datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, bench Python {platform.python_version()}; servers "
          f"from the model server image's venv (Python 3.11, seldon-core 1.17.1)")
    placement = ("unpinned" if args.server_cpu is None else
                 f"servers pinned to CPU {args.server_cpu}, clients and broker to CPUs {sorted(os.sched_getaffinity(0))}")
    print(f"model: {args.peer_model}; load: {args.concurrency} keep-alive clients, one-row requests, {args.rounds} "
          f"interleaved rounds x {args.seconds:.0f} s per server; one worker per server; {placement}")
    report_peers(args, run)
