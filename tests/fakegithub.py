"""A local HTTP server that answers like GitHub's pull-request API, for tests (GitHub is unreachable).

Use the ``github`` fixture (import it into the test module): it records every request and answers each
with the next queued ``(status, JSON body)``, by default a created pull request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services import free_port


@dataclass
class FakeGitHub:
    """Records requests; answers each with the next queued (status, JSON body)."""

    url: str
    requests: list[dict] = field(default_factory=list)
    answers: list[tuple[int, object]] = field(default_factory=list)

    def environ(self, repo: str = "acme/gitops", token: str = "test-token") -> dict[str, str]:
        """The variables that make ``host_from_env`` talk to this server."""
        return {"MLOPS_GIT_REPO": repo, "MLOPS_GIT_TOKEN": token, "MLOPS_GIT_API_URL": self.url}


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", 0))
            fake.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                  "body": json.loads(self.rfile.read(length) or b"null")})
            number = len(fake.requests)
            status, body = fake.answers.pop(0) if fake.answers else (
                201, {"number": number, "html_url": f"https://github.example.com/acme/gitops/pull/{number}"})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/api/v3"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
