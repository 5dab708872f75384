"""The generator's layers (ARCHITECTURE.md): imports only go down, nothing imports in a circle, and every
repository path is built by ``generator/spec/layout.py``.

The layers follow the data: spec → render → check → write → changes → commands → cli, with the clients
of outside systems (``external``: git, the Git host's API, MLflow) just above spec.
"""

from __future__ import annotations

import ast
import re
import subprocess
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


NAMED_PATH = re.compile(r"(?<![\w/.-])generator/[\w/]+\.py\b")
NAMED_MODULE = re.compile(r"(?<![\w.])generator(?:\.\w+)+")
TEXT_FILE = re.compile(r"\.(md|py|j2|ya?ml|toml|txt)$|(^|/)(Makefile|Dockerfile)$")


def stale_names(relative: str, text: str, root: Path = REPO) -> list[str]:
    """The ``generator/...py`` paths and ``generator.x.y`` modules ``text`` names that do not exist under
    ``root`` (a dotted name may end in attributes of an existing module; a package's next part must be a
    module of it or a name its ``__init__`` defines)."""
    found = [f"{relative}: {m.group(0)}" for m in NAMED_PATH.finditer(text) if not (root / m.group(0)).is_file()]
    for match in NAMED_MODULE.finditer(text):
        parts, here, depth = match.group(0).split("."), root / "generator", 0
        for part in parts[1:]:
            if not ((here / f"{part}.py").is_file() or (here / part / "__init__.py").is_file()):
                break
            here, depth = here / part, depth + 1
        rest = [part for part in parts[1 + depth:] if not part.startswith("__")]
        if depth == 0 and rest:
            found.append(f"{relative}: {match.group(0)}")
        elif here.is_dir() and rest and not re.search(rf"\b{rest[0]}\b", (here / "__init__.py").read_text()):
            found.append(f"{relative}: {match.group(0)}")
    return found


def test_every_generator_path_and_module_the_repository_names_exists():
    """Docs, templates, comments and messages name the modules where they are (``generator/spec/naming.py``,
    ``generator.render.jobs``), so a move of a module updates what points to it. Test modules are read for
    their docstring only (their code has local variables named ``generator``)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    stale = []
    for relative in sorted(set(listed)):
        path = REPO / relative
        if (relative.startswith(("tests/golden/", "vendor/")) or relative == "tests/test_architecture.py"
                or not TEXT_FILE.search(relative) or not path.is_file()):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if relative.startswith("tests/") and relative.endswith(".py"):
            text = ast.get_docstring(ast.parse(text)) or ""
        stale += stale_names(relative, text)
    assert stale == [], "name the module where it is now"


def test_the_name_check_catches_a_moved_module():
    text = ("see generator/validate.py and generator/check/validate.py; generator.jobs.job_context, "
            "generator.render.jobs.job_context, generator.render.nothing, generator.spec.errors.GitError, "
            "generator.__version__")
    assert stale_names("doc.md", text) == ["doc.md: generator/validate.py", "doc.md: generator.jobs.job_context",
                                           "doc.md: generator.render.nothing"]


def test_the_generator_readme_lists_every_module():
    """generator/README.md's table is the newcomer's map: a module added without its row is missing from it."""
    readme = (PACKAGE / "README.md").read_text(encoding="utf-8")
    modules = [path.relative_to(PACKAGE).as_posix() for path in sorted(PACKAGE.rglob("*.py"))
               if path.name != "__init__.py"]
    assert len(modules) > 30 and [m for m in modules if f"`{m}`" not in readme] == []
