"""The scenario's stages, in order, each checking its real artefacts before the next starts."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import threading
import time
from typing import Any

from demo import clients, workspace
from demo.scenario import DATA_URI, DEPLOYMENT, ENV, MODEL, Demo
from demo.stack import PREFECT_AUTH

FEATURES = ["amount", "hour", "distance_km", "merchant_category", "card_present"]
FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def synthetic_rows(demo: Demo, rows: int, seed: int, shift: float) -> list[list[Any]]:
    """Feature rows of the example model's synthetic world, written by its own CLI from the retrain image
    (components/retrain/models/fraud_detector.py) so this process stays free of pandas and scikit-learn."""
    path = demo.output / "traffic" / f"rows-{seed}-{shift}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        retrain = demo.image("retrain", demo.output / "images" / "retrain")
        done = subprocess.run([retrain.python, "-m", "retrain.models.fraud_detector", "--uri", path.as_uri(),
                               "--rows", str(rows), "--seed", str(seed), "--shift", str(shift)],
                              env={**retrain.env, **demo.stack.client_env()}, cwd=retrain.workdir,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise workspace.WorkspaceError(f"generating traffic rows failed:\n{done.stdout}{done.stderr}")
    with path.open(newline="") as handle:
        return [[_typed(record[name]) for name in FEATURES] for record in csv.DictReader(handle)]


def _typed(text: str) -> int | float | str:
    """A CSV cell as the model's input takes it: an int, else a float, else the category's text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Traffic:
    """Clients sending rows to the predictors in their traffic shares, as the ingress gateway would."""

    def __init__(self, demo: Demo) -> None:
        self.demo, self.shift, self.sent, self.errors = demo, 0.0, 0, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # One pool of rows per world, generated before the first request and cycled.
        self.pools = {shift: synthetic_rows(self.demo, 20000, 1000, shift) for shift in (0.0, self.demo.settings.shift)}
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        settings, pools = self.demo.settings, self.pools
        position = 0
        while not self._stop.is_set():
            predictors = [p for p in self.demo.predictors() if not p.shadow]
            if not predictors:
                time.sleep(0.5)
                continue
            chosen = random.choices(predictors, weights=[max(p.traffic, 1) for p in predictors])[0]
            pool = pools[self.shift]
            batch = [pool[(position + i) % len(pool)] for i in range(settings.rows_per_request)]
            position += settings.rows_per_request
            try:
                clients.predict(chosen.url(), FEATURES, batch)
                self.sent += len(batch)
            except Exception:  # noqa: BLE001 - a rollout restarts servers; the count shows it
                self.errors += 1
            self._stop.wait(1.0 / settings.requests_per_second)


