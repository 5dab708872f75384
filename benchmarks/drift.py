"""Benchmark: the drift detector service against a real Kafka broker (tansu), side by side in one run.

One broker, one data set (20 numeric features, standard normal, the same seed as the reference), one run:

1. **Throughput, ours.** N records (default 1,000,000) are produced to a one-partition topic first; then
   the real service (``python -m drift_detector``, pinned to CPU 0 with ``taskset``) consumes them with a
   fresh consumer group: getmany → ``decode_batch`` → windows of 1,000 → ``FittedDetector.score`` →
   Prometheus metrics → commit. Elapsed = from the service's "joined group" log line (its own clock,
   ms) to the moment the bench sees the group's committed offset reach N (polled every 0.1 s), so
   records/s = N / elapsed. Run once with a ``ks`` detector and once with a ``cvm_online`` detector.
   The same records are also read by bare aiokafka (getmany, no decoding) as the ceiling. Also
   reported, because the core may be shared: records per CPU second of the service (``/proc`` utime +
   stime, from the first commit the bench sees to the last) and the mean ``detector.score`` time per
   window (the service's ``mlops_drift_processing_seconds``).
2. **The paper's detector** (``benchmarks/drift_paper.py``, with ``--paper-python``: the python of a
   separate venv from ``benchmarks/requirements-paper.txt``, since TensorFlow is large) on the first
   ``--baseline-records`` of the same records, pinned to CPU 0 too: alibi-detect ``MMDDriftOnline``
   (ert 100, window 100, the first 300 reference rows), one message at a time, one ``predict`` per
   record, one gauge set, as the prototype's detector does (the per-row ``KSDrift`` straw man it
   replaced is gone).
3. **Lag.** The service (``ks``) on a fresh one-partition topic while the bench produces 10,000
   records/s for ``--lag-seconds``, each record stamped with ``time.time()`` when it is sent. The bench
   scrapes ``/metrics`` every 20 ms; a record's lag = the ``mlops_drift_last_window_timestamp_seconds``
   of the first scrape that shows its window evaluated − its stamp (windows are records i*1000 …
   i*1000+999 of the partition; a window exported between two scrapes gets the later window's
   timestamp, so the figure errs high). p50/p99/max over every record of every full window.
4. **Cold start.** ``detector.fit(..., method="cvm_online")`` on 5,000 × 20 reference rows (window 1000,
   so window sizes (20, 100); ``--ert``, default 10,000 as in the release spec; default bootstrap count
   unless ``--cvm-bootstraps``), in a fresh process pinned like the service, which reports the fit's
   seconds and peak RSS (``VmHWM``), vs ``artifacts.load`` of the persisted artifact (sha256 check
   included; median of 5). Both throughput runs use detectors with that ert.
5. **Peak RSS** (``VmHWM``) of the service process in each throughput run.
6. **Decoding, in-process**: ``decode_batch``'s general path (orjson) and its typed path (msgspec,
   what the service uses for all-numeric features) on 50,000 of the same records, alternating rounds.

**Rounds and noise floor.** The three throughput variants (``ks``, ``cvm_online``, bare aiokafka) run
``--rounds`` times (default 3), interleaved, the order rotated each round. The bench prints each
variant's median, range and spread ((max − min) / median) and each per-round ratio ours / aiokafka
alone; the noise floor is the largest of those spreads. A ratio is called above or below a target only
if every round is beyond it by more than the noise floor, and two variants differ only if every round
says so by more than the noise floor; otherwise the bench prints "inside the noise floor".

The machine is shared: the load averages (``/proc/loadavg``) at the start, at each round's start and
at the end are printed with the results; compare the variants of one run, which ran under the same load.

The broker and this process are pinned to CPU 1, the service and the baselines to CPU 0 (no pinning on
a single-CPU machine or without ``taskset``). Commit interval of the service: 0.2 s (default 1.0 s) so the
end of a run is seen promptly; everything else is the service's default.

    .venv/bin/python benchmarks/drift.py [--records 1000000] [--rounds 3] [--paper-python .venv-paper/bin/python]
        [--baseline-records 2000] [--lag-seconds 20] [--ert 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from drift_report import report

from machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = REPO / "components"
for _path in (REPO, REPO / "tests", COMPONENTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

MODEL = "bench-model"
ENVIRONMENT = "bench"
N_FEATURES = 20
WINDOW = 1000
REFERENCE_ROWS = 5000
DATA_SEED = 7
REFERENCE_SEED = 1
FEATURES = [{"name": f"f{i:02d}", "type": "numeric", "categories": None} for i in range(N_FEATURES)]
TASKSET = shutil.which("taskset")
PIN = TASKSET is not None and (os.cpu_count() or 1) >= 2
SERVICE_CPU, BENCH_CPU = "0", "1"
JOINED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO drift_detector\.consumer: joined group", re.M)


def pinned(cpu: str, args: list[str]) -> list[str]:
    return [TASKSET, "-c", cpu, *args] if PIN else args


# --- data -----------------------------------------------------------------------------------------


def reference() -> np.ndarray:
    return np.random.default_rng(REFERENCE_SEED).normal(size=(REFERENCE_ROWS, N_FEATURES))


def payload(index: int, features: list[float], timestamp: float) -> bytes:
    """One inference-log record, exactly what ``inference_log.encode`` writes (checked in main)."""
    return orjson.dumps({"schema_version": 1, "model": MODEL, "version": "1", "predictor": "main",
                         "request_id": f"{index:032x}", "timestamp": timestamp, "features": features,
                         "prediction": 0.5})


async def produce_bulk(bootstrap: str, topic: str, n: int) -> float:
    """Produce ``n`` records to partition 0 of ``topic`` in large batches; return the seconds it took."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_batch_size=512 * 1024,
                                max_request_size=2 * 1024 * 1024)
    await producer.start()
    started = time.perf_counter()
    rng = np.random.default_rng(DATA_SEED)
    try:
        sent = 0
        batch = producer.create_batch()
        while sent < n:
            m = min(20_000, n - sent)
            now = time.time()
            futures = []
            for i, features in enumerate(rng.normal(size=(m, N_FEATURES)).tolist()):
                value = payload(sent + i, features, now)
                if batch.append(key=None, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=0))
                    batch = producer.create_batch()
                    batch.append(key=None, value=value, timestamp=None)
            sent += m
            await asyncio.gather(*futures)
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()
    return time.perf_counter() - started


