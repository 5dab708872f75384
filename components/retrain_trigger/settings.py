"""Configuration of the retrain trigger: ``RETRAIN_TRIGGER_*`` environment variables and a secrets directory.

The rendered Deployment (``apps/retrain-trigger/manifests/deployment.yaml.j2``) sets the variables and
mounts three volumes: the per-model policy file (:mod:`retrain_trigger.policy`, a rendered ConfigMap),
the shared webhook token in :data:`SECRETS_DIR` (a Secret delivered by Sealed Secrets; never in Git,
never in an env value of a manifest) and the serving certificate and key (Secret ``retrain-trigger-tls``,
``RETRAIN_TRIGGER_TLS_CERT_FILE`` / ``RETRAIN_TRIGGER_TLS_KEY_FILE``). pydantic-settings reads the token
from the file ``retrain_trigger_token`` there, or from ``RETRAIN_TRIGGER_TOKEN`` for local runs.

The webhook carries a bearer token, so the trigger serves HTTPS: without a certificate and key it refuses
to start, unless ``RETRAIN_TRIGGER_PLAIN_HTTP=true`` says plain HTTP is meant, which is accepted only on a
loopback ``http_host`` (a local run where nothing leaves the machine; :func:`transport`). Nothing here
touches the network.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict
from service_kit.settings import ConfigError, ServiceSettings, problems

PREFIX = "RETRAIN_TRIGGER_"
SECRETS_DIR = Path("/var/run/secrets/retrain-trigger")
"""Where the rendered Deployment mounts the token Secret."""
TOKEN_FILE_NAME = "retrain_trigger_token"
"""The token's file name in :data:`SECRETS_DIR`: pydantic-settings looks a field up by its variable name."""
MIN_TOKEN_LENGTH = 16
"""Shorter shared secrets are refused at start: a guessable token would let anyone start runs
(generate one with ``openssl rand -hex 32``)."""


class Settings(ServiceSettings):
    """Every ``RETRAIN_TRIGGER_*`` variable. Build it once in ``main`` (:func:`load_settings`) and pass it down."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    prefect_api_url: str = Field(pattern=r"^https?://")
    """Prefect server API, e.g. ``http://prefect-server.prefect.svc.cluster.local:4200/api``."""
    policy_file: Path = Path("/etc/retrain-trigger/policy.json")
    deployment_name: str = "retrain/{model}"
    """``<flow name>/<deployment name>`` of a model's retrain deployment; ``{model}`` is replaced."""
    token: SecretStr
    """The shared webhook secret: file ``retrain_trigger_token`` in the secrets directory, or the variable."""
    prefect_auth_string: SecretStr | None = None
    """``user:password`` of the Prefect server's basic auth (its ``PREFECT_SERVER_API_AUTH_STRING``): file
    ``retrain_trigger_prefect_auth_string`` in the secrets directory, or the variable; none: no auth."""

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=1, le=65535)
    tls_cert_file: Path | None = None
    """PEM certificate (chain) the trigger serves HTTPS with: ``tls.crt`` of Secret ``retrain-trigger-tls``."""
    tls_key_file: Path | None = None
    """PEM private key of :attr:`tls_cert_file`: ``tls.key`` of the same Secret."""
    plain_http: bool = False
    """Serve plain HTTP instead of HTTPS: refused unless ``http_host`` is a loopback address."""
    hmac_signature_header: str = "X-Grafana-Alerting-Signature"
    """Header with the hex HMAC-SHA256 of the body (Grafana's webhook default)."""
    hmac_timestamp_header: str = "X-Grafana-Alerting-Timestamp"
    """When a request carries it, the signature covers ``<timestamp>:<body>`` and the timestamp must be fresh."""
    hmac_max_age_seconds: int = Field(default=300, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    prefect_timeout_seconds: float = Field(default=10.0, gt=0)
    dedupe_capacity: int = Field(default=10_000, ge=1)
    """Alerts remembered in memory; Prefect's idempotency key covers anything forgotten."""
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0)
    log_level: str = "INFO"

    @field_validator("token", "prefect_auth_string", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        # A secret file usually ends in a newline; `kubectl create secret --from-file` keeps it.
        return value.strip() if isinstance(value, str) else value

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the token needs at least {MIN_TOKEN_LENGTH} characters "
                             "(generate one with: openssl rand -hex 32)")
        return value

    @field_validator("deployment_name")
    @classmethod
    def _one_model_placeholder(cls, value: str) -> str:
        flow, _, deployment = value.partition("/")
        if not flow or not deployment or "/" in deployment or value.count("{model}") != 1:
            raise ValueError("must be '<flow>/<deployment>' with exactly one {model}, e.g. 'retrain/{model}'")
        try:
            value.format(model="m")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{model}} may be substituted ({exc})") from None
        return value

    def deployment_for(self, model: str) -> str:
        """The full deployment name of ``model``'s retrain deployment."""
        return self.deployment_name.format(model=model)

    @property
    def secret(self) -> bytes:
        """The shared secret as bytes, for HMAC and constant-time comparison."""
        return self.token.get_secret_value().encode()