def publish_dataset(demo: Demo, shift: float, seed: int) -> str:
    """A data pipeline's new dataset version (file + sha256) at the deployment's data URI."""
    retrain = demo.image("retrain", demo.output / "images" / "retrain")
    done = subprocess.run([retrain.python, "-m", "retrain.models.fraud_detector", "--uri", DATA_URI, "--rows",
                           str(demo.settings.dataset_rows), "--seed", str(seed), "--shift", str(shift)],
                          env={**retrain.env, **demo.stack.client_env()}, cwd=retrain.workdir, capture_output=True,
                          text=True, timeout=300)
    if done.returncode != 0:
        raise workspace.WorkspaceError(f"publishing the dataset failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else DATA_URI


def run_flow(demo: Demo, prefect: clients.Prefect, reason: str, **parameters: Any) -> dict[str, Any]:
    """Start the retrain deployment and wait for its final state; returns the flow run."""
    run_id = prefect.run_deployment(DEPLOYMENT, {"model": MODEL, "reason": reason, **parameters})
    return wait_for_run(demo, prefect, run_id)


def wait_for_run(demo: Demo, prefect: clients.Prefect, run_id: str) -> dict[str, Any]:
    run = demo.wait(lambda: (r := prefect.flow_run(run_id))["state_type"] in FINAL_STATES and r,
                    f"flow run {run_id[:8]} to finish", timeout=600)
    if run["state_type"] != "COMPLETED":
        raise workspace.WorkspaceError(f"flow run {run['name']} ended {run['state_type']}: "
                                       f"{run['state']['message']} (log: Prefect UI, {demo.stack.logs}/prefect-worker.log)")
    return run


def new_branch(demo: Demo, before: set[str]) -> str:
    found = demo.wait(lambda: sorted(set(workspace.branches(demo.origin)) - before - {"main"}),
                      "the proposal branch on origin", timeout=60)
    return found[-1]


def drift_value(demo: Demo) -> float | None:
    """The last window's verdict as Prometheus has it (1 drift, 0 none, None before the first scrape)."""
    return clients.prometheus_value(demo.stack.prometheus_url, f'max(mlops_drift_detected{{model="{MODEL}"}})')


def drifted_share(demo: Demo) -> float | None:
    """What the drift rule measures: the share of the windows scored over its period that drifted."""
    period = demo.settings.alert_for
    return clients.prometheus_value(
        demo.stack.prometheus_url,
        f'sum(increase(mlops_drift_windows_drifted_total{{model="{MODEL}"}}[{period}])) / '
        f'sum(increase(mlops_drift_windows_evaluated_total{{model="{MODEL}"}}[{period}]))')


def alert_share(demo: Demo) -> float:
    """The drift rule's share threshold in the workspace's dev (its defaults, else the spec's default)."""
    import yaml

    from generator.spec.models import Alerts

    spec = yaml.safe_load((demo.workspace / "environments" / ENV / "environment.yaml").read_text())
    return float(((spec.get("defaults") or {}).get("alerts") or {}).get("drift_min_share", Alerts().drift_min_share))


class DriftSampler:
    """Samples the verdict and the drifted share every second for the report's picture."""

    def __init__(self, demo: Demo) -> None:
        self.demo, self._stop = demo, threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift-sampler", daemon=True)

    def __enter__(self) -> DriftSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                verdict, share = drift_value(self.demo), drifted_share(self.demo)
            except OSError:
                continue
            if verdict is not None:
                self.demo.drift_samples.append((time.monotonic() - self.demo.started, verdict,
                                                share if share == share else None))  # NaN: no window yet


def first_version(demo: Demo) -> None:
    """Train v1 on today's data, register it, propose it, merge it as a reviewer, serve it."""
    prefect = clients.Prefect(demo.stack.prefect_api, PREFECT_AUTH)
    publish_dataset(demo, shift=0.0, seed=7)
    demo.mark("dataset v1", f"published {DATA_URI} (+ .sha256)")
    before = set(workspace.branches(demo.origin))
    first = run_flow(demo, prefect, "first version")
    branch = new_branch(demo, before)
    demo.mark("first version", f"flow run {first['name']} COMPLETED; proposal {branch}")
    demo.facts["first_review"] = workspace.review_and_merge(demo.workspace, branch)
    changed = demo.sync()
    demo.mark("sync v1", f"{', '.join(changed)}; MLflow alias @{ENV} set")


def drift_alerts(demo: Demo) -> list[dict[str, Any]]:
    """Firing drift alerts of the model (the rule's ``mlops_alert: drift`` label), as Alertmanager holds them.

    The serving alerts (error rate, latency, no traffic) read the Seldon executor's metrics, and the
    executor is a sidecar Seldon's operator injects in a cluster: locally they have no data, and the
    no-traffic one fires. The demo and its report name only the drift alert."""
    return [a for a in clients.firing_alerts(demo.stack.alertmanager_url)
            if a["labels"].get("mlops_alert") == "drift" and a["labels"].get("model") == MODEL]


def change_by_review(demo: Demo, verb: str, *args: str) -> dict[str, Any]:
    """An ``mlops`` verb that commits on a branch (promote, rollback), pushed to origin and merged by the
    reviewer: the approval gate between environments. Returns the verb's JSON answer."""
    answer = json.loads(workspace.mlops(demo.workspace, verb, *args, "--output", "json").stdout)
    branch = answer["published"]["branch"]
    workspace.git(demo.workspace, "push", "--quiet", "origin", branch)
    answer["review"] = workspace.review_and_merge(demo.workspace, branch)
    return answer


def status(demo: Demo) -> dict[str, Any]:
    """``mlops status`` of the workspace, with MLflow's aliases checked."""
    done = workspace.mlops(demo.workspace, "status", "--mlflow-uri", demo.stack.mlflow_url, "--output", "json",
                           env={**os.environ, **demo.stack.client_env()},
                           check=False)
    return json.loads(done.stdout) if done.stdout.strip().startswith("{") else {"output": done.stdout + done.stderr}


def gate(demo: Demo, prefect: clients.Prefect) -> None:
    """The evaluation gate: a retrain on data without the shift cannot beat v1 by the margin, so the run
    ends rejected with its reason and nothing is registered or proposed.

    It runs while only v1 serves and clean traffic fills the detector's first windows: the stack's memory
    peaks while a flow run trains, and a training run beside v1's and v2's model servers would add a whole
    model server to that peak; its dataset is read before the shifted one replaces it."""
    publish_dataset(demo, shift=0.0, seed=99)
    before = set(workspace.branches(demo.origin))
    versions_before = clients.mlflow_versions(demo.stack.mlflow_url, MODEL)
    gated = run_flow(demo, prefect, "gate check")
    versions_after = clients.mlflow_versions(demo.stack.mlflow_url, MODEL)
    demo.facts["gate"] = {"run": gated["name"], "new_branches": sorted(set(workspace.branches(demo.origin)) - before),
                          "versions_before": len(versions_before), "versions_after": len(versions_after),
                          "state": gated["state"]["name"], "message": gated["state"].get("message")}
    demo.mark("gate", f"flow run {gated['name']} ({gated['state'].get('message') or gated['state']['name']}): "
                      f"{len(versions_after) - len(versions_before)} new versions, new branches "
                      f"{demo.facts['gate']['new_branches'] or 'none'}")


def run(demo: Demo) -> dict[str, Any]:
    """The scenario; returns the facts the report and the tests read."""
    prefect = clients.Prefect(demo.stack.prefect_api, PREFECT_AUTH)
    facts = demo.facts

    first_version(demo)

    # 2. Normal traffic (the gate is checked meanwhile), then shifted traffic; a new labelled dataset
    # reflecting the shift is published.
    facts["alert_share"] = alert_share(demo)
    traffic = Traffic(demo)
    traffic.start()
    sampler = DriftSampler(demo).__enter__()
    try:
        gate(demo, prefect)
        evaluated = f'sum(mlops_drift_windows_evaluated_total{{model="{MODEL}"}})'
        demo.wait(lambda: (clients.prometheus_value(demo.stack.prometheus_url, evaluated) or 0)
                  >= demo.settings.normal_windows, f"{demo.settings.normal_windows} clean windows scored by the drift detector")
        facts["clean_drifted_windows"] = clients.prometheus_value(
            demo.stack.prometheus_url, f'sum(mlops_drift_windows_drifted_total{{model="{MODEL}"}})') or 0.0
        facts["clean_alerts"] = len(drift_alerts(demo))
        demo.mark("normal traffic", f"{traffic.sent} records served; {facts['clean_drifted_windows']:.0f} of "
                                    f"{clients.prometheus_value(demo.stack.prometheus_url, evaluated):.0f} windows "
                                    f"drifted, {facts['clean_alerts']} drift alerts")
        traffic.shift = demo.settings.shift
        facts["drift_onset"] = time.monotonic() - demo.started
        demo.mark("shift", f"traffic shifted (shift={demo.settings.shift}) on amount, distance_km, merchant_category")
        publish_dataset(demo, shift=demo.settings.shift, seed=11)
        demo.mark("dataset v2", "a labelled dataset reflecting the shift is published at the same URI")
        runs_before = {r["id"] for r in prefect.flow_runs(DEPLOYMENT)}
        demo.wait(lambda: drift_value(demo) == 1.0, "the detector's drift verdict (mlops_drift_detected=1)")
        facts["drift_detected"] = time.monotonic() - demo.started
        demo.mark("drift detected", "mlops_drift_detected=1 scraped by Prometheus")
        alert = demo.wait(lambda: drift_alerts(demo), "the drift alert in Alertmanager")
        facts["alert_fired"] = time.monotonic() - demo.started
        facts["alert"] = alert[0]["labels"]
        demo.mark("alert", f"'{alert[0]['labels'].get('alertname')}' firing in Alertmanager "
                           f"(predictor {alert[0]['labels'].get('predictor')})")
        before = set(workspace.branches(demo.origin))
        started = demo.wait(lambda: [r for r in prefect.flow_runs(DEPLOYMENT) if r["id"] not in runs_before],
                            "the trigger's flow run")[0]
        facts["flow_started"] = time.monotonic() - demo.started
        demo.mark("trigger", f"flow run {started['name']} created by the retrain trigger")
        finished = wait_for_run(demo, prefect, started["id"])
        branch = new_branch(demo, before)
        facts["proposal_pushed"] = time.monotonic() - demo.started
        demo.mark("proposal", f"flow run {finished['name']} COMPLETED; branch {branch} pushed")
        facts["review"] = workspace.review_and_merge(demo.workspace, branch)
        changed = demo.sync()
        demo.mark("sync v2", f"{', '.join(changed)}")
        canary = [p for p in demo.predictors() if p.predictor != "main"]
        answer = clients.predict(canary[0].url(), FEATURES, synthetic_rows(demo, 3, 5, 1.0)[:3]) if canary else None
        facts["canary"] = {"predictor": canary[0].predictor if canary else None, "traffic": canary[0].traffic
                           if canary else None, "answer": answer}
        demo.mark("canary", f"{canary[0].predictor} serves {canary[0].traffic} % and answers" if canary else "no canary")
    finally:
        sampler.__exit__()
        traffic.stop()
        facts["traffic"] = {"records": traffic.sent, "errors": traffic.errors}

    facts["versions"] = clients.mlflow_versions(demo.stack.mlflow_url, MODEL)
    demo.mark("registry", "; ".join(f"v{v['version']}: {v['decision']} ({', '.join(v['datasets']) or 'no dataset'})"
                                    for v in facts["versions"]))

    # 3. Promote dev → staging through review, read the status, roll staging back through review.
    promoted = change_by_review(demo, "promote", MODEL, "--from", ENV, "--to", "staging")
    facts["promote"] = promoted
    demo.mark("promote", f"dev → staging: v{promoted['release']['version']} (release {promoted['release']['release_id']}) "
                         f"on {promoted['published']['branch']}, reviewed and merged")
    facts["status"] = status(demo)
    rolled = change_by_review(demo, "rollback", MODEL, "--env", "staging")
    facts["rollback"] = rolled
    facts["status_after_rollback"] = status(demo)
    demo.mark("rollback", f"staging back to release {rolled.get('release', {}).get('release_id')} "
                          f"on {rolled['published']['branch']}, reviewed and merged")

    return facts