# --- the service ----------------------------------------------------------------------------------


def write_config(path: Path, method: str, artifact: Path, sha256: str, ert: int) -> Path:
    import yaml

    config = {"model": MODEL, "environment": ENVIRONMENT, "method": method, "p_value": 0.01,
              "correction": "bonferroni", "window": WINDOW, "ert": ert, "features": FEATURES,
              "predictors": [{"name": "main", "version": "1", "release_id": "bench",
                              "detector": {"uri": str(artifact), "sha256": sha256}}]}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.contextmanager
def drift_service(name: str, bootstrap: str, topic: str, config_file: Path, work: Path) -> Iterator[tuple[Any, int]]:
    from services import free_port, run_service

    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DRIFT_")}
    env.update({
        "PYTHONPATH": str(COMPONENTS), "DRIFT_MODEL": MODEL, "DRIFT_ENVIRONMENT": ENVIRONMENT,
        "DRIFT_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DRIFT_TOPIC": topic, "DRIFT_DEAD_LETTER_TOPIC": f"{topic}-dlq",
        "DRIFT_GROUP_ID": f"{topic}-{name}-{uuid.uuid4().hex[:8]}", "DRIFT_CONFIG_FILE": str(config_file),
        "DRIFT_HTTP_PORT": str(port), "DRIFT_HTTP_HOST": "127.0.0.1", "DRIFT_ARTIFACT_DIR": str(work / "artifacts"),
        "DRIFT_COMMIT_INTERVAL_SECONDS": "0.2",
    })
    args = pinned(SERVICE_CPU, [sys.executable, "-m", "drift_detector"])
    with run_service(f"drift-{name}", args, url=f"http://127.0.0.1:{port}/healthz", env=env, timeout=60,
                     log_dir=work / "logs") as process:
        process.group_id = env["DRIFT_GROUP_ID"]
        yield process, port


def joined_at(process: Any) -> float | None:
    match = JOINED.search(process.output(limit=10**7))
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if match else None


