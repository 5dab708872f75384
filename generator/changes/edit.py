"""Round-trip edits of release specs: comments, key order and flow style survive, one value is one line.

Every verb that changes a spec (``generate-model``, ``promote``, ``rollback``, the retrain proposal)
parses it with :func:`load_round_trip`, edits the ruamel tree, and serializes it with
:func:`dump_round_trip`; :func:`copy_release` is the one way a release (and rollout) moves between specs.
"""

from __future__ import annotations

import copy
import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from generator.spec.errors import Problem, SpecError


def round_trip_yaml() -> YAML:
    """The one ruamel configuration for spec edits; matches how the committed specs are indented."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def dump_round_trip(document: Any) -> str:
    """Serialize a ruamel round-trip document back to text."""
    buffer = io.StringIO()
    round_trip_yaml().dump(document, buffer)
    return buffer.getvalue()


def load_round_trip(text: str, display: str) -> CommentedMap:
    """Parse a spec for a round-trip edit (comments, key order and flow style are kept).

    Raises:
        SpecError: the text is not YAML or has no ``release`` mapping.
    """
    try:
        doc = round_trip_yaml().load(text)
    except Exception as exc:  # ruamel raises many types; all mean "not YAML we can edit"
        raise SpecError([Problem(display, f"cannot be edited, it is not valid YAML: {exc}",
                                 fix="fix the YAML syntax (mlops render reports the line)")]) from None
    if not isinstance(doc, CommentedMap) or not isinstance(doc.get("release"), CommentedMap):
        raise SpecError([Problem(display, "has no release block", field="release", fix="add a release: block")])
    return doc


def assign_in_place(target: CommentedMap, source: Any) -> None:
    """Make ``target`` equal to ``source`` by assigning only the values that differ.

    Unchanged lines stay byte-identical and changed scalars keep their place, so the diff of a
    promotion or rollback is one line per changed value. Keys ``source`` lacks are removed; new keys
    are appended; lists of equal length are edited item by item, others replaced whole. Comments of
    ``target`` stay exactly once; none of ``source``'s come along.
    """
    for key in [k for k in target if k not in source]:
        remove_key(target, key)
    for key, value in source.items():
        if key not in target:
            target[key] = detached(value)
        elif isinstance(value, dict) and isinstance(target[key], CommentedMap):
            assign_in_place(target[key], value)
        elif (isinstance(value, list) and isinstance(target[key], CommentedSeq)
              and len(value) == len(target[key])):
            _assign_items(target[key], value)
        elif not _same(target[key], value):
            replace_value(target, key, value)


def _assign_items(target: CommentedSeq, source: list) -> None:
    for index, value in enumerate(source):
        if isinstance(value, dict) and isinstance(target[index], CommentedMap):
            assign_in_place(target[index], value)
        elif not _same(target[index], value):
            replace_value(target, index, value)


# --- comments -----------------------------------------------------------------------------------
# ruamel keeps a full-line comment with the value printed just before it: the comment above a key sits
# on the last scalar of the previous key's block. Moving, copying or deleting a block would carry (or
# drop) the comment that belongs to the next key, so the edits below hand that trailing comment over.

_CommentSlot = tuple[CommentedMap | CommentedSeq, Any, int]


def _slots(node: Any) -> list[_CommentSlot]:
    """Where a comment printed after ``node``'s last line can live: the path of last entries down to
    the deepest one (for a mapping entry position 2 of its comment list, for a sequence item position 0)."""
    slots = []
    while isinstance(node, (CommentedMap, CommentedSeq)) and len(node):
        key = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
        slots.append((node, key, 2 if isinstance(node, CommentedMap) else 0))
        node = node[key]
    return slots


def take_trailing(node: Any) -> list:
    """Remove and return the comment tokens printed after ``node``'s last line."""
    tokens = []
    for container, key, position in _slots(node):
        entry = container.ca.items.get(key)
        if entry and len(entry) > position and entry[position] is not None:
            tokens.append(entry[position])
            entry[position] = None
    return tokens


