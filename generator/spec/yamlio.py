"""Fast, strict YAML for generated files: one loader and one canonical emitter for the whole generator.

PyYAML's Python-level constructor and representer dominate render time (every manifest is parsed and
re-emitted), so this module keeps libyaml for parsing and composing and replaces the rest:

* :func:`load` builds plain Python data from libyaml's node graph in one recursive pass, rejects
  duplicate keys (YAML would silently keep the last) and keeps timestamps as strings, as Kubernetes does.
* :func:`dump` writes block-style YAML with a fixed layout: keys in insertion order, indentless
  sequences, literal blocks for multi-line strings, and plain scalars only where a YAML 1.1 reader
  gets the same string back. ``load(dump(x)) == x`` for every JSON-like ``x`` (see tests).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import yaml


class _Composer(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml composer whose tag resolution is memoised: manifests repeat the same scalars endlessly."""

    def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            return _resolve_plain(value) if implicit[0] else _STR
        return super().resolve(kind, value, implicit)


@lru_cache(maxsize=65536)
def _resolve_plain(value: str) -> str:
    return _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))


_COMPOSER = _Composer
_SCALARS = yaml.constructor.SafeConstructor()
_RESOLVER = yaml.resolver.Resolver()

_STR = "tag:yaml.org,2002:str"
_TAGGED = {
    "tag:yaml.org,2002:int": _SCALARS.construct_yaml_int,
    "tag:yaml.org,2002:float": _SCALARS.construct_yaml_float,
    "tag:yaml.org,2002:bool": _SCALARS.construct_yaml_bool,
    "tag:yaml.org,2002:null": lambda node: None,
    # Kubernetes reads YAML as JSON: a date-looking value is a string, never a datetime.
    "tag:yaml.org,2002:timestamp": lambda node: node.value,
}

# Characters that may start a plain scalar, and what a plain scalar may contain (block context).
_PLAIN = re.compile(r"[A-Za-z0-9_./$(][^\n\t#]*")
_INDENT = "  "


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping repeats a key."""


class LimitError(yaml.MarkedYAMLError):
    """A document goes past a limit that keeps hostile input from costing the machine (alias bombs, deep
    nesting that would exhaust the stack)."""


MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences; specs and manifests need about a dozen levels."""
MAX_NODES = 250_000
"""Nodes a document may expand to, aliases counted at their full size: generous for real manifests, far
below what an alias bomb (a few KB that expand to billions of nodes) asks for."""


def load(text: str, *, trusted: bool = False) -> Any:
    """Parse one YAML document into dicts, lists and scalars.

    Unless ``trusted`` (the generator's own template output), nesting deeper than :data:`MAX_DEPTH` and
    expansion beyond :data:`MAX_NODES` are refused before they cost time or memory.

    Raises:
        yaml.MarkedYAMLError: invalid YAML, a duplicate key, an unsupported tag, or a :class:`LimitError`;
            with line and column.
    """
    if not trusted:
        _check_depth(text)
    node = yaml.compose(text, Loader=_COMPOSER)
    return None if node is None else _construct(node, None if trusted else [MAX_NODES])


def load_all(text: str, *, trusted: bool = False) -> list[Any]:
    """Parse every document of a YAML stream, with the same rules as :func:`load`."""
    if not trusted:
        _check_depth(text)
    return [_construct(node, None if trusted else [MAX_NODES]) for node in yaml.compose_all(text, Loader=_COMPOSER)]


