"""The generator's exception tree, mapped once to exit codes in :mod:`generator.cli`.

Every expected failure is an :class:`MlopsError` whose message is meant for a person: it names the
file, the line when known, the field and the fix. Tracebacks are for bugs only.

Exit codes: 1 stale output (``render --check``), 2 usage, 3 spec, 4 render, 5 validation, 6 registry,
7 git, 8 Git host (pull requests).
"""

from __future__ import annotations

from dataclasses import dataclass


class MlopsError(Exception):
    """Root of every error the CLI reports without a traceback."""

    exit_code = 1


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

    exit_code = 3

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems, "invalid spec")


class RenderError(ProblemsError):
    """A template failed to render (for example it uses a variable the spec does not provide)."""

    exit_code = 4

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems, "rendering failed")


class ValidationError(ProblemsError):
    """Rendered manifests break a schema, an admission rule or a platform policy."""

    exit_code = 5

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems, "validation failed")


class StaleOutputError(MlopsError):
    """`render --check` found committed output that differs from a fresh render."""

    exit_code = 1


class RegistryError(MlopsError):
    """The model registry (MLflow) could not resolve a model version."""

    exit_code = 6


class UsageError(MlopsError):
    """Options that cannot work together, or an operation the current spec does not allow."""

    exit_code = 2


class GitError(MlopsError):
    """A ``git`` command failed, or the working tree is not in a state the operation can use."""

    exit_code = 7


class GitHostError(MlopsError):
    """The Git host (GitHub) refused or could not be reached for a pull request."""

    exit_code = 8
