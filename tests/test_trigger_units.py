"""The retrain trigger's pure parts: authentication, payload parsing, settings, policy file, run naming."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from retrain_trigger import payloads, service
from retrain_trigger.auth import Authenticator
from retrain_trigger.policy import Policy
from retrain_trigger.settings import TOKEN_FILE_NAME, ConfigError, Settings, load_settings

SECRET = b"unit-test-secret-0123456789"
BODY = b'{"status": "firing", "alerts": []}'
NOW = 1_800_000_000


class Headers(dict):
    """Case-insensitive lookups, like Starlette's request headers."""

    def get(self, key, default=None):
        return next((v for k, v in self.items() if k.lower() == key.lower()), default)


def authenticator() -> Authenticator:
    return Authenticator(SECRET, clock=lambda: NOW)


@pytest.mark.parametrize(("headers", "reason"), [
    ({"Authorization": f"Bearer {SECRET.decode()}"}, None),
    ({"authorization": f"bearer  {SECRET.decode()} "}, None),
    ({"Authorization": "Bearer nope"}, "wrong bearer token"),
    ({"Authorization": SECRET.decode()}, "the Authorization header is not 'Bearer <token>'"),
    ({"Authorization": "Bearer "}, "the Authorization header is not 'Bearer <token>'"),
    ({}, "no credentials (neither Authorization nor X-Grafana-Alerting-Signature)"),
])
def test_bearer_tokens(headers, reason):
    assert authenticator().reject_reason(Headers(headers), BODY) == reason


def test_hmac_signatures_with_and_without_timestamp():
    auth = authenticator()
    assert auth.reject_reason(Headers(auth.sign(BODY)), BODY) is None
    assert auth.reject_reason(Headers(auth.sign(BODY, timestamp=NOW - 60)), BODY) is None
    assert auth.reject_reason(Headers(auth.sign(BODY)), BODY + b" ") == "wrong HMAC signature"
    stale = auth.sign(BODY, timestamp=NOW - 301)
    assert "(replay?)" in auth.reject_reason(Headers(stale), BODY)
    moved = {**auth.sign(BODY, timestamp=NOW), "X-Grafana-Alerting-Timestamp": str(NOW - 1)}
    assert auth.reject_reason(Headers(moved), BODY) == "wrong HMAC signature"  # the timestamp is signed too
    assert auth.reject_reason(Headers({**stale, "X-Grafana-Alerting-Timestamp": "soon"}), BODY) == (
        "X-Grafana-Alerting-Timestamp is not a Unix timestamp")
    other = Authenticator(b"another-secret-0123456789", clock=lambda: NOW)
    assert auth.reject_reason(Headers(other.sign(BODY)), BODY) == "wrong HMAC signature"


def test_a_wrong_bearer_token_is_not_rescued_by_a_valid_signature():
    auth = authenticator()
    headers = Headers({"Authorization": "Bearer nope", **auth.sign(BODY)})
    assert auth.reject_reason(headers, BODY) == "wrong bearer token"


def _alert(**changes) -> dict:
    return {"status": "firing", "labels": {"retrain": "true", "model": "churn", "alertname": "a"},
            "startsAt": "2026-11-20T10:00:00+01:00", "fingerprint": "abc123", **changes}


def test_payloads_keep_what_the_trigger_reads_and_ignore_the_rest():
    body = json.dumps({"status": "firing", "orgId": 1, "extra": {"x": 1},
                       "alerts": [_alert(values={"B": 1}, annotations={"summary": "s"})]}).encode()
    (alert,) = payloads.parse(body).alerts
    assert alert.model == "churn" and alert.wants_retrain and alert.annotations == {"summary": "s"}
    assert alert.starts_at == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(("body", "not_json"), [
    (b"", True),
    (b"[1, 2", True),
    (b"[]", False),
    (json.dumps({"status": "firing", "alerts": [_alert(status="pending")]}).encode(), False),
    (json.dumps({"status": "firing", "alerts": [_alert(labels={"retrain": "true"})]}).encode(), False),
    (json.dumps({"status": "firing", "alerts": [_alert(startsAt="yesterday")]}).encode(), False),
])
def test_bad_bodies_are_told_apart(body, not_json):
    with pytest.raises(payloads.PayloadError) as error:
        payloads.parse(body)
    assert error.value.not_json is not_json


