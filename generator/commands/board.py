"""The promotion board: where each model's releases are, environment by environment, and what waits for
approval. ``mlops status --output markdown`` (a table and a Mermaid flow per model, for pull-request
summaries) and ``--output html`` (one self-contained page, no scripts, no external assets).

What waits for approval is read from Git: a branch the verbs push (``promote/<model>/<env>/<release-id>``,
``rollback/...``, ``retrain/<model>-v<N>``), local or remote-tracking, not yet merged into the checked-out
commit, is a proposal whose pull request is open.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from generator.commands.status import ModelStatus
from generator.external import gitrepo
from generator.spec.errors import GitError
from generator.spec.layout import RepoLayout

_PROPOSAL = re.compile(r"^(?:[^/]+/)?(promote|rollback)/(?P<model>[^/]+)/(?P<env>[^/]+)/(?P<release>[0-9a-f]+)$")
_RETRAIN = re.compile(r"^(?:[^/]+/)?retrain/(?P<model>.+)-v(?P<version>\d+)$")


@dataclass(frozen=True)
class Pending:
    """A proposal branch not merged yet: what it would change where."""

    kind: str
    """``promote``, ``rollback`` or ``retrain``."""
    model: str
    environment: str
    what: str
    """The release id (promote, rollback) or ``version N`` (retrain)."""
    branch: str


def pending_proposals(layout: RepoLayout, first_env: str | None) -> list[Pending]:
    """Proposal branches (local and remote-tracking) whose tip is not in HEAD; none outside Git."""
    try:
        refs = gitrepo.run_git(layout.root, "for-each-ref", "--no-merged=HEAD", "--format=%(refname:short)",
                               "refs/heads/promote", "refs/heads/rollback", "refs/heads/retrain",
                               "refs/remotes").split()
    except GitError:
        return []
    found: dict[tuple[str, str, str, str], Pending] = {}
    for ref in refs:
        if match := _PROPOSAL.match(ref):
            kind = ref.split("/")[-4]
            key = (kind, match["model"], match["env"], match["release"])
            found.setdefault(key, Pending(kind, match["model"], match["env"], match["release"], ref))
        elif (match := _RETRAIN.match(ref)) and first_env:
            key = ("retrain", match["model"], first_env, match["version"])
            found.setdefault(key, Pending("retrain", match["model"], first_env, f"version {match['version']}", ref))
    return sorted(found.values(), key=lambda p: (p.model, p.environment, p.kind, p.branch))


def _cell(status: ModelStatus | None) -> list[str]:
    """Lines describing one model in one environment."""
    if status is None:
        return ["not deployed"]
    lines = [f"v{status.version} `{status.release_id}`"]
    if status.candidates:
        parts = [f"{c.name} {'shadow' if c.shadow else f'{c.traffic}%'} v{c.version}" for c in status.candidates]
        lines.append(f"{status.strategy}: main {status.main_traffic}%, " + ", ".join(parts))
    if status.rendered_release_id != status.release_id:
        lines.append("render pending")
    if status.baseline is not None and status.baseline.state != "same":
        lines.append(f"{status.baseline.state} vs {status.baseline.environment}")
    return lines


def _grid(statuses: list[ModelStatus]) -> dict[str, dict[str, ModelStatus]]:
    grid: dict[str, dict[str, ModelStatus]] = {}
    for s in statuses:
        grid.setdefault(s.model, {})[s.environment] = s
    return {model: grid[model] for model in sorted(grid)}


def board_markdown(statuses: list[ModelStatus], pending: list[Pending], envs: list[str]) -> str:
    """Markdown for a pull-request summary: per model a table (one column per environment) and a Mermaid
    flow of the promotion path, with what waits for approval."""
    out = ["# Promotion board", ""]
    for model, row in _grid(statuses).items():
        out += [f"## {model}", "", "| " + " | ".join(envs) + " |", "|" + "---|" * len(envs),
                "| " + " | ".join("<br>".join(_cell(row.get(env))) for env in envs) + " |"]
        waiting = [p for p in pending if p.model == model]
        out += ["", "```mermaid", "flowchart LR"]
        for env in envs:
            label = "<br/>".join([env, *(line.replace("`", "") for line in _cell(row.get(env)))])
            out.append(f'  {env}["{label}"]')
        out += [f"  {a} --> {b}" for a, b in zip(envs, envs[1:], strict=False)]
        for index, p in enumerate(waiting):
            out.append(f'  p{index}(["{p.kind} {p.what}: awaiting approval"]) -.-> {p.environment}')
        out.append("```")
        if waiting:
            out += ["", "Awaiting approval:"] + [f"- {p.kind} to {p.environment}: {p.what} (branch `{p.branch}`)"
                                                 for p in waiting]
        out.append("")
    if not statuses:
        out.append("No models yet.")
    return "\n".join(out).rstrip() + "\n"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24;background:#fff}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
.lane{display:flex;align-items:stretch;gap:.5rem}
.env{border:2px solid #3b6ea5;border-radius:8px;padding:.6rem .9rem;min-width:12rem;background:#eef4fb}
.env h3{margin:0 0 .3rem;font-size:1rem;text-transform:uppercase;color:#3b6ea5}
.env.empty{border-style:dashed;background:#fafafa;color:#777}
.arrow{align-self:center;font-size:1.5rem;color:#3b6ea5}
.pending{margin-top:.5rem;padding:.4rem .6rem;background:#fff4d6;border-left:4px solid #d4a017}
code{font-size:.9em}
"""


def board_html(statuses: list[ModelStatus], pending: list[Pending], envs: list[str]) -> str:
    """One self-contained HTML page: a lane per model (its environments left to right) and the proposals
    awaiting approval under it."""
    esc = html.escape
    body = ["<h1>Promotion board</h1>"]
    for model, row in _grid(statuses).items():
        lane = []
        for env in envs:
            status = row.get(env)
            lines = "".join(f"<div>{esc(line).replace('`', '')}</div>" for line in _cell(status))
            lane.append(f'<div class="env{"" if status else " empty"}" data-env="{esc(env)}">'
                        f"<h3>{esc(env)}</h3>{lines}</div>")
        body.append(f'<section data-model="{esc(model)}"><h2>{esc(model)}</h2><div class="lane">'
                    + '<div class="arrow">&rarr;</div>'.join(lane) + "</div>")
        for p in (p for p in pending if p.model == model):
            body.append(f'<div class="pending">{esc(p.kind)} to {esc(p.environment)}: {esc(p.what)} awaiting '
                        f"approval (branch <code>{esc(p.branch)}</code>)</div>")
        body.append("</section>")
    if not statuses:
        body.append("<p>No models yet.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Promotion board</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
