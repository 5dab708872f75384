"""Benchmark: what inference logging costs the model server, side by side in one run.

Two models with the example's five features, both saved with MLflow: the example's kind of model (a
one-hot + logistic-regression sklearn pipeline, about 6 ms per one-row call on this machine) and a
light one (a numpy linear score as a pyfunc ``PythonModel``, microseconds per call), so that the cost
of logging shows against the server's own overhead too. For each model, three real
``seldon-core-microservice`` servers started from the same settings and differing only in logging:

* **off**: ``MODEL_SERVER_LOGGING_ENABLED=false``;
* **on**: logging to a real broker (tansu) on a topic with 2 partitions;
* **broker down**: logging on, pointed at a broker that is stopped (nothing listens on its port); its
  buffer (1,000 records per worker here) is full after the first seconds, so it drops from then on.

Each server runs ``--workers`` gunicorn workers (default 2), and each (model, mode) has ``--replicas``
identical servers (default 2): the spread between replicas of the same mode is the noise floor a
difference between modes must clear. The load: ``--concurrency`` client threads (default 4), each on
its own keep-alive connection, sending one-row requests (``data.names`` + ``ndarray``) back to back.

On a machine with two or more CPUs the servers run pinned to CPU 0 (``taskset``), the bench's clients
and the broker to CPU 1. A server then has one core, as in a pod with a CPU limit of one, and the
throughput measures the server's own cost per request: the broker's work does not land on the
server's core (in a cluster it runs elsewhere) and neither does the client's. Unpinned
(``--no-pin``), workers, clients and broker share both cores and the figures move with the
scheduler's placement of them.

The servers are measured in interleaved rounds (off, on, down, off, on, down, ...; ``--rounds`` ×
``--seconds``), so a change in the machine's load hits all alike; requests/s is completed requests over
measured time, p50/p99 are the client-side latencies of all rounds pooled, and server CPU ms/request is
the CPU time of the server's whole process group during its rounds over the requests it answered. A
non-200 answer or a connection error counts as failed. Before measuring, every server gets a warm-up
round. At the end the bench reads each server's metrics: records logged and dropped.

Images, side by side: ``--images 1.17.1,1.19.0`` (the default) starts every server from the venv of
the model server image (``tests/imagebuild.py``): ``1.17.1`` is the default, Apache-only image (seldon-core
1.17.1, Python 3.11), ``1.19.0`` the opt-in BSL build (seldon-core 1.19.0, Python 3.12). Each (model,
image) is one row group, measured in the same interleaved rounds. The in-process A/B needs seldon-core
in the interpreter running the bench (the dev venv has none): it runs only when it imports.

    .venv/bin/python benchmarks/serving.py [--rounds 5] [--seconds 6] [--concurrency 4] [--workers 2]
                                           [--replicas 2] [--no-pin] [--images 1.17.1,1.19.0]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "tests", REPO / "components"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from imagebuild import ImageEnv, build_image  # noqa: E402
from services import LOCALHOST, free_port, run_kafka_broker, run_service  # noqa: E402

MODEL = "fraud-detector"
TOPIC = "fraud-detector-bench-inference-log"
CATEGORIES = ["grocery", "travel", "online", "fuel", "other"]
FEATURES = [
    {"name": "amount", "type": "numeric"}, {"name": "hour", "type": "numeric"},
    {"name": "distance_km", "type": "numeric"},
    {"name": "merchant_category", "type": "categorical", "categories": CATEGORIES},
    {"name": "card_present", "type": "categorical", "categories": [0, 1]},
]
MODES = ("off", "on", "broker down")
BUFFER_RECORDS = 1000
IMAGES = {"1.17.1": None,
          "1.19.0": {"PYTHON_IMAGE": "python:3.12.12-slim-bookworm",
                     "REQUIREMENTS": "components/model_server/requirements-seldon-1.19.txt"}}
"""seldon-core version → the model server image's build arguments (None: the default image)."""
LIGHT_MODEL_CODE = """
import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class LightModel(PythonModel):
    def predict(self, context, model_input, params=None):
        score = model_input["amount"].to_numpy() * 0.01 - model_input["distance_km"].to_numpy() * 0.02
        return (score > 1.0).astype(np.int64)


set_model(LightModel())
"""


