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
    are appended; lists of equal length are edited item by item, others replaced whole.
    """
    for key in [k for k in target if k not in source]:
        del target[key]
    for key, value in source.items():
        if key not in target:
            target[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(target[key], CommentedMap):
            assign_in_place(target[key], value)
        elif (isinstance(value, list) and isinstance(target[key], CommentedSeq)
              and len(value) == len(target[key])):
            _assign_items(target[key], value)
        elif not _same(target[key], value):
            target[key] = copy.deepcopy(value)


def _assign_items(target: CommentedSeq, source: list) -> None:
    for index, value in enumerate(source):
        if isinstance(value, dict) and isinstance(target[index], CommentedMap):
            assign_in_place(target[index], value)
        elif not _same(target[index], value):
            target[index] = copy.deepcopy(value)


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
        target.pop("rollout", None)
    elif isinstance(target.get("rollout"), CommentedMap):
        assign_in_place(target["rollout"], source["rollout"])
    else:
        target.insert(list(target).index("release") + 1, "rollout", source["rollout"])
