"""``mlops charts pull`` over the network: a real HTTPS server on a free local port serves a chart repository
(``index.yaml`` and the packaged archive), and pull must write archive, lock entry, SOURCES.md and pin together,
or nothing when the archive is not the one the index lists or the version is not published.

The server is Python's http.server behind TLS with a certificate made for the test (openssl) and trusted through
SSL_CERT_FILE, so the command's own https-only download path runs unchanged.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from generator.commands.charts import pull
from generator.spec.charts import load_lock
from generator.spec.errors import RepositoryError
from generator.spec.layout import RepoLayout
from helpers import REPO, copy_example_repo, snapshot
from services import LOCALHOST, free_port, service_unavailable

CHART = "strimzi-kafka-operator"
OLD_URL = "https://strimzi.io/charts/"


class ChartRepository(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.requests.append(self.path)
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        service_unavailable("openssl is not installed (it makes the test server's certificate)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={LOCALHOST}",
                    "-addext", f"subjectAltName=IP:{LOCALHOST}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def chart_server(certificate, monkeypatch):
    """``https://127.0.0.1:<port>/charts``: ChartRepository.files maps request paths to bodies."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("NO_PROXY", f"{LOCALHOST},localhost")
    server = http.server.ThreadingHTTPServer((LOCALHOST, free_port()), ChartRepository)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ChartRepository.files, ChartRepository.requests = {}, []
    yield f"https://{LOCALHOST}:{server.server_address[1]}/charts"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def archive_121(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real chart archive of version 1.2.1, packaged with Helm from the vendored 1.2.0 chart."""
    import helm_python

    folder = tmp_path_factory.mktemp("chart")
    helm_python.expand(folder / "src", REPO / "vendor" / "charts" / f"{CHART}-1.2.0.tgz")
    return Path(helm_python.package(folder / "src" / CHART, destination=folder, version="1.2.1",
                                    app_version="1.2.1")).read_bytes()


def serve(url: str, archive: bytes, digest: str | None = None) -> None:
    """index.yaml lists 1.2.1 (newest first) with ``digest`` (default: the archive's), then 1.2.0."""
    index = {"apiVersion": "v1", "entries": {CHART: [
        {"name": CHART, "version": "1.2.1", "appVersion": "1.2.1", "created": "2026-11-30T10:00:00Z",
         "digest": digest or hashlib.sha256(archive).hexdigest(), "urls": [f"{CHART}-1.2.1.tgz"]},
        {"name": CHART, "version": "1.2.0", "appVersion": "1.2.0", "created": "2026-10-01T10:00:00Z",
         "digest": "0" * 64, "urls": [f"{CHART}-1.2.0.tgz"]}]}}
    path = url.split("/", 3)[3]
    ChartRepository.files = {f"/{path}/index.yaml": yaml.safe_dump(index).encode(),
                             f"/{path}/{CHART}-1.2.1.tgz": archive}


@pytest.fixture
def repo(tmp_path: Path, chart_server: str) -> Path:
    """The example repository with strimzi's chart repository moved to the test server (pin and lock)."""
    root = copy_example_repo(tmp_path / "repo")
    for path in (root / "apps" / "strimzi" / "component.yaml", root / "vendor" / "charts" / "charts.yaml"):
        path.write_text(path.read_text().replace(OLD_URL, chart_server + "/"))
    return root


def test_pull_takes_the_newest_published_version_and_writes_everything_together(repo, chart_server, archive_121):
    serve(chart_server, archive_121)
    layout = RepoLayout(repo)
    result = pull(layout, "strimzi")
    assert (result.previous, result.version, result.app_version) == ("1.2.0", "1.2.1", "1.2.1")
    assert ChartRepository.requests == ["/charts/index.yaml", f"/charts/{CHART}-1.2.1.tgz"]
    charts = repo / "vendor" / "charts"
    assert (charts / f"{CHART}-1.2.1.tgz").read_bytes() == archive_121  # the published bytes, unchanged
    assert not (charts / f"{CHART}-1.2.0.tgz").exists()
    digest = hashlib.sha256(archive_121).hexdigest()
    vendored, problems = load_lock(layout)
    assert problems == []
    entry = vendored[(chart_server, CHART, "1.2.1")].entry
    assert entry.sha256 == entry.published_digest == digest
    assert entry.published.startswith(f"{chart_server}/index.yaml (read ") and "created 2026-11-30" in entry.published
    assert f"| {CHART} | 1.2.1 | 1.2.1 | {chart_server}/ |" in (charts / "SOURCES.md").read_text()
    component = yaml.safe_load((repo / "apps" / "strimzi" / "component.yaml").read_text())
    assert component["source"]["version"] == "1.2.1" and component["app_version"] == "1.2.1"
    assert component["source"]["evidence"].startswith(f"{chart_server}/index.yaml")


def test_pull_refuses_an_archive_whose_digest_is_not_the_index_and_writes_nothing(repo, chart_server, archive_121):
    serve(chart_server, archive_121, digest="f" * 64)
    before = snapshot(repo)
    with pytest.raises(RepositoryError, match=f"has sha256 {hashlib.sha256(archive_121).hexdigest()}, but "
                       f"{chart_server}/index.yaml lists {'f' * 64}"):
        pull(RepoLayout(repo), "strimzi", version="1.2.1")
    assert snapshot(repo) == before


def test_pull_refuses_a_version_the_index_does_not_list(repo, chart_server, archive_121):
    serve(chart_server, archive_121)
    before = snapshot(repo)
    with pytest.raises(RepositoryError, match=r"has no strimzi-kafka-operator 1\.3\.0 \(newest: 1\.2\.1, 1\.2\.0\): "
                       "it is not published"):
        pull(RepoLayout(repo), "strimzi", version="1.3.0")
    assert snapshot(repo) == before
    assert ChartRepository.requests == ["/charts/index.yaml"]
