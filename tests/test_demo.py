"""``make demo``'s scenario, end to end, from a fresh output folder: each stage's real artefacts.

One run of ``python -m demo run`` (a few minutes): S3, Kafka, MLflow, Prefect, Prometheus and
Alertmanager as real processes on free ports, every model and platform process started from the
rendered manifests of a workspace clone. The test reads what the run left: ``facts.json``, the bare
origin's branches, the report, and ``/proc`` (nothing the demo started may still run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from services import free_port, service_unavailable

SUITE_CACHES = {"MLOPS_IMAGE_CACHE": str(REPO / ".cache" / "imagebuild"), "MLOPS_CACHE_DIR": str(REPO / ".cache" / "mlops")}
"""The suite's caches (the images the other tests build, their validates' chart renders), not output/cache."""


def _processes_under(folder: Path) -> list[str]:
    """Command lines of live processes that mention ``folder`` (everything the demo starts does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if str(folder) in cmdline and stat[stat.rfind(")") + 2] not in "ZX":
            found.append(cmdline)
    return found


def _checkout_status() -> str:
    """``git status`` of the checkout, ignored files included, except the folders the demo may write: the
    test's output is elsewhere, and the test shares the suite's image and check caches (.cache/)."""
    listing = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=normal"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    return "\n".join(line for line in listing if not line[3:].startswith((".cache/", ".venv/", ".pytest_cache/",
                                                                          ".hypothesis/")))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    for program, package in (("prometheus", "prometheus"), ("prometheus-alertmanager", "prometheus-alertmanager"),
                             ("python3.11", "python3.11 python3.11-venv")):
        if not shutil.which(program):
            service_unavailable(f"the demo needs {program}: apt-get install {package} (.ci/run does)")
    output = tmp_path_factory.mktemp("demo") / "out"
    (output.parent / "status-before").write_text(_checkout_status())
    env = {**os.environ, **SUITE_CACHES, **{f"MLOPS_DEMO_PORT_{name}": str(free_port())
                                            for name in ("S3", "KAFKA", "MLFLOW", "PREFECT", "PROMETHEUS", "ALERTMANAGER")}}
    done = subprocess.run([sys.executable, "-m", "demo", "run", "--output", str(output)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1500)
    return done, output


@pytest.fixture(scope="module")
def facts(demo_run: tuple[subprocess.CompletedProcess, Path]) -> dict:
    done, output = demo_run
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return json.loads((output / "facts.json").read_text())


def test_every_stage_ran_in_order(facts: dict) -> None:
    stages = [event["stage"] for event in facts["timeline"]]
    expected = ["workspace", "platform", "retrain pipeline", "monitoring", "dataset v1", "first version", "sync v1",
                "gate", "normal traffic", "shift", "dataset v2", "drift detected", "alert", "trigger", "proposal",
                "sync v2", "canary", "registry", "promote", "rollback"]
    assert stages == expected
    assert facts["failure"] is None


def test_versions_are_registered_with_their_dataset_and_detector(facts: dict) -> None:
    versions = facts["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["decision"] == "first_version"
    assert versions[1]["decision"] == "accepted", versions[1]
    assert all(v["datasets"] for v in versions), versions
    for version in versions:
        tags = version["version_tags"]
        assert {"mlops.artifact_sha256", "mlops.detector_uri", "mlops.detector_sha256", "mlops.data_sha256"} <= set(tags)
        assert tags["mlops.detector_uri"].endswith("drift/detector.npz")


def test_the_mlflow_alias_follows_what_dev_runs(facts: dict) -> None:
    """The alias Job ran after each sync (Argo CD's PostSync hook, played locally): @dev is what dev runs."""
    dev = next(m for m in facts["status"]["models"] if m["environment"] == "dev")
    assert dev["mlflow"] == {"alias": "dev", "version": 1, "matches": True}
    assert [c["version"] for c in dev["candidates"]] == [2]


def test_drift_alert_and_trigger_and_proposal(facts: dict, demo_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    assert facts["alert"]["mlops_alert"] == "drift" and facts["alert"]["model"] == "fraud-detector"
    assert facts["drift_onset"] < facts["drift_detected"] <= facts["alert_fired"] < facts["flow_started"] \
        < facts["proposal_pushed"]
    review = facts["review"]
    assert review["render_check"] == "clean"
    assert "version: 2" in review["spec_diff"] and "canary" in review["spec_diff"]
    _, output = demo_run
    branches = subprocess.run(["git", "for-each-ref", "--format=%(refname:short)", "refs/heads/"],
                              cwd=output / "origin.git", capture_output=True, text=True, check=True).stdout.split()
    assert "retrain/fraud-detector-v2" in branches


def test_the_canary_answers_and_promote_and_rollback_succeed(facts: dict) -> None:
    canary = facts["canary"]
    assert canary["predictor"] == "candidate" and canary["traffic"] == 10
    assert len(canary["answer"]) == 3
    assert facts["promote"]["ok"] and facts["promote"]["target"] == "staging"
    assert facts["promote"]["release"]["version"] == 1  # dev's main release; v2 is still a canary there
    assert facts["promote"]["review"]["render_check"] == "clean"
    assert facts["rollback"]["ok"] and facts["rollback"]["review"]["render_check"] == "clean"


def test_clean_traffic_raised_no_drift_alert(facts: dict) -> None:
    assert facts["clean_alerts"] == 0


def test_the_gate_rejects_a_candidate_that_does_not_beat_the_live_version(facts: dict) -> None:
    gate = facts["gate"]
    assert gate["versions_before"] == 1 and gate["versions_after"] == 1 and gate["new_branches"] == []
    assert gate["state"] == "Completed" and "rejected" in (gate["message"] or ""), gate


def test_nothing_is_left_running_and_the_checkout_is_untouched(facts: dict,
                                                               demo_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    _, output = demo_run
    assert _processes_under(output) == []
    # Every process stops on SIGTERM within the bound, Prefect's worker included (it stops by sending itself
    # SIGINT, which the supervisor keeps at its default action even when this test runs as a shell's
    # background job, where SIGINT is ignored).
    assert facts["stopped"] and all(item["sigterm"] for item in facts["stopped"]), facts["stopped"]
    assert _checkout_status() == (output.parent / "status-before").read_text()
    assert (output / "report.md").read_text().count("every stage passed") == 1
    assert (output / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_taken_port_stops_the_demo_with_one_line_and_leaves_nothing_running(tmp_path: Path) -> None:
    import socket

    output = tmp_path / "out"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **SUITE_CACHES, "MLOPS_DEMO_PORT_KAFKA": str(port),
               **{f"MLOPS_DEMO_PORT_{name}": str(free_port()) for name in ("S3", "MLFLOW", "PREFECT", "PROMETHEUS",
                                                                          "ALERTMANAGER")}}
        done = subprocess.run([sys.executable, "-m", "demo", "run", "--output", str(output)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and f"kafka: port {port} is taken" in error[0] and "MLOPS_DEMO_PORT_KAFKA=" in error[0]
    assert _processes_under(output) == []
    facts = json.loads((output / "facts.json").read_text())
    assert [item["name"] for item in facts["stopped"]] == ["s3"]  # what had started is stopped
