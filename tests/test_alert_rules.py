"""The rendered Grafana alert rules really fire: ``promtool test rules`` for every model of every environment.

Each model's rules are rendered in memory from the real specs and templates, translated by
:mod:`generator.render.promrules` into the Prometheus rules Grafana's query -> reduce -> threshold pipeline is
equivalent to, and unit-tested with promtool on synthetic series shaped like the real ones:

* drift detector series are taken from the detector's own metrics class
  (``components/drift_detector/metrics.py``), created the way the service creates them, plus the
  target labels Prometheus adds when it scrapes them through the rendered ServiceMonitor and Service;
* Seldon executor series carry the executor's labels and the target labels of the Seldon PodMonitor in
  ``apps/kube-prometheus-stack/values.yaml``.

Every rule is checked both ways: a condition that lasts ``for`` fires, with the labels the retrain
trigger and people rely on (derived from the spec, not copied from the rendered file); healthy series,
another model's or another namespace's series, and a condition shorter than ``for`` fire nothing.
Timings and thresholds come from the model spec, so a rendered unit or duration that disagrees with
the spec fails too.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from drift_detector.metrics import DriftMetrics
from prometheus_client import CollectorRegistry

from generator.render import promrules
from generator.render.renderer import Renderer
from generator.spec.errors import RenderError
from generator.spec.layout import RepoLayout
from generator.spec.loader import load_environment
from generator.spec.rules import parse_duration_seconds
from helpers import REPO
from services import service_unavailable

LAYOUT = RepoLayout(REPO)
CASES = [(env, path.stem) for env in LAYOUT.existing_environments()
         for path in sorted(LAYOUT.models_dir(env).glob("*.yaml"))]
RULE_KEYS = ("drift", "errors", "latency", "traffic", "detector")
"""Every rule the template renders has a scenario here; a new rule fails test_every_rendered_rule_is_tested."""

# Seldon Core v1 executor request metrics (executor/api/metric, v1.17.1): a histogram in seconds with
# Prometheus' default buckets, labelled per SeldonDeployment and predictor.
EXECUTOR_METRIC = "seldon_api_executor_server_requests_seconds"
EXECUTOR_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
EXECUTOR_CONTAINER = "seldon-container-engine"
FAKE_POD_SUFFIX = "-5d8f7c9b6d-x2x4z"


@functools.cache
def _environment(env: str):
    return load_environment(LAYOUT, env)


@dataclass(frozen=True)
class ModelCase:
    """One model in one environment: its loaded spec and its rendered documents by file name."""

    env_name: str
    loaded_env: object
    spec: object
    files: dict[str, dict]

    @property
    def grafana_rules(self) -> dict:
        configmap = self.files["grafana-alerts-configmap.yaml"]
        (text,) = configmap["data"].values()
        return yaml.safe_load(text)

    @property
    def drift_config(self) -> dict:
        return yaml.safe_load(self.files["drift-detector-configmap.yaml"]["data"]["config.yaml"])

    def grafana_rule(self, key: str) -> dict:
        (rule,) = [r for g in self.grafana_rules["groups"] for r in g["rules"] if r["labels"]["mlops_alert"] == key]
        return rule

    @property
    def interval(self) -> int:
        return parse_duration_seconds(self.grafana_rules["groups"][0]["interval"])

    def rule_labels(self, key: str) -> dict[str, str]:
        """The labels every alert instance of rule ``key`` must carry, derived from the spec."""
        spec, env = self.spec, self.loaded_env.env
        return {"mlops_alert": key, "model": spec.model, "env": env.name, "team": spec.owner,
                "severity": spec.alerts.severity, "grafana_folder": env.grafana.folder,
                "retrain": "true" if key == "drift" and spec.retrain.on_drift else "false"}


@functools.cache
def model_case(env: str, model: str) -> ModelCase:
    loaded = _environment(env)
    (entry,) = [m for m in loaded.models if m.spec.model == model]
    files = Renderer(LAYOUT).render_model(loaded, entry)
    return ModelCase(env, loaded, entry.spec, {Path(f.path).name: f.document for f in files})


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        service_unavailable("promtool is not installed (Debian/Ubuntu: apt-get install prometheus)")
    return found


# --- synthetic series ---------------------------------------------------------------------------


def series(name: str, labels: dict[str, str]) -> str:
    """A series in promtool's input notation, ``name{a="b", ...}``."""
    escaped = (f'{key}="{value}"'.replace("\\", "\\\\").replace("\n", "\\n")
               for key, value in sorted(labels.items()))
    return f"{name}{{{', '.join(escaped)}}}"


