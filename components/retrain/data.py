"""Versioned training data: a URI plus the sha256 of its bytes, verified before anything trains on it.

A dataset version is published as the data file and, next to it, ``<uri>.sha256`` in ``sha256sum``
format (what :func:`publish_dataset` writes). The flow takes the hash from its ``data_sha256``
parameter when given, else from that sidecar, downloads the file and refuses to continue unless the
bytes match. MLflow then records the same URI and hash with the run and the registered version.

Supported URIs: ``s3://bucket/key`` (boto3; endpoint from ``AWS_ENDPOINT_URL_S3`` or
``MLFLOW_S3_ENDPOINT_URL``, credentials the usual AWS way), ``file:///path`` and plain paths.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from drift_detector.artifacts import sha256_file  # the image ships the drift detector's package

from retrain.settings import load_settings

SIDECAR_SUFFIX = ".sha256"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DataError(RuntimeError):
    """The dataset cannot be read, has no published hash, or is not the version its hash pins."""


@dataclass(frozen=True)
class DatasetVersion:
    """A verified local copy of a dataset version."""

    uri: str
    sha256: str
    path: Path


def s3_client():
    """A boto3 S3 client for the configured endpoint (MinIO, SeaweedFS or AWS)."""
    import boto3

    return boto3.client("s3", endpoint_url=load_settings().s3_endpoint_url)


def fetch_dataset(uri: str, directory: Path, sha256: str | None = None) -> DatasetVersion:
    """Download ``uri`` into ``directory`` and verify it against ``sha256`` (else the published sidecar).

    Raises:
        DataError: unsupported URI, missing file or sidecar, malformed hash, or a hash mismatch.
    """
    expected = (sha256 or read_text(f"{uri}{SIDECAR_SUFFIX}", what="published sha256").split()[0]).strip().lower()
    if not _SHA256.fullmatch(expected):
        raise DataError(f"{uri}: the expected sha256 {expected!r} is not 64 hex characters; pass data_sha256 or fix "
                        f"{uri}{SIDECAR_SUFFIX}")
    directory.mkdir(parents=True, exist_ok=True)
    local = directory / (Path(urlsplit(uri).path).name or "dataset")
    _download(uri, local)
    actual = sha256_file(local)
    if actual != expected:
        raise DataError(f"{uri} has sha256 {actual}, expected {expected}: refusing to train on data that is not the "
                        "pinned version (publish the file and its .sha256 together, or pass the right data_sha256)")
    return DatasetVersion(uri, actual, local)


def read_text(uri: str, what: str = "file") -> str:
    """The text at ``uri`` (small files such as the sha256 sidecar)."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = s3_client().get_object(Bucket=parts.netloc, Key=unquote(parts.path.lstrip("/")))["Body"]
            return body.read().decode("utf-8")
        except (BotoCoreError, ClientError) as exc:
            raise DataError(f"cannot read the {what} {uri}: {exc}; publish it next to the data (see "
                            "retrain.data.publish_dataset) or pass data_sha256") from None
    try:
        return _local_path(uri).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read the {what} {uri}: {exc.strerror or exc}; publish it next to the data (see "
                        "retrain.data.publish_dataset) or pass data_sha256") from None


def publish_dataset(path: Path, uri: str) -> str:
    """Upload (or copy) the file at ``path`` to ``uri`` with its ``.sha256`` sidecar; returns the sha256."""
    digest = sha256_file(path)
    sidecar = f"{digest}  {Path(urlsplit(uri).path).name}\n"
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        client, key = s3_client(), unquote(parts.path.lstrip("/"))
        client.upload_file(str(path), parts.netloc, key)
        client.put_object(Bucket=parts.netloc, Key=f"{key}{SIDECAR_SUFFIX}", Body=sidecar.encode())
        return digest
    target = _local_path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.resolve() != Path(path).resolve():
        shutil.copyfile(path, target)
    Path(f"{target}{SIDECAR_SUFFIX}").write_text(sidecar, encoding="utf-8")
    return digest


def _download(uri: str, target: Path) -> None:
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        from botocore.exceptions import BotoCoreError, ClientError

        if not parts.netloc or not parts.path.strip("/"):
            raise DataError(f"dataset URI {uri!r} names no bucket and key")
        try:
            s3_client().download_file(parts.netloc, unquote(parts.path.lstrip("/")), str(target))
        except (BotoCoreError, ClientError) as exc:
            raise DataError(f"cannot download the dataset {uri}: {exc}") from None
        return
    source = _local_path(uri)
    if not source.is_file():
        raise DataError(f"dataset {uri} does not exist")
    shutil.copyfile(source, target)


def _local_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme == "":
        return Path(uri)
    raise DataError(f"dataset URI {uri!r}: unsupported scheme {parts.scheme!r} (use s3://, file:// or a path)")