async def http_get(port: int, target: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, field: str) -> float:
    """``VmHWM``/``VmRSS`` of ``pid`` in MiB (0 when unavailable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def throughput_run(name: str, bootstrap: str, topic: str, n: int, config_file: Path, work: Path) -> dict:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    with drift_service(name, bootstrap, topic, config_file, work) as (process, port):
        probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=process.group_id, enable_auto_commit=False)
        await probe.start()
        tp = TopicPartition(topic, 0)
        deadline = time.monotonic() + 600
        first: tuple[int, float] | None = None  # (committed, service CPU seconds) at the first commit
        try:
            while (committed := await probe.committed(tp) or 0) < n:
                if process.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"service {name} stopped or timed out:\n{process.output()}")
                if first is None and committed > 0:
                    first = (committed, cpu_seconds(process.pid))
                await asyncio.sleep(0.1)
            committed_at = time.time()
            last_cpu = cpu_seconds(process.pid)
        finally:
            await probe.stop()
        _, text = await http_get(port, "/metrics")
        peak = proc_status(process.pid, "VmHWM")
        started = joined_at(process)
    if started is None:
        raise RuntimeError(f"no 'joined group' line in the output of service {name}")
    last_window = metric(text, "mlops_drift_last_window_timestamp_seconds")
    windows = metric(text, "mlops_drift_windows_evaluated_total")
    consumed = metric(text, "mlops_drift_records_consumed_total")
    assert windows == n // WINDOW and consumed == n, (windows, consumed)
    assert first is not None, "the first commit was never seen"
    scoring = metric(text, "mlops_drift_processing_seconds_sum") / metric(text, "mlops_drift_processing_seconds_count")
    return {"variant": f"ours ({name})", "records": n, "seconds": committed_at - started,
            "rate": n / (committed_at - started), "scored_rate": n / (last_window - started),
            "cpu_rate": (n - first[0]) / (last_cpu - first[1]), "scoring_ms": scoring * 1000,
            "drifted": metric(text, "mlops_drift_windows_drifted_total"), "peak_rss_mib": peak}


# --- baselines (run as pinned subprocesses of this script) ----------------------------------------


async def raw_worker(bootstrap: str, topic: str, n: int) -> dict:
    """Bare aiokafka, the ceiling: ``getmany`` of the service's batch size, no decoding."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    count, started, cpu = 0, None, 0.0
    try:
        while count < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if batch and started is None:
                started, cpu = time.perf_counter(), time.process_time()
            count += sum(len(records) for records in batch.values())
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        await consumer.stop()
    return {"records": count, "seconds": elapsed, "rate": count / elapsed, "cpu_rate": count / cpu,
            "peak_rss_mib": proc_status(os.getpid(), "VmHWM")}


def run_worker(bootstrap: str, topic: str, n: int) -> dict:
    import subprocess

    args = pinned(SERVICE_CPU, [sys.executable, __file__, "--worker", "raw", "--bootstrap", bootstrap,
                                "--topic", topic, "--records", str(n)])
    env = {**os.environ, "PYTHONPATH": str(COMPONENTS)}
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env, timeout=1800).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_paper(python: str, bootstrap: str, topic: str, n: int) -> dict:
    """The paper's detector (``drift_paper.py``) in its own venv, pinned like the service."""
    import subprocess

    args = pinned(SERVICE_CPU, [python, str(Path(__file__).with_name("drift_paper.py")), "--bootstrap", bootstrap,
                                "--topic", topic, "--records", str(n), "--reference-seed", str(REFERENCE_SEED),
                                "--reference-rows", str(REFERENCE_ROWS), "--features", str(N_FEATURES)])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env, timeout=1800).stdout
    return json.loads(out.strip().splitlines()[-1])


# --- lag ------------------------------------------------------------------------------------------