def put_trailing(container: CommentedMap | CommentedSeq, key: Any, tokens: list) -> None:
    """Print ``tokens`` after the entry ``key`` of ``container`` (after its whole block)."""
    if not tokens:
        return
    value = container[key]
    slots = [(s_container, s_key, position) for s_container, s_key, position in _slots(value)
             if not s_container.fa.flow_style()]
    target, target_key, position = slots[-1] if slots else (container, key, 2 if isinstance(container, CommentedMap)
                                                            else 0)
    entry = target.ca.items.setdefault(target_key, [None, None, None, None])
    while len(entry) <= position:
        entry.append(None)
    merged = [entry[position]] if entry[position] is not None else []
    merged += tokens
    first = merged[0]
    for extra in merged[1:]:  # one token, the comment lines one after the other
        first.value = first.value.rstrip("\n") + "\n" + extra.value.lstrip("\n")
    entry[position] = first


def detached(value: Any, *, keep_comments: bool = False) -> Any:
    """A copy of ``value`` to put elsewhere: without its trailing comment (it belongs to whatever
    followed the original) and, unless ``keep_comments``, without any comment at all."""
    duplicate = copy.deepcopy(value)
    if keep_comments:
        take_trailing(duplicate)
    else:
        _strip_comments(duplicate)
    return duplicate


def _strip_comments(node: Any) -> None:
    if isinstance(node, (CommentedMap, CommentedSeq)):
        node.ca.items.clear()
        node.ca.comment = None
        node.ca.end = []
        for child in (node.values() if isinstance(node, CommentedMap) else node):
            _strip_comments(child)


def remove_key(mapping: CommentedMap, key: Any) -> None:
    """Delete ``key``; the comment printed after its block (the next key's) moves to the entry before it."""
    if key not in mapping:
        return
    keys = list(mapping)
    tokens = take_trailing(mapping[key])
    entry = mapping.ca.items.pop(key, None)
    if entry and len(entry) > 2 and entry[2] is not None:  # the key line's own comment goes along, kept
        tokens.append(entry[2])
    del mapping[key]
    at = keys.index(key)
    if tokens and at > 0:
        put_trailing(mapping, keys[at - 1], tokens)


def replace_value(container: CommentedMap | CommentedSeq, key: Any, value: Any, *,
                  keep_comments: bool = False) -> None:
    """Set ``container[key]`` to a detached copy of ``value``, keeping the comment printed after the old block."""
    tokens = take_trailing(container[key]) if isinstance(container[key], (CommentedMap, CommentedSeq)) else []
    container[key] = detached(value, keep_comments=keep_comments)
    put_trailing(container, key, tokens)


def insert_after(mapping: CommentedMap, after: Any, key: Any, value: Any) -> None:
    """Insert ``key`` right after ``after``; the comment that followed ``after``'s block now follows the new one."""
    tokens = take_trailing(mapping[after])
    entry = mapping.ca.items.get(after)
    # After a scalar, position 2 holds its end-of-line comment and the lines below; after a block, it is
    # the key line's own end-of-line comment, which stays.
    scalar = not isinstance(mapping[after], (CommentedMap, CommentedSeq))
    if scalar and entry and len(entry) > 2 and entry[2] is not None:
        tokens.append(entry[2])
        entry[2] = None
    mapping.insert(list(mapping).index(after) + 1, key, detached(value))
    put_trailing(mapping, key, tokens)


def _same(left: Any, right: Any) -> bool:
    """Equal and of the same kind: a quoted "7" differs from 7 and true from 1; ruamel's str subclasses
    equal plain strings."""
    return _kind(left) is _kind(right) and left == right


def _kind(value: Any) -> type:
    return next((kind for kind in (bool, int, float, str) if isinstance(value, kind)), type(value))


def copy_release(target: CommentedMap, source: CommentedMap, *, with_rollout: bool) -> None:
    """Make ``target``'s release (and, ``with_rollout``, its rollout) equal to ``source``'s, in place.

    A rollout ``source`` lacks is removed; a new one goes right after the release, where people look
    for it.
    """
    assign_in_place(target["release"], source["release"])
    if not with_rollout:
        return
    if "rollout" not in source:
        remove_key(target, "rollout")
    elif isinstance(target.get("rollout"), CommentedMap):
        assign_in_place(target["rollout"], source["rollout"])
    else:
        insert_after(target, "release", "rollout", source["rollout"])
