"""The generator's layers (ARCHITECTURE.md): imports only go down, nothing imports in a circle, and every
repository path is built by ``generator/spec/layout.py``.

The layers follow the data: spec → render → check → write → changes → commands → cli, with the clients
of outside systems (``external``: git, the Git host's API, MLflow) just above spec.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE = REPO / "generator"
LAYERS = ("spec", "external", "render", "check", "write", "changes", "commands", "cli")
"""Lowest first: a module may import from its own layer and the ones before it."""


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def generator_imports(path: Path, root: Path = REPO) -> set[str]:
    """Every ``generator.*`` module ``path`` imports, at any depth of the file (function-level too);
    ``from generator.x import y`` counts as importing ``generator.x.y`` when ``y`` is a module."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                node.module == "generator" or node.module.startswith("generator.")):
            folder = root.joinpath(*node.module.split("."))
            for alias in node.names:
                if (folder / f"{alias.name}.py").is_file() or (folder / alias.name / "__init__.py").is_file():
                    found.add(f"{node.module}.{alias.name}")
                elif node.module != "generator":
                    found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("generator."))
    return found


def layer_of(module: str) -> int | None:
    """Index in LAYERS; ``None`` for the package root (``generator.__version__``, importable from anywhere)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    if parts[1] not in LAYERS:
        raise AssertionError(f"{module} is in no layer: put it in one of {', '.join(LAYERS)}")
    return LAYERS.index(parts[1])


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(path): generator_imports(path) for path in sorted(root.rglob("*.py"))}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imports in graph.items():
        own = layer_of(module)
        for imported in sorted(imports):
            theirs = layer_of(imported)
            if own is not None and theirs is not None and theirs > own:
                wrong.append(f"{module} ({LAYERS[own]}) imports {imported} ({LAYERS[theirs]})")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each reported once from its smallest module."""
    found, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        stack.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                circle = stack[stack.index(imported):]
                found.append(circle)
            elif imported in graph and imported not in state:
                visit(imported, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return found


def test_every_module_is_in_a_layer_and_imports_only_downwards():
    graph = import_graph()
    assert len(graph) > 30, "the generator package was not found"
    assert upward_imports(graph) == []


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_checks_catch_an_upward_import_and_a_circle(tmp_path):
    """The two rules above fail on a tree that breaks them (so they are not vacuous)."""
    for relative, text in {
        "generator/__init__.py": "",
        "generator/spec/__init__.py": "",
        "generator/spec/a.py": "from generator.render.b import x\n",
        "generator/render/__init__.py": "",
        "generator/render/b.py": "def f():\n    from generator.render.c import y\n",
        "generator/render/c.py": "from generator.render.b import f\n",
    }.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    graph = {module_name(path, tmp_path): generator_imports(path, tmp_path)
             for path in sorted((tmp_path / "generator").rglob("*.py"))}
    assert upward_imports(graph) == ["generator.spec.a (spec) imports generator.render.b (render)"]
    assert cycles(graph) == [["generator.render.b", "generator.render.c"]]


def path_literals(path: Path) -> list[str]:
    """f-strings and plain strings that build a path under ``environments/`` or ``bootstrap/`` in code
    (docstrings and messages that only mention a folder name are not paths: they contain spaces)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            text = str(node.values[0].value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if text.startswith(("environments/", "bootstrap/")) and " " not in text.split("{")[0]:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {text[:60]!r}")
    return found


@pytest.mark.parametrize("root", [PACKAGE, REPO / "components" / "retrain"], ids=["generator", "retrain"])
def test_repository_paths_come_from_layout(root):
    layout = PACKAGE / "spec" / "layout.py"
    built = [hit for path in sorted(root.rglob("*.py")) if path != layout for hit in path_literals(path)]
    assert built == [], "build these paths with generator.spec.layout"