def test_only_firing_retrain_alerts_need_a_model():
    resolved = _alert(status="resolved", labels={"retrain": "true"})
    other = _alert(labels={"alertname": "HighLatency"})
    body = json.dumps({"status": "resolved", "alerts": [resolved, other]}).encode()
    assert [a.model for a in payloads.parse(body).alerts] == [None, None]


def test_each_firing_episode_gets_its_own_idempotency_key_and_the_reason_says_why():
    first = payloads.Alert.model_validate(_alert(annotations={"summary": "Drift detected on churn in dev"},
                                                 labels={**_alert()["labels"], "predictor": "main", "version": "3"}))
    again = payloads.Alert.model_validate(_alert(startsAt="2026-11-20T09:00:00Z"))
    later = payloads.Alert.model_validate(_alert(startsAt="2026-11-21T09:00:00Z"))
    assert service.idempotency_key(first) == service.idempotency_key(again) != service.idempotency_key(later)
    assert service.reason(first, "grafana") == ("grafana alert 'a' firing since 2026-11-20T09:00:00+00:00 "
                                                "(predictor=main, version=3): Drift detected on churn in dev")


def test_settings_read_the_token_from_the_secrets_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_TRIGGER_PREFECT_API_URL", "http://prefect:4200/api")
    monkeypatch.delenv("RETRAIN_TRIGGER_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="RETRAIN_TRIGGER_TOKEN: Field required"):
        load_settings(secrets_dir=tmp_path)
    (tmp_path / TOKEN_FILE_NAME).write_text("  s3cr3t-0123456789abcdef\n")
    assert load_settings(secrets_dir=tmp_path).secret == b"s3cr3t-0123456789abcdef"
    (tmp_path / TOKEN_FILE_NAME).write_text("short\n")
    with pytest.raises(ConfigError) as error:
        load_settings(secrets_dir=tmp_path)
    assert "at least 16 characters" in str(error.value) and "short" not in str(error.value)


def test_the_secrets_directory_is_named_by_its_variable_and_an_explicit_one_wins(tmp_path):
    named, explicit = tmp_path / "named", tmp_path / "explicit"
    for folder, token in ((named, "named-token-0123456789"), (explicit, "explicit-token-0123456789")):
        folder.mkdir()
        (folder / TOKEN_FILE_NAME).write_text(token)
    environ = {"RETRAIN_TRIGGER_PREFECT_API_URL": "http://prefect:4200/api",
               "RETRAIN_TRIGGER_CREDENTIALS_DIR": str(named)}
    assert load_settings(environ).secret == b"named-token-0123456789"
    assert load_settings(environ, secrets_dir=explicit).secret == b"explicit-token-0123456789"
    # Unset or empty: the rendered Deployment's mount, which this machine lacks, so no token is found.
    for unset in ({}, {"RETRAIN_TRIGGER_CREDENTIALS_DIR": ""}):
        with pytest.raises(ConfigError, match="RETRAIN_TRIGGER_TOKEN: Field required"):
            load_settings({"RETRAIN_TRIGGER_PREFECT_API_URL": "http://prefect:4200/api", **unset})


@pytest.mark.parametrize("name", ["retrain", "retrain/{model}/x", "{model}", "retrain/{model}-{env}",
                                  "retrain/fixed"])
def test_the_deployment_name_needs_one_model_placeholder(name):
    with pytest.raises(ValueError, match="deployment_name"):
        Settings(prefect_api_url="http://p/api", token="t" * 16, deployment_name=name)


def test_policy_file_problems_name_the_file(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text('{"environment": "dev", "default": {"on_drift": true, "max_runs_per_day": -1}}')
    with pytest.raises(ConfigError, match=r"policy.json: invalid retrain policy:\n  - default.max_runs_per_day"):
        Policy.from_file(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Policy.from_file(path)
    path.write_text('{"environment": "dev", "default": {"on_drift": true, "max_runs_per_day": 2},'
                    ' "models": {"a": {"on_drift": false, "max_runs_per_day": 0}}}')
    policy = Policy.from_file(path)
    assert policy.for_model("a").on_drift is False and policy.for_model("b").max_runs_per_day == 2
