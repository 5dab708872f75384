"""What a flow run leaves on the Prefect server besides its state: the training marker and the proposal.

* :data:`TRAINING_STARTED_TAG`: the flow adds this tag to its own flow run just before it trains (and
  waits for the server to store it). The retrain trigger's daily limit counts a run that ended Failed,
  Crashed or Cancelled only when it carries the tag, so a run that died before training (a bad working
  directory, missing data, an unreachable Git remote) does not use up a slot
  (``components/retrain_trigger/README.md``). Only the standard library is imported at module level,
  so the trigger can import the name without loading Prefect.
* :func:`record_proposal`: the proposal (title, body, compare ref, diff summary, pull request if any) as
  a Prefect markdown artifact of the run and in its log, so a proposal without a Git host API is still
  found where the run is.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrain.propose import Proposal

TRAINING_STARTED_TAG = "retrain:training-started"
"""Tag of a flow run that reached training; the trigger's rate limit reads it."""


def mark_training_started() -> bool:
    """Add :data:`TRAINING_STARTED_TAG` to the current flow run; ``False`` outside a flow run.

    Raises whatever the Prefect client raises: a run that cannot be marked must not train, or it could
    train without counting against the daily limit.
    """
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        return False
    with get_client(sync_client=True) as client:
        tags = client.read_flow_run(run_id).tags
        if TRAINING_STARTED_TAG not in tags:
            client.update_flow_run(run_id, tags=[*tags, TRAINING_STARTED_TAG])
    return True


def artifact_key(model: str) -> str:
    """The proposal artifact's key: one per model, so Prefect lists every proposal of a model as versions."""
    return "retrain-proposal-" + re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")


def redact(url: str) -> str:
    """``url`` without credentials in its user part (a clone URL may carry a token)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url)


def proposal_markdown(proposal: Proposal, remote: str) -> str:
    """The proposal as a reviewer needs it without a pull request: what, where to compare, the diff summary."""
    pull_request = (f"[#{proposal.pull_request.number}]({proposal.pull_request.url})" if proposal.pull_request
                    else "none opened (no Git host API configured): open it from the compare ref below")
    return "\n".join([
        f"# {proposal.title}",
        "",
        proposal.body.rstrip(),
        "",
        "## Where",
        "",
        f"- Repository: `{remote}`",
        f"- Compare: `{proposal.compare}` (base `{proposal.base}` at `{proposal.base_commit[:12]}`, branch "
        f"`{proposal.branch}` at `{proposal.commit[:12]}`)",
        f"- Review locally: `git fetch origin {proposal.branch} && git diff {proposal.compare}`",
        f"- Pull request: {pull_request}",
        "",
        "## Diff summary",
        "",
        "```",
        proposal.diff_stat,
        "```",
    ])


def record_proposal(proposal: Proposal, model: str, remote: str, logger: logging.Logger | logging.LoggerAdapter
                    ) -> str | None:
    """Log the proposal and store it as a markdown artifact of the current flow run; returns the artifact's
    key (``None`` outside a flow run, where there is nothing to attach it to)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    remote = redact(remote)
    logger.info("proposal %r: compare %s of %s (base %s, branch %s)\n%s\n%s", proposal.title, proposal.compare,
                remote, proposal.base_commit[:12], proposal.commit[:12], proposal.diff_stat, proposal.body)
    if not flow_run.id:
        return None
    key = artifact_key(model)
    create_markdown_artifact(proposal_markdown(proposal, remote), key=key,
                             description=f"{proposal.title} ({proposal.compare})")
    return key
