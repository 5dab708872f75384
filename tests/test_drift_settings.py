"""The drift detector's settings and config from the rendered manifests, its README, and its exit codes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from driftservice import (
    COMPONENTS,
    RENDERED,
    Metrics,
    offline_env,
    require_service_modules,
    start_and_fail,
    write_config,
)


@pytest.fixture(autouse=True)
def _service_dependencies() -> None:
    require_service_modules()


# --- settings from the rendered manifests -----------------------------------------------------------


def _rendered(name: str) -> dict[str, Any]:
    return yaml.safe_load((RENDERED / name).read_text())


def test_settings_load_from_rendered_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drift_detector.metrics import DriftMetrics
    from drift_detector.settings import Settings, load_settings
    from service_kit.http import HealthServer, text_metrics

    from generator.spec.naming import DRIFT_HTTP_PORT, METRICS

    deployment = _rendered("drift-detector-deployment.yaml")
    configmap = _rendered("drift-detector-configmap.yaml")
    service = _rendered("drift-detector-service.yaml")
    monitor = _rendered("drift-detector-servicemonitor.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item.get("value", "from-a-secret") for item in container["env"]}
    drift_env = {name for name in env if name.startswith("DRIFT_")}
    assert drift_env == {"DRIFT_MODEL", "DRIFT_ENVIRONMENT", "DRIFT_KAFKA_BOOTSTRAP_SERVERS", "DRIFT_TOPIC",
                         "DRIFT_DEAD_LETTER_TOPIC", "DRIFT_GROUP_ID", "DRIFT_STATE_TOPIC", "DRIFT_CONFIG_FILE",
                         "DRIFT_HTTP_PORT", "DRIFT_S3_ENDPOINT_URL", "DRIFT_KAFKA_SECURITY_PROTOCOL",
                         "DRIFT_KAFKA_SASL_MECHANISM", "DRIFT_KAFKA_USERNAME", "DRIFT_KAFKA_PASSWORD_FILE",
                         "DRIFT_KAFKA_CA_FILE"}
    assert drift_env <= {f"DRIFT_{name.upper()}" for name in Settings.model_fields}

    # The config file is the ConfigMap's config.yaml, mounted where DRIFT_CONFIG_FILE points.
    mount = next(m for m in container["volumeMounts"] if env["DRIFT_CONFIG_FILE"].startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    key = env["DRIFT_CONFIG_FILE"][len(mount["mountPath"]) + 1:]
    config_file = tmp_path / key
    config_file.write_text(configmap["data"][key])
    env["DRIFT_CONFIG_FILE"] = str(config_file)
    # The Kafka password and CA are files of the projected Secret volume mounted where the variables point.
    kafka_mount = next(m for m in container["volumeMounts"] if m["name"] == "kafka-credentials")
    kafka_volume = next(v for v in pod["volumes"] if v["name"] == "kafka-credentials")
    projected = {item["path"] for source in kafka_volume["projected"]["sources"] for item in source["secret"]["items"]}
    for variable in ("DRIFT_KAFKA_PASSWORD_FILE", "DRIFT_KAFKA_CA_FILE"):
        folder, _, name = env[variable].rpartition("/")
        assert folder == kafka_mount["mountPath"] and name in projected
        (tmp_path / name).write_text("mounted")
        env[variable] = str(tmp_path / name)

    # Exactly what the process sees: the real environment, read by pydantic-settings.
    for name in list(os.environ):
        if name.startswith("DRIFT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings == load_settings(env)
    assert settings.model == "fraud-detector" and settings.environment == "dev"
    assert settings.kafka_bootstrap_servers == "mlops-kafka-bootstrap.kafka.svc:9093"
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism, settings.kafka_username) == \
        ("SASL_SSL", "SCRAM-SHA-512", "fraud-detector-dev-drift-detector")
    assert settings.topic == "fraud-detector-dev-inference-log"
    assert settings.dead_letter_topic == "fraud-detector-dev-inference-log-dlq"
    assert settings.group_id == "fraud-detector-dev-drift-detector"
    # The kept verdicts go to a rendered, compacted topic of their own (state.py).
    state_topic = _rendered("kafkatopic-drift-state.yaml")
    assert settings.state_topic == state_topic["metadata"]["name"] == "fraud-detector-dev-drift-state"
    assert state_topic["spec"]["config"]["cleanup.policy"] == "compact"
    assert settings.s3_endpoint_url == "http://seaweedfs-s3.storage.svc:8333"
    assert settings.http_port == DRIFT_HTTP_PORT == 8080
    assert str(settings.artifact_dir).startswith("/tmp/")  # the only writable path (emptyDir on /tmp)
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])

    config = settings.load_config()
    assert (config.model, config.environment, config.method, config.window) == ("fraud-detector", "dev",
                                                                                 "tabular", 1000)
    assert [f.name for f in config.features] == ["amount", "hour", "distance_km", "merchant_category",
                                                 "card_present"]
    assert config.features[4].categories == [0, 1]
    assert [(p.name, p.version) for p in config.predictors] == [("main", "7"), ("candidate", "8")]
    assert config.predictors[0].detector.uri.startswith("s3://")

    # Ports and probes: port 8080 named http, the probe paths and the scrape path are served.
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert port["containerPort"] == settings.http_port
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    metrics = DriftMetrics(config.model)
    server = HealthServer("127.0.0.1", 0, lambda: (False, "loading"), text_metrics(metrics.registry))
    for probe, status in (("readinessProbe", 503), ("livenessProbe", 200), ("startupProbe", 200)):
        assert container[probe]["httpGet"]["port"] == "http"
        assert server.route("GET", container[probe]["httpGet"]["path"])[0] == status
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server.route("GET", monitor["spec"]["endpoints"][0]["path"])[0] == 200

    # Every series the rendered alerts and dashboard query exists (one predictor declared).
    metrics.declare_predictor("7", "main", [f.name for f in config.features])
    metrics.rejected("7", "main", "schema")
    metrics.lag(settings.topic, 0, 0)
    metrics.window("7", "main", drift=False, p_value=0.5, statistic=0.1, threshold=0.002,
                   feature_p_values={"amount": 0.5}, seconds=0.001, timestamp=1.0)
    exposed = Metrics(metrics.exposition()[0].decode())
    for key, name in METRICS.items():
        if key.startswith("drift_"):
            assert exposed.has(name), name
    for name in ("mlops_drift_test_statistic", "mlops_drift_threshold", "mlops_drift_windows_evaluated_total",
                 "mlops_drift_last_window_timestamp_seconds", "mlops_drift_processing_seconds_bucket"):
        assert exposed.has(name), name


def test_readme_documents_every_setting_metric_and_config_key() -> None:
    """The component README is the service's manual: every ``DRIFT_`` variable, every exported series,
    every key of the config file and every record field is named there."""
    from drift_detector.metrics import DriftMetrics
    from drift_detector.settings import DriftConfig, Settings
    from inference_log import InferenceRecord

    readme = (COMPONENTS / "drift_detector" / "README.md").read_text()
    missing = [f"DRIFT_{name.upper()}" for name in Settings.model_fields if f"`DRIFT_{name.upper()}`" not in readme]
    missing += [family.name for family in DriftMetrics("m").registry.collect() if f"`{family.name}" not in readme]
    missing += [f"{key}:" for key in DriftConfig.model_fields if f"\n{key}:" not in readme]
    missing += [f'"{key}"' for key in InferenceRecord.model_fields if f'"{key}"' not in readme]
    assert not missing, f"components/drift_detector/README.md does not document: {', '.join(missing)}"


# --- exit codes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"DRIFT_HTTP_PORT": "not-a-port"}, "DRIFT_HTTP_PORT"),
    ({"DRIFT_MODEL": "another-model"}, "does not match DRIFT_MODEL"),
    ({"DRIFT_CONFIG_FILE": "/nonexistent/config.yaml"}, "cannot read the drift config file"),
])
def test_invalid_settings_or_config_exit_with_the_config_code(tmp_path: Path, change: dict, message: str) -> None:
    from drift_detector import ExitCode

    config = write_config(tmp_path / "config.yaml", [("main", "1", str(tmp_path / "absent.npz"), "0" * 64)])
    code, output, _ = start_and_fail({**offline_env(tmp_path, config), **change})
    assert code == ExitCode.CONFIG == 2, output
    assert "refusing to start" in output and message in output, output
    assert "Traceback" not in output, output


def test_unexpected_arguments_exit_with_the_config_code(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", [("main", "1", str(tmp_path / "absent.npz"), "0" * 64)])
    result = subprocess.run([sys.executable, "-m", "drift_detector", "serve"], env=offline_env(tmp_path, config),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "unexpected arguments ['serve']" in result.stderr


def test_a_port_already_taken_exits_with_the_failure_code(tmp_path: Path) -> None:
    from drift_detector import ExitCode

    config = write_config(tmp_path / "config.yaml", [("main", "1", str(tmp_path / "absent.npz"), "0" * 64)])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**offline_env(tmp_path, config), "DRIFT_HTTP_PORT": str(taken.getsockname()[1])}
        code, output, _ = start_and_fail(env)
    assert code == ExitCode.FAILURE == 1, output
    assert "cannot listen on" in output, output


def test_a_missing_artifact_exits_with_the_artifact_code(tmp_path: Path) -> None:
    from drift_detector import ExitCode

    config = write_config(tmp_path / "config.yaml", [("main", "1", str(tmp_path / "absent.npz"), "0" * 64)])
    code, output, _ = start_and_fail(offline_env(tmp_path, config))
    assert code == ExitCode.ARTIFACT == 3, output
    assert "does not exist" in output, output
