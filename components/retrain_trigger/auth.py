"""Who may start a retrain: a sender that knows the shared secret.

Two ways to prove it, both compared in constant time (:func:`hmac.compare_digest`):

* ``Authorization: Bearer <secret>``: Grafana's ``authorization_credentials``, Alertmanager's
  ``http_config.authorization.credentials_file``;
* an HMAC-SHA256 signature of the body, hex, in ``X-Grafana-Alerting-Signature`` (Grafana's
  ``hmacConfig``). When the timestamp header is present the signature covers ``<timestamp>:<body>``
  and the timestamp must be within ``max_age_seconds`` of now, so a captured request cannot be replayed
  later. (A replay within that window, or a retry, is harmless: alerts are de-duplicated.)

A request that presents an ``Authorization`` header is judged by it alone; a wrong credential is never
rescued by a second one.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Authenticator:
    """Checks a request's headers and body against the shared ``secret``."""

    secret: bytes = field(repr=False)
    signature_header: str = "X-Grafana-Alerting-Signature"
    timestamp_header: str = "X-Grafana-Alerting-Timestamp"
    max_age_seconds: int = 300
    clock: Callable[[], float] = time.time

    def reject_reason(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """``None`` when the request is authentic, else why not (for the log; never contains the secret).

        ``headers`` must look names up case-insensitively (Starlette's ``Headers`` does).
        """
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                return "the Authorization header is not 'Bearer <token>'"
            if not hmac.compare_digest(credentials.strip().encode(), self.secret):
                return "wrong bearer token"
            return None
        signature = headers.get(self.signature_header)
        if signature is None:
            return f"no credentials (neither Authorization nor {self.signature_header})"
        message = body
        timestamp = headers.get(self.timestamp_header)
        if timestamp is not None:
            try:
                sent = int(timestamp.strip())
            except ValueError:
                return f"{self.timestamp_header} is not a Unix timestamp"
            if abs(self.clock() - sent) > self.max_age_seconds:
                return f"{self.timestamp_header} is more than {self.max_age_seconds}s away from now (replay?)"
            message = f"{timestamp.strip()}:".encode() + body  # the header as sent, like the signer
        expected = hmac.new(self.secret, message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
            return "wrong HMAC signature"
        return None

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Headers a sender sets to sign ``body`` (what Grafana does); for tests and tooling."""
        message = body if timestamp is None else f"{timestamp}:".encode() + body
        headers = {self.signature_header: hmac.new(self.secret, message, hashlib.sha256).hexdigest()}
        if timestamp is not None:
            headers[self.timestamp_header] = str(timestamp)
        return headers
