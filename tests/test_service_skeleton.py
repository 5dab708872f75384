"""The services' one skeleton (ARCHITECTURE.md): settings are the only readers of the environment, and
each service's README tables its exit codes exactly as its ``ExitCode`` declares them, with the same
number for the same meaning in every service."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers import REPO

COMPONENTS = REPO / "components"
HAND_OFFS = {"model_server/__main__.py": "update"}
"""Modules allowed to *write* the environment (never to read it), with the one ``os.environ`` method they
call: the model server's entry point hands ``PROMETHEUS_MULTIPROC_DIR`` on to prometheus-client 0.8 under
the lower-case name it reads (the value comes from its settings)."""
EXIT_CODES = {
    "drift_detector": "drift_detector/__init__.py",
    "model_server": "model_server/__init__.py",
    "retrain": "retrain/settings.py",
    "retrain_trigger": "retrain_trigger/__init__.py",
}
"""Each service's README folder → the module declaring its ``ExitCode``."""


def environment_reads(path: Path, relative: str) -> list[str]:
    """``file:line`` of every ``os.environ`` / ``os.getenv`` use (or ``from os import environ``) that is
    not the file's allowed hand-off."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                alias.name in ("environ", "getenv", "environb", "getenvb") for alias in node.names):
            found.append((node.lineno, f"{relative}:{node.lineno}: from os import ..."))
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
                and node.attr in ("environ", "getenv", "environb", "getenvb")):
            continue
        parent = parents.get(node)
        method = parent.attr if isinstance(parent, ast.Attribute) and parent.value is node else None
        if method is not None and HAND_OFFS.get(relative) == method:
            continue
        found.append((node.lineno, f"{relative}:{node.lineno}: os.{node.attr}{'.' + method if method else ''}"))
    return [hit for _, hit in sorted(found)]


def test_only_the_settings_modules_read_the_environment() -> None:
    reads = [hit for path in sorted(COMPONENTS.rglob("*.py"))
             if path.name != "settings.py"
             for hit in environment_reads(path, path.relative_to(COMPONENTS).as_posix())]
    assert reads == [], "read variables through the service's settings (service_kit.settings.ServiceSettings)"


def test_the_environment_check_catches_a_read_and_keeps_hand_offs_to_writes(tmp_path: Path) -> None:
    """Not vacuous: a read anywhere is caught, in the hand-off module too; only its named write passes."""
    module = tmp_path / "module.py"
    module.write_text("import os\nfrom os import getenv\na = os.environ.get('X')\nb = os.getenv('Y')\n"
                      "os.environ.update({'z': '1'})\nc = os.environ['W']\n")
    assert environment_reads(module, "retrain/propose.py") == [
        "retrain/propose.py:2: from os import ...", "retrain/propose.py:3: os.environ.get",
        "retrain/propose.py:4: os.getenv", "retrain/propose.py:5: os.environ.update",
        "retrain/propose.py:6: os.environ"]
    assert environment_reads(module, "model_server/__main__.py") == [
        "model_server/__main__.py:2: from os import ...", "model_server/__main__.py:3: os.environ.get",
        "model_server/__main__.py:4: os.getenv", "model_server/__main__.py:6: os.environ"]


def test_every_settings_class_loads_the_one_way() -> None:
    """pydantic-settings only through ``service_kit.settings.ServiceSettings`` (its ``load``): no service
    subclasses ``BaseSettings`` itself."""
    direct = [f"{path.relative_to(COMPONENTS)}:{node.lineno} {node.name}"
              for path in sorted(COMPONENTS.rglob("*.py")) if path.parent.name != "service_kit"
              for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
              if isinstance(node, ast.ClassDef)
              and any(getattr(base, "id", getattr(base, "attr", "")) == "BaseSettings" for base in node.bases)]
    services = [path.parent.name for path in sorted(COMPONENTS.glob("*/settings.py"))]
    assert direct == [] and set(services) >= {"drift_detector", "model_server", "retrain", "retrain_trigger"}
    for service in ("drift_detector", "model_server", "retrain", "retrain_trigger"):
        assert "ServiceSettings" in (COMPONENTS / service / "settings.py").read_text(encoding="utf-8")


def declared_exit_codes(path: Path) -> dict[int, str]:
    """number → name of the ``ExitCode`` members declared in ``path`` (read, not imported)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name == "ExitCode":
            return {statement.value.value: statement.targets[0].id for statement in node.body
                    if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)}
    raise AssertionError(f"{path} declares no ExitCode")


def documented_exit_codes(readme: Path) -> dict[int, str]:
    """number → name of the README's exit-code table rows (``| 2 | `CONFIG` | ... |``)."""
    return {int(number): name
            for number, name in re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", readme.read_text(encoding="utf-8"), re.M)}


@pytest.mark.parametrize("service", sorted(EXIT_CODES))
def test_each_service_readme_tables_its_exit_codes(service: str) -> None:
    declared = declared_exit_codes(COMPONENTS / EXIT_CODES[service])
    assert declared, f"{EXIT_CODES[service]}: ExitCode has no members"
    assert documented_exit_codes(COMPONENTS / service / "README.md") == declared


def test_the_same_exit_code_means_the_same_thing_in_every_service() -> None:
    every = {service: declared_exit_codes(COMPONENTS / module) for service, module in EXIT_CODES.items()}
    by_number: dict[int, set[str]] = {}
    for codes in every.values():
        for number, name in codes.items():
            by_number.setdefault(number, set()).add(name)
    assert by_number == {0: {"OK"}, 1: {"FAILURE"}, 2: {"CONFIG"}, 3: {"ARTIFACT"}}
    shared = (COMPONENTS / "service_kit" / "README.md").read_text(encoding="utf-8")
    assert {int(n) for n in re.findall(r"^\| (\d+) \| ", shared, re.M)} == set(by_number)  # the shared table
