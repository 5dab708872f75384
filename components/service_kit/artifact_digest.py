"""The one definition of a model artifact's digest (``release.artifact_sha256``).

An MLflow model is a directory (``MLmodel``, the pickled model, ``requirements.txt``...), not one file, so
its digest is a manifest hash: list every regular file under the directory as ``sha256sum`` prints it,
``<sha256 of the bytes>  <path relative to the directory, with />`` and a newline, sorted by path
(byte order of the UTF-8 path), and take the sha256 of that text. It is exactly

    cd MODEL_DIR && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum

so anyone can check a downloaded artifact without this code. Directories count only through their files
(an empty one adds nothing); a symbolic link is refused, because what it points to is not part of the
stored artifact and could change under the same name.

Who uses it: the retrain flow computes it from the model it just logged and records it on the registry
version (tag ``mlops.artifact_sha256``, ``generator.external.registry.ARTIFACT_DIGEST_TAG``), which
``generate-model`` reads; the model server recomputes it over
the directory it downloaded and refuses to load on a mismatch. ``python -m service_kit.artifact_digest DIR``
prints it.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

_CHUNK = 1 << 20


class ArtifactDigestError(ValueError):
    """The directory cannot be hashed (missing, empty, or holding a symbolic link)."""


def manifest(root: str | Path) -> str:
    """The ``sha256sum``-style manifest of every file under ``root``, sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactDigestError(f"{root} is not a directory; an MLflow model artifact is a directory")
    entries: list[tuple[bytes, str]] = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise ArtifactDigestError(f"{relative} in {root} is a symbolic link; an artifact holds only files")
        if path.is_file():
            entries.append((relative.encode(), f"{_file_sha256(path)}  {relative}\n"))
    if not entries:
        raise ArtifactDigestError(f"{root} holds no files; the model artifact is empty")
    return "".join(line for _, line in sorted(entries))


def artifact_sha256(root: str | Path) -> str:
    """The digest of the model directory ``root``: the sha256 of its :func:`manifest`."""
    return hashlib.sha256(manifest(root).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """``python -m service_kit.artifact_digest DIR``: print the digest of a downloaded model directory."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m service_kit.artifact_digest MODEL_DIR", file=sys.stderr)
        return 2
    try:
        print(artifact_sha256(args[0]))
    except ArtifactDigestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
