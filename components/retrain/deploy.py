"""``python -m retrain.deploy``: create or update the retrain flow's Prefect deployments from Git.

The rendered Argo CD PostSync Job of the ``retrain-pipeline`` component runs this after each sync, so
the pipeline's version follows the repository::

    python -m retrain.deploy --repo-url URL [--revision main] [--prefect-file components/retrain/prefect.yaml]
        [--expected-sha256 HEX] [--code-dir DIR]

1. fetch ``--revision`` of the repository (one commit, no history) and note its commit SHA;
2. check that every work pool the file names exists (the Prefect worker creates its pool at start;
   until then this fails and the Job retries);
3. run ``prefect deploy --all`` on the fetched ``prefect.yaml`` with ``MLOPS_GIT_SHA`` set, which the
   file writes into each deployment's ``version`` and a ``git-sha:`` tag. The flow code loaded is the
   image's (``--code-dir``), the code the worker will run.

Settings from the environment: ``PREFECT_API_URL`` (the server), ``MLOPS_GIT_TOKEN`` (optional, for a
private https repository) and whatever the ``{{ $VARIABLE }}`` placeholders of ``prefect.yaml`` read.
Exit status (:class:`retrain.settings.ExitCode`): 0 when every deployment was applied, 1 otherwise (the
reason on stderr), 2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from generator.external import gitrepo
from generator.spec.errors import GitError
from retrain.propose import auth_header, git_token
from retrain.settings import ExitCode, child_environment, load_settings

DEFAULT_PREFECT_FILE = "components/retrain/prefect.yaml"
CODE_DIR = Path(__file__).resolve().parent.parent
"""The directory holding the ``retrain`` package: deployments' entrypoints are relative to it."""
DEPLOY_TIMEOUT_SECONDS = 600


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


def work_pools(prefect_file: Path) -> list[str]:
    """The work pools the file's deployments run on (``work_pool.name``), sorted."""
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
        names.add(pool)
    return sorted(names)


def missing_work_pools(names: list[str]) -> list[str]:
    """The pools of ``names`` the Prefect server (``PREFECT_API_URL``) does not have."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async def check() -> list[str]:
        missing = []
        async with get_client() as client:
            for name in names:
                try:
                    await client.read_work_pool(name)
                except ObjectNotFound:
                    missing.append(name)
        return missing

    return asyncio.run(check())


def deploy(prefect_file: Path, git_sha: str, code_dir: Path = CODE_DIR) -> str:
    """``prefect deploy --all`` on ``prefect_file`` with ``MLOPS_GIT_SHA``; returns Prefect's output.

    Raises:
        DeployError: Prefect exited non-zero (its output is in the message).
    """
    command = [sys.executable, "-m", "prefect", "deploy", "--all", "--no-prompt", "--prefect-file", str(prefect_file)]
    environment = child_environment(MLOPS_GIT_SHA=git_sha, PREFECT_CLI_COLORS="false")
    done = subprocess.run(command, cwd=code_dir, env=environment, capture_output=True, text=True,
                          timeout=DEPLOY_TIMEOUT_SECONDS, check=False)
    output = f"{done.stdout}{done.stderr}".strip()
    if done.returncode != 0:
        raise DeployError(f"prefect deploy exited with {done.returncode}:\n{output}")
    return output


def _prefect_api_url() -> str:
    url = load_settings().prefect_api_url
    return "the Prefect server" if url is None else url


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
        with tempfile.TemporaryDirectory(prefix="retrain-deploy-") as scratch:
            checkout = Path(scratch) / "repo"
            sha = fetch_revision(args.repo_url, args.revision, checkout, git_token())
            prefect_file = checkout / args.prefect_file
            if not prefect_file.is_file():
                raise DeployError(f"{args.prefect_file} does not exist at {sha} of {args.repo_url}")
            actual = hashlib.sha256(prefect_file.read_bytes()).hexdigest()
            if args.expected_sha256 and actual != args.expected_sha256:
                print(f"retrain.deploy: {args.prefect_file} at {sha} has sha256 {actual}, not the synced "
                      f"{args.expected_sha256}: {args.revision} moved on since this sync; deploying {sha}",
                      file=sys.stderr)
            if missing := missing_work_pools(work_pools(prefect_file)):
                raise DeployError(f"work pool(s) {', '.join(missing)} do not exist yet on "
                                  f"{_prefect_api_url()}; the Prefect worker "
                                  "creates its pool when it starts, and this Job retries")
            output = deploy(prefect_file, sha, args.code_dir)
    except DeployError as exc:
        print(f"retrain.deploy: error: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    print(output)
    print(f"deployed {args.prefect_file} at {sha} ({args.revision} of {args.repo_url})")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
