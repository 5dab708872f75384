"""Point an MLflow registered model's alias at the version Git deploys.

mlops-gitops renders this script into every model's alias Job, an Argo CD PostSync hook: after each
successful sync, the alias named after the environment (dev, staging, prod) points at the version
that now runs there, so the registry shows which version runs where. Git stays the source of truth:
nothing reads the alias to decide what to deploy.

Standard library only (it runs in the drift detector image). Configuration, all from the environment:

  MLFLOW_TRACKING_URI      MLflow's URL
  MLOPS_REGISTERED_MODEL   registered model name
  MLOPS_MODEL_VERSION      the version Git deploys
  MLOPS_ALIAS              the alias to set: the environment's name
  MLOPS_RELEASE_ID         the release id, for the log
  MLOPS_ALIAS_ATTEMPTS     tries while MLflow is unreachable or answers 5xx (default 8)
  MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD: optional credentials

Exit code 0 once the alias is read back pointing at the version, 1 otherwise (the Job then fails
and Argo CD shows the hook's log).
"""

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT_SECONDS = 15
MAX_BACKOFF_SECONDS = 30


class Refused(Exception):
    """MLflow answered with a client error: retrying cannot help."""


def call(base, method, endpoint, payload=None, query=None):
    """One MLflow REST call; returns the parsed JSON answer."""
    url = f"{base.rstrip('/')}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    headers = {"Content-Type": "application/json"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    elif user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace")[:500]
        if 400 <= exc.code < 500:
            raise Refused(f"{method} {endpoint} answered {exc.code}: {body}") from None
        raise


def set_alias(base, name, alias, version):
    """Set the alias, then read it back: success means MLflow now resolves it to ``version``."""
    call(base, "POST", "registered-models/alias", {"name": name, "alias": alias, "version": version})
    answer = call(base, "GET", "registered-models/alias", query={"name": name, "alias": alias})
    return str(answer.get("model_version", {}).get("version"))


def main():
    try:
        base = os.environ["MLFLOW_TRACKING_URI"]
        name, version = os.environ["MLOPS_REGISTERED_MODEL"], os.environ["MLOPS_MODEL_VERSION"]
        alias = os.environ["MLOPS_ALIAS"]
    except KeyError as exc:
        print(f"mlflow-alias: environment variable {exc.args[0]} is not set", file=sys.stderr)
        return 1
    release = os.environ.get("MLOPS_RELEASE_ID", "?")
    attempts = max(1, int(os.environ.get("MLOPS_ALIAS_ATTEMPTS", "8")))
    for attempt in range(1, attempts + 1):
        try:
            found = set_alias(base, name, alias, version)
        except Refused as exc:
            print(f"mlflow-alias: MLflow refused to set {name}@{alias} -> {version}: {exc}", file=sys.stderr)
            return 1
        except (OSError, ValueError) as exc:  # unreachable, 5xx, timeout or a garbled answer: try again
            if attempt == attempts:
                print(f"mlflow-alias: giving up after {attempts} attempts at {base}: {exc}", file=sys.stderr)
                return 1
            delay = min(2 ** attempt, MAX_BACKOFF_SECONDS)
            print(f"mlflow-alias: attempt {attempt} failed ({exc}); retrying in {delay}s", file=sys.stderr)
            time.sleep(delay)
            continue
        if found != version:
            print(f"mlflow-alias: {name}@{alias} reads back as {found}, not {version}", file=sys.stderr)
            return 1
        print(f"mlflow-alias: {name}@{alias} -> version {version} (release {release})")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
