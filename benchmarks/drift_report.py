"""The summary of ``benchmarks/drift.py``: medians over interleaved rounds, the noise floor, verdicts.

The noise floor is the largest spread ((max - min) / median) between rounds of one variant or of one
per-round ratio. A ratio is called above or below a target, and two variants different, only when
every round says so by more than that floor; otherwise the summary says "inside the noise floor".
"""

from __future__ import annotations

import argparse
import statistics


def spread(values: list[float]) -> float:
    """(max - min) / median of repeated measurements: how far two rounds of one thing disagree."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else float("nan")


def judge(ratios: list[float], target: float, noise: float) -> str:
    """A ratio's verdict against ``target``: a side only if every round is on it by more than the noise."""
    if len(ratios) < 2 or noise != noise:
        return "one round: no noise floor, no verdict"
    if all(r >= target * (1 + noise) for r in ratios):
        return "met (every round above the target by more than the noise floor)"
    if all(r < target * (1 - noise) for r in ratios):
        return "NOT met (every round below the target by more than the noise floor)"
    return "inside the noise floor: no result"


def report(args: argparse.Namespace, n: int, produce_s: float, load_at_start: str, loads: list[str], load_end: str,
           runs: dict[str, list[dict]], paper: dict | None, lag: dict, cold: dict, decoding: dict, *,
           features: int, window: int, reference_rows: int) -> None:
    """Print the run's summary: medians, ranges, the noise floor and the verdicts it allows."""
    rates = {name: [run["rate"] for run in rs] for name, rs in runs.items()}
    ratio = {m: [a["rate"] / b["rate"] for a, b in zip(runs[m], runs["raw"], strict=True)] for m in ("ks", "cvm_online")}
    noise = max(spread(v) for v in [*rates.values(), *ratio.values()])
    med = {name: statistics.median(v) for name, v in rates.items()}
    print()
    print(f"load averages (1/5/15 min): {load_at_start} at start, {' / '.join(loads)} at each round's start, "
          f"{load_end} at the end")
    print(f"records: {n:,} x {features} numeric features, window {window}, 1 partition, ert {args.ert}; "
          f"produced at {n / produce_s:,.0f}/s; {args.rounds} interleaved rounds, order rotated")
    print("variant | records | records/s median | min-max | spread | per CPU second (median) | peak RSS MiB")
    labels = {"ks": "ours (ks)", "cvm_online": "ours (cvm_online)", "raw": "aiokafka alone (getmany, no decode)"}
    for name, rs in runs.items():
        print(f"{labels[name]} | {max(run['records'] for run in rs):,} | {med[name]:,.0f} | {min(rates[name]):,.0f}-{max(rates[name]):,.0f} | "
              f"{spread(rates[name]):.1%} | {statistics.median(run['cpu_rate'] for run in rs):,.0f} | "
              f"{max(run['peak_rss_mib'] for run in rs):.0f}")
    if paper:
        print(f"paper's detector (alibi-detect MMDDriftOnline ert 100 window 100, one record per call, gauge; "
              f"{paper['versions']}) | {paper['records']:,} | {paper['rate']:,.1f} | one round | | | "
              f"{paper['peak_rss_mib']:.0f}")
    print(f"noise floor: {noise:.1%} (the largest spread between rounds of one variant or of one ratio); a "
          "difference smaller than that is not reported as one")
    for m in ("ks", "cvm_online"):
        rs = runs[m]
        print(f"ours ({m}): {statistics.median(r['cpu_rate'] for r in rs):,.0f} records per CPU second of the "
              f"service (median; first to last commit); detector.score {statistics.median(r['scoring_ms'] for r in rs):.2f} "
              f"ms per window of {window}; windows drifted {rs[-1]['drifted']:.0f} of {n // window}")
        print(f"ratio ours ({m}) / aiokafka alone, per round: {', '.join(f'{x:.3f}' for x in ratio[m])} "
              f"(median {statistics.median(ratio[m]):.3f}); target >= 0.5: {judge(ratio[m], 0.5, noise)}")
        # What a shared core still shows: records per CPU second of each process.
        per_cpu = [a["cpu_rate"] / b["cpu_rate"] for a, b in zip(rs, runs["raw"], strict=True)]
        print(f"ratio ours ({m}) / aiokafka alone per CPU second, per round: "
              f"{', '.join(f'{x:.3f}' for x in per_cpu)} (median {statistics.median(per_cpu):.3f}, spread "
              f"{spread(per_cpu):.1%}); >= 0.5: {judge(per_cpu, 0.5, max(noise, spread(per_cpu)))}")
    cvm_ks = [a["rate"] / b["rate"] for a, b in zip(runs["cvm_online"], runs["ks"], strict=True)]
    differ = all(x > 1 + noise for x in cvm_ks) or all(x < 1 - noise for x in cvm_ks)
    print(f"ours (cvm_online) / ours (ks), per round: {', '.join(f'{x:.3f}' for x in cvm_ks)}: "
          + (f"differ (median {statistics.median(cvm_ks):.2f})" if differ else "inside the noise floor: no difference"))
    if paper:
        print(f"paper's detector: {paper['rate']:,.1f} records/s end to end, {paper['detector_rate']:,.1f}/s in "
              f"predict alone, fit at start {paper['fit_s']:.1f}s (not timed), {paper['drifts']} of "
              f"{paper['records']:,} records flagged")
        for m in ("ks", "cvm_online"):
            per_round = [run["rate"] / paper["rate"] for run in runs[m]]  # the paper's one round against each
            print(f"ratio ours ({m}) / paper's detector: {med[m] / paper['rate']:,.0f}x (per round "
                  f"{min(per_round):,.0f}-{max(per_round):,.0f}x); target >= 100x: {judge(per_round, 100, noise)}")
    else:
        print("paper's detector: not run (give --paper-python, see benchmarks/drift_paper.py)")
    print(f"lag at {lag['rate']:,.0f} records/s for {args.lag_seconds:.0f}s ({lag['records']:,} records in full windows): "
          f"p50 {lag['p50']:.3f}s, p99 {lag['p99']:.3f}s, max {lag['max']:.3f}s (target p99 < 2 s)")
    print(f"cold start cvm_online ({reference_rows} x {features}, window sizes {tuple(cold['window_sizes'])}, "
          f"ert {args.ert}, {cold['n_bootstraps']:,} bootstraps): fit {cold['fit_s']:.2f}s (peak RSS "
          f"{cold['peak_rss_mib']:.0f} MiB, {cold['rss_before_mib']:.0f} before the fit), artifacts.load "
          f"{cold['load_s'] * 1000:.1f}ms (median of 5, artifact {cold['artifact_kib']:.0f} KiB), "
          f"ratio {cold['fit_s'] / cold['load_s']:,.0f}x (target >= 50x)")
    print(f"peak RSS of the service: {max(r['peak_rss_mib'] for m in ('ks', 'cvm_online') for r in runs[m]):.0f} MiB "
          "(target < 400 MB)")
    print(f"decode_batch in-process, {decoding['records']:,} records: general path (orjson) "
          f"{decoding['general_us']:.2f} us/record, typed path (msgspec) {decoding['typed_us']:.2f} us/record, "
          f"ratio {decoding['speedup']:.2f}x")
