"""Detector artifacts: the one module that writes, fetches, verifies and loads them.

A detector is fitted once and persisted (:func:`save`, by ``python -m drift_detector fit`` or the
retrain flow); the service fetches every predictor's artifact (:func:`fetch_artifact`: ``s3://``,
``file://`` or a path), checks it against the sha256 its config pins and loads it
(:func:`load_detectors`), never refitting. Anything wrong with an artifact is an
:class:`ArtifactError` (:class:`IntegrityError` for a hash mismatch, :class:`FormatError` for bytes
that are not a detector in this format); the service exits with ``ExitCode.ARTIFACT`` on it.

The persisted form is a safe, hash-checked artifact that loads in milliseconds. Format: an ``.npz`` (zip) archive with plain arrays only, written deterministically (fixed member
order and timestamps, so the same detector always hashes the same):

``header.npy``
    uint8 array holding UTF-8 JSON: format name and version, method, backend, features, p_value,
    correction, window, ert, and for ``cvm_online`` the window sizes and bootstrap count.
``reference.npy``
    float64 ``(n_ref, n_features)``: the reference data, categorical columns as category codes.
``thresholds.npy``
    float64 ``(2 * max(window_sizes) - 1,)``: ``cvm_online`` only, the configured thresholds (the
    expensive part of fitting, which alibi-detect's own ``load_detector`` would recompute).

:func:`load` checks the sha256 of the file's bytes against the configured one before parsing anything,
and reads arrays with ``allow_pickle=False``: nothing in an artifact can execute code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import numpy as np

from drift_detector.detector import FeatureSpec, FittedDetector

if TYPE_CHECKING:  # the settings need pydantic-settings; fitting and loading do not
    from .settings import DriftConfig, PredictorConfig, Settings

__all__ = ["ArtifactError", "FormatError", "IntegrityError", "fetch_artifact", "load", "load_detectors", "save",
           "sha256_file"]

log = logging.getLogger("drift_detector")

FORMAT = "mlops-gitops/drift-detector"
FORMAT_VERSION = 1
_MEMBERS = {"header.npy", "reference.npy", "thresholds.npy"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Fixed zip timestamp (the earliest zip can store) so that saving is reproducible.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class ArtifactError(Exception):
    """A detector artifact that cannot be used: missing, unreadable, or not the one the config names."""


class IntegrityError(ArtifactError):
    """The artifact's sha256 is not the configured one (tampered, truncated or the wrong file)."""


class FormatError(ArtifactError):
    """The artifact's bytes are not a detector in our format (or would need unpickling)."""


def _header(det: FittedDetector) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": det.method,
        "backend": det.backend,
        "features": [{"name": f.name, "kind": f.kind, "categories": f.categories} for f in det.features],
        "p_value": det.p_value,
        "correction": det.correction,
        "window": det.window,
        "ert": det.ert,
        "window_sizes": list(det.window_sizes),
        "n_bootstraps": det.n_bootstraps,
        "meta": det.meta,
    }


def _to_bytes(det: FittedDetector) -> bytes:
    arrays: dict[str, np.ndarray] = {
        "header.npy": np.frombuffer(json.dumps(_header(det), sort_keys=True).encode(), dtype=np.uint8),
        "reference.npy": np.ascontiguousarray(det.reference, dtype=np.float64),
    }
    if det.thresholds is not None:
        arrays["thresholds.npy"] = np.ascontiguousarray(det.thresholds, dtype=np.float64)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, arrays[name], allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_TIME), member.getvalue())
    return buf.getvalue()


