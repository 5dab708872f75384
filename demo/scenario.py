"""The whole loop on this machine: train → register → serve → log → detect drift → alert → retrain →
evaluate → propose → merge → canary → promote → roll back.

:class:`Demo` owns the stack, the workspace and the model processes. ``up`` starts the platform,
``run`` walks the scenario (each stage prints what it checked and lands in the timeline), ``down``
stops everything it started. Every model and platform process is started from the workspace's rendered
manifests (:mod:`demo.runner`); only the platform services (S3, Kafka, MLflow, Prefect, Prometheus,
Alertmanager) and the Prefect worker, which a cluster gets from Helm charts, are started directly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from demo import images, runner, workspace
from demo.certs import ServerCertificate, server_certificate
from demo.processes import ManagedProcess, free_port
from demo.stack import PREFECT_AUTH, S3_KEY_ID, S3_SECRET, TRIGGER_TOKEN, Stack, wait_until

MODEL, ENV = workspace.MODEL, workspace.ENV
DEPLOYMENT = f"retrain/{MODEL}"
DATA_URI = f"s3://mlflow-artifacts/datasets/{MODEL}/latest/transactions.csv"
WORK_POOL = "mlops-local"


@dataclass
class Settings:
    """What the scenario can be tuned with; the defaults turn the loop in a few minutes on 2 cores."""

    window: int = 200
    """Drift window (records): small, so windows complete quickly at demo traffic."""
    alert_for: str = "30s"
    """The drift alert's ``for`` period (the cluster default is 10m)."""
    rows_per_request: int = 25
    requests_per_second: float = 8.0
    normal_windows: int = 10
    """Windows of unshifted traffic before the shift."""
    shift: float = 1.0
    dataset_rows: int = 4000
    stage_timeout: float = 300.0


@dataclass
class Event:
    seconds: float
    stage: str
    detail: str


