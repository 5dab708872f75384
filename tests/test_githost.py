"""generator.external.githost against a local HTTP server that answers like GitHub's pull-request API.

GitHub itself is unreachable from tests; the server (tests/fakegithub.py) records every request, so
the tests assert the exact method, path, headers and JSON body, and play back GitHub's documented
error answers.
"""

from __future__ import annotations

import pytest

from fakegithub import FakeGitHub
from generator.external.githost import GITHUB_API_URL, GitHubHost, PullRequest, host_from_env
from generator.spec.errors import GitHostError
from services import free_port


def test_opens_a_pull_request_with_the_exact_request(github: FakeGitHub) -> None:
    github.answers.append((201, {"number": 42, "html_url": "https://github.example.com/acme/gitops/pull/42"}))
    host = GitHubHost("acme/gitops", "s3cr3t-token", api_url=github.url + "/")

    pr = host.open_pull_request(head="promote/churn/prod/0123456789ab", base="main",
                                title="Promote churn 0123456789ab to prod", body="model version 7")

    assert pr == PullRequest(42, "https://github.example.com/acme/gitops/pull/42")
    [request] = github.requests
    assert request["method"] == "POST"
    assert request["path"] == "/api/v3/repos/acme/gitops/pulls"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == "Bearer s3cr3t-token"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("mlops-gitops/")
    assert request["body"] == {"title": "Promote churn 0123456789ab to prod", "head": "promote/churn/prod/0123456789ab",
                               "base": "main", "body": "model version 7"}


def test_existing_pull_request_is_a_clear_error(github: FakeGitHub) -> None:
    github.answers.append((422, {"message": "Validation Failed", "errors": [
        {"resource": "PullRequest", "code": "custom",
         "message": "A pull request already exists for acme:promote/churn/prod/0123456789ab."}],
        "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"}))
    host = GitHubHost("acme/gitops", "token", api_url=github.url)
    with pytest.raises(GitHostError) as caught:
        host.open_pull_request(head="promote/churn/prod/0123456789ab", base="main", title="t", body="b")
    message = str(caught.value)
    assert "already exists" in message
    assert "'promote/churn/prod/0123456789ab'" in message and "'main'" in message
    assert caught.value.exit_code == 8


def test_other_validation_failure_names_the_branch(github: FakeGitHub) -> None:
    github.answers.append((422, {"message": "Validation Failed",
                                 "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}]}))
    host = GitHubHost("acme/gitops", "token", api_url=github.url)
    with pytest.raises(GitHostError, match=r"refused the pull request from 'feature' into 'main' "
                                           r"\(422 Validation Failed: head invalid\); check that the branch is pushed"):
        host.open_pull_request(head="feature", base="main", title="t", body="b")


def test_rejected_token_says_which_variable_to_fix(github: FakeGitHub) -> None:
    github.answers.append((401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}))
    host = GitHubHost("acme/gitops", "expired", api_url=github.url)
    with pytest.raises(GitHostError) as caught:
        host.open_pull_request(head="b", base="main", title="t", body="b")
    message = str(caught.value)
    assert "401 Bad credentials" in message and "MLOPS_GIT_TOKEN" in message
    assert "expired" not in message, "the token must never appear in messages"


def test_missing_permission_is_explained(github: FakeGitHub) -> None:
    github.answers.append((403, {"message": "Resource not accessible by integration"}))
    host = GitHubHost("acme/gitops", "token", api_url=github.url)
    with pytest.raises(GitHostError, match="403 Resource not accessible by integration; the token needs "
                                           "pull-request write access"):
        host.open_pull_request(head="b", base="main", title="t", body="b")


def test_unreachable_host_says_the_branch_is_pushed() -> None:
    host = GitHubHost("acme/gitops", "token", api_url=f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(GitHostError, match="cannot reach the GitHub API .* the branch 'b' is pushed"):
        host.open_pull_request(head="b", base="main", title="t", body="b")


def test_host_from_env_reads_mlops_variables_first() -> None:
    host = host_from_env({"MLOPS_GIT_REPO": "acme/gitops", "MLOPS_GIT_TOKEN": "one", "GITHUB_TOKEN": "two",
                          "MLOPS_GIT_API_URL": "https://ghe.example.com/api/v3", "GITHUB_REPOSITORY": "other/repo"})
    assert isinstance(host, GitHubHost)
    assert (host.repo, host.api_url, host._token) == ("acme/gitops", "https://ghe.example.com/api/v3", "one")
    assert "one" not in repr(host)


def test_host_from_env_falls_back_to_github_actions_variables() -> None:
    host = host_from_env({"GITHUB_REPOSITORY": "acme/gitops", "GITHUB_TOKEN": "two"})
    assert isinstance(host, GitHubHost)
    assert (host.repo, host.api_url, host._token) == ("acme/gitops", GITHUB_API_URL, "two")


def test_no_repository_means_no_host() -> None:
    assert host_from_env({"GITHUB_TOKEN": "a token for something else"}) is None
    assert host_from_env({}) is None


@pytest.mark.parametrize(("environ", "expected"), [
    ({"MLOPS_GIT_HOST": "gitlab", "MLOPS_GIT_REPO": "acme/gitops"}, "MLOPS_GIT_HOST='gitlab' is not supported"),
    ({"MLOPS_GIT_REPO": "acme/gitops"}, "set MLOPS_GIT_TOKEN"),
    ({"MLOPS_GIT_REPO": "https://github.com/acme/gitops", "MLOPS_GIT_TOKEN": "t"}, "is not owner/name"),
])
def test_misconfiguration_is_refused(environ: dict, expected: str) -> None:
    with pytest.raises(GitHostError, match=expected):
        host_from_env(environ)
