"""Shared pytest configuration: the golden-file update switch and the no-skips-in-CI rule."""

from __future__ import annotations

import os

import pytest

# Real services (PostgreSQL, moto S3, mlflow server) as fixtures: tests/services.py;
# a local stand-in for GitHub's pull-request API: tests/fakegithub.py.
pytest_plugins = ["services", "fakegithub"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="Rewrite tests/golden/ from the current output instead of comparing with it.")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under CI=true a skip is a failure: a skipped test proves nothing, and CI must have every dependency."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which counts as a failure: {report.longrepr}"
