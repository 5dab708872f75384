"""The generator's exception tree, mapped once to exit codes in :mod:`generator.cli`.

Every expected failure is an :class:`MlopsError` whose message is meant for a person: it names the
file, the line when known, the field and the fix. Tracebacks are for bugs only.

Every exit code of ``mlops`` is one row of :class:`ExitCode` (documented in the README's Commands section,
and checked against it by ``tests/test_docs.py``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, unique


@unique
class ExitCode(IntEnum):
    """What ``mlops`` exits with; scripts may rely on these numbers."""

    OK = 0
    CHECK_FAILED = 1
    """A check found the tree out of date: ``render --check`` (stale output), ``status --check``."""
    USAGE = 2
    """Options that cannot work together, or an operation refused before anything was written."""
    SPEC = 3
    """An environment or release spec is invalid."""
    RENDER = 4
    """A template failed to render."""
    VALIDATION = 5
    """Rendered manifests break a schema, an admission rule or a policy."""
    REGISTRY = 6
    """The model registry (MLflow) could not resolve a model version."""
    GIT = 7
    """A git command failed, or the working tree is not in a state the operation can use."""
    GIT_HOST = 8
    """The Git host refused or could not be reached for a pull request."""
    REPOSITORY = 9
    """Not a mlops-gitops repository, or one missing what every command needs (environments, schemas)."""
    WRITE = 10
    """The tree could not be written (permissions, disk full); nothing was changed."""
    INTERNAL = 70
    """A bug in mlops-gitops: an unexpected exception (``MLOPS_DEBUG=1`` shows the traceback)."""
    PIPE = 141
    """The reader of the output went away (``mlops ... | head``): the output stops there, quietly, as a
    program stopped by SIGPIPE would (128 + 13)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean X?"`` when ``name`` is close to one of ``known`` (a typo), else ``""``.

    Close means: the same name in another case (``Dev``), one edit away for short names and two for longer
    ones, counting a swap of neighbours as one (``prdo``, ``dve``, ``fraud-detectr``), the start of exactly
    one known name (``fraud`` for ``fraud-detector``), or similar by :mod:`difflib`'s measure.
    """
    known = [k for k in dict.fromkeys(known) if k != name]
    if not name or not known:
        return ""
    lowered = name.lower()
    candidates = [k for k in known if k.lower() == lowered]
    if not candidates:
        limit = 1 if len(name) <= 5 else 2
        scored = sorted((edit_distance(lowered, k.lower()), k) for k in known)
        candidates = [k for distance, k in scored if distance <= limit and distance == scored[0][0]]
    if not candidates and len(name) >= 3:
        starts = [k for k in known if k.lower().startswith(lowered)]
        candidates = starts if len(starts) == 1 else []
    candidates = candidates or difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f"; did you mean {candidates[0]}?" if candidates else ""


def edit_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours that turn ``a`` into ``b`` (optimal
    string alignment)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


class MlopsError(Exception):
    """Root of every error the CLI reports without a traceback."""

    exit_code = ExitCode.REPOSITORY


class RepositoryError(MlopsError):
    """Not a mlops-gitops repository (no ``environments/<env>/environment.yaml``), or one missing what the
    commands need (a vendored schema, the Kubernetes schemas of the requested version)."""

    exit_code = ExitCode.REPOSITORY


@dataclass(frozen=True)
class Problem:
    """One finding in one file: where it is, what is wrong and how to fix it."""

    file: str
    message: str
    line: int | None = None
    field: str | None = None
    fix: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text


class ProblemsError(MlopsError):
    """Raised with every problem found, so users fix them all in one go."""

    def __init__(self, problems: list[Problem], headline: str) -> None:
        self.problems = list(problems)
        self.headline = headline
        lines = [f"{headline} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class SpecError(ProblemsError):
    """An environment or release spec is missing, malformed or breaks a rule."""

    exit_code = ExitCode.SPEC

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems, "invalid spec")


class RenderError(ProblemsError):
    """A template failed to render (for example it uses a variable the spec does not provide)."""

    exit_code = ExitCode.RENDER

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems, "rendering failed")


class ValidationError(ProblemsError):
    """Rendered manifests break a schema, an admission rule or a platform policy."""

    exit_code = ExitCode.VALIDATION

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems, "validation failed")


class CheckFailedError(MlopsError):
    """A ``--check`` found the tree out of date: ``render --check`` (committed output differs from a fresh
    render) or ``status --check`` (a stale spec, or an environment too far behind dev)."""

    exit_code = ExitCode.CHECK_FAILED


class RegistryError(MlopsError):
    """The model registry (MLflow) could not resolve a model version."""

    exit_code = ExitCode.REGISTRY


class UsageError(MlopsError):
    """Options that cannot work together, or an operation the current spec does not allow."""

    exit_code = ExitCode.USAGE


class GitError(MlopsError):
    """A ``git`` command failed, or the working tree is not in a state the operation can use."""

    exit_code = ExitCode.GIT


class WriteError(MlopsError):
    """Files could not be staged or written (permissions, a read-only folder, a full disk)."""

    exit_code = ExitCode.WRITE


class GitHostError(MlopsError):
    """The Git host (GitHub) refused or could not be reached for a pull request."""

    exit_code = ExitCode.GIT_HOST