def save_light_model(directory: Path) -> None:
    """A linear score over the numeric features, the cheapest model a pyfunc can be, saved as code
    (MLflow's models from code): a pickled class would not load under another Python version."""
    import mlflow.pyfunc

    code = directory.with_name("light_model.py")
    code.write_text(LIGHT_MODEL_CODE)
    mlflow.pyfunc.save_model(str(directory), python_model=str(code), pip_requirements=["numpy"])


def save_model(directory: Path) -> list[list]:
    """Fit and save the bench pipeline; returns request rows drawn from the same distribution."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    rows = 2000
    frame = pd.DataFrame({
        "amount": rng.gamma(2.0, 50.0, rows), "hour": rng.integers(0, 24, rows),
        "distance_km": rng.exponential(10.0, rows), "merchant_category": rng.choice(CATEGORIES, rows),
        "card_present": rng.integers(0, 2, rows)})
    labels = ((frame.amount > 150) & (frame.card_present == 0)).astype(int)
    encode = ColumnTransformer([("categories", OneHotEncoder(handle_unknown="ignore"),
                                 ["merchant_category", "card_present"])], remainder="passthrough")
    model = Pipeline([("encode", encode), ("classify", LogisticRegression(max_iter=2000))]).fit(frame, labels)
    mlflow.sklearn.save_model(model, str(directory), signature=infer_signature(frame, model.predict(frame)),
                              pip_requirements=["scikit-learn"])
    return frame.astype(object).values.tolist()


def server_env(model_dir: Path, workdir: Path, mode: str, kafka: str, workers: int) -> tuple[dict, int, int]:
    http_port, app_metrics_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(workdir), "PYTHONPATH": str(REPO / "components"),
        "MODEL_SERVER_MODEL_NAME": MODEL, "MODEL_SERVER_REGISTERED_MODEL": MODEL, "MODEL_SERVER_MODEL_VERSION": "1",
        "MODEL_SERVER_MODEL_URI": str(model_dir), "MODEL_SERVER_FEATURES": json.dumps(FEATURES),
        "MODEL_SERVER_KAFKA_BOOTSTRAP_SERVERS": kafka, "MODEL_SERVER_KAFKA_TOPIC": TOPIC,
        "MODEL_SERVER_LOGGING_ENABLED": "false" if mode == "off" else "true",
        "MODEL_SERVER_APP_METRICS_PORT": str(app_metrics_port), "PREDICTOR_ID": "main",
        "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(http_port), "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(free_port()),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"), "GUNICORN_WORKERS": str(workers),
        "GRPC_WORKERS": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "SELDON_LOG_LEVEL": "WARNING",
        # One BLAS/OpenMP thread per worker: the workers already share the server's core, and spare
        # BLAS threads spinning on it would be measured as the model's cost.
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        # Broker down: smaller than the server's default so that the buffers fill within the first round
        # and drop (the costly path) for the rest of the run; the default otherwise (1,000 drops at 1,000+/s).
        **({"MODEL_SERVER_BUFFER_RECORDS": str(BUFFER_RECORDS)} if mode == "broker down" else {}),
    }
    return env, http_port, app_metrics_port


def load_round(port: int, rows: list[list], concurrency: int, seconds: float) -> tuple[int, int, list[float], float]:
    """``concurrency`` threads send one-row requests for ``seconds``; returns (ok, failed, latencies, elapsed)."""
    names = [f["name"] for f in FEATURES]
    bodies = [json.dumps({"data": {"names": names, "ndarray": [row]}}).encode() for row in rows[:500]]
    return drive(port, "/api/v1.0/predictions", bodies, concurrency, seconds)


def drive(port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float) -> tuple[int, int, list[float], float]:
    """``concurrency`` threads POST ``bodies`` for ``seconds``; (ok, failed, latencies, elapsed)."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures = [0] * concurrency
    gate = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(LOCALHOST, port, timeout=30)
        mine, n = latencies[index], index
        gate.wait()
        while time.perf_counter() < deadline[0]:
            began = time.perf_counter()
            try:
                connection.request("POST", path, bodies[n % len(bodies)], {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    mine.append(time.perf_counter() - began)
                else:
                    failures[index] += 1
                if response.will_close:
                    connection.close()
            except (OSError, http.client.HTTPException):
                failures[index] += 1
                connection.close()
            n += concurrency
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    gate.wait()
    for thread in threads:
        thread.join()
    pooled = [x for mine in latencies for x in mine]
    return len(pooled), sum(failures), pooled, time.perf_counter() - began


def scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sample.labels.items() if k == "reason")
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def _stat_fields(path: str) -> list[str]:
    """The fields of a ``/proc/.../stat`` file after the name: state, ppid, pgrp, ..., utime (12), stime (13)."""
    return Path(path).read_text().rsplit(")", 1)[1].split()


def _cpu_ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid`` (the server's
    main process, gunicorn master and workers, metrics servers, the shipper threads inside workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(f"/proc/{entry}/stat")
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += _cpu_ticks(fields)
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def thread_cpu_seconds(native_id: int) -> float:
    """User + system CPU seconds of one thread of this process (``threading.Thread.native_id``)."""
    return _cpu_ticks(_stat_fields(f"/proc/self/task/{native_id}/stat")) / os.sysconf("SC_CLK_TCK")


def in_process_costs(model_dir: Path, workdir: Path, broker: str, dead_broker: str, rows: list[list],
                     rounds: int, seconds: float) -> dict[str, dict]:
    """Logging's own cost, A/B on one server object: what separate servers cannot resolve.

    Two :class:`ModelServer` objects with logging on, one shipping to the broker and one pointed at
    the dead broker, are called through Seldon's own request handling (``seldon_methods.predict``
    with a ``SeldonMetrics``) by one thread, in interleaved rounds. Between rounds the bench switches
    each object's logging path off and on (``server.buffer``: ``None`` is exactly what
    ``MODEL_SERVER_LOGGING_ENABLED=false`` leaves), so that "off" and "on" are the same object, the
    same model instance and the same process. (Separate servers with identical settings differ by 5 to
    10 % on this kind of machine, more than the effect measured.)

    Per mode: calls/s, the calling thread's CPU per call (``time.thread_time``), per-call latency
    percentiles, and the shipper thread's CPU over the whole run divided by that mode's calls (it
    ships on its own schedule, so only the run total is attributed, all of it to the logging mode).
    No HTTP server and no gunicorn: a served request costs more than a call here, so logging's share
    of a call is an upper bound of its share of a served request.
    """
    from model_server.server import ModelServer
    from model_server.settings import load_settings
    from seldon_core import seldon_methods
    from seldon_core.metrics import SeldonMetrics

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the broker-down shipper's reconnect errors
    names = [f["name"] for f in FEATURES]
    requests = [{"data": {"names": names, "ndarray": [row]}} for row in rows[:500]]
    servers = {}
    for mode in ("on", "broker down"):
        folder = workdir / f"in-process-{model_dir.name}-{mode}".replace(" ", "-")
        folder.mkdir()
        env, _, _ = server_env(model_dir, folder, mode, dead_broker if mode == "broker down" else broker, 1)
        servers[mode] = ModelServer(load_settings(env))
        servers[mode].load()
    buffers = {mode: server.buffer for mode, server in servers.items()}
    deadline = time.monotonic() + 30
    while not servers["on"].shipper.connected and time.monotonic() < deadline:
        time.sleep(0.1)
    seldon_metrics = SeldonMetrics()
    # (label, server, logging path on?)
    slots = [("off", "on", False), ("on", "on", True), ("off (down)", "broker down", False),
             ("broker down", "broker down", True)]
    stats = {label: {"calls": 0, "wall": 0.0, "cpu": 0.0, "latencies": []} for label, _, _ in slots}
    for _, mode, _ in slots:  # warm-up
        for request in requests[:50]:
            seldon_methods.predict(servers[mode], request, seldon_metrics)
    shipper_cpu_before = {mode: thread_cpu_seconds(server.shipper._thread.native_id) for mode, server in servers.items()}
    logged_before = servers["on"].series.logged._value.get()
    n = 0
    for _ in range(rounds):
        for label, mode, logging_on in slots:
            server, mine = servers[mode], stats[label]
            server.buffer = buffers[mode] if logging_on else None
            latencies = mine["latencies"]
            calls_before = len(latencies)
            cpu0, began = time.thread_time(), time.perf_counter()
            end = began + seconds
            now = began
            while now < end:
                seldon_methods.predict(server, requests[n % len(requests)], seldon_metrics)
                n += 1
                after = time.perf_counter()
                latencies.append(after - now)
                now = after
            mine["cpu"] += time.thread_time() - cpu0
            mine["wall"] += now - began
            mine["calls"] += len(latencies) - calls_before
    time.sleep(1.5)  # the last flush
    for mode, server in servers.items():
        stats[mode]["shipper_cpu"] = thread_cpu_seconds(server.shipper._thread.native_id) - shipper_cpu_before[mode]
        server.shipper.stop()
    stats["on"]["logged"] = servers["on"].series.logged._value.get() - logged_before
    return stats


def report_in_process(model: str, stats: dict[str, dict]) -> None:
    for label, base_label in (("off", None), ("on", "off"), ("off (down)", None), ("broker down", "off (down)")):
        st = stats[label]
        cpu_us = 1e6 * st["cpu"] / st["calls"]
        shipper_us = 1e6 * st.get("shipper_cpu", 0.0) / st["calls"]
        total = cpu_us + shipper_us
        p50, p99 = percentile(st["latencies"], 0.50) * 1e3, percentile(st["latencies"], 0.99) * 1e3
        versus = "" if base_label is None else (
            f"{100 * (total / (1e6 * stats[base_label]['cpu'] / stats[base_label]['calls']) - 1):+.1f} % CPU, "
            f"{100 * (st['calls'] / st['wall'] / (stats[base_label]['calls'] / stats[base_label]['wall']) - 1):+.1f} % "
            f"calls/s, p99 {p99 - percentile(stats[base_label]['latencies'], 0.99) * 1e3:+.3f} ms")
        print(f"| {model} | {label} | {st['calls'] / st['wall']:,.0f} | {cpu_us:.1f} | {shipper_us:.1f} | {total:.1f} "
              f"| {p50:.3f} | {p99:.3f} | {versus} | {st.get('logged', 0):,.0f} |")


@contextlib.contextmanager
def started_servers(model_dirs: dict[str, tuple[Path, ImageEnv]], workdir: Path, broker: str, dead_broker: str,
                    workers: int, replicas: int,
                    server_cpu: int | None) -> Iterator[dict[tuple[str, str, int], tuple[int, int, int]]]:
    """``replicas`` servers per (model and image, logging mode), each started from its image's venv and
    /app with the image's ENV; yields their (http port, metrics port, process group)."""
    pin = [] if server_cpu is None else ["taskset", "-c", str(server_cpu)]
    with contextlib.ExitStack() as stack:
        ports = {}
        for model, (model_dir, image) in model_dirs.items():
            for mode in MODES:
                for replica in range(1, replicas + 1):
                    folder = workdir / f"{model}-{mode}-{replica}".replace(" ", "-")
                    folder.mkdir()
                    kafka = dead_broker if mode == "broker down" else broker
                    env, http_port, metrics_port = server_env(model_dir, folder, mode, kafka, workers)
                    env = {**image.env, **env, "PYTHONPATH": image.env["PYTHONPATH"]}
                    process = stack.enter_context(run_service(
                        f"model-server-{model}-{mode}-{replica}", [*pin, *image.command()],
                        url=f"http://{LOCALHOST}:{http_port}/health/ping", env=env, cwd=image.workdir, timeout=300,
                        log_dir=folder))
                    ports[model, mode, replica] = (http_port, metrics_port, process.pid)
        yield ports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=2, help="identical servers per model and logging mode")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and clients to separate CPUs")
    parser.add_argument("--in-process-rounds", type=int, default=40,
                        help="rounds of the in-process A/B (0 skips it); each mode gets 0.5 s per round; "
                             "it needs seldon-core in this interpreter")
    parser.add_argument("--images", default="1.17.1,1.19.0",
                        help="seldon-core versions of the model server images to compare: 1.17.1 (default "
                             "image), 1.19.0 (opt-in BSL build)")
    parser.add_argument("--peers", action="store_true", help="instead: ours beside the floors and peers (peers.py)")
    parser.add_argument("--peer-replicas", type=int, default=2)
    parser.add_argument("--peer-model", choices=("light", "pipeline"), default="light")
    parser.add_argument("--baseline", help="--peers: also ours with components/ as of this git revision")
    parser.add_argument("--mlserver", help="--peers: a venv with mlserver and mlserver-mlflow")
    args = parser.parse_args()
    if args.peers:
        from peers import peers_main

        return peers_main(args)
    versions = [v.strip() for v in args.images.split(",") if v.strip()]
    unknown = sorted(set(versions) - set(IMAGES))
    if unknown or not versions:
        parser.error(f"--images: unknown {unknown}; choose from {sorted(IMAGES)}")
    if args.in_process_rounds and importlib.util.find_spec("seldon_core") is None:
        print("in-process A/B skipped: seldon-core is not installed in this interpreter (the images have it)\n")
        args.in_process_rounds = 0
    server_cpu = None
    if not args.no_pin and len(os.sched_getaffinity(0)) >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        server_cpu = cpus[0]
        os.sched_setaffinity(0, set(cpus[1:]))  # the clients, and the broker started below, inherit it

    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        workdir = Path(tmp)
        rows = save_model(workdir / "pipeline")
        save_light_model(workdir / "light")
        models = {"sklearn pipeline": workdir / "pipeline", "light pyfunc": workdir / "light"}
        images = {v: build_image("model_server", workdir / f"image-{v}", IMAGES[v]) for v in versions}
        served = {f"{model} @ seldon-core {v}": (path, images[v]) for model, path in models.items() for v in versions}
        with run_kafka_broker("memory://tansu/", log_dir=workdir / "tansu") as broker:
            broker.create_topic(TOPIC, partitions=2)
            dead = f"{LOCALHOST}:{free_port()}"
            in_process = {}
            if args.in_process_rounds:
                bench_cpus = os.sched_getaffinity(0)
                if server_cpu is not None:  # the A/B runs where the servers will: the broker stays put
                    os.sched_setaffinity(0, {server_cpu})
                for model, model_dir in models.items():
                    in_process[model] = in_process_costs(model_dir, workdir, broker.bootstrap_servers, dead,
                                                         rows, args.in_process_rounds, 0.5)
                os.sched_setaffinity(0, bench_cpus)
            with started_servers(served, workdir, broker.bootstrap_servers, dead, args.workers, args.replicas,
                                 server_cpu) as ports:
                for key in ports:  # warm-up: imports, first predictions, producer connection
                    load_round(ports[key][0], rows, args.concurrency, 2.0)
                results = {key: {"ok": 0, "failed": 0, "latencies": [], "elapsed": 0.0, "cpu": 0.0}
                           for key in ports}
                for _ in range(args.rounds):
                    for key in ports:
                        cpu_before = group_cpu_seconds(ports[key][2])
                        ok, failed, latencies, elapsed = load_round(ports[key][0], rows, args.concurrency,
                                                                    args.seconds)
                        r = results[key]
                        r["cpu"] += group_cpu_seconds(ports[key][2]) - cpu_before
                        r["ok"] += ok
                        r["failed"] += failed
                        r["latencies"] += latencies
                        r["elapsed"] += elapsed
                time.sleep(1.5)  # let the shippers ship the tail (they flush every second)
                counters = {key: scrape(ports[key][1]) for key in ports}
        report(args, list(served), results, counters, server_cpu, in_process)


def report(args, models: list[str], results: dict, counters: dict, server_cpu: int | None,
           in_process: dict[str, dict]) -> None:
    print(f"# serving.py — {datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average before the end {os.getloadavg()[0]:.2f}")
    placement = ("unpinned" if server_cpu is None else
                 f"servers pinned to CPU {server_cpu}, clients and broker to CPUs {sorted(os.sched_getaffinity(0))}")
    print(f"load: {args.concurrency} keep-alive clients, one-row requests, {args.rounds} interleaved rounds × "
          f"{args.seconds:.0f} s per server; {args.workers} gunicorn workers per server, {args.replicas} "
          f"servers per mode; {placement}\n")
    if in_process:
        print(f"In process, A/B on one server object ({args.in_process_rounds} interleaved rounds × 0.5 s per mode, "
              "one calling thread, Seldon's request handling without HTTP):\n")
        print("| model | logging | calls/s | caller CPU µs/call | shipper CPU µs/call | total µs/call "
              "| p50 ms | p99 ms | vs its off | records logged |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for model, stats in in_process.items():
            report_in_process(model, stats)
        print("\nServed over HTTP by real seldon-core-microservice servers:\n")
    print("| model | logging | requests/s | per server | p50 ms | p99 ms | per server | server CPU ms/request "
          "| failed | records logged | records dropped |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for model in models:
        for mode in MODES:
            keys = [key for key in results if key[:2] == (model, mode)]
            pooled = {field: sum(results[key][field] for key in keys) for field in ("ok", "failed", "elapsed", "cpu")}
            latencies = [x for key in keys for x in results[key]["latencies"]]
            per_server = [results[key]["ok"] / results[key]["elapsed"] for key in keys]
            p99_per_server = [percentile(results[key]["latencies"], 0.99) * 1000 for key in keys]
            rps = pooled["ok"] / pooled["elapsed"]
            p50, p99 = percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000
            cpu_ms = 1000 * pooled["cpu"] / max(pooled["ok"], 1)
            summary[model, mode] = (rps, p50, p99, cpu_ms, per_server, pooled["failed"], p99_per_server)
            logged = sum(counters[key].get("mlops_model_server_inference_records_logged_total", 0.0) for key in keys)
            dropped = sum(v for key in keys for k, v in counters[key].items()
                          if k.startswith("mlops_model_server_inference_records_dropped_total"))
            print(f"| {model} | {mode} | {rps:,.0f} | {' / '.join(f'{x:,.0f}' for x in per_server)} | {p50:.2f} "
                  f"| {p99:.2f} | {' / '.join(f'{x:.1f}' for x in p99_per_server)} | {cpu_ms:.2f} "
                  f"| {pooled['failed']} | {logged:,.0f} | {dropped:,.0f} |")
    print()
    for model in models:
        base = summary[model, "off"]
        spread = (max(base[4]) - min(base[4])) / base[0] if len(base[4]) > 1 else float("nan")
        p99_spread = max(base[6]) - min(base[6])
        print(f"{model}: spread between the 'off' servers (the noise floor): throughput {100 * spread:.1f} % of "
              f"their mean, p99 {p99_spread:.2f} ms")
        for mode in ("on", "broker down"):
            rps, _, p99, cpu_ms, _, failed, _ = summary[model, mode]
            print(f"{model}, {mode} vs off: throughput {100 * (rps / base[0] - 1):+.1f} %, "
                  f"p99 {p99 - base[2]:+.2f} ms, server CPU per request {100 * (cpu_ms / base[3] - 1):+.1f} %, "
                  f"failed {failed}")


if __name__ == "__main__":
    main()