LOOPBACK_HOSTS = ("localhost",)
"""Host names taken as loopback besides loopback addresses (127.0.0.0/8, ::1)."""


@dataclass(frozen=True)
class Transport:
    """How the trigger serves: HTTPS with ``cert_file`` and ``key_file``, or plain HTTP (both ``None``)."""

    cert_file: Path | None
    key_file: Path | None

    @property
    def scheme(self) -> str:
        return "https" if self.cert_file else "http"


def _loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport(settings: Settings) -> Transport:
    """HTTPS with the configured certificate and key (both readable, the key matching), or plain HTTP when
    ``plain_http`` asks for it on a loopback host.

    Raises:
        ConfigError: naming the variables to set (and why), or the file that cannot be loaded.
    """
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if settings.plain_http:
        if cert or key:
            raise ConfigError(f"{PREFIX}PLAIN_HTTP=true and {PREFIX}TLS_CERT_FILE/{PREFIX}TLS_KEY_FILE are both set: "
                              "choose one (HTTPS unless this is a local run on 127.0.0.1)")
        if not _loopback(settings.http_host):
            raise ConfigError(f"{PREFIX}PLAIN_HTTP=true is accepted only on a loopback {PREFIX}HTTP_HOST "
                              f"(127.0.0.1, ::1, localhost), not {settings.http_host!r}: the webhook's bearer token "
                              f"would cross the network in clear; serve HTTPS ({PREFIX}TLS_CERT_FILE and "
                              f"{PREFIX}TLS_KEY_FILE)")
        return Transport(None, None)
    if not cert or not key:
        missing = " and ".join(f"{PREFIX}{name}" for name, value in (("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key))
                               if not value)
        raise ConfigError(f"{missing} not set: the trigger serves HTTPS (the webhook carries a bearer token); mount "
                          f"Secret retrain-trigger-tls and point {PREFIX}TLS_CERT_FILE and {PREFIX}TLS_KEY_FILE at its "
                          f"tls.crt and tls.key, or set {PREFIX}PLAIN_HTTP=true for a local run on 127.0.0.1")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot serve HTTPS with {PREFIX}TLS_CERT_FILE={cert} and {PREFIX}TLS_KEY_FILE={key}: "
                          f"{exc} (both PEM, the key unencrypted and matching the certificate)") from None
    return Transport(cert, key)


class _CredentialsDir(ServiceSettings):
    """``RETRAIN_TRIGGER_CREDENTIALS_DIR`` alone: where :class:`Settings` read their secret files from, so it
    is known before they load."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    credentials_dir: str = ""


def load_settings(environ: Mapping[str, str] | None = None, secrets_dir: Path | None = None) -> Settings:
    """Settings from ``environ`` (default: the process environment) and ``secrets_dir`` (when it exists;
    default: ``RETRAIN_TRIGGER_CREDENTIALS_DIR``, else /var/run/secrets/retrain-trigger).

    Raises:
        ConfigError: naming every invalid or missing variable (values are never echoed).
    """
    # The rendered Deployment names its Secret mount (RETRAIN_TRIGGER_CREDENTIALS_DIR), so a local run of the same
    # manifest (demo/runner.py) points it at the folder it mounted instead.
    if secrets_dir is None:
        secrets_dir = Path(_CredentialsDir.load(environ).credentials_dir or SECRETS_DIR)
    try:
        return Settings.load(environ, **({"_secrets_dir": secrets_dir} if Path(secrets_dir).is_dir() else {}))
    except ValidationError as exc:
        raise ConfigError(f"invalid {PREFIX}* environment (or {Path(secrets_dir) / TOKEN_FILE_NAME}):\n"
                          f"{describe(exc, prefix=PREFIX)}") from exc


def describe(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: the variable (or field) and what is wrong with it. Values are not echoed."""
    def variable(loc: tuple) -> str:
        where = ".".join(str(part) for part in loc) or "<root>"
        return prefix + where.upper() if prefix and loc else where

    return "\n".join(f"  - {line}" for line in problems(exc, variable))