@dataclass
class Demo:
    """The demo's stack, workspace and processes, and the record of what happened."""

    checkout: Path
    output: Path
    stack: Stack
    settings: Settings = field(default_factory=Settings)
    say: Callable[[str], None] = print
    progress: Callable[[str, float], None] | None = None
    timeline: list[Event] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    model_processes: dict[str, tuple[ManagedProcess, runner.LocalProcess]] = field(default_factory=dict)
    platform_processes: dict[str, runner.LocalProcess] = field(default_factory=dict)
    drift_samples: list[tuple[float, float]] = field(default_factory=list)
    _images: dict[str, images.ImageEnv] = field(default_factory=dict)
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mlops-demo-")))
    """The processes' emptyDir volumes: short paths (Unix sockets live there), removed by :meth:`down`."""
    tls: ServerCertificate = field(default_factory=lambda: server_certificate("mlops demo CA",
                                                                              ["127.0.0.1", "localhost"]))
    """The retrain trigger's certificate (Secret retrain-trigger-tls) and the CA Alertmanager verifies it with:
    the demo serves the webhook over HTTPS as the cluster does, with a CA made for this run."""

    # ---- bookkeeping -----------------------------------------------------------------------------

    def mark(self, stage: str, detail: str) -> None:
        event = Event(time.monotonic() - self.started, stage, detail)
        self.timeline.append(event)
        self.say(f"[{event.seconds:7.1f}s] {stage}: {detail}")

    def wait(self, condition: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
        return wait_until(condition, timeout or self.settings.stage_timeout, what, self.progress)

    @property
    def origin(self) -> Path:
        return self.output / "origin.git"

    @property
    def workspace(self) -> Path:
        return self.output / "workspace"

    def image(self, component: str, work: Path) -> images.ImageEnv:
        """Each component image is built once per demo (its venv is cached across runs)."""
        if component not in self._images:
            self.say(f"  building the {component} image's environment (cached after the first run)")
            self._images[component] = images.build_image(component, self.output / "images" / component)
        return self._images[component]

    def site(self) -> runner.Site:
        """This machine as the rendered manifests' cluster: addresses, Secret values, image builds."""
        env_spec = yaml.safe_load((self.workspace / "environments" / ENV / "environment.yaml").read_text())
        s3_credentials = f"[default]\naws_access_key_id = {S3_KEY_ID}\naws_secret_access_key = {S3_SECRET}\n"
        s3 = {"AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "credentials": s3_credentials}
        stack = self.stack
        return runner.Site(
            rewrites={
                env_spec["kafka"]["bootstrap_servers"]: stack.kafka,
                env_spec["mlflow"]["tracking_uri"]: stack.mlflow_url,
                env_spec["s3"]["endpoint"]: stack.s3_url,
                "http://prefect-server.prefect.svc.cluster.local:4200/api": stack.prefect_api,
                env_spec["argocd"]["repo_url"]: f"file://{self.origin}",
            },
            secrets={
                env_spec["s3"]["credentials_secret"]: s3, "s3-credentials-drift-detector": s3,
                "retrain-credentials": s3, "retrain-trigger-token": {"token": TRIGGER_TOKEN},
                "retrain-trigger-tls": self.tls.secret(),
                "prefect-api-auth": {"auth-string": PREFECT_AUTH},
            },
            workdir=self.output / "run",
            image=self.image,
            # The local broker admits a consumer to its group only after about half the session timeout, and
            # a restarted one (the detector's rollout) after about twice it, leave or not (measured on tansu:
            # 5 s and 18 s at the detector's default 10 s session, 2 s and 8 s at 4 s). A shorter session
            # here shortens every detector rollout; a cluster's Kafka keeps the rendered defaults.
            extra_env={"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "DRIFT_SESSION_TIMEOUT_SECONDS": "4", "DRIFT_HEARTBEAT_INTERVAL_SECONDS": "1"},
            scratch=self.scratch,
        )

    def rendered(self, *parts: str) -> list[dict[str, Any]]:
        folder = self.workspace / "environments" / ENV / "rendered" / Path(*parts)
        return runner.read_documents(folder) if folder.exists() else []

    # ---- up / down -------------------------------------------------------------------------------

    def up(self) -> None:
        """Workspace, platform services, the retrain pipeline and trigger from their rendered manifests,
        a Prefect process worker, Prometheus and Alertmanager."""
        self.output.mkdir(parents=True, exist_ok=True)
        workspace.create(self.checkout, self.output)
        workspace.apply_local_profile(self.workspace, self.settings.window, self.settings.alert_for)
        self.mark("workspace", f"{self.workspace} cloned from {self.origin}; dev renders and validates locally")
        self.stack.start_platform()
        self.mark("platform", f"S3 {self.stack.s3_url}, Kafka {self.stack.kafka}, MLflow {self.stack.mlflow_url}, "
                              f"Prefect {self.stack.prefect_api}")
        self.start_platform_components()
        self.start_monitoring()

    def start_platform_components(self) -> None:
        site = self.site()
        trigger = runner.local_processes(self.rendered("platform", "retrain-trigger"), site)[0]
        self.stack.run("retrain-trigger", trigger.argv, url=trigger.ready_url, env=trigger.env, cwd=trigger.cwd)
        self.platform_processes["retrain-trigger"] = trigger
        retrain = self.image("retrain", self.output / "images" / "retrain")
        worker_env = {**self.stack.client_env(), "PREFECT_HOME": str(self.output / "data" / "prefect-worker"),
                      "PATH": f"{retrain.venv / 'bin'}:{os.environ.get('PATH', '')}", **retrain.env}
        health = free_port()
        worker_env.update({"PREFECT_WORKER_WEBSERVER_PORT": str(health), "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
                           # A flow run waits for the worker's next poll: every 2 s here, 10 s by default.
                           "PREFECT_WORKER_QUERY_SECONDS": "2"})
        self.stack.run("prefect-worker", [str(retrain.venv / "bin" / "prefect"), "worker", "start", "--pool",
                                          WORK_POOL, "--type", "process", "--with-healthcheck"],
                       url=f"http://127.0.0.1:{health}/health", env=worker_env, cwd=retrain.workdir, timeout=180)
        job = runner.local_processes(self.rendered("platform", "retrain-pipeline"), site,
                                     only=lambda doc: doc["kind"] == "Job")[0]
        # The Job's settings for a process pool: the same prefect.yaml, deployed where a local worker polls.
        job.env.update({"RETRAIN_WORK_POOL": WORK_POOL, "RETRAIN_WORK_POOL_TYPE": "process",
                        "RETRAIN_CODE_DIR": str(job.cwd)})
        self.run_job("retrain-deploy", job)
        self.mark("retrain pipeline", f"deployment {DEPLOYMENT} on work pool {WORK_POOL}; trigger at {trigger.ready_url}")

    def run_job(self, name: str, job: runner.LocalProcess, timeout: float = 600) -> str:
        """Run a rendered Job's container to completion; its output goes to ``logs/<name>.log``."""
        log = self.stack.logs / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as handle:
            done = subprocess.run(job.argv, env=job.env, cwd=job.cwd, stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise workspace.WorkspaceError(f"job {name} exited {done.returncode} (log: {log}):\n{tail}")
        return log.read_text(errors="replace")

    def start_monitoring(self) -> None:
        trigger = self.platform_processes["retrain-trigger"]
        self.stack.start_monitoring([], [], trigger.url("https", "/v1/alerts/alertmanager"), ca_cert=self.tls.ca_crt)
        self.mark("monitoring", f"Prometheus {self.stack.prometheus_url}, Alertmanager {self.stack.alertmanager_url}")

    def down(self) -> list[tuple[str, float, bool]]:
        """Stop the model processes, then the platform, last started first: (name, seconds, by SIGTERM)."""
        stopped = [self._stop_model(name) for name in reversed(list(self.model_processes))]
        stopped += self.stack.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)
        return stopped

    def _stop_model(self, name: str) -> tuple[str, float, bool]:
        process, _ = self.model_processes.pop(name)
        if process in self.stack.processes:
            self.stack.processes.remove(process)
        graceful = process.stop()
        return name, process.stop_seconds or 0.0, graceful

    # ---- sync: what Argo CD does -----------------------------------------------------------------

    def sync(self) -> list[str]:
        """Bring the local processes to what ``origin/main`` renders for the model (a rollout: changed
        processes restart, removed ones stop), create its topics, point Prometheus at its monitors and
        rules, and run the MLflow alias Job (Argo CD's PostSync hook)."""
        workspace.git(self.workspace, "checkout", "--quiet", "main")
        workspace.git(self.workspace, "pull", "--quiet", "--ff-only", "origin", "main")
        documents = self.rendered("models", MODEL)
        self.stack.create_topics(runner.topics(documents))
        wanted = {p.name: p for p in runner.local_processes(documents, self.site(),
                                                            only=lambda doc: doc["kind"] != "Job")}
        changed = []
        for name in list(self.model_processes):
            process, spec = self.model_processes[name]
            # A cluster rolls a pod when its template changes (the drift config's hash annotation included).
            if name not in wanted or wanted[name].template_hash != spec.template_hash:
                self._stop_model(name)
                changed.append(f"stopped {name}")
        starting = {name: spec for name, spec in wanted.items() if name not in self.model_processes}
        # Pods of one sync start side by side, as the cluster schedules them.
        with ThreadPoolExecutor(max_workers=max(len(starting), 1)) as pool:
            futures = {name: pool.submit(self.stack.run, name, spec.argv, url=spec.ready_url, env=spec.env,
                                         cwd=spec.cwd, timeout=300) for name, spec in starting.items()}
        for name, future in futures.items():
            if future.exception() is None:
                self.model_processes[name] = (future.result(), starting[name])
                changed.append(f"started {name}")
        failed = [future.exception() for future in futures.values() if future.exception() is not None]
        if failed:
            raise failed[0]
        running = [spec for _, spec in self.model_processes.values()]
        rules = [group for doc in documents if doc.get("kind") == "PrometheusRule" for group in doc["spec"]["groups"]]
        self.stack.write_prometheus_config(runner.prometheus_scrape_configs(runner.scrape_targets(documents, running)),
                                           rules)
        self.stack.reload_prometheus()
        for job in runner.local_processes(documents, self.site(), only=lambda doc: doc["kind"] == "Job"):
            self.run_job(job.name, job)
        return changed

    def predictors(self) -> list[runner.LocalProcess]:
        return [spec for _, spec in self.model_processes.values() if spec.kind == "SeldonDeployment"]
