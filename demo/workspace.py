"""The demo's own Git workspace: the user's checkout is never touched.

``origin.git`` is a bare clone of the checkout's committed HEAD and plays the Git host; ``workspace/`` is
a clone of it where the demo (and the retrain flow, through ``origin``) work. The dev environment of the
workspace gets the local profile (:func:`apply_local_profile`): it is rendered and validated like any
environment, and its rendered files are what the local runner starts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

MODEL = "fraud-detector"
ENV = "dev"
REVIEWER = ["-c", "user.name=Demo Reviewer", "-c", "user.email=reviewer@demo.invalid"]


class WorkspaceError(RuntimeError):
    """A Git or mlops step of the workspace failed; the message carries the command and its output."""


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *REVIEWER, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def mlops(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``mlops`` CLI of this venv in ``cwd``."""
    command = [str(Path(sys.executable).parent / "mlops"), *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    if check and done.returncode != 0:
        raise WorkspaceError(f"mlops {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def create(checkout: Path, output: Path) -> tuple[Path, Path]:
    """Bare ``origin.git`` whose ``main`` is the checkout's HEAD commit, and a ``workspace`` clone of it;
    returns both.

    Only that commit's history is taken, as ``main`` (the branch the demo's reviews merge into and the
    retrain flow clones), whatever the checkout has checked out: a feature branch or a detached HEAD (a CI
    checkout, a worktree) demos what is committed there, and the checkout's other branches stay out."""
    origin, workspace = output / "origin.git", output / "workspace"
    git(output, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    git(origin, "fetch", "--quiet", "--no-tags", str(checkout.resolve()), "+HEAD:refs/heads/main")
    git(output, "clone", "--quiet", "--branch", "main", str(origin), str(workspace))
    git(workspace, "config", "user.name", "Demo Operator")
    git(workspace, "config", "user.email", "operator@demo.invalid")
    return origin, workspace


def apply_local_profile(workspace: Path, window: int, alert_for: str) -> None:
    """Make dev the environment this machine runs: alerts go through Prometheus with short timings, drift
    windows are small, so the loop turns in minutes, and Kafka is the local broker without authentication.
    The model spec stays: its release names versions a fresh MLflow does not have, which the retrain flow
    treats as "no live version yet" and answers with a first version. Renders, validates and commits the
    result, and pushes it to ``origin``."""
    yaml = YAML()
    yaml.preserve_quotes = True
    env_file = workspace / "environments" / ENV / "environment.yaml"
    spec = yaml.load(env_file.read_text())
    spec.setdefault("alerting", {})["prometheus_rule"] = True
    # The local broker (tansu 0.6) can authenticate no one: its storage keeps no SCRAM users and it serves no
    # TLS. Dev on this machine is PLAINTEXT, so no KafkaUsers are rendered and the services keep their
    # default settings; a cluster's dev stays SASL_SSL (README, "Kafka").
    kafka = spec["kafka"]
    kafka["security_protocol"] = "PLAINTEXT"
    kafka["bootstrap_servers"] = "mlops-kafka-bootstrap.kafka.svc:9092"
    kafka.yaml_add_eol_comment("# the plain listener: make demo's local broker", "bootstrap_servers")
    kafka.yaml_add_eol_comment("# tansu authenticates no one (README, \"Kafka\")", "security_protocol")
    defaults = spec.setdefault("defaults", {})
    defaults.setdefault("drift", {})["window"] = window
    alerts = defaults.setdefault("alerts", {})
    alerts["interval"] = "10s"
    alerts["drift_for"] = alert_for
    # A retrain must beat the live version by a clear margin: the demo's gate stage shows a candidate
    # from the live version's own world being refused (a fresh model from the same data lands within ~0.01).
    defaults.setdefault("retrain", {})["min_improvement"] = 0.02
    with env_file.open("w") as handle:
        yaml.dump(spec, handle)
    mlops(workspace, "render")
    mlops(workspace, "validate", "--env", ENV)
    git(workspace, "add", "-A")
    git(workspace, "commit", "--quiet", "-m", "demo: dev runs on this machine (Prometheus alerting, short alert timings, small drift windows, "
                          "Kafka without authentication)")
    git(workspace, "push", "--quiet", "origin", "HEAD")


def branches(origin: Path, prefix: str = "") -> list[str]:
    """Branch names on ``origin`` (without ``refs/heads/``) that start with ``prefix``."""
    listing = git(origin, "for-each-ref", "--format=%(refname:short)", f"refs/heads/{prefix}")
    return [line for line in listing.splitlines() if line]


def review_and_merge(workspace: Path, branch: str) -> dict[str, str]:
    """What a reviewer does: check the proposal renders identically and validates, then merge it into
    main on ``origin``. Returns what was checked (for the report)."""
    git(workspace, "fetch", "--quiet", "origin")
    git(workspace, "checkout", "--quiet", "-B", "review", f"origin/{branch}")
    check = mlops(workspace, "render", "--check", check=False)
    valid = mlops(workspace, "validate", check=False)
    diff = git(workspace, "diff", "--stat", "origin/main...HEAD")
    spec_diff = git(workspace, "diff", "origin/main...HEAD", "--", ":(glob)environments/*/models/*.yaml")
    if check.returncode != 0 or valid.returncode != 0:
        raise WorkspaceError(f"proposal {branch} does not pass review:\n{check.stdout}{check.stderr}"
                             f"{valid.stdout}{valid.stderr}")
    git(workspace, "checkout", "--quiet", "main")
    git(workspace, "merge", "--quiet", "--ff-only", "origin/main")
    git(workspace, "merge", "--quiet", "--no-ff", "-m", f"Merge proposal {branch}", f"origin/{branch}")
    git(workspace, "push", "--quiet", "origin", "main")
    git(workspace, "branch", "--quiet", "-D", "review")
    return {"branch": branch, "render_check": "clean", "validate": valid.stdout.strip().splitlines()[-1]
            if valid.stdout.strip() else "ok", "diff_stat": diff, "spec_diff": spec_diff}
