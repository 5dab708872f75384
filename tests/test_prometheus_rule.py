"""The alerting.prometheus_rule option: each model's alert rules also as a PrometheusRule, translated from
the same rendered Grafana rules, valid against the vendored CRD schema and accepted by real promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from click.testing import CliRunner

from generator.cli import cli
from generator.render.promrules import prometheus_rules
from helpers import environment, make_repo, model_spec

FOLDER = "environments/dev/rendered/models/churn"


def render(root: Path):
    return CliRunner().invoke(cli, ["render", "--repo-root", str(root)])


def test_off_by_default(tmp_path):
    root = make_repo(tmp_path, models={"dev": {"churn": model_spec()}})
    assert render(root).exit_code == 0
    assert not (root / FOLDER / "prometheusrule.yaml").exists()


def test_the_prometheus_rule_says_what_the_grafana_rules_say(tmp_path):
    envs = {"dev": environment("dev", alerting={"prometheus_rule": True})}
    root = make_repo(tmp_path, envs=envs, models={"dev": {"churn": model_spec()}})
    result = render(root)
    assert result.exit_code == 0, result.output  # rendering validates it against the PrometheusRule schema
    rule = yaml.safe_load((root / FOLDER / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["namespace"] == "models-dev"
    configmap = yaml.safe_load((root / FOLDER / "grafana-alerts-configmap.yaml").read_text())
    grafana = yaml.safe_load(next(iter(configmap["data"].values())))
    assert rule["spec"] == prometheus_rules(grafana, "grafana-alerts-configmap.yaml")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    drift = next(r for name, r in alerts.items() if "drift" in name.lower() and "detector" not in name.lower())
    assert drift["labels"].get("retrain") == "true"  # what the trigger's Alertmanager route selects on

    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus; .ci/run installs it)"
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    checked = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(alerts)} rules found" in checked.stdout
