"""Comments survive every spec edit exactly once (issue: adding a rollout used to copy the comment above
the next top-level key to the end of the file).

Random specs get a comment on random lines (full-line, at random indentation, and end-of-line) and go
through each edit the verbs make: a new canary/A-B/shadow candidate, a traffic change, a version bump,
finishing or dropping a rollout, and a promotion or rollback's release copy. Every comment outside a
block the edit removes must come out exactly once; none may come out twice.
"""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.changes.edit import copy_release, dump_round_trip, load_round_trip
from generator.commands.generate import GenerateRequest, ReleaseOptions, update_spec

SHA = "a" * 64


def release_lines(version: int, indent: str) -> list[str]:
    return [f"{indent}registry: {{name: churn, version: {version}}}",
            f"{indent}artifact_uri: s3://b/{version}/r/artifacts/model",
            f"{indent}server_image: ghcr.io/acme/model-server:0.1.0",
            f"{indent}drift_image: ghcr.io/acme/drift:0.1.0",
            f"{indent}detector:",
            f"{indent}  uri: s3://b/{version}/r/artifacts/drift/detector.npz",
            f"{indent}  sha256: {SHA}"]


def spec_sections(main: int, candidate: int | None, rollout_first: bool) -> list[tuple[str, list[str]]]:
    """(section, lines) of a valid spec; the rollout block (if any) before or after drift."""
    sections = [("head", ["model: churn", "owner: team-growth"]),
                ("release", ["release:", *release_lines(main, "  ")])]
    rollout = ("rollout", ["rollout:", "  strategy: canary", "  main_traffic: 90", "  candidates:",
                           "    - name: candidate", "      traffic: 10", "      release:",
                           *release_lines(candidate, "        ")]) if candidate else None
    drift = ("drift", ["drift:", "  method: ks", "  features:", "    - {name: tenure, type: numeric}"])
    if rollout and rollout_first:
        return [*sections, rollout, drift]
    return [*sections, drift, *([rollout] if rollout else [])]


@st.composite
def commented_specs(draw, with_rollout: bool | None = None):
    """A spec text with unique comments ``# cN`` (full line) and ``# eN`` (end of line) on random lines,
    and the ids of the comments inside its rollout block."""
    has_rollout = draw(st.booleans()) if with_rollout is None else with_rollout
    sections = spec_sections(draw(st.integers(1, 5)), draw(st.integers(6, 9)) if has_rollout else None,
                             draw(st.booleans()))
    lines, inside_rollout, n = [], set(), 0
    for name, block in sections:
        for index, line in enumerate(block):
            # a comment above the block's first line belongs before the key, not inside the block
            within = name == "rollout" and index > 0
            if draw(st.booleans()):
                n += 1
                indent = " " * draw(st.sampled_from([0, len(line) - len(line.lstrip())]))
                lines.append(f"{indent}# c{n}")
                if within:
                    inside_rollout.add(f"c{n}")
            if draw(st.integers(0, 3)) == 0:
                n += 1
                line += f"  # e{n}"
                if name == "rollout":
                    inside_rollout.add(f"e{n}")
            lines.append(line)
    if draw(st.booleans()):
        n += 1
        lines.append(f"# c{n}")
    return "\n".join(lines) + "\n", inside_rollout


def comment_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for found in re.findall(r"# ([ce]\d+)\b", text):
        counts[found] = counts.get(found, 0) + 1
    return counts


def assert_kept(before: str, after: str, removable: set[str] = frozenset()) -> None:
    old, new = comment_counts(before), comment_counts(after)
    assert set(new) <= set(old), f"comments invented: {set(new) - set(old)}"
    assert [c for c, count in new.items() if count > 1] == [], after
    lost = {c for c in old if c not in new} - set(removable)
    assert lost == set(), f"comments lost: {sorted(lost)}\n--- before\n{before}--- after\n{after}"


