"""What each command reports, as data: the ``--output json`` shapes (documented in the README).

Every JSON report is one object: ``{"command": ..., "ok": true, ...}`` on success and
``{"command": ..., "ok": false, "exit_code": N, "error": "<ErrorType>", "message": ..., "problems": [...]}``
on failure; the fields in between are the command's own (see :func:`plan_report` and each caller).
"""

from __future__ import annotations

from typing import Any

from generator.changes.prepare import ModelChange
from generator.changes.publish import Published
from generator.spec.errors import MlopsError, Problem, ProblemsError
from generator.spec.models import Release
from generator.write.plan import Plan

SCHEMA_VERSION = 1
"""Bumped when a field of a report changes meaning or goes away (new fields do not bump it)."""


def envelope(command: str, **fields: Any) -> dict[str, Any]:
    """A successful report of ``command``."""
    return {"schema": SCHEMA_VERSION, "command": command, "ok": True, **fields}


def error_report(command: str, error: MlopsError) -> dict[str, Any]:
    """A failed report: the exit code, the error type, its message and every problem."""
    problems = error.problems if isinstance(error, ProblemsError) else []
    return {"schema": SCHEMA_VERSION, "command": command, "ok": False, "exit_code": int(error.exit_code),
            "error": type(error).__name__, "message": error.headline if isinstance(error, ProblemsError)
            else str(error), "problems": [problem_report(p) for p in problems]}


def problem_report(problem: Problem) -> dict[str, Any]:
    return {"file": problem.file, "line": problem.line, "field": problem.field, "message": problem.message,
            "fix": problem.fix}


def plan_report(plan: Plan) -> dict[str, Any]:
    """``writes`` (paths that are new or differ), ``deletes`` and the ``unchanged`` count."""
    return {"writes": sorted(plan.writes), "deletes": list(plan.deletes), "unchanged": plan.unchanged}


def release_report(release: Release) -> dict[str, Any]:
    return {"release_id": release.release_id, "registered_name": release.registry.name,
            "version": release.registry.version, "artifact_uri": release.artifact_uri}


def published_report(published: Published | None) -> dict[str, Any] | None:
    if published is None:
        return None
    pull_request = published.pull_request
    return {"branch": published.branch, "base": published.base, "commit": published.commit,
            "pushed": published.pushed,
            "pull_request": None if pull_request is None else {"number": pull_request.number, "url": pull_request.url}}


def change_report(change: ModelChange) -> dict[str, Any]:
    """The spec and files of a prepared model change."""
    return {"environment": change.env, "model": change.model.spec.model, "spec": change.spec_path,
            **plan_report(change.plan), "validated": len(change.files)}
