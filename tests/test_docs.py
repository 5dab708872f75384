"""Meta-tests: every command explains itself in --help and is documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_command_has_help_with_an_example(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    assert len(cli.commands[command].help or "") > 80


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_command_is_documented_in_readme(command):
    assert f"### `mlops {command}" in README


def test_readme_opens_with_the_two_commands():
    head = README[:1500]
    assert "make demo" in head and "make test" in head


@pytest.mark.parametrize("folder", ["bootstrap", "apps", "environments", "templates", "generator", "components",
                                    "tests", "benchmarks", "schemas"])
def test_every_top_level_folder_explains_itself(folder):
    readme = Path(__file__).resolve().parents[1] / folder / "README.md"
    assert readme.is_file() and len(readme.read_text()) > 100


def _leaf_fields(model, prefix=""):
    for name, info in model.model_fields.items():
        nested = [c for c in (info.annotation, *getattr(info.annotation, "__args__", ()))
                  if isinstance(c, type) and hasattr(c, "model_fields")]
        if nested:
            yield from _leaf_fields(nested[0], f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def _documented(path: str, rows: list[set[str]]) -> bool:
    """A field is documented when a README table row names it, or names an ancestor and the rest."""
    segments = path.split(".")
    for cut in range(1, len(segments) + 1):
        head, rest = ".".join(segments[:cut]), segments[cut:]
        for tokens in rows:
            if (head in tokens or f"{head}[]" in tokens) and (
                    not rest or ".".join(rest) in tokens or all(seg in tokens for seg in rest)):
                return True
    return False


def test_every_spec_field_is_documented():
    import re

    from generator.spec.models import Environment, ModelSpec

    rows = [set(re.findall(r"`([^`]+)`", line)) for line in README.splitlines() if line.startswith("|")]
    paths = [*_leaf_fields(Environment), *_leaf_fields(ModelSpec)]
    missing = []
    for path in paths:
        # defaults.<section> mirrors the model sections; candidates' releases have the release's shape;
        # the release table names fields relative to `release`.
        path = path.removeprefix("defaults.").replace("rollout.candidates.release.", "release.")
        if not (_documented(path, rows) or (path.startswith("release.")
                                            and _documented(path.removeprefix("release."), rows))):
            missing.append(path)
    assert missing == []


def test_every_exit_code_is_one_documented_row():
    """Scripts rely on the numbers: the README's table lists each ExitCode with its number and name."""
    import re

    from generator.spec.errors import ExitCode, MlopsError

    rows = {int(code): name for code, name in re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", README, re.M)}
    assert rows == {code.value: code.name for code in ExitCode}

    def leaves(cls):
        return [cls, *(leaf for sub in cls.__subclasses__() for leaf in leaves(sub))]

    assert all(isinstance(error.exit_code, ExitCode) for error in leaves(MlopsError))
