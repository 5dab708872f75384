"""The CLI installs small: the package's base dependencies are exactly what ``generator/`` imports, and
the services' and tests' stacks come only as extras (figures: benchmarks/install.py in RESULTS.md)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata

from helpers import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
OPTIONAL_IMPORTS = {"helm_python": "charts"}
"""Imported only when needed, with an install hint naming the extra that provides it."""


def distribution_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def imported_top_level_modules() -> set[str]:
    found = set()
    for path in (REPO / "generator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "generator"}


def test_every_third_party_import_of_the_cli_is_a_base_dependency():
    base = {distribution_name(r) for r in PYPROJECT["project"]["dependencies"]}
    providers = metadata.packages_distributions()
    missing = {}
    for module in imported_top_level_modules():
        if module in OPTIONAL_IMPORTS:
            extra = OPTIONAL_IMPORTS[module]
            assert extra in PYPROJECT["project"]["optional-dependencies"], module
            continue
        names = {name.lower().replace("_", "-") for name in providers.get(module, [])}
        if not names & base:
            missing[module] = sorted(names)
    assert missing == {}, "declare these in [project] dependencies"


def test_the_service_stack_is_not_a_base_dependency():
    base = {distribution_name(r) for r in PYPROJECT["project"]["dependencies"]}
    heavy = {"mlflow", "prefect", "seldon-core", "aiokafka", "scikit-learn", "boto3", "alibi-detect",
             "helm-python-sdk", "pytest"}
    assert base & heavy == set()
    assert len(base) <= 12
