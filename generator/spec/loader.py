"""Load and validate the specs of an environment, collecting every problem with file, line, field and fix.

The fast path parses YAML with libyaml; only when something is wrong is the file re-read with ruamel to
find the line of the offending field, so a clean render of hundreds of models stays cheap.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pydantic
import yaml
from ruamel.yaml import YAML

from generator.spec import rules, yamlio
from generator.spec.errors import Problem, SpecError
from generator.spec.layout import RepoLayout
from generator.spec.models import (
    DNS1123_LABEL_RE,
    DURATION_RE,
    IMAGE_RE,
    QUANTITY_RE,
    SHA256_HEX_RE,
    Environment,
    ModelSpec,
)

_PATTERN_FIXES = {
    DNS1123_LABEL_RE: "use lowercase letters, digits and '-', starting and ending with a letter or digit",
    IMAGE_RE: "use registry/repository:tag or registry/repository@sha256:<64 hex digest>",
    SHA256_HEX_RE: "give the 64 lowercase hex characters printed by sha256sum",
    QUANTITY_RE: "use a Kubernetes quantity such as 500m, 1, 256Mi or 2Gi",
    DURATION_RE: "use a duration such as 30s, 10m or 1h30m",
}


@dataclass(frozen=True)
class LoadedModel:
    """A validated release spec and where it came from."""

    spec: ModelSpec
    path: Path


@dataclass(frozen=True)
class LoadedEnvironment:
    """A validated environment and all of its validated release specs, sorted by model name."""

    name: str
    env: Environment
    path: Path
    models: tuple[LoadedModel, ...]

    @cached_property
    def env_json(self) -> dict:
        """The environment as JSON-like data, dumped once for all of its models' templates."""
        return self.env.model_dump(mode="json")


REWRITTEN_CHARACTERS = {"\u0085": "NEXT LINE", "\u2028": "LINE SEPARATOR", "\u2029": "PARAGRAPH SEPARATOR"}
"""Characters YAML reads as line breaks: inside a value they would silently become a space or a newline."""


def read_yaml_mapping(layout: RepoLayout, path: Path, text: str | None = None) -> tuple[dict | None, list[Problem]]:
    """Parse one YAML file (or ``text`` meant for it) that must hold a single mapping; problems, not exceptions.

    The file is read only inside the repository (:meth:`RepoLayout.read_text`); hostile YAML (alias bombs,
    deep nesting) is refused by :mod:`generator.spec.yamlio`'s limits, with the line.
    """
    display = layout.relative(path)
    if text is None:
        try:
            text = layout.read_text(path)
        except FileNotFoundError:
            return None, [Problem(display, "file not found", fix="create it (see README: Specs)")]
        except SpecError as exc:
            return None, exc.problems
    for character, name in REWRITTEN_CHARACTERS.items():
        if (at := text.find(character)) >= 0:
            return None, [Problem(display, f"contains U+{ord(character):04X} ({name}), which YAML turns into a line "
                                  "break or a space", line=text.count("\n", 0, at) + 1,
                                  fix="remove it, or write it as an escape in a double-quoted string if it is meant")]
    try:
        data = yamlio.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        return None, [Problem(display, f"not valid YAML: {exc.problem or exc}", line=line,
                              fix="fix the YAML syntax at that line" if not isinstance(exc, yamlio.LimitError)
                              else "this is past a limit no spec needs; check the file is the one you meant")]
    if not isinstance(data, dict):
        return None, [Problem(display, f"must be a YAML mapping, found {type(data).__name__}",
                              fix="start the file with key: value lines")]
    return data, []


def load_environment(layout: RepoLayout, env_name: str) -> LoadedEnvironment:
    """Load ``environment.yaml`` and every ``models/*.yaml`` of one environment.

    Raises:
        SpecError: with every problem found in the environment and all of its model specs.
    """
    env = load_environment_file(layout, env_name)
    env_path = layout.env_file(env_name)
    problems: list[Problem] = []
    models = []
    for spec_path in sorted(layout.models_dir(env_name).glob("*.yaml")):
        loaded, model_problems = load_model(layout, env, spec_path)
        problems += model_problems
        if loaded:
            models.append(loaded)
    if problems:
        raise SpecError(problems)
    return LoadedEnvironment(env_name, env, env_path, tuple(models))


def load_environment_file(layout: RepoLayout, env_name: str) -> Environment:
    """Load and check ``environments/<env_name>/environment.yaml`` alone.

    Raises:
        SpecError: with every problem found in the file.
    """
    env_path = layout.env_file(env_name)
    display = layout.relative(env_path)
    raw_env, problems = read_yaml_mapping(layout, env_path)
    if raw_env is None:
        raise SpecError(problems)
    env, problems = parse_document(Environment, raw_env, env_path, display)
    if env is None:
        raise SpecError(problems)
    if problems := _locate(rules.check_environment(env, env_name), env_path, display):
        raise SpecError(problems)
    return env


