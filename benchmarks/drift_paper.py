"""The paper's drift detector, as a baseline for ``benchmarks/drift.py`` (run in its own venv).

What the prototype's detector does (``shared/reference/peers.md``, section 1.4): at start,
``alibi_detect.cd.MMDDriftOnline(x_ref, ert=100, window_size=100)`` on the first 300 reference rows;
then one Kafka message at a time: parse it, ``predict`` on that one record with
``return_test_stat=True``, set one unlabelled Prometheus gauge to the test statistic. Here: the same
detector and loop on the bench's records (``x_ref`` = the first 300 rows of the bench's reference, the
same law as the records), aiokafka instead of confluent-kafka (one message per iteration either way),
and alibi-detect's TensorFlow backend instead of PyTorch (the PyTorch wheel the package index serves
pulls the CUDA libraries, several GB). The fit (``MMDDriftOnline`` configures its thresholds by
simulation at start) is reported but not timed into the rate, which favours the baseline.

Its pins conflict with nothing in the dev venv, but TensorFlow is large, so it lives in its own venv::

    python3.12 -m venv .venv-paper
    .venv-paper/bin/pip install -r benchmarks/requirements-paper.txt

``drift.py --paper-python .venv-paper/bin/python`` runs this file pinned like the service and reads
the JSON line it prints last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np


def peak_rss_mib() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run(bootstrap: str, topic: str, n: int, seed: int, rows: int, features: int) -> dict:
    import alibi_detect
    import tensorflow as tf
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from alibi_detect.cd import MMDDriftOnline
    from prometheus_client import CollectorRegistry, Gauge

    x_ref = np.random.default_rng(seed).normal(size=(rows, features))[:300].astype(np.float32)
    started = time.perf_counter()
    detector = MMDDriftOnline(x_ref, ert=100, window_size=100, backend="tensorflow", verbose=False)
    fit_s = time.perf_counter() - started
    gauge = Gauge("drift_value", "the paper's unlabelled gauge", registry=CollectorRegistry())
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    count, begun, in_detector, drifts = 0, None, 0.0, 0
    try:
        async for message in consumer:
            if begun is None:
                begun = time.perf_counter()
            x = np.asarray(json.loads(message.value)["features"], dtype=np.float32)
            t0 = time.perf_counter()
            out = detector.predict(x, return_test_stat=True)
            in_detector += time.perf_counter() - t0
            gauge.set(out["data"]["test_stat"])
            drifts += int(out["data"]["is_drift"])
            count += 1
            if count >= n:
                break
        elapsed = time.perf_counter() - begun
    finally:
        await consumer.stop()
    return {"records": count, "seconds": elapsed, "rate": count / elapsed, "detector_rate": count / in_detector,
            "fit_s": fit_s, "drifts": drifts, "peak_rss_mib": peak_rss_mib(),
            "versions": f"alibi-detect {alibi_detect.__version__}, tensorflow {tf.__version__}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--reference-seed", type=int, required=True)
    parser.add_argument("--reference-rows", type=int, required=True)
    parser.add_argument("--features", type=int, required=True)
    args = parser.parse_args()
    result = asyncio.run(run(args.bootstrap, args.topic, args.records, args.reference_seed, args.reference_rows,
                             args.features))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