def drift_target_labels(case: ModelCase) -> dict[str, str]:
    """Labels Prometheus (operator) adds to the detector's series, scraped through the rendered ServiceMonitor."""
    monitor, service = case.files["drift-detector-servicemonitor.yaml"], case.files["drift-detector-service.yaml"]
    deployment = case.files["drift-detector-deployment.yaml"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items(), "the ServiceMonitor does not select the Service"
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    endpoint = monitor["spec"]["endpoints"][0]["port"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    name = service["metadata"]["name"]
    return {"namespace": service["metadata"]["namespace"], "service": name, "job": name, "endpoint": endpoint,
            "pod": deployment["metadata"]["name"] + FAKE_POD_SUFFIX, "container": container["name"],
            "instance": f"10.0.3.17:{port['port']}"}


def drift_series(case: ModelCase, rule_expr: str, model: str | None = None) -> list[tuple[str, dict[str, str]]]:
    """The detector's series that ``rule_expr`` queries, one per predictor, as the service creates them.

    The service declares every predictor of its config at start (metrics.py ``declare_predictor``);
    the series the rule reads are found by name in the rendered expression, so renaming a metric on
    either side breaks this test instead of silently breaking the alert.
    """
    config = case.drift_config
    metrics = DriftMetrics(model or config["model"], CollectorRegistry())
    for predictor in config["predictors"]:
        metrics.declare_predictor(predictor["version"], predictor["name"], [f["name"] for f in config["features"]])
    samples = [(s.name, dict(s.labels)) for family in metrics.registry.collect() for s in family.samples
               if re.search(rf"\b{re.escape(s.name)}\b", rule_expr)]
    assert samples, f"the drift rule queries no series the drift detector exports: {rule_expr}"
    return samples


def podmonitor_target_labels(case: ModelCase) -> dict[str, str]:
    """Labels the Seldon PodMonitor of kube-prometheus-stack adds to executor series."""
    values = yaml.safe_load((REPO / "apps/kube-prometheus-stack/values.yaml").read_text())
    (monitor,) = [m for m in values["prometheus"]["additionalPodMonitors"] if m["name"] == "seldon-executor"]
    namespace = case.files["seldondeployment.yaml"]["metadata"]["namespace"]
    # The operator names the job <PodMonitor namespace>/<PodMonitor name>; the chart creates it in its own.
    monitor_namespace = values.get("namespaceOverride", "monitoring")
    return {"namespace": namespace, "pod": f"{case.spec.model}-main-0-model{FAKE_POD_SUFFIX}",
            "container": EXECUTOR_CONTAINER, "endpoint": monitor["podMetricsEndpoints"][0]["port"],
            "job": f"{monitor_namespace}/{monitor['name']}", "instance": "10.0.4.21:8000"}


def executor_labels(case: ModelCase, predictor: str, code: str) -> dict[str, str]:
    sdep = case.files["seldondeployment.yaml"]
    return {**podmonitor_target_labels(case), "deployment_name": sdep["metadata"]["name"],
            "predictor_name": predictor, "service": "predictions", "method": "POST", "code": code}


def predictor_names(case: ModelCase) -> list[str]:
    return [p["name"] for p in case.files["seldondeployment.yaml"]["spec"]["predictors"]]


# --- promtool -----------------------------------------------------------------------------------


def run_promtool(promtool: str, tmp_path: Path, case: ModelCase, tests: list[dict], annotations: bool = True) -> None:
    """Write the translated rules and ``tests``, check the rules and run the unit tests; fail with promtool's report.

    promtool compares annotations exactly, and an annotation printing ``$value`` shows the last bits of
    Prometheus' float arithmetic. Scenarios whose value is not exact run with ``annotations=False``:
    only their labels are compared; the annotations are checked by scenarios with exact values.
    """
    rules = promrules.prometheus_rules(case.grafana_rules, f"{case.env_name}/{case.spec.model}")
    if not annotations:
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    interval = f"{case.interval}s"
    document = {"rule_files": ["rules.yaml"], "evaluation_interval": interval,
                "tests": [{"interval": interval, **test} for test in tests]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    for command in (["check", "rules", "rules.yaml"], ["test", "rules", "tests.yaml"]):
        result = subprocess.run([promtool, *command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (f"promtool {' '.join(command)} failed for {case.env_name}/{case.spec.model}:\n"
                                        f"{result.stdout}{result.stderr}\nrules:\n{(tmp_path / 'rules.yaml').read_text()}")


def alert_test(title: str, at_seconds: int, alerts: list[dict]) -> dict:
    return {"eval_time": f"{at_seconds}s", "alertname": title, "exp_alerts": alerts}


def steps(seconds: int, interval: int) -> int:
    return math.ceil(seconds / interval)


def go_float(value: float) -> str:
    """How Go's text/template prints a float64 (``$value`` in an annotation): shortest repr, no ``.0``."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)


# --- the rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restart:
    """The drift detector stops at step ``at`` and is back ``gap`` steps later: its counters start again
    from 0 (declared at start, scraped once), in the same series (a container restart) or, with
    ``new_pod``, in a new pod's series (a rollout). The windows it would have scored meanwhile wait in
    Kafka and are scored in the step after (at-least-once), none is lost or invented."""

    at: int
    gap: int = 2
    new_pod: bool = False

    @property
    def back(self) -> int:
        return self.at + self.gap


def drift_windows_input(case: ModelCase, expr: str, evaluated: list[int], drifted: list[int],
                        restart: Restart | None = None, decoys: bool = False) -> list[dict]:
    """The detector's window counters: each predictor scores ``evaluated[s]`` windows in step ``s``;
    ``drifted[s]`` of them drift on the last predictor (the candidate, when there is one), none elsewhere.
    With ``decoys``, the same model in another namespace and another model here drift in every window."""
    target = drift_target_labels(case)
    detected = drift_series(case, expr)
    assert {name for name, _ in detected} == {"mlops_drift_windows_evaluated_total",
                                               "mlops_drift_windows_drifted_total"}, detected
    drifting = case.drift_config["predictors"][-1]["name"]
    total = len(evaluated)

    def cumulative(increments: list[int], alive: range) -> list[str]:
        out, count = [], 0
        for step, n in enumerate(increments):
            count += n if step in alive else 0
            out.append(str(count) if step in alive else "_")
        return out

    result = []
    for name, labels in detected:
        increments = list(evaluated)
        if "drifted" in name:
            increments = list(drifted) if labels["predictor"] == drifting else [0] * total
        if restart is None:
            result.append({"series": series(name, {**labels, **target}),
                           "values": " ".join(cumulative(increments, range(total)))})
            continue
        assert restart.back + 1 < total
        waiting = sum(increments[restart.at:restart.back + 1])
        increments[restart.at:restart.back + 1] = [0] * (restart.back + 1 - restart.at)
        increments[restart.back + 1] += waiting
        before, after = cumulative(increments, range(restart.at)), cumulative(increments, range(restart.back, total))
        if restart.new_pod:
            moved = {**target, "pod": target["pod"].rsplit("-", 1)[0] + "-r3s7x", "instance": "10.0.3.18:8080"}
            result += [{"series": series(name, {**labels, **target}), "values": " ".join(before)},
                       {"series": series(name, {**labels, **moved}), "values": " ".join(after)}]
        else:
            result.append({"series": series(name, {**labels, **target}),
                           "values": " ".join(before[:restart.back] + after[restart.back:])})
    if decoys:
        everything = " ".join(cumulative(evaluated, range(total)))
        for name, labels in detected:
            result.append({"series": series(name, {**labels, **target, "namespace": "models-elsewhere"}),
                           "values": everything})
        for name, labels in drift_series(case, expr, model="some-other-model"):
            result.append({"series": series(name, {**labels, **target}), "values": everything})
    return result


def windows_in_range(evaluated: list[int], at: int, span: int) -> int:
    """Windows ``increase(...[drift_for])`` counts when evaluated at step ``at``: those of steps (at - span, at]."""
    return sum(evaluated[max(0, at - span + 1):at + 1])


def drift_case(env: str, model: str) -> tuple[ModelCase, str, str, int, int]:
    """The case, the drift rule's query and title, the evaluation step and drift_for in steps."""
    case = model_case(env, model)
    rule = case.grafana_rule("drift")
    step = case.interval
    return (case, rule["data"][0]["model"]["expr"], rule["title"], step,
            steps(parse_duration_seconds(case.spec.alerts.drift_for), step))


def drift_labels(case: ModelCase) -> dict[str, str]:
    predictor = case.drift_config["predictors"][-1]
    return {**case.rule_labels("drift"), "predictor": predictor["name"], "version": predictor["version"]}


@pytest.mark.parametrize(("env", "model"), CASES)
def test_drift_alert_needs_evidence_at_low_traffic(promtool, tmp_path, env, model):
    """Few windows per drift_for (at 1 record/s and window 1000, one every 16 min): one false-positive
    window never fires, with or without a detector restart; drift in every window fires once drift_for
    holds drift_min_windows of them, and keeps firing across a restart."""
    case, expr, title, step, span = drift_case(env, model)
    alerts = case.spec.alerts
    least, share = alerts.drift_min_windows, alerts.drift_min_share
    # The spec's promise that one false positive cannot alert (true of the defaults, 3 and 0.5).
    assert least >= 2 and share > 1 / least, "with these settings one drifted window may alert"
    total = 3 * span + 12
    never = [alert_test(title, t * step, []) for t in range(0, total, max(1, span // 3))]

    # Sparse: windows further apart than drift_for, so no range ever holds more than one.
    sparse = [1 if s % (span + 1) == 0 else 0 for s in range(total)]
    assert max(windows_in_range(sparse, t, span) for t in range(total)) == 1
    # Few: the least traffic at which every drift_for holds drift_min_windows windows.
    gap = max(1, span // least)
    per = max(1, math.ceil(least / (span // gap)))
    few = [per if s % gap == 0 else 0 for s in range(total)]
    assert min(windows_in_range(few, t, span) for t in range(span, total)) >= least
    onset = next(s for s in range(span + 2, total) if few[s])  # drift starts with a window
    drifting = [n if s >= onset else 0 for s, n in enumerate(few)]
    fires_at = onset + span  # every window in drift_for drifted: the share is exactly 1
    restart = Restart(at=fires_at + 2)
    assert restart.back + 1 + span < total
    one_sparse = [1 if s == span + 1 else 0 for s in range(total)]
    one_few = [1 if s == onset else 0 for s in range(total)]

    description = (f"Predictor {drift_labels(case)['predictor']} (version {drift_labels(case)['version']}) drifted "
                   f"in 100% of its windows over the last {alerts.drift_for} (alerts from {share * 100:g}% of at "
                   f"least {least} windows).")
    # Every window drifted: the share is exactly 1 before, during and after a restart.
    firing = [{"exp_labels": drift_labels(case), "exp_annotations": {
        "summary": f"Drift detected on {model} in {env}", "description": description}}]
    run_promtool(promtool, tmp_path, case, [
        {"name": "sparse: one drifted window fires nothing",
         "input_series": drift_windows_input(case, expr, sparse, one_sparse), "alert_rule_test": never},
        {"name": "sparse: too few windows fire nothing, even when each of them drifted",
         "input_series": drift_windows_input(case, expr, sparse, sparse), "alert_rule_test": never},
        {"name": "few: one drifted window fires nothing",
         "input_series": drift_windows_input(case, expr, few, one_few), "alert_rule_test": never},
        {"name": "few: one drifted window and a restart fire nothing",
         "input_series": drift_windows_input(case, expr, few, one_few, restart=Restart(at=onset + 1)),
         "alert_rule_test": never},
        {"name": "few: drift in every window fires once drift_for holds drift_min_windows of them",
         "input_series": drift_windows_input(case, expr, few, drifting, decoys=True),
         "alert_rule_test": [
             alert_test(title, (onset - 1) * step, []), alert_test(title, fires_at * step, firing)]},
        {"name": "few: a restart keeps the evidence and the alert",
         "input_series": drift_windows_input(case, expr, few, drifting, restart=restart),
         "alert_rule_test": [alert_test(title, t * step, firing)
                             for t in (fires_at, restart.back + 1, restart.back + 1 + span)]},
        {"name": "few: a restart in a new pod keeps the evidence and the alert",
         "input_series": drift_windows_input(case, expr, few, drifting,
                                             restart=Restart(at=restart.at, new_pod=True)),
         "alert_rule_test": [alert_test(title, t * step, firing)
                             for t in (fires_at, restart.back + 1, restart.back + 1 + span)]},
    ])


@pytest.mark.parametrize(("env", "model"), CASES)
def test_drift_alert_fires_on_the_share_of_drifted_windows_at_high_traffic(promtool, tmp_path, env, model):
    """Many windows per evaluation: drift in drift_min_share of the windows over drift_for fires (for the
    drifting predictor only, not for another model's or namespace's), one drifted window fewer per step
    does not, one drifted window does not, and a restart (a counter reset in the same series, or a new
    pod's series) neither loses the evidence nor invents any."""
    case, expr, title, step, span = drift_case(env, model)
    per_step = 20
    enough = math.ceil(case.spec.alerts.drift_min_share * per_step)  # drifted windows per step, just enough
    assert (enough - 1) / per_step < case.spec.alerts.drift_min_share <= enough / per_step
    total, onset = 3 * span + 12, span + 2
    fires_at = onset + span  # from here drift_for holds only drifting steps
    windows = [per_step] * total

    def drifted(per: int) -> list[int]:
        return [per if s >= onset else 0 for s in range(total)]

    one = [1 if s == onset else 0 for s in range(total)]
    never = [alert_test(title, t * step, []) for t in range(0, total, max(1, span // 3))]
    firing = [{"exp_labels": drift_labels(case)}]
    restart = Restart(at=fires_at + 2)
    across = [alert_test(title, t * step, firing)
              for t in (fires_at, restart.at, restart.back, restart.back + 1, restart.back + 1 + span)]
    run_promtool(promtool, tmp_path, case, [
        {"name": "drift_min_share of the windows over drift_for fires",
         "input_series": drift_windows_input(case, expr, windows, drifted(enough), decoys=True),
         "alert_rule_test": [alert_test(title, (fires_at - span // 2 - 1) * step, []),
                             alert_test(title, fires_at * step, firing)]},
        {"name": "one drifted window fewer per step fires nothing",
         "input_series": drift_windows_input(case, expr, windows, drifted(enough - 1)), "alert_rule_test": never},
        {"name": "one drifted window fires nothing",
         "input_series": drift_windows_input(case, expr, windows, one), "alert_rule_test": never},
        {"name": "clean windows across a restart fire nothing",
         "input_series": drift_windows_input(case, expr, windows, [0] * total, restart=restart),
         "alert_rule_test": never},
        {"name": "a restart (counter reset) keeps the alert firing",
         "input_series": drift_windows_input(case, expr, windows, drifted(enough), restart=restart),
         "alert_rule_test": across},
        {"name": "a restart in a new pod keeps the alert firing",
         "input_series": drift_windows_input(case, expr, windows, drifted(enough),
                                             restart=Restart(at=restart.at, new_pod=True)),
         "alert_rule_test": across},
    ], annotations=False)


@pytest.mark.parametrize(("env", "model"), CASES)
def test_error_rate_alert_fires_per_predictor(promtool, tmp_path, env, model):
    case = model_case(env, model)
    rule, step = case.grafana_rule("errors"), case.interval
    hold = steps(parse_duration_seconds(case.spec.alerts.error_rate_for), step)
    total, per_step, limit = steps(600, step) + hold + 10, 1000, case.spec.alerts.error_rate
    predictors = predictor_names(case)

    def counters(share_of: dict[str, float]) -> list[dict]:
        result = []
        for predictor in predictors:
            errors = round(share_of.get(predictor, 0.0) * per_step)
            result += [{"series": series(f"{EXECUTOR_METRIC}_count", executor_labels(case, predictor, "200")),
                        "values": f"0+{per_step - errors}x{total}"},
                       {"series": series(f"{EXECUTOR_METRIC}_count", executor_labels(case, predictor, "500")),
                        "values": f"0+{errors}x{total}"}]
        return result

    at = (steps(300, step) + hold + 2) * step  # past the 5m rate window, then error_rate_for
    first, last = predictors[0], predictors[-1]
    labels = {**case.rule_labels("errors"), "predictor_name": first}
    above, below = min(1.0, 1.5 * limit), 0.5 * limit
    assert round(above * per_step) > limit * per_step > round(below * per_step)
    run_promtool(promtool, tmp_path, case, [
        {"name": "a predictor failing every request fires for it", "input_series": counters({first: 1.0}),
         "alert_rule_test": [alert_test(rule["title"], at, [{"exp_labels": labels, "exp_annotations": {
             "summary": f"Error rate of {model} in {env} is high",
             "description": f"Predictor {first} fails 1 of requests."}}])]},
    ])
    run_promtool(promtool, tmp_path, case, [
        {"name": "errors just above error_rate fire, just below do not",
         "input_series": counters({first: above} | ({last: below} if last != first else {})),
         "alert_rule_test": [alert_test(rule["title"], at, [{"exp_labels": labels}])]},
        {"name": "errors below error_rate fire nothing", "input_series": counters(dict.fromkeys(predictors, below)),
         "alert_rule_test": [alert_test(rule["title"], at, [])]},
        {"name": "no errors fire nothing", "input_series": counters({}),
         "alert_rule_test": [alert_test(rule["title"], at, [])]},
    ], annotations=False)


@pytest.mark.parametrize(("env", "model"), CASES)
def test_latency_alert_fires_on_the_executor_histogram(promtool, tmp_path, env, model):
    case = model_case(env, model)
    rule, step = case.grafana_rule("latency"), case.interval
    limit = case.spec.alerts.latency_p95_ms / 1000
    hold = steps(parse_duration_seconds(case.spec.alerts.latency_for), step)
    total, per_step = steps(300, step) + hold + 10, 100
    bounds = (0.0, *EXECUTOR_BUCKETS)
    # All requests in one bucket: p95 interpolates inside it, so a bucket entirely above the limit is
    # slow for sure and one entirely below it fast for sure. Past the last bucket p95 is its bound.
    slow = next((upper for lower, upper in zip(bounds, bounds[1:], strict=False) if lower >= limit), None)
    fast = max((upper for upper in EXECUTOR_BUCKETS if upper <= limit), default=None)
    assert slow is not None and fast is not None, f"latency_p95_ms {limit * 1000} is outside the executor's buckets"
    predictors = predictor_names(case)

    def histogram(observed_of: dict[str, float]) -> list[dict]:
        result = []
        for predictor in predictors:
            observed = observed_of.get(predictor, fast)
            labels = executor_labels(case, predictor, "200")
            for le, bound in [*((go_float(b), b) for b in EXECUTOR_BUCKETS), ("+Inf", math.inf)]:
                result.append({"series": series(f"{EXECUTOR_METRIC}_bucket", {**labels, "le": le}),
                               "values": f"0+{per_step if bound >= observed else 0}x{total}"})
        return result

    at = (steps(300, step) + hold + 2) * step
    labels = {**case.rule_labels("latency"), "predictor_name": predictors[-1]}
    run_promtool(promtool, tmp_path, case, [
        {"name": "requests slower than every bucket fire with p95 at the last bound",
         "input_series": histogram({predictors[-1]: math.inf}),
         "alert_rule_test": [alert_test(rule["title"], at, [{"exp_labels": labels, "exp_annotations": {
             "summary": f"p95 latency of {model} in {env} is high",
             "description": f"Predictor {predictors[-1]} p95 is {go_float(EXECUTOR_BUCKETS[-1] * 1000)} ms."}}])]},
    ])
    run_promtool(promtool, tmp_path, case, [
        {"name": "p95 just above the limit fires for that predictor", "input_series": histogram({predictors[-1]: slow}),
         "alert_rule_test": [alert_test(rule["title"], at, [{"exp_labels": labels}])]},
        {"name": "p95 below the limit fires nothing", "input_series": histogram({}),
         "alert_rule_test": [alert_test(rule["title"], at, [])]},
    ], annotations=False)


@pytest.mark.parametrize(("env", "model"), CASES)
def test_no_traffic_alert_fires_without_requests(promtool, tmp_path, env, model):
    case = model_case(env, model)
    rule, step = case.grafana_rule("traffic"), case.interval
    window = steps(parse_duration_seconds(case.spec.alerts.no_traffic_for), step)
    at = (window + 2) * step
    predictors = predictor_names(case)
    expected = [{"exp_labels": case.rule_labels("traffic"),
                 "exp_annotations": {"summary": f"{model} in {env} received no predictions",
                                     "description": f"No prediction requests for {case.spec.alerts.no_traffic_for}."}}]

    def requests(per_step: int) -> list[dict]:
        return [{"series": series(f"{EXECUTOR_METRIC}_count", executor_labels(case, p, "200")),
                 "values": f"40+{per_step}x{window + 5}"} for p in predictors]

    run_promtool(promtool, tmp_path, case, [
        {"name": "flat request counters fire", "input_series": requests(0),
         "alert_rule_test": [alert_test(rule["title"], at, expected)]},
        {"name": "no executor series at all fire", "input_series": [],
         "alert_rule_test": [alert_test(rule["title"], at, expected)]},
        {"name": "requests fire nothing", "input_series": requests(3),
         "alert_rule_test": [alert_test(rule["title"], at, [])]},
    ])


@pytest.mark.parametrize(("env", "model"), CASES)
def test_detector_down_alert_fires_when_drift_goes_unwatched(promtool, tmp_path, env, model):
    """Not ready (broker away, group not joined) or gone (no series) for detector_down_for fires; a
    ready detector, a shorter outage, or another model's or namespace's detector being down does not."""
    case = model_case(env, model)
    rule = case.grafana_rule("detector")
    expr, title, step = rule["data"][0]["model"]["expr"], rule["title"], case.interval
    down_for = case.spec.alerts.detector_down_for
    hold = steps(parse_duration_seconds(down_for), step)
    onset, total = 5, 5 + hold + 10
    target = drift_target_labels(case)
    ((name, labels),) = drift_series(case, expr)  # mlops_drift_ready{model}: one per service
    ((_, other_labels),) = drift_series(case, expr, model="some-other-model")

    def ready(values: list[int], **extra: str) -> dict:
        return {"series": series(name, {**labels, **target, **extra}), "values": " ".join(map(str, values))}

    def decoys(value: int) -> list[dict]:
        return [ready([value] * total, namespace="models-elsewhere"),
                {"series": series(name, {**other_labels, **target}), "values": " ".join([str(value)] * total)}]

    expected = [{"exp_labels": case.rule_labels("detector"),
                 "exp_annotations": {"summary": f"The drift detector of {model} in {env} is down",
                                     "description": f"The drift detector has not been ready for {down_for}: "
                                                    "drift is not being watched."}}]
    never = [alert_test(title, t * step, []) for t in range(0, total, max(1, hold // 3))]
    tests = [
        {"name": "not ready for detector_down_for fires",
         "input_series": [ready([1] * onset + [0] * (total - onset)), *decoys(1)],
         "alert_rule_test": [alert_test(title, (onset + hold - 1) * step, []),
                             alert_test(title, (onset + hold + 1) * step, expected)]},
        {"name": "no detector series (only other detectors') fires", "input_series": decoys(1),
         "alert_rule_test": [alert_test(title, (hold + 1) * step, expected)]},
        {"name": "a ready detector fires nothing, whatever the others do",
         "input_series": [ready([1] * total), *decoys(0)], "alert_rule_test": never},
    ]
    if hold >= 2:
        burst = ([0] * (hold - 1) + [1]) * (total // hold + 1)
        tests.append({"name": "outages shorter than detector_down_for fire nothing",
                      "input_series": [ready(burst[:total])], "alert_rule_test": never})
    run_promtool(promtool, tmp_path, case, tests)


@pytest.mark.parametrize(("env", "model"), CASES)
def test_every_rendered_rule_is_tested(env, model):
    rules = model_case(env, model).grafana_rules
    assert sorted(r["labels"]["mlops_alert"] for g in rules["groups"] for r in g["rules"]) == sorted(RULE_KEYS)


# --- the translation itself ----------------------------------------------------------------------


def _grafana_file(**rule_changes) -> dict:
    rule = {
        "uid": "m-dev-x", "title": "m (dev): x", "condition": "C",
        "data": [
            {"refId": "A", "relativeTimeRange": {"from": 600, "to": 0}, "datasourceUid": "prometheus",
             "model": {"refId": "A", "expr": "max(x)", "instant": True}},
            {"refId": "B", "datasourceUid": "__expr__",
             "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last"}},
            {"refId": "C", "datasourceUid": "__expr__",
             "model": {"refId": "C", "type": "threshold", "expression": "B",
                       "conditions": [{"evaluator": {"type": "gt", "params": [0]}}]}},
        ],
        "noDataState": "OK", "execErrState": "Error", "for": "5m",
        "annotations": {"description": "value {{ $values.B.Value }} on {{ $labels.p }}"},
        "labels": {"model": "m"},
    }
    rule.update(rule_changes)
    return {"apiVersion": 1, "groups": [{"orgId": 1, "name": "m-dev", "folder": "MLOps", "interval": "1m",
                                         "rules": [rule]}]}


def test_translation_maps_the_pipeline_to_a_comparison():
    (group,) = promrules.prometheus_rules(_grafana_file(), "f.yaml")["groups"]
    assert group == {"name": "m-dev", "interval": "1m", "rules": [{
        "alert": "m (dev): x", "expr": "(max(x)) > 0", "for": "5m",
        "labels": {"model": "m", "grafana_folder": "MLOps"},
        "annotations": {"description": "value {{ $value }} on {{ $labels.p }}"}}]}


def test_translation_of_no_data_alerting_and_ranges():
    document = _grafana_file(noDataState="Alerting")
    document["groups"][0]["rules"][0]["data"][2]["model"]["conditions"] = [
        {"evaluator": {"type": "outside_range", "params": [1, 2.5]}}]
    (rule,) = promrules.prometheus_rules(document, "f.yaml")["groups"][0]["rules"]
    assert rule["expr"] == "(max(x)) < 1 or (max(x)) > 2.5 or absent(max(x))"


@pytest.mark.parametrize(("change", "field"), [
    (lambda r: r["data"][0]["model"].update(instant=False, range=True), "data[0].model.instant"),
    (lambda r: r["data"][1]["model"].update(reducer="count"), "data[1].model.reducer"),
    (lambda r: r["data"][2]["model"]["conditions"][0]["evaluator"].update(type="gte"),
     "data[2].model.conditions[0].evaluator.type"),
    (lambda r: r.update(noDataState="NoData"), "noDataState"),
    (lambda r: r.update(condition="B"), "data[1]"),
    (lambda r: r.update(annotations={"d": "{{ $values.C.Value }}"}), "annotations.d"),
    (lambda r: r["data"][0].update(relativeTimeRange={"from": 600, "to": 60}), "data[0].relativeTimeRange.to"),
])
def test_translation_refuses_what_prometheus_would_evaluate_differently(change, field):
    document = _grafana_file()
    change(document["groups"][0]["rules"][0])
    with pytest.raises(RenderError) as error:
        promrules.prometheus_rules(document, "rules/x.yaml")
    (problem,) = error.value.problems
    assert problem.file == "rules/x.yaml" and problem.field == f"groups[0].rules[0].{field}"
    assert "m (dev): x" in problem.message