def load_model(
    layout: RepoLayout, env: Environment, spec_path: Path, text: str | None = None
) -> tuple[LoadedModel | None, list[Problem]]:
    """Load one release spec (from disk, or ``text`` about to be written there), filling unset
    serving/drift/alerts/retrain fields from the environment's defaults."""
    display = layout.relative(spec_path)
    raw, problems = read_yaml_mapping(layout, spec_path, text)
    if raw is None:
        return None, problems
    merged = apply_defaults(raw, env)
    spec, problems = parse_document(ModelSpec, merged, spec_path, display, text)
    if spec is None:
        return None, problems
    problems = _locate(rules.check_model(spec, env, spec_path.stem), spec_path, display, text)
    if problems:
        return None, problems
    return LoadedModel(spec, spec_path), []


def load_one_model(layout: RepoLayout, env: Environment, model: str, text: str | None = None) -> LoadedModel:
    """Load ``model``'s release spec in ``env`` (from disk, or ``text`` about to be written there).

    Raises:
        SpecError: the spec is missing or breaks a rule; every problem names file, line and field.
    """
    loaded, problems = load_model(layout, env, layout.model_spec(env.name, model), text)
    if loaded is None:
        raise SpecError(problems)
    return loaded


def apply_defaults(raw: dict, env: Environment) -> dict:
    """The spec with the environment's defaults under every key the spec leaves out (deep for mappings)."""
    defaults = env.defaults.model_dump(mode="json")
    merged = dict(raw)
    for section in ("serving", "drift", "alerts", "retrain"):
        override = raw.get(section, {})
        merged[section] = deep_merge(defaults[section], override) if isinstance(override, dict) else override
    return merged


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` over ``base``: nested mappings merge, everything else is replaced."""
    result = dict(base)
    for key, value in override.items():
        result[key] = deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return result


def parse_document(model: type[pydantic.BaseModel], data: dict, path: Path, display: str, text: str | None = None):
    """Validate ``data`` read from ``path`` as ``model``: ``(instance, [])`` or ``(None, problems with lines)``."""
    try:
        return model.model_validate(data), []
    except pydantic.ValidationError as exc:
        problems = [_problem_from_pydantic(error, model, display) for error in exc.errors(include_url=False)]
        return None, _locate(problems, path, display, text)


def _problem_from_pydantic(error: dict, model: type[pydantic.BaseModel], display: str) -> Problem:
    loc = tuple(error["loc"])
    field = format_field_path(loc)
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return Problem(display, "unknown field", field=field,
                       fix=f"{hint}remove it; allowed here: {', '.join(allowed)}")
    if kind == "missing":
        return Problem(display, "required field is missing", field=field, fix=f"add {loc[-1]}:")
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        return Problem(display, f"{error['input']!r} is not valid", field=field,
                       fix=_PATTERN_FIXES.get(pattern, f"match {pattern}"))
    if kind == "string_too_long":
        return Problem(display, message, field=field, fix="shorten it")
    return Problem(display, message, field=field, fix=_fix_for(kind))


def _fix_for(kind: str) -> str | None:
    if kind.startswith(("int_", "float_", "bool_", "string_type", "list_type", "dict_type", "model_type")):
        return "give a value of the type shown"
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long"}:
        return "use a value within the bound shown"
    return None


def _allowed_keys(model: type[pydantic.BaseModel], loc: tuple) -> list[str]:
    """Field names of the model found by following ``loc`` through nested models and lists."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        current = _inner_model(field.annotation)
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, pydantic.BaseModel) else []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (found := _inner_model(arg)) is not None:
            return found
    return None


def format_field_path(loc: tuple) -> str:
    """``('rollout', 'candidates', 0, 'traffic')`` → ``rollout.candidates[0].traffic``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _locate(problems: list[Problem], path: Path, display: str, text: str | None = None) -> list[Problem]:
    """Fill in file and line of each problem; lines come from a ruamel re-read of the file."""
    if not problems:
        return problems
    tree = _ruamel_tree(path, text)
    located = []
    for problem in problems:
        line = problem.line or (_line_of(tree, problem.field) if problem.field else None)
        # No line at all: not even the section is in this file, so the value came from the environment.
        inherited = problem.field and line is None and tree is not None and _is_defaulted_section(problem.field)
        note = " (value inherited from environment.yaml defaults)" if inherited else ""
        located.append(Problem(display, problem.message + note, line=line, field=problem.field, fix=problem.fix))
    return located


def _ruamel_tree(path: Path, text: str | None) -> Any:
    try:
        return YAML(typ="rt").load(text if text is not None else path.read_text(encoding="utf-8", errors="replace"))
    except Exception:  # a file libyaml accepted but ruamel does not: lines are a nicety, not a must
        return None


def _line_of(tree: Any, field: str) -> int | None:
    """1-based line of the deepest existing node along ``field`` in a ruamel round-trip tree."""
    node, line = tree, None
    for part in _split_field(field):
        try:
            if isinstance(part, int):
                line = node.lc.item(part)[0] + 1
            else:
                line = node.lc.key(part)[0] + 1
            node = node[part]
        except (AttributeError, KeyError, IndexError, TypeError):
            break
    return line


def _split_field(field: str) -> list[str | int]:
    parts: list[str | int] = []
    for chunk in field.split("."):
        name, *indexes = chunk.split("[")
        if name:
            parts.append(name)
        parts += [int(i.rstrip("]")) for i in indexes]
    return parts


def _is_defaulted_section(field: str) -> bool:
    return field.split(".")[0] in {"serving", "drift", "alerts", "retrain"} and not field.startswith("drift.features")
