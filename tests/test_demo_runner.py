"""demo/runner.py: rendered manifests become local processes, with only what a cluster injects replaced."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from demo import runner, workspace
from demo.certs import server_certificate
from demo.processes import free_port, run_service
from helpers import REPO
from imagebuild import build_image

RENDERED = REPO / "environments" / "dev" / "rendered"
TRIGGER_TLS = server_certificate("demo runner test CA", ["127.0.0.1"])
SECRETS = {"s3-credentials": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key"},
           "s3-credentials-drift-detector": {"credentials": "[default]\naws_access_key_id = id\n"},
           "retrain-trigger-token": {"token": "local-token-0123456789abcdef"},
           "retrain-trigger-tls": TRIGGER_TLS.secret(),
           "prefect-api-auth": {"auth-string": "user:password"},
           # dev as committed is SASL_SSL: each Kafka identity's password and the cluster CA are mounted files.
           "fraud-detector-dev-model-server-scram": {"password": "server-password"},
           "fraud-detector-dev-drift-detector-scram": {"password": "detector-password"},
           "kafka-cluster-ca": {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}}


def site(tmp_path: Path, built: dict[str, Path] | None = None) -> runner.Site:
    def image(component: str, work: Path):
        return build_image(component, work) if built is not None else _fake_image(component, tmp_path)

    return runner.Site(rewrites={"mlops-kafka-bootstrap.kafka.svc:9093": "127.0.0.1:19093",
                                 "http://mlflow.mlflow.svc:5000": "http://127.0.0.1:15000",
                                 "http://seaweedfs-s3.storage.svc:8333": "http://127.0.0.1:18333",
                                 "http://prefect-server.prefect.svc.cluster.local:4200/api": "http://127.0.0.1:14200/api"},
                       secrets=SECRETS, workdir=tmp_path / "run", image=image)


def _fake_image(component: str, tmp_path: Path):
    """An image layout without a venv: enough for the translation, which starts nothing."""
    from demo.images import ImageEnv

    root = tmp_path / "images" / component
    (root / "venv" / "bin").mkdir(parents=True, exist_ok=True)
    return ImageEnv(root / "venv", root / "app", {"PYTHONPATH": str(root / "app")}, root / "app",
                    ["python", "-m", component], [])


def test_a_predictor_gets_the_operator_environment_local_addresses_ports_and_secret_values(tmp_path: Path) -> None:
    documents = runner.read_documents(RENDERED / "models" / "fraud-detector")
    processes = runner.local_processes(documents, site(tmp_path), only=lambda doc: doc["kind"] != "Job")
    by_name = {p.name: p for p in processes}
    main = by_name["fraud-detector-main-model"]
    assert main.predictor == "main" and main.kind == "SeldonDeployment"
    assert main.env["PREDICTOR_ID"] == "main"
    assert main.env["PREDICTIVE_UNIT_HTTP_SERVICE_PORT"] == str(main.ports["http"]) != "9000"
    assert main.env["MODEL_SERVER_APP_METRICS_PORT"] == str(main.ports["app-metrics"])
    assert main.env["MODEL_SERVER_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19093"
    # The cluster path's Kafka credentials become files in the process's folder, named as in the pod.
    assert main.env["MODEL_SERVER_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert main.env["MODEL_SERVER_KAFKA_USERNAME"] == "fraud-detector-dev-model-server"
    assert Path(main.env["MODEL_SERVER_KAFKA_PASSWORD_FILE"]).read_text() == "server-password"
    assert Path(main.env["MODEL_SERVER_KAFKA_CA_FILE"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert main.env["MODEL_SERVER_KAFKA_PASSWORD_FILE"].startswith(str(tmp_path / "run"))
    assert main.env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
    assert main.env["AWS_SECRET_ACCESS_KEY"] == "key"
    # The emptyDir at /tmp is the process's own folder.
    assert main.env["PROMETHEUS_MULTIPROC_DIR"].startswith(str(tmp_path / "run"))
    assert main.ready_url == f"http://127.0.0.1:{main.ports['http']}/health/status"
    detector = next(p for p in processes if p.kind == "Deployment")
    config = Path(detector.env["DRIFT_CONFIG_FILE"])
    assert config.is_file() and "fraud-detector" in config.read_text()
    assert Path(detector.env["AWS_SHARED_CREDENTIALS_FILE"]).read_text().startswith("[default]")
    assert Path(detector.env["DRIFT_KAFKA_PASSWORD_FILE"]).read_text() == "detector-password"
    assert detector.env["DRIFT_KAFKA_USERNAME"] == "fraud-detector-dev-drift-detector"
    # Monitors select the processes by their pod labels, with the labels the operator adds.
    targets = runner.scrape_targets(documents, processes)
    model_targets = [t for t in targets if t.labels.get("mlops_gitops_io_predictor")]
    assert {t.labels["mlops_gitops_io_predictor"] for t in model_targets} == {p.predictor for p in processes
                                                                              if p.predictor}
    assert all(t.labels["namespace"] == "models-dev" for t in targets)
    assert any(t.address.endswith(f":{detector.ports['http']}") for t in targets)
    topics = runner.topics(documents)
    assert "fraud-detector-dev-inference-log" in {t.name for t in topics}


def test_a_missing_secret_value_names_the_secret_and_key(tmp_path: Path) -> None:
    documents = runner.read_documents(RENDERED / "models" / "fraud-detector")
    bare = site(tmp_path)
    bare.secrets = {}
    with pytest.raises(runner.ManifestError, match=r"drift-detector needs Secret 's3-credentials-drift-detector' key 'credentials'"):
        runner.local_processes(documents, bare)


def test_an_image_not_built_here_is_refused(tmp_path: Path) -> None:
    with pytest.raises(runner.ManifestError, match="not built from this repository"):
        runner.component_of("docker.io/library/nginx:1.27", "Deployment x")


def test_the_rendered_trigger_runs_from_its_image_and_answers(tmp_path: Path) -> None:
    """The retrain trigger's rendered Deployment, started as it is: its policy ConfigMap, token Secret and
    TLS Secret become files, the process finds them through the mounts the manifest names, and it serves
    HTTPS with the mounted certificate."""
    documents = runner.read_documents(RENDERED / "platform" / "retrain-trigger")
    trigger = runner.local_processes(documents, site(tmp_path, built={}))[0]
    assert trigger.ready_url.startswith("https://")  # the probe's scheme
    # Ready needs the Prefect server; alive (the liveness path of the same port) is what this test needs.
    alive = trigger.ready_url.replace("/readyz", "/healthz")
    with run_service("trigger-from-manifest", trigger.argv, url=alive, env=trigger.env, cwd=trigger.cwd,
                     timeout=120, log_dir=tmp_path) as process:
        assert process.process.poll() is None
        request = urllib.request.Request(trigger.url("https", "/v1/alerts/alertmanager"), method="POST",
                                         data=json.dumps({"status": "firing", "alerts": []}).encode(),
                                         headers={"Content-Type": "application/json"})
        verified = ssl.create_default_context(cadata=TRIGGER_TLS.ca_crt)
        with pytest.raises(urllib.error.HTTPError) as refused:  # no token: the mounted one is enforced
            urllib.request.urlopen(request, timeout=10, context=verified)
        assert refused.value.code == 401


def test_a_port_is_taken_only_while_something_listens_not_while_old_connections_wait() -> None:
    """A previous run's server closed its connections first, leaving them in TIME_WAIT: the next run may
    start on that port (the servers set SO_REUSEADDR), so the check must not call it taken."""
    import socket

    from demo.processes import port_taken

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    assert port_taken(port)
    accepted.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
    client.close()
    server.close()
    assert not port_taken(port)


def test_the_workspace_demos_the_checkouts_head_as_main_even_when_detached(tmp_path: Path) -> None:
    """A worktree or CI checkout on a detached HEAD (or a feature branch) is demoed as it is committed: origin's
    only branch is ``main`` at that commit, so the reviews' pushes to ``main`` land (they failed on a detached
    checkout, where the old bare clone had no branch to push to)."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for args in (["init", "--quiet", "--initial-branch=main"], ["commit", "--quiet", "--allow-empty", "-m", "one"],
                 ["checkout", "--quiet", "-b", "feature"], ["commit", "--quiet", "--allow-empty", "-m", "two"],
                 ["checkout", "--quiet", "--detach", "HEAD"], ["commit", "--quiet", "--allow-empty", "-m", "three"]):
        workspace.git(checkout, *args)
    head = workspace.git(checkout, "rev-parse", "HEAD")
    output = tmp_path / "output"
    output.mkdir()
    origin, clone = workspace.create(checkout, output)
    assert workspace.branches(origin) == ["main"]
    assert workspace.git(origin, "rev-parse", "main") == head
    assert workspace.git(clone, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    workspace.git(clone, "commit", "--quiet", "--allow-empty", "-m", "reviewed change")
    workspace.git(clone, "push", "--quiet", "origin", "HEAD")
    assert workspace.git(origin, "rev-parse", "main") == workspace.git(clone, "rev-parse", "HEAD")


def test_a_sigkill_names_the_group_member_that_outlived_sigterm(tmp_path: Path) -> None:
    """A service whose child ignores SIGTERM is killed after the bound, and its log says which process
    outlived SIGTERM (the process itself, or a child it started), so a slow shutdown can be traced."""
    from demo.processes import free_port, start_service

    port = free_port()
    script = (f"import signal, socket, subprocess, sys, time\n"
              f"subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              f"time.sleep(60)  # stubborn-child'])\n"
              f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
              f"time.sleep(60)\n")
    service = start_service("stubborn", [sys.executable, "-c", script], port=port, log_dir=tmp_path)
    assert service.stop(timeout=1.0) is False
    log = (tmp_path / "stubborn.log").read_text()
    assert "still running 1 s after SIGTERM, sent SIGKILL" in log and "stubborn-child" in log


def test_a_service_started_under_a_parent_that_ignores_sigint_gets_the_default_action(tmp_path: Path) -> None:
    """A shell's background job ignores SIGINT and SIGQUIT, and exec keeps them ignored. The supervisor
    gives its services the defaults a container's process has (Prefect's worker stops by sending itself
    SIGINT), with the same pid, argv and environment, and a missing program is still FileNotFoundError."""
    port = free_port()
    child = (f"import json, os, signal, socket, sys, time\n"
             f"name = lambda h: 'default_int_handler' if h is signal.default_int_handler else signal.Handlers(h).name\n"
             f"state = {{n: name(signal.getsignal(getattr(signal, n))) for n in ('SIGINT', 'SIGQUIT', 'SIGTERM')}}\n"
             f"state.update(pid=os.getpid(), argv=sys.argv, marker=os.environ.get('MARKER'))\n"
             f"open({str(tmp_path / 'child.json')!r}, 'w').write(json.dumps(state))\n"
             f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)\n")
    parent = (f"import json, pathlib, signal, sys\n"
              f"sys.path.insert(0, {str(REPO)!r})\n"
              f"signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGQUIT, signal.SIG_IGN)\n"
              f"from demo.processes import start_service\n"
              f"service = start_service('child', ['python3', '-c', {child!r}, 'one', 'two'], port={port},\n"
              f"                        env={{'PATH': {os.environ['PATH']!r}, 'MARKER': 'kept'}}, log_dir=pathlib.Path({str(tmp_path)!r}))\n"
              f"pid = service.pid\n"
              f"print(json.dumps({{'pid': pid, 'graceful': service.stop(timeout=5)}}))\n"
              f"try:\n"
              f"    start_service('missing', ['no-such-program-here'], port={port}, env={{'PATH': '/nonexistent'}})\n"
              f"except FileNotFoundError as exc:\n"
              f"    print(json.dumps({{'missing': exc.filename}}))\n")
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    started, missing = (json.loads(line) for line in done.stdout.splitlines())
    state = json.loads((tmp_path / "child.json").read_text())
    assert (state["SIGINT"], state["SIGQUIT"], state["SIGTERM"]) == ("default_int_handler", "SIG_DFL", "SIG_DFL"), state
    assert state["pid"] == started["pid"] and started["graceful"] is True
    assert state["argv"] == ["-c", "one", "two"] and state["marker"] == "kept"
    assert missing == {"missing": "no-such-program-here"}