RELEASE = ReleaseOptions(registry_version=11, artifact_uri="s3://b/11/r/artifacts/model")
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(spec=commented_specs(with_rollout=False), strategy=st.sampled_from(["canary", "ab", "shadow"]))
def test_adding_a_candidate_keeps_every_comment_once(spec, strategy):
    text, _ = spec
    request = GenerateRequest(model="churn", env="dev", strategy=strategy, release=RELEASE)
    after = update_spec(text, request, RELEASE)
    assert_kept(text, after)
    data = yaml.safe_load(after)
    assert data["rollout"]["strategy"] == strategy
    assert data["rollout"]["candidates"][0]["release"]["registry"]["version"] == 11


@SETTINGS
@given(spec=commented_specs(with_rollout=True), change=st.sampled_from(["traffic", "bump", "shadow", "ab"]))
def test_changing_a_rollout_keeps_every_comment_once(spec, change):
    text, _ = spec
    if change == "traffic":
        request = GenerateRequest(model="churn", env="dev", traffic=30)
        options = ReleaseOptions()
    elif change == "bump":
        request, options = GenerateRequest(model="churn", env="dev", release=RELEASE), RELEASE
    else:
        request, options = GenerateRequest(model="churn", env="dev", strategy=change), ReleaseOptions()
    after = update_spec(text, request, options)
    assert_kept(text, after)


@SETTINGS
@given(spec=commented_specs(with_rollout=True), finish=st.booleans())
def test_ending_a_rollout_keeps_every_comment_outside_it(spec, finish):
    text, inside = spec
    request = GenerateRequest(model="churn", env="dev", promote_candidate=finish,
                              strategy=None if finish else "replace")
    after = update_spec(text, request, ReleaseOptions())
    assert_kept(text, after, removable=inside)
    data = yaml.safe_load(after)
    assert "rollout" not in data
    assert data["release"]["registry"]["version"] == (yaml.safe_load(text)["rollout"]["candidates"][0]["release"]
                                                      ["registry"]["version"] if finish else
                                                      yaml.safe_load(text)["release"]["registry"]["version"])


@SETTINGS
@given(target=commented_specs(), source=commented_specs(), with_rollout=st.booleans())
def test_copying_a_release_keeps_the_targets_comments_and_brings_none(target, source, with_rollout):
    """promote and rollback: the target's comments stay once; the source's do not come along."""
    target_text, inside = target
    source_text, _ = source
    doc = load_round_trip(target_text, "target.yaml")
    copy_release(doc, load_round_trip(source_text, "source.yaml"), with_rollout=with_rollout)
    after = dump_round_trip(doc)
    source_only = set(comment_counts(source_text)) - set(comment_counts(target_text))
    assert not source_only & set(comment_counts(after))
    # Comments of the source with the same id as one of the target's could hide a duplicate: count only
    # the target's own, inside a rollout the copy replaces or removes they may go.
    old, new = comment_counts(target_text), comment_counts(after)
    assert all(new.get(c, 0) <= 1 for c in old)
    removable = inside if with_rollout else set()
    assert {c for c in old if c not in new} - removable == set()
    expected, produced = yaml.safe_load(source_text), yaml.safe_load(after)
    assert produced["release"] == expected["release"]
    if with_rollout:
        assert produced.get("rollout") == expected.get("rollout")


def test_the_reported_case_a_canary_no_longer_copies_the_comment_above_drift():
    text = "\n".join(["model: churn", "owner: team-growth", "release:", *release_lines(1, "  "),
                      "# the features the model reads", "drift:", "  method: ks", "  features:",
                      "    - {name: tenure, type: numeric}"]) + "\n"
    after = update_spec(text, GenerateRequest(model="churn", env="dev", strategy="canary", release=RELEASE), RELEASE)
    assert after.count("# the features the model reads") == 1
    assert after.index("# the features the model reads") < after.index("\ndrift:")
