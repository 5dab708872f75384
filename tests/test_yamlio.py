"""The generator's YAML emitter and loader agree with a standard YAML reader on any JSON-like data."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.spec import yamlio

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False), st.text(max_size=40),
    st.sampled_from(["yes", "No", "on", "~", "null", "7", "0x1F", "1_000", "1:30", "2024-01-01", "1e3", ".5",
                     "- x", "a: b", "a #b", "#x", "!x", "*x", "&x", "|", ">", "@x", "`x", "%x", "x:", " x", "x ",
                     "line\n", "two\nlines", "\n", "\nlead", "trail\n\n\n", "tab\tin", "sp \nend", "é ü"]),
)
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(documents)
def test_dump_reads_back_identically_with_pyyaml_and_our_loader(document):
    text = yamlio.dump(document)
    assert yaml.safe_load(text) == document
    assert yamlio.load(text) == document


def test_layout_is_block_style_with_indentless_sequences():
    text = yamlio.dump({"a": {"b": [1, {"c": "d", "e": "multi\nline\n"}]}, "f": []})
    assert text == "a:\n  b:\n  - 1\n  - c: d\n    e: |\n      multi\n      line\nf: []\n"


def test_duplicate_keys_are_rejected_with_their_line():
    with pytest.raises(yamlio.DuplicateKeyError) as error:
        yamlio.load("a: 1\nb: 2\na: 3\n")
    assert error.value.problem_mark.line == 2


def test_dates_stay_strings_and_merge_keys_are_refused():
    assert yamlio.load("d: 2024-01-01\n") == {"d": "2024-01-01"}
    with pytest.raises(yaml.MarkedYAMLError):
        yamlio.load("base: &b {x: 1}\nother:\n  <<: *b\n")