def _check_depth(text: str) -> None:
    """Walk libyaml's event stream (it composes nothing, so no recursion) and stop at the first level
    past :data:`MAX_DEPTH`, before the composer would recurse into it."""
    depth = 0
    for event in yaml.parse(text, Loader=_COMPOSER):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise LimitError(None, None, f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _construct(node: yaml.Node, budget: list[int] | None) -> Any:
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise LimitError(None, None, f"expands to more than {MAX_NODES} nodes (aliases counted at their full "
                                         "size)", node.start_mark)
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR:
            return node.value
        build = _TAGGED.get(node.tag)
        if build is None:
            raise yaml.constructor.ConstructorError(None, None, f"unsupported tag {node.tag}", node.start_mark)
        return build(node)
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, budget) for item in node.value]
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise yaml.constructor.ConstructorError(None, None, "merge keys (<<) are not supported",
                                                    key_node.start_mark)
        key = _construct(key_node, budget)
        if key in result:
            raise DuplicateKeyError(None, None, f"duplicate key {key!r} (the first value would be silently lost)",
                                    key_node.start_mark)
        result[key] = _construct(value_node, budget)
    return result


def dump(document: Any) -> str:
    """Canonical block YAML for ``document`` (dicts, lists, str, int, float, bool, None)."""
    lines: list[str] = []
    _emit(document, "", lines)
    return "\n".join(lines) + "\n"


def _emit(value: Any, indent: str, lines: list[str]) -> None:
    """Append the lines of a top-level or nested collection, each starting with ``indent``."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _emit_entry(f"{indent}{_scalar(key)}:", item, indent, lines)
    elif isinstance(value, list) and value:
        for item in value:
            _emit_item(item, indent, lines)
    else:
        lines.append(indent + _inline(value, indent + _INDENT))


def _emit_entry(head: str, value: Any, indent: str, lines: list[str]) -> None:
    if isinstance(value, dict) and value:
        lines.append(head)
        _emit(value, indent + _INDENT, lines)
    elif isinstance(value, list) and value:
        lines.append(head)
        _emit(value, indent, lines)  # sequences under a key are not indented (PyYAML's default style)
    else:
        lines.append(f"{head} {_inline(value, indent + _INDENT)}")


def _emit_item(item: Any, indent: str, lines: list[str]) -> None:
    if (isinstance(item, (dict, list))) and item:
        nested: list[str] = []
        _emit(item, indent + _INDENT, nested)
        # The first line of the nested block moves up beside the dash: "- key: value".
        nested[0] = f"{indent}- {nested[0][len(indent) + len(_INDENT):]}"
        lines.extend(nested)
    else:
        lines.append(f"{indent}- {_inline(item, indent + _INDENT)}")


def _inline(value: Any, block_indent: str) -> str:
    """A scalar, an empty collection, or a literal block whose lines are indented by ``block_indent``."""
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if isinstance(value, str) and "\n" in value and _block_safe(value):
        body = value.rstrip("\n")
        trailing = len(value) - len(body)
        # Chomping: "-" strips the missing final newline back off, "" keeps one, "+" keeps them all.
        chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
        content = body.split("\n") + ([""] * (trailing - 1) if chomp == "+" else [])
        return f"|{chomp}\n" + "\n".join(f"{block_indent}{line}" if line else "" for line in content)
    return _scalar(value)


def _block_safe(text: str) -> bool:
    # A literal block cannot start with a space or a blank line (indentation is detected from the first
    # line), cannot hold characters YAML does not allow unescaped, and trailing spaces would be invisible.
    return (
        not text.startswith((" ", "\t", "\n"))
        and text.strip("\n") != ""
        and text.replace("\n", "").isprintable()
        and not any(line.endswith((" ", "\t")) for line in text.split("\n"))
    )


@lru_cache(maxsize=65536)
def _string(text: str) -> str:
    if _PLAIN.fullmatch(text) and ": " not in text and not text.endswith((":", " ")) and text.isprintable() \
            and _RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) == _STR:
        return text
    if text.isprintable():
        return "'" + text.replace("'", "''") + "'"
    return _double_quoted(text)


def _double_quoted(text: str) -> str:
    """Double-quoted scalar with YAML escapes for everything not printable (JSON's escapes fall short:
    it leaves DEL and C1 controls raw, and writes astral characters as surrogate pairs)."""
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML: {value!r}")


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    # YAML 1.1 readers need a dot in the mantissa to see a float (1e-05 would be a string).
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text