async def lag_run(bootstrap: str, topic: str, config_file: Path, work: Path, rate: int, seconds: float) -> dict:
    from aiokafka import AIOKafkaProducer

    total = int(rate * seconds)
    stamps = np.zeros(total)
    exported: dict[int, float] = {}
    with drift_service("lag", bootstrap, topic, config_file, work) as (process, port):
        deadline = time.monotonic() + 60
        while (await http_get(port, "/readyz"))[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the lag service never got ready:\n{process.output()}")
            await asyncio.sleep(0.05)
        done = asyncio.Event()

        async def scrape() -> None:
            seen = 0
            while True:
                _, text = await http_get(port, "/metrics")
                windows = int(metric(text, "mlops_drift_windows_evaluated_total") or 0)
                if windows > seen:
                    when = metric(text, "mlops_drift_last_window_timestamp_seconds")
                    for j in range(seen, windows):
                        exported[j] = when
                    seen = windows
                if done.is_set() and seen >= produced // WINDOW:
                    return
                await asyncio.sleep(0.02)

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=1)
        await producer.start()
        produced = 0
        scraper = asyncio.create_task(scrape())
        rng = np.random.default_rng(DATA_SEED + 1)
        futures = []
        try:
            started = time.perf_counter()
            while produced < total:
                due = min(total, int((time.perf_counter() - started) * rate) + 1)
                if due > produced:
                    for features in rng.normal(size=(due - produced, N_FEATURES)).tolist():
                        now = time.time()
                        futures.append(await producer.send(topic, payload(produced, features, now), partition=0))
                        stamps[produced] = now
                        produced += 1
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        done.set()
        await asyncio.wait_for(scraper, 30)
    full = produced // WINDOW * WINDOW
    lags = np.array([exported[i // WINDOW] for i in range(full)]) - stamps[:full]
    return {"records": full, "rate": produced / elapsed, "p50": float(np.percentile(lags, 50)),
            "p99": float(np.percentile(lags, 99)), "max": float(lags.max())}


# --- cold start -----------------------------------------------------------------------------------


def fit_worker(path: Path, ert: int, n_bootstraps: int | None) -> dict:
    """Fit the ``cvm_online`` detector and persist it; runs as a fresh process so its peak RSS is the fit's."""
    from drift_detector import artifacts
    from drift_detector.detector import FeatureSpec, fit

    specs = [FeatureSpec(f["name"], "numeric") for f in FEATURES]
    ref = reference()
    before = proc_status(os.getpid(), "VmHWM")
    started = time.perf_counter()
    detector = fit(ref, specs, "cvm_online", p_value=0.01, window=WINDOW, ert=ert, n_bootstraps=n_bootstraps,
                   seed=REFERENCE_SEED)
    fit_s = time.perf_counter() - started
    sha256 = artifacts.save(detector, path)
    return {"fit_s": fit_s, "n_bootstraps": detector.n_bootstraps, "window_sizes": list(detector.window_sizes),
            "sha256": sha256, "rss_before_mib": before, "peak_rss_mib": proc_status(os.getpid(), "VmHWM")}


def cold_start(work: Path, ert: int, n_bootstraps: int | None) -> tuple[dict, Path, str]:
    import subprocess

    from drift_detector import artifacts

    path = work / "cvm_online.npz"
    args = pinned(SERVICE_CPU, [sys.executable, __file__, "--worker", "fit", "--artifact", str(path),
                                "--ert", str(ert)]
                  + ([] if n_bootstraps is None else ["--cvm-bootstraps", str(n_bootstraps)]))
    env = {**os.environ, "PYTHONPATH": str(COMPONENTS)}
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env, timeout=3600).stdout
    cold = json.loads(out.strip().splitlines()[-1])
    loads = []
    for _ in range(5):
        started = time.perf_counter()
        loaded = artifacts.load(path, cold["sha256"])
        loads.append(time.perf_counter() - started)
    assert loaded.ert == ert and list(loaded.window_sizes) == cold["window_sizes"]
    cold.update(load_s=statistics.median(loads), artifact_kib=path.stat().st_size / 1024)
    return cold, path, cold["sha256"]


def decode_paths(n: int = 50_000, batch: int = 10_000, rounds: int = 5) -> dict:
    """``decode_batch``'s general path (orjson) against its typed path (msgspec) on the bench's records,
    in this process: batches of the service's ``getmany`` size, rounds alternating between the two
    paths, best round of each (CPU time). Checks that both return the same rows first."""
    import inference_log

    rng = np.random.default_rng(DATA_SEED)
    now = time.time()
    payloads = [payload(i, f, now) for i, f in enumerate(rng.normal(size=(n, N_FEATURES)).tolist())]
    paths = {"general": lambda chunk: inference_log.batch._decode_general(chunk, N_FEATURES, None),
             "typed": lambda chunk: inference_log.batch._decode_numeric_batch(chunk, N_FEATURES)}
    first = {name: path(payloads[:batch]) for name, path in paths.items()}
    assert first["general"].rows.tobytes() == first["typed"].rows.tobytes(), "the two paths disagree"
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(rounds):
        for name, path in paths.items():
            started = time.process_time()
            for i in range(0, n, batch):
                path(payloads[i:i + batch])
            best[name] = min(best[name], time.process_time() - started)
    return {"records": n, "general_us": best["general"] / n * 1e6, "typed_us": best["typed"] / n * 1e6,
            "speedup": best["general"] / best["typed"]}


def ks_artifact(work: Path) -> tuple[Path, str]:
    from drift_detector import artifacts
    from drift_detector.detector import FeatureSpec, fit

    detector = fit(reference(), [FeatureSpec(f["name"], "numeric") for f in FEATURES], "ks", p_value=0.01,
                   window=WINDOW)
    path = work / "ks.npz"
    return path, artifacts.save(detector, path)


def load_averages() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared; they say how busy it was)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# --- main -----------------------------------------------------------------------------------------


def check_payload() -> None:
    import inference_log

    record = inference_log.InferenceRecord(model=MODEL, version="1", predictor="main", request_id=f"{3:032x}",
                                           timestamp=1.5, features=[0.25] * N_FEATURES, prediction=0.5)
    assert inference_log.encode(record) == payload(3, [0.25] * N_FEATURES, 1.5), "payload differs from encode()"


@contextlib.contextmanager
def broker(work: Path) -> Iterator[Any]:
    from services import KafkaBroker, free_port, tansu_binary

    class PinnedBroker(KafkaBroker):
        def command(self) -> list[str]:
            return pinned(BENCH_CPU, super().command())

    kafka = PinnedBroker(free_port(), "memory://tansu/", {}, work / "logs", tansu_binary())
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


async def bench(args: argparse.Namespace, work: Path) -> None:
    n = -(-args.records // WINDOW) * WINDOW  # whole windows: a partial window is never committed
    check_payload()
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}, python "
          f"{platform.python_version()}, pinning {'service CPU 0, broker+bench CPU 1' if PIN else 'off'}",
          flush=True)
    load_at_start = load_averages()
    print(f"load averages at start: {load_at_start}", flush=True)
    print(f"cold start: fitting cvm_online on {REFERENCE_ROWS} x {N_FEATURES} at ert {args.ert} ...", flush=True)
    cold, cvm_path, cvm_sha = cold_start(work, args.ert, args.cvm_bootstraps)
    print(cold, flush=True)
    decoding = decode_paths()
    print("decode_batch paths:", decoding, flush=True)
    ks_path, ks_sha = ks_artifact(work)
    loads = []
    with broker(work) as kafka:
        bootstrap = kafka.bootstrap_servers
        kafka.create_topic("bench-log", partitions=1)
        kafka.create_topic("bench-lag", partitions=1)
        print(f"producing {n:,} records ...", flush=True)
        produce_s = await produce_bulk(bootstrap, "bench-log", n)
        print(f"produced in {produce_s:.1f}s ({n / produce_s:,.0f}/s)", flush=True)
        configs = {method: write_config(work / f"{method}.yaml", method, path, sha, args.ert)
                   for method, path, sha in (("ks", ks_path, ks_sha), ("cvm_online", cvm_path, cvm_sha))}
        runs: dict[str, list[dict]] = {"ks": [], "cvm_online": [], "raw": []}
        order = list(runs)
        for r in range(args.rounds):  # interleaved rounds, the order rotated: the noise floor
            loads.append(load_averages())
            for name in order[r % len(order):] + order[:r % len(order)]:
                if name == "raw":
                    result = run_worker(bootstrap, "bench-log", n)
                else:
                    result = await throughput_run(name, bootstrap, "bench-log", n, configs[name], work)
                result["round"] = r + 1
                runs[name].append(result)
                print(f"round {r + 1}: {name}: {result}", flush=True)
        paper = None
        if args.paper_python:
            paper = run_paper(args.paper_python, bootstrap, "bench-log", min(args.baseline_records, n))
            print("paper's detector:", paper, flush=True)
        lag = await lag_run(bootstrap, "bench-lag", configs["ks"], work, args.lag_rate, args.lag_seconds)
        print("lag:", lag, flush=True)
    report(args, n, produce_s, load_at_start, loads, load_averages(), runs, paper, lag, cold, decoding,
           features=N_FEATURES, window=WINDOW, reference_rows=REFERENCE_ROWS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the throughput runs")
    parser.add_argument("--baseline-records", type=int, default=2000, help="records for the paper's detector")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput variants")
    parser.add_argument("--paper-python", default=None,
                        help="python of the venv with benchmarks/requirements-paper.txt (the paper's detector)")
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument("--lag-rate", type=int, default=10_000, help="records/s produced in the lag run")
    parser.add_argument("--cvm-bootstraps", type=int, default=None,
                        help="bootstrap streams of the cvm_online fit (default: the fit's own default)")
    parser.add_argument("--ert", type=int, default=10_000,
                        help="expected run time (records) of the cvm_online detector (default: the spec's 10000)")
    parser.add_argument("--worker", choices=["raw", "fit"], help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--artifact", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "fit":
        print(json.dumps(fit_worker(args.artifact, args.ert, args.cvm_bootstraps)))
        return
    if args.worker:
        print(json.dumps(asyncio.run(raw_worker(args.bootstrap, args.topic, args.records))))
        return
    if PIN:
        os.sched_setaffinity(0, {int(BENCH_CPU)})
    work = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    try:
        asyncio.run(bench(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