def save(detector: FittedDetector, path: Path) -> str:
    """Write ``detector`` to ``path`` atomically (temp file + rename) and return the file's sha256 hex."""
    path = Path(path)
    data = _to_bytes(detector)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the rename is atomic: a reader never sees a half-written artifact.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 hex of a file's bytes (what the release spec's ``detector.sha256`` pins), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load(path: Path, expected_sha256: str, *, backend: str | None = None) -> FittedDetector:
    """Read a detector saved by :func:`save`, refusing it unless its sha256 is ``expected_sha256``.

    The hash is checked on the raw bytes before any parsing. ``backend`` overrides the backend
    recorded at fit time (the state is the same for both). Raises :class:`IntegrityError` on a hash
    mismatch and :class:`FormatError` if the file is not a detector in this format.
    """
    path = Path(path)
    expected = expected_sha256.strip().lower()
    if not _SHA256.match(expected):
        raise IntegrityError(f"{path}: expected sha256 {expected_sha256!r} is not 64 hex characters")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise IntegrityError(
            f"detector artifact {path} has sha256 {actual}, expected {expected}: refusing to load it "
            "(the file was changed or is not the configured one; refit or fix detector.sha256)"
        )
    return _from_bytes(data, str(path), backend)


def _from_bytes(data: bytes, where: str, backend: str | None) -> FittedDetector:
    if data[:1] == b"\x80":
        raise FormatError(f"{where}: is a Python pickle; refusing to load it (artifacts are .npz, never pickles)")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise FormatError(f"{where}: not an .npz archive")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
    unknown = names - _MEMBERS
    if unknown or not {"header.npy", "reference.npy"} <= names:
        raise FormatError(
            f"{where}: unexpected archive members {sorted(names)}; expected header.npy, reference.npy"
            " and for cvm_online thresholds.npy"
        )
    arrays: dict[str, np.ndarray] = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        for name in npz.files:
            try:
                arrays[name] = npz[name]
            except ValueError as exc:  # object arrays need pickle, which we never allow
                raise FormatError(f"{where}: member {name}.npy holds Python objects (pickle); refused") from exc
    header_arr = arrays["header"]
    if header_arr.dtype != np.uint8 or header_arr.ndim != 1:
        raise FormatError(f"{where}: header is not a uint8 vector")
    try:
        header = json.loads(header_arr.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{where}: header is not JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FormatError(f"{where}: not a {FORMAT} artifact")
    if header.get("format_version") != FORMAT_VERSION:
        raise FormatError(
            f"{where}: format_version {header.get('format_version')!r} is not supported "
            f"(this build reads {FORMAT_VERSION}); refit the detector"
        )
    reference = arrays["reference"]
    thresholds = arrays.get("thresholds")
    for name, arr in (("reference", reference), ("thresholds", thresholds)):
        if arr is not None and arr.dtype != np.float64:
            raise FormatError(f"{where}: {name} has dtype {arr.dtype}, expected float64")
    try:
        features = [FeatureSpec(f["name"], f["kind"], f.get("categories")) for f in header["features"]]
        return FittedDetector(
            method=header["method"],
            features=features,
            reference=reference,
            p_value=header["p_value"],
            correction=header["correction"],
            window=header["window"],
            ert=header["ert"],
            backend=backend or header["backend"],
            window_sizes=header.get("window_sizes") or (),
            thresholds=thresholds,
            n_bootstraps=header.get("n_bootstraps", 0),
            meta=header.get("meta") or {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{where}: invalid detector state: {exc}") from exc


# --- the service's side: fetch, verify, load every predictor's detector ----------------------------


def fetch_artifact(uri: str, directory: Path, sha256: str, s3_endpoint_url: str | None = None) -> Path:
    """A local path holding the artifact at ``uri``: ``s3://bucket/key`` (downloaded with boto3 into
    ``directory``), ``file:///path`` or a plain path (used where it is)."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if not parts.netloc or not parts.path.strip("/"):
            raise ArtifactError(f"detector URI {uri!r} names no bucket and key")
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        directory.mkdir(parents=True, exist_ok=True)
        suffix = "".join(Path(parts.path).suffixes)[-16:]
        target = directory / f"{sha256}{suffix}"
        handle, partial = tempfile.mkstemp(dir=directory, prefix=".download-")
        os.close(handle)
        try:
            client = boto3.client("s3", endpoint_url=s3_endpoint_url)
            client.download_file(parts.netloc, unquote(parts.path.lstrip("/")), partial)
            os.replace(partial, target)
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactError(f"cannot download detector {uri} from "
                                f"{s3_endpoint_url or 'the default S3 endpoint'}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(partial)
        return target
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
    elif parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        path = Path(uri)
    else:
        raise ArtifactError(f"detector URI {uri!r}: unsupported scheme {parts.scheme!r} "
                            "(use s3://, file:// or a path)")
    if not path.is_file():
        raise ArtifactError(f"detector artifact {uri} does not exist")
    return path


def load_detectors(config: DriftConfig, settings: Settings) -> dict[tuple[str, str], Any]:
    """Every predictor's fitted detector, verified against the config's sha256; never refits."""
    detectors: dict[tuple[str, str], Any] = {}
    for predictor in config.predictors:
        where = f"predictor {predictor.name!r} (version {predictor.version})"
        path = fetch_artifact(predictor.detector.uri, settings.artifact_dir, predictor.detector.sha256,
                              settings.s3_endpoint_url)
        try:
            detector = load(path, predictor.detector.sha256)
        except IntegrityError as exc:
            raise ArtifactError(
                f"refusing to start: the detector artifact of {where} at {predictor.detector.uri} is not "
                f"the configured one: sha256 {_safe_sha256(path)}, but the config expects "
                f"{predictor.detector.sha256}. It was changed after fitting, or the config names the "
                f"wrong artifact: refit and persist it, or fix detector.sha256 in the release spec "
                f"({exc})") from exc
        except (FormatError, OSError, ValueError) as exc:
            raise ArtifactError(f"refusing to start: the detector artifact of {where} at "
                                f"{predictor.detector.uri} cannot be loaded: {exc}") from exc
        _check_compatible(detector, config, predictor)
        detectors[(predictor.version, predictor.name)] = detector
        log.info("loaded detector of %s from %s (sha256 %s)", where, predictor.detector.uri,
                 predictor.detector.sha256)
    return detectors


def _safe_sha256(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError:
        return "<unreadable>"


def _check_compatible(detector: Any, config: DriftConfig, predictor: PredictorConfig) -> None:
    """The detector must have been fitted on the configured features, in the configured order."""
    features = getattr(detector, "features", None)
    if features is None:
        return
    fitted = [(getattr(f, "name", f), getattr(f, "kind", None), _categories(getattr(f, "categories", None)))
              for f in features]
    expected = [(f.name, f.type, _categories(f.categories)) for f in config.features]
    if [entry[0] for entry in fitted] != [entry[0] for entry in expected]:
        raise ArtifactError(
            f"refusing to start: the detector of predictor {predictor.name!r} (version {predictor.version}) "
            f"was fitted on features {[e[0] for e in fitted]}, but the config lists {[e[0] for e in expected]}")
    for (name, kind, categories), (_, want_kind, want_categories) in zip(fitted, expected, strict=True):
        if kind is not None and kind != want_kind:
            raise ArtifactError(f"refusing to start: feature {name!r} is {kind} in the detector of predictor "
                                f"{predictor.name!r} but {want_kind} in the config")
        if kind == "categorical" and categories is not None and categories != want_categories:
            raise ArtifactError(f"refusing to start: feature {name!r} has categories {categories} in the "
                                f"detector of predictor {predictor.name!r} but {want_categories} in the config "
                                "(category codes would not match)")
    method = getattr(detector, "method", None)
    if method is not None and method != config.method:
        raise ArtifactError(f"refusing to start: the detector of predictor {predictor.name!r} (version "
                            f"{predictor.version}) uses method {method!r}, but the config says {config.method!r}")
    for field_name in ("p_value", "correction", "window"):
        fitted_value = getattr(detector, field_name, None)
        if fitted_value is not None and fitted_value != getattr(config, field_name):
            log.warning("the detector of predictor %s was fitted with %s=%r but the config says %r; scoring "
                        "uses the detector's p_value and correction, windows have the config's size",
                        predictor.name, field_name, fitted_value, getattr(config, field_name))


def _categories(values: Sequence[Any] | None) -> list[str] | None:
    return None if values is None else [repr(v) for v in values]
