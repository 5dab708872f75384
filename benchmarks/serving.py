"""Benchmark: what inference logging costs the model server, side by side in one run.

One model (the example's five features: a one-hot + logistic-regression sklearn pipeline saved with
MLflow), three real ``seldon-core-microservice`` servers started from the same settings and differing
only in logging:

* **off**: ``MODEL_SERVER_LOGGING_ENABLED=false``;
* **on**: logging to a real broker (tansu) on a topic with 2 partitions;
* **broker down**: logging on, pointed at a broker that is stopped (nothing listens on its port).

Each server runs ``--workers`` gunicorn workers (default 2). The load: ``--concurrency`` client threads
(default 4), each on its own keep-alive connection, sending one-row requests (``data.names`` +
``ndarray``) back to back. The servers are measured in interleaved rounds (off, on, down, off, on,
down, ...; ``--rounds`` × ``--seconds``), so a change in the machine's load hits all three alike;
requests/s is completed requests over measured time, p50/p99 are the client-side latencies of all
rounds pooled. A non-200 answer or a connection error counts as failed. Before measuring, every server
gets a warm-up round. At the end the bench reads each server's metrics: records logged and dropped.

    .venv/bin/python benchmarks/serving.py [--rounds 5] [--seconds 6] [--concurrency 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
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
for _path in (REPO / "tests", REPO / "components"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

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


def save_model(directory: Path) -> list[list]:
    """Fit and save the bench model; returns request rows drawn from the same distribution."""
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
    }
    return env, http_port, app_metrics_port


def load_round(port: int, rows: list[list], concurrency: int, seconds: float) -> tuple[int, int, list[float], float]:
    """``concurrency`` threads send one-row requests for ``seconds``; returns (ok, failed, latencies, elapsed)."""
    names = [f["name"] for f in FEATURES]
    bodies = [json.dumps({"data": {"names": names, "ndarray": [row]}}).encode() for row in rows[:500]]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures = [0] * concurrency
    start_gate = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(LOCALHOST, port, timeout=30)
        mine, n = latencies[index], index
        start_gate.wait()
        while time.perf_counter() < deadline[0]:
            body = bodies[n % len(bodies)]
            n += concurrency
            began = time.perf_counter()
            try:
                connection.request("POST", "/api/v1.0/predictions", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    mine.append(time.perf_counter() - began)
                else:
                    failures[index] += 1
            except (OSError, http.client.HTTPException):
                failures[index] += 1
                connection.close()
                connection = http.client.HTTPConnection(LOCALHOST, port, timeout=30)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start_gate.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    pooled = [x for lat in latencies for x in lat]
    return len(pooled), sum(failures), pooled, elapsed


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def started_servers(model_dir: Path, workdir: Path, broker: str, dead_broker: str,
                    workers: int) -> Iterator[dict[str, tuple[int, int]]]:
    microservice = str(Path(sys.executable).parent / "seldon-core-microservice")
    with contextlib.ExitStack() as stack:
        ports = {}
        for mode in MODES:
            folder = workdir / mode.replace(" ", "-")
            folder.mkdir()
            kafka = dead_broker if mode == "broker down" else broker
            env, http_port, metrics_port = server_env(model_dir, folder, mode, kafka, workers)
            stack.enter_context(run_service(f"model-server-{mode}", [microservice, "model_server.server.ModelServer"],
                                            url=f"http://{LOCALHOST}:{http_port}/health/ping", env=env, cwd=folder,
                                            timeout=240, log_dir=folder))
            ports[mode] = (http_port, metrics_port)
        yield ports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        workdir = Path(tmp)
        rows = save_model(workdir / "model")
        with run_kafka_broker("memory://tansu/", log_dir=workdir / "tansu") as broker:
            broker.create_topic(TOPIC, partitions=2)
            dead = f"{LOCALHOST}:{free_port()}"
            with started_servers(workdir / "model", workdir, broker.bootstrap_servers, dead, args.workers) as ports:
                for mode in MODES:  # warm-up: imports, first predictions, producer connection
                    load_round(ports[mode][0], rows, args.concurrency, 2.0)
                results = {mode: {"ok": 0, "failed": 0, "latencies": [], "elapsed": 0.0} for mode in MODES}
                for _ in range(args.rounds):
                    for mode in MODES:
                        ok, failed, latencies, elapsed = load_round(ports[mode][0], rows, args.concurrency,
                                                                    args.seconds)
                        r = results[mode]
                        r["ok"] += ok
                        r["failed"] += failed
                        r["latencies"] += latencies
                        r["elapsed"] += elapsed
                time.sleep(1.0)  # let the shipper ship the tail
                counters = {mode: scrape(ports[mode][1]) for mode in MODES}
        report(args, results, counters)


def report(args, results: dict, counters: dict) -> None:
    print(f"# serving.py — {datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average before the end {os.getloadavg()[0]:.2f}")
    print(f"load: {args.concurrency} keep-alive clients, one-row requests, {args.rounds} interleaved rounds × "
          f"{args.seconds:.0f} s per mode; {args.workers} gunicorn workers per server\n")
    print("| logging | requests/s | p50 ms | p99 ms | failed | records logged | records dropped |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for mode in MODES:
        r, c = results[mode], counters[mode]
        rps = r["ok"] / r["elapsed"]
        p50, p99 = percentile(r["latencies"], 0.50) * 1000, percentile(r["latencies"], 0.99) * 1000
        summary[mode] = (rps, p50, p99)
        logged = c.get("mlops_model_server_inference_records_logged_total", 0.0)
        dropped = sum(v for k, v in c.items() if k.startswith("mlops_model_server_inference_records_dropped_total"))
        print(f"| {mode} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {r['failed']} | {logged:,.0f} | {dropped:,.0f} |")
    base = summary["off"]
    print()
    for mode in ("on", "broker down"):
        rps, _, p99 = summary[mode]
        print(f"{mode} vs off: throughput {100 * (rps / base[0] - 1):+.1f} %, p99 {p99 - base[2]:+.2f} ms")


if __name__ == "__main__":
    main()
