"""The demo's report: ``<output>/report.md`` (timeline, versions, decision, proposal diff, shutdown) and
``<output>/drift.png`` (the drift verdict over time, with drift onset, alert, flow run and proposal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MARKS = (("drift_onset", "drift onset", "tab:orange"), ("alert_fired", "alert", "tab:red"),
         ("flow_started", "flow run", "tab:purple"), ("proposal_pushed", "proposal", "tab:green"))


def plot(samples: list[tuple[float, float, float | None]], facts: dict[str, Any], path: Path) -> Path | None:
    """The drifted share of windows (what the alert rule measures) and the last window's verdict, over demo
    time, with the loop's moments as vertical lines."""
    if not samples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(11, 3.4), dpi=110)
    times = [sample[0] for sample in samples]
    axis.step(times, [sample[1] for sample in samples], where="post", color="tab:blue", alpha=0.5,
              label="last window drifted (mlops_drift_detected)")
    shares = [(t, share) for t, _, share in samples if share is not None]
    if shares:
        axis.plot([t for t, _ in shares], [v for _, v in shares], color="black",
                  label="share of windows drifted over the rule's period")
    threshold = facts.get("alert_share")
    if threshold is not None:
        axis.axhline(threshold, color="grey", linestyle=":", linewidth=1, label=f"alert share ({threshold})")
    for key, label, colour in MARKS:
        if key in facts:
            axis.axvline(facts[key], color=colour, linestyle="--", linewidth=1.2, label=f"{label} ({facts[key]:.0f} s)")
    axis.set_ylim(-0.1, 1.2)
    axis.set_ylabel("share / verdict")
    axis.set_xlabel("seconds since the demo started")
    axis.set_title("fraud-detector in dev: drift evidence and the retraining loop")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def write(demo: Any, failure: str | None) -> Path:
    """Write the report (also after a failure: what ran, and where it stopped)."""
    facts = demo.facts
    picture = plot(demo.drift_samples, facts, demo.output / "drift.png")
    lines = ["# mlops-gitops demo report", "",
             f"Result: **{'failed: ' + failure.splitlines()[0] if failure else 'every stage passed'}**", "",
             "## Timeline", "", "| t (s) | stage | what was checked |", "|---:|---|---|"]
    lines += [f"| {event.seconds:.1f} | {event.stage} | {event.detail.replace('|', '/')} |" for event in demo.timeline]
    if picture:
        lines += ["", "## Drift over time", "", f"![drift verdict]({picture.name})"]
    loop_keys = [key for key, _, _ in MARKS if key in facts] + (["drift_detected"] if "drift_detected" in facts else [])
    if "drift_onset" in facts and loop_keys:
        lines += ["", "## Drift onset to proposal", "", "| moment | seconds after onset |", "|---|---:|"]
        lines += [f"| {key} | {facts[key] - facts['drift_onset']:.1f} |" for key in sorted(loop_keys, key=facts.get)]
    for key, title in (("versions", "MLflow versions"), ("decision", "Evaluation decision"),
                       ("review", "Proposal review"), ("canary", "Canary"), ("promote", "Promote"),
                       ("rollback", "Rollback"), ("gate", "Gate"), ("traffic", "Traffic"), ("stopped", "Shutdown")):
        if key in facts:
            lines += ["", f"## {title}", "", "```json", json.dumps(facts[key], indent=2, default=str), "```"]
    if "review" in facts:
        lines += ["", "## Proposal diff (the release spec; rendered files follow from it)", "", "```diff",
                  facts["review"].get("spec_diff", ""), "```"]
    path = demo.output / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (demo.output / "facts.json").write_text(json.dumps(
        {**facts, "timeline": [vars(e) for e in demo.timeline], "drift_samples": demo.drift_samples,
         "failure": failure}, indent=2, default=str))
    return path
