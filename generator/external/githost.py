"""Pull requests through a Git host's API: the :class:`GitHost` protocol and its GitHub implementation.

Promotion and the retrain flow push a branch, then ask the host for a pull request so that people
review and merge the change. Only that one call is needed, so this is the standard library's
``urllib`` against GitHub's REST API (``POST /repos/{owner}/{repo}/pulls``), no client library.
:func:`host_from_env` builds the configured host from environment variables, or returns ``None``
when none is configured (then the branch is pushed and the pull request is opened by hand).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from generator import __version__
from generator.spec.errors import GitHostError

TIMEOUT_SECONDS = 30
GITHUB_API_URL = "https://api.github.com"
GITHUB_API_VERSION = "2022-11-28"
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class PullRequest:
    """An opened pull request: its number and the page where people review it."""

    number: int
    url: str


class GitHost(Protocol):
    """Something that opens pull requests: GitHub today, another host behind the same call later."""

    def open_pull_request(self, *, head: str, base: str, title: str, body: str) -> PullRequest:
        """Open a pull request merging branch ``head`` into ``base``."""
        ...


class GitHubHost:
    """GitHub's REST API (github.com or GitHub Enterprise Server through ``api_url``).

    The token needs the ``pull_requests: write`` permission on the repository (the workflow's
    ``GITHUB_TOKEN`` has it when the workflow grants it).
    """

    def __init__(self, repo: str, token: str, api_url: str = GITHUB_API_URL,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        if not _REPO_RE.fullmatch(repo):
            raise GitHostError(f"Git host repository {repo!r} is not owner/name; set MLOPS_GIT_REPO=owner/name")
        if not token:
            raise GitHostError(f"no token for GitHub repository {repo}; set MLOPS_GIT_TOKEN (or GITHUB_TOKEN)")
        self.repo, self.api_url, self.timeout = repo, api_url.rstrip("/"), timeout
        self._token = token

    def __repr__(self) -> str:  # never show the token
        return f"GitHubHost(repo={self.repo!r}, api_url={self.api_url!r})"

    def open_pull_request(self, *, head: str, base: str, title: str, body: str) -> PullRequest:
        """Open a pull request from branch ``head`` into ``base`` and return its number and URL.

        Raises:
            GitHostError: the token is rejected (401), lacks permission or the repository is not
                visible (403/404), GitHub refuses the request (422, e.g. a pull request for ``head``
                already exists or the branch was not pushed), or GitHub cannot be reached.
        """
        url = f"{self.api_url}/repos/{self.repo}/pulls"
        payload = json.dumps({"title": title, "head": head, "base": base, "body": body}).encode()
        request = urllib.request.Request(url, data=payload, method="POST", headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json",
            "User-Agent": f"mlops-gitops/{__version__}",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        })
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc, head, base) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GitHostError(f"cannot reach the GitHub API at {self.api_url} ({reason}); the branch {head!r} "
                               "is pushed, open the pull request by hand or retry") from None
        except ValueError:
            raise GitHostError(f"GitHub at {self.api_url} answered the pull request with something that is "
                               "not JSON; check MLOPS_GIT_API_URL") from None
        try:
            return PullRequest(int(answer["number"]), str(answer["html_url"]))
        except (KeyError, TypeError, ValueError):
            raise GitHostError(f"GitHub's answer has no pull request number and html_url: {answer!r:.300}") from None

    def _refused(self, exc: urllib.error.HTTPError, head: str, base: str) -> GitHostError:
        detail = _github_message(exc)
        where = f"GitHub repository {self.repo}"
        if exc.code == 401:
            return GitHostError(f"{where}: the token was rejected (401 {detail}); set a valid MLOPS_GIT_TOKEN "
                                "or GITHUB_TOKEN")
        if exc.code in (403, 404):
            return GitHostError(f"{where}: {exc.code} {detail}; the token needs pull-request write access to "
                                "the repository, and MLOPS_GIT_REPO must name it as owner/name")
        if exc.code == 422 and "already exists" in detail:
            return GitHostError(f"{where}: a pull request from {head!r} into {base!r} already exists "
                                f"({detail}); update that one instead of opening another")
        if exc.code == 422:
            return GitHostError(f"{where}: GitHub refused the pull request from {head!r} into {base!r} "
                                f"(422 {detail}); check that the branch is pushed and differs from {base!r}")
        return GitHostError(f"{where}: GitHub answered {exc.code} {detail} to the pull request from {head!r}")


def _github_message(exc: urllib.error.HTTPError) -> str:
    """GitHub's error text: ``message`` plus the ``errors[].message`` details it gives for 422."""
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        return str(exc.reason or "")
    if not isinstance(body, dict):
        return str(exc.reason or "")
    parts = [str(body.get("message") or exc.reason or "")]
    for error in body.get("errors") or []:
        if isinstance(error, dict) and error.get("message"):
            parts.append(str(error["message"]))
        elif isinstance(error, dict) and error.get("code"):
            parts.append(f"{error.get('field', '')} {error['code']}".strip())
    return ": ".join(p for p in parts if p)


def host_from_env(environ: Mapping[str, str] | None = None) -> GitHost | None:
    """The Git host configured in ``environ`` (default: ``os.environ``), or ``None`` when none is.

    Variables: ``MLOPS_GIT_HOST`` (``github``, the default), ``MLOPS_GIT_REPO`` (``owner/name``; in
    GitHub Actions ``GITHUB_REPOSITORY`` is used when it is unset), ``MLOPS_GIT_TOKEN`` (else
    ``GITHUB_TOKEN``) and ``MLOPS_GIT_API_URL`` (else ``GITHUB_API_URL``, else https://api.github.com).

    Raises:
        GitHostError: an unknown host kind, or a repository without a token.
    """
    environ = os.environ if environ is None else environ
    kind = (environ.get("MLOPS_GIT_HOST") or "github").strip().lower()
    if kind != "github":
        raise GitHostError(f"MLOPS_GIT_HOST={kind!r} is not supported; use github (GitHub or GitHub Enterprise "
                           "through MLOPS_GIT_API_URL), or unset MLOPS_GIT_REPO and open pull requests by hand")
    repo = environ.get("MLOPS_GIT_REPO") or environ.get("GITHUB_REPOSITORY")
    if not repo:
        return None
    token = environ.get("MLOPS_GIT_TOKEN") or environ.get("GITHUB_TOKEN") or ""
    api_url = environ.get("MLOPS_GIT_API_URL") or environ.get("GITHUB_API_URL") or GITHUB_API_URL
    return GitHubHost(repo, token, api_url)
