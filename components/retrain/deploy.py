"""``python -m retrain.deploy``: create or update the retrain flow's Prefect deployments from Git.

The rendered Argo CD PostSync Job of the ``retrain-pipeline`` component runs this after each sync, so
the pipeline's version follows the repository::

    python -m retrain.deploy --repo-url URL [--revision main] [--prefect-file components/retrain/prefect.yaml]
        [--expected-sha256 HEX] [--code-dir DIR]

1. fetch ``--revision`` of the repository (one commit, no history) and note its commit SHA;
2. fill the placeholders this step owns from :class:`~retrain.settings.RetrainSettings`
   (``RETRAIN_WORK_POOL``, ``RETRAIN_CODE_DIR``, ``RETRAIN_ENVIRONMENT``; ``MLOPS_GIT_REPO`` and
   ``MLOPS_GIT_API_URL`` default to empty: no Git host API) and refuse a file whose other ``{{ $VARIABLE }}``
   placeholders name unset variables (Prefect would store the placeholder text as the value);
3. check that every work pool the file names exists. A ``kubernetes`` pool is the in-cluster worker's to
   create (with its base job template), so until then this fails and the Job retries; a missing
   ``process`` pool (``RETRAIN_WORK_POOL_TYPE=process``, a local worker) is created here;
4. run ``prefect deploy --all`` on the fetched ``prefect.yaml`` with ``MLOPS_GIT_SHA`` set, which the
   file writes into each deployment's ``version`` and a ``git-sha:`` tag. The flow code loaded is the
   image's (``--code-dir``), the code the worker will run.

Settings from the environment: ``PREFECT_API_URL`` (the server), ``MLOPS_GIT_TOKEN`` (optional, for a
private https repository), ``RETRAIN_WORK_POOL``/``RETRAIN_WORK_POOL_TYPE``/``RETRAIN_CODE_DIR`` and
whatever the ``{{ $VARIABLE }}`` placeholders of ``prefect.yaml`` read.
Exit status (:class:`retrain.settings.ExitCode`): 0 when every deployment was applied, 1 otherwise (the
reason on stderr), 2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from pydantic import ValidationError

from generator.external import gitrepo
from generator.spec.errors import GitError
from retrain.propose import auth_header
from retrain.settings import ExitCode, RetrainSettings, child_environment, load_settings

DEFAULT_PREFECT_FILE = "components/retrain/prefect.yaml"
CODE_DIR = Path(__file__).resolve().parent.parent
"""The directory holding the ``retrain`` package: deployments' entrypoints are relative to it."""
DEPLOY_TIMEOUT_SECONDS = 600
PLACEHOLDER = re.compile(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
"""Prefect's environment-variable placeholder, ``{{ $NAME }}``."""


class DeployError(RuntimeError):
    """The revision cannot be fetched, the file is wrong, a work pool is missing, or Prefect refused."""


def fetch_revision(repo_url: str, revision: str, directory: Path, token: str | None = None) -> str:
    """Check out ``revision`` (branch, tag or commit) of ``repo_url`` in ``directory``; returns its commit SHA."""
    directory.mkdir(parents=True, exist_ok=True)
    header = auth_header(repo_url, token)
    auth = ["-c", f"http.extraHeader={header}"] if header else []
    try:
        gitrepo.run_git(directory, "init", "--quiet")
        gitrepo.run_git(directory, *auth, "fetch", "--quiet", "--depth", "1", repo_url, revision)
        gitrepo.run_git(directory, "checkout", "--quiet", "--detach", "FETCH_HEAD")
        return gitrepo.head_commit(directory)
    except GitError as exc:
        raise DeployError(f"cannot fetch {revision!r} of {repo_url}: {exc}") from None


def work_pools(prefect_file: Path, environment: dict[str, str] | None = None) -> list[str]:
    """The work pools the file's deployments run on (``work_pool.name``, placeholders filled from
    ``environment``), sorted."""
    try:
        document = yaml.safe_load(prefect_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DeployError(f"{prefect_file}: cannot read it as YAML: {exc}") from None
    deployments = document.get("deployments") or []
    if not deployments:
        raise DeployError(f"{prefect_file}: no deployments")
    names = set()
    for index, deployment in enumerate(deployments):
        pool = (deployment.get("work_pool") or {}).get("name")
        if not pool:
            raise DeployError(f"{prefect_file}: deployments[{index}] ({deployment.get('name')}) has no work_pool.name")
        names.add(PLACEHOLDER.sub(lambda m: (environment or {}).get(m.group(1), m.group(0)), str(pool)))
    return sorted(names)


def deploy_environment(settings: RetrainSettings, git_sha: str) -> dict[str, str]:
    """The environment of ``prefect deploy``: this process's, plus the values of the placeholders this
    step owns (the settings' defaults when unset) and ``MLOPS_GIT_SHA``."""
    return child_environment(
        RETRAIN_WORK_POOL=settings.work_pool, RETRAIN_CODE_DIR=str(settings.code_dir),
        RETRAIN_ENVIRONMENT=settings.environment,
        # Empty means: no Git host repository (branch pushed, proposal recorded in Prefect), GitHub's API.
        MLOPS_GIT_REPO=settings.mlops_git_repo or "", MLOPS_GIT_API_URL=settings.mlops_git_api_url or "",
        MLOPS_GIT_SHA=git_sha, PREFECT_CLI_COLORS="false")


def unset_placeholders(prefect_file: Path, environment: dict[str, str]) -> list[str]:
    """The ``{{ $NAME }}`` placeholders of the file's values (not its comments) whose variable
    ``environment`` lacks, sorted."""
    def strings(node: object) -> list[str]:
        if isinstance(node, dict):
            return [text for key, value in node.items() for text in (*strings(key), *strings(value))]
        if isinstance(node, list):
            return [text for item in node for text in strings(item)]
        return [node] if isinstance(node, str) else []

    document = yaml.safe_load(prefect_file.read_text(encoding="utf-8"))
    return sorted({name for text in strings(document) for name in PLACEHOLDER.findall(text)
                   if name not in environment})


def ensure_work_pools(names: list[str], settings: RetrainSettings) -> list[str]:
    """Create the settings' work pool when it is a missing ``process`` pool; return the pools of ``names``
    that are still missing.

    Raises:
        DeployError: the settings' pool exists with another type than ``RETRAIN_WORK_POOL_TYPE``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async def check() -> list[str]:
        missing = []
        async with get_client() as client:
            for name in names:
                try:
                    pool = await client.read_work_pool(name)
                except ObjectNotFound:
                    if name == settings.work_pool and settings.work_pool_type == "process":
                        from prefect.workers.process import ProcessWorker

                        try:
                            await client.create_work_pool(WorkPoolCreate(
                                name=name, type="process",
                                base_job_template=ProcessWorker.get_default_base_job_template()))
                        except ObjectAlreadyExists:  # a worker created it meanwhile
                            pass
                        print(f"retrain.deploy: created work pool {name} (type process)", file=sys.stderr)
                    else:
                        missing.append(name)
                    continue
                if name == settings.work_pool and settings.work_pool_type not in (None, pool.type):
                    raise DeployError(f"work pool {name} is of type {pool.type}, but RETRAIN_WORK_POOL_TYPE is "
                                      f"{settings.work_pool_type}; name another pool in RETRAIN_WORK_POOL or fix the type")
        return missing

    return asyncio.run(check())


def deploy(prefect_file: Path, environment: dict[str, str], code_dir: Path = CODE_DIR) -> str:
    """``prefect deploy --all`` on ``prefect_file`` in ``environment`` (:func:`deploy_environment`);
    returns Prefect's output.

    Raises:
        DeployError: Prefect exited non-zero (its output is in the message).
    """
    command = [sys.executable, "-m", "prefect", "deploy", "--all", "--no-prompt", "--prefect-file", str(prefect_file)]
    done = subprocess.run(command, cwd=code_dir, env=environment, capture_output=True, text=True,
                          timeout=DEPLOY_TIMEOUT_SECONDS, check=False)
    output = f"{done.stdout}{done.stderr}".strip()
    if done.returncode != 0:
        raise DeployError(f"prefect deploy exited with {done.returncode}:\n{output}")
    return output


def _prefect_api_url(settings: RetrainSettings) -> str:
    return settings.prefect_api_url or "the Prefect server"


def main(argv: list[str] | None = None) -> ExitCode:
    """Fetch, check, deploy; print what was deployed at which commit."""
    parser = argparse.ArgumentParser(prog="python -m retrain.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo-url", required=True, help="clone URL of the GitOps repository")
    parser.add_argument("--revision", default="main", help="branch, tag or commit to deploy (default main)")
    parser.add_argument("--prefect-file", default=DEFAULT_PREFECT_FILE,
                        help=f"prefect.yaml, relative to the repository (default {DEFAULT_PREFECT_FILE})")
    parser.add_argument("--expected-sha256", help="sha256 of prefect.yaml as rendered for this sync; a fetched file "
                        "that differs is still deployed (the repository moved on, its own sync follows) but noted")
    parser.add_argument("--code-dir", type=Path, default=CODE_DIR,
                        help="directory of the flow code the entrypoints name (default: this image's)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"retrain.deploy: error: invalid RETRAIN_* settings: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    try:
        with tempfile.TemporaryDirectory(prefix="retrain-deploy-") as scratch:
            checkout = Path(scratch) / "repo"
            sha = fetch_revision(args.repo_url, args.revision, checkout, settings.git_token)
            prefect_file = checkout / args.prefect_file
            if not prefect_file.is_file():
                raise DeployError(f"{args.prefect_file} does not exist at {sha} of {args.repo_url}")
            actual = hashlib.sha256(prefect_file.read_bytes()).hexdigest()
            if args.expected_sha256 and actual != args.expected_sha256:
                print(f"retrain.deploy: {args.prefect_file} at {sha} has sha256 {actual}, not the synced "
                      f"{args.expected_sha256}: {args.revision} moved on since this sync; deploying {sha}",
                      file=sys.stderr)
            environment = deploy_environment(settings, sha)
            if unset := unset_placeholders(prefect_file, environment):
                raise DeployError(f"{args.prefect_file} reads {', '.join(unset)}, which this step's environment does "
                                  "not set; set them (the rendered Job sets the cluster's)")
            if missing := ensure_work_pools(work_pools(prefect_file, environment), settings):
                raise DeployError(f"work pool(s) {', '.join(missing)} do not exist yet on "
                                  f"{_prefect_api_url(settings)}; the Prefect worker "
                                  "creates its pool when it starts, and this Job retries")
            output = deploy(prefect_file, environment, args.code_dir)
    except DeployError as exc:
        print(f"retrain.deploy: error: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    print(output)
    print(f"deployed {args.prefect_file} at {sha} ({args.revision} of {args.repo_url})")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
