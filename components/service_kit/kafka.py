"""How our Kafka clients (model server, drift detector) authenticate: one set of settings, one way to
build aiokafka's options, one way to start a client.

Each service's ``Settings`` inherits :class:`KafkaClientSettings`, so the variables are
``<PREFIX>KAFKA_SECURITY_PROTOCOL``, ``<PREFIX>KAFKA_SASL_MECHANISM``, ``<PREFIX>KAFKA_USERNAME``,
``<PREFIX>KAFKA_PASSWORD_FILE`` and ``<PREFIX>KAFKA_CA_FILE``. The defaults are a plain connection
without credentials (the local tansu broker of ``make demo`` and the tests); the rendered manifests of an
environment whose ``kafka.security_protocol`` is ``SASL_SSL`` set all five: SCRAM-SHA-512 over TLS to
Strimzi's ``tls`` listener, as the model's own ``KafkaUser``, the password and the cluster CA mounted as
files from Secrets. The cluster path and the local path are the same code with other values.

The password is read from its file each time a client connects, so a rotated Secret is picked up on the
next reconnect without a restart. Nothing here imports aiokafka at import time (the retrain trigger
shares this package and has no Kafka client).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class KafkaAuthenticationError(ConnectionError):
    """The broker did not accept our credentials (or the SASL exchange failed). A ``ConnectionError``, so
    every reconnect loop that survives an unreachable broker also survives this, and tries again later
    (a rotated password or a KafkaUser created after the pod may fix it)."""


class KafkaClientSettings(BaseModel):
    """Mixed into a service's pydantic-settings ``Settings``: the fields take the service's env prefix."""

    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    """PLAINTEXT (no TLS, no credentials), SSL, SASL_PLAINTEXT or SASL_SSL (what clusters use)."""
    kafka_sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    """Strimzi's ``scram-sha-512`` listener authentication."""
    kafka_username: str = ""
    """The SCRAM user: the name of the service's KafkaUser."""
    kafka_password_file: Path | None = None
    """File holding the SCRAM password (a mounted Secret key); trailing newlines are ignored."""
    kafka_ca_file: Path | None = None
    """PEM file of the CA that signed the broker's certificate (Strimzi's cluster CA); empty: the system's."""

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> KafkaClientSettings:
        protocol = self.kafka_security_protocol
        prefix = str(self.model_config.get("env_prefix", ""))  # the service's, e.g. MODEL_SERVER_
        if protocol in SASL_PROTOCOLS:
            if not self.kafka_username or self.kafka_password_file is None:
                raise ValueError(f"{prefix}KAFKA_SECURITY_PROTOCOL={protocol} needs {prefix}KAFKA_USERNAME and "
                                 f"{prefix}KAFKA_PASSWORD_FILE (the KafkaUser's name and its mounted password)")
            _readable(self.kafka_password_file, f"{prefix}KAFKA_PASSWORD_FILE")
            if not read_password(self.kafka_password_file):
                raise ValueError(f"{prefix}KAFKA_PASSWORD_FILE {self.kafka_password_file} is empty")
        elif self.kafka_username or self.kafka_password_file is not None:
            raise ValueError(f"{prefix}KAFKA_USERNAME/{prefix}KAFKA_PASSWORD_FILE are set but "
                             f"{prefix}KAFKA_SECURITY_PROTOCOL={protocol} "
                             "sends no credentials; use SASL_SSL, or unset them")
        if self.kafka_ca_file is not None:
            if protocol not in TLS_PROTOCOLS:
                raise ValueError(f"{prefix}KAFKA_CA_FILE is set but {prefix}KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS; "
                                 "use SASL_SSL (or SSL), or unset it")
            _readable(self.kafka_ca_file, f"{prefix}KAFKA_CA_FILE")
        return self

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``: security protocol, TLS context
        (certificate and host name verified against the CA file), SASL mechanism and credentials. Reads
        the password file now: call it for each new client."""
        protocol = self.kafka_security_protocol
        options: dict[str, Any] = {"security_protocol": protocol}
        if protocol in TLS_PROTOCOLS:
            options["ssl_context"] = tls_context(self.kafka_ca_file)
        if protocol in SASL_PROTOCOLS:
            assert self.kafka_password_file is not None  # the validator holds it
            options.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_username,
                           sasl_plain_password=read_password(self.kafka_password_file))
        return options

    def kafka_identity(self) -> str:
        """``SASL_SSL as fraud-detector-dev-model-server`` or ``PLAINTEXT``, for log lines."""
        if self.kafka_security_protocol in SASL_PROTOCOLS:
            return f"{self.kafka_security_protocol} {self.kafka_sasl_mechanism} as {self.kafka_username}"
        return self.kafka_security_protocol


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context that verifies the broker's certificate and host name (TLS 1.2 or later)."""
    context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH,
                                         cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def read_password(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")


def _readable(path: Path, variable: str) -> None:
    try:
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{variable} {path} cannot be read ({exc.strerror or exc}); is the Secret mounted?") from None


async def start_client(client: Any) -> None:
    """``await client.start()`` for an aiokafka producer or consumer, with a failed SASL exchange raised
    as :class:`KafkaAuthenticationError`.

    aiokafka 0.14 reports a broker that rejects the credentials as ``AuthenticationFailedError`` (a
    ``KafkaError``) when the broker answers with an error code, but as a bare ``KeyError``/``ValueError``
    from its SCRAM client when the broker answers inside the SCRAM exchange (RFC 5802 ``e=`` in the
    server-final message, as tansu does): without this, a wrong password would end the caller's reconnect
    loop instead of being retried.
    """
    from aiokafka.errors import AuthenticationFailedError, UnsupportedSaslMechanismError

    try:
        await client.start()
    except (AuthenticationFailedError, UnsupportedSaslMechanismError) as exc:
        await _stop_quietly(client)
        raise KafkaAuthenticationError(f"the broker refused the SASL authentication: {exc}") from exc
    except (KeyError, ValueError) as exc:
        await _stop_quietly(client)
        raise KafkaAuthenticationError(f"the SASL exchange failed ({type(exc).__name__}: {exc}): wrong username "
                                       "or password, or the KafkaUser does not exist yet") from exc


async def _stop_quietly(client: Any) -> None:
    try:
        await client.stop()
    except Exception:  # noqa: BLE001 - closing a client that never started; the start error is what matters
        pass
