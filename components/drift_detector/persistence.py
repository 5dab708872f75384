"""Persisted detectors: a safe, hash-checked artifact that loads in milliseconds.

Format: an ``.npz`` (zip) archive with plain arrays only, written deterministically (fixed member
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

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from drift_detector.detector import FeatureSpec, FittedDetector

__all__ = ["ArtifactError", "FormatError", "IntegrityError", "load", "save", "sha256_file"]

FORMAT = "mlops-gitops/drift-detector"
FORMAT_VERSION = 1
_MEMBERS = {"header.npy", "reference.npy", "thresholds.npy"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Fixed zip timestamp (the earliest zip can store) so that saving is reproducible.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class ArtifactError(Exception):
    """A detector artifact that cannot be used."""


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
    """sha256 hex of a file's bytes (what the release spec's ``detector.sha256`` pins)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
