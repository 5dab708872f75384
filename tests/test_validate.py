"""Tests for generator.check.validate: every check catches its case, and a realistic good set passes."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from generator.check.manifest import HEADER_PREFIX, Manifest, load_rendered_tree
from generator.check.validate import Validator
from generator.spec.errors import MlopsError, Problem

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
DIGEST = "@sha256:" + "0123456789abcdef" * 4
IMAGE = "registry.example.com/ml/fraud-detector" + DIGEST
LIMITS = {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "capabilities": {"drop": ["ALL"]},
}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(SCHEMAS)


# --- good manifests -------------------------------------------------------------------------------


def container(name: str, image: str = IMAGE) -> dict:
    return {
        "name": name,
        "image": image,
        "resources": copy.deepcopy(LIMITS),
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
    }


def predictor(name: str, traffic: int, **extra) -> dict:
    return {
        "name": name,
        "traffic": traffic,
        "replicas": 1,
        "graph": {
            "name": "classifier",
            "type": "MODEL",
            "implementation": "MLFLOW_SERVER",
            "modelUri": f"s3://mlflow/1/{name}/artifacts/model",
            "envSecretRefName": "rclone",
            "logger": {"mode": "all", "url": "http://drift.models.svc.cluster.local:8080"},
        },
        "componentSpecs": [
            {
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [container("classifier")],
                }
            }
        ],
        "svcOrchSpec": {"env": [{"name": "LOG_LEVEL", "value": "INFO"}]},
        **extra,
    }


def seldon(name: str = "fraud-detector", predictors: list | None = None, **spec) -> dict:
    return {
        "apiVersion": "machinelearning.seldon.io/v1",
        "kind": "SeldonDeployment",
        "metadata": {"name": name, "namespace": "models", "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "protocol": "v2",
            "predictors": predictors or [predictor("main", 90), predictor("canary", 10)],
            **spec,
        },
    }


def deployment(name: str = "fraud-detector-drift") -> dict:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "models", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True},
                    "initContainers": [container("wait-for-kafka")],
                    "containers": [
                        {
                            **container("detector"),
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {
                                    "name": "MINIO_SECRET_KEY",
                                    "valueFrom": {"secretKeyRef": {"name": "minio", "key": "sk"}},
                                }
                            ],
                        }
                    ],
                },
            },
        },
    }


def alert_rules(uid: str = "fraud-detector-dev-drift") -> dict:
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "fraud-detector-drift",
                "folder": "MLOps",
                "interval": "1m",
                "rules": [
                    {
                        "uid": uid,
                        "title": "fraud-detector (dev): drift",
                        "condition": "C",
                        "data": [
                            {
                                "refId": "A",
                                "relativeTimeRange": {"from": 600, "to": 0},
                                "datasourceUid": "prometheus",
                                "model": {"refId": "A", "expr": "max(drift_p_value)", "instant": True},
                            },
                            {
                                "refId": "C",
                                "datasourceUid": "__expr__",
                                "model": {"refId": "C", "type": "threshold", "expression": "A"},
                            },
                        ],
                        "noDataState": "OK",
                        "execErrState": "Error",
                        "for": "5m",
                        "annotations": {"summary": "p={{ $values.B.Value }}"},
                        "labels": {"severity": "warning"},
                    }
                ],
            }
        ],
    }


def config_map(name: str, label: str, data: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "monitoring", "labels": {label: "1"}},
        "data": data,
    }


def alerts_cm(
    rules: dict | None = None, key: str = "fraud-detector-dev-alerts.yaml", name: str = "fd-alerts"
) -> dict:
    return config_map(name, "grafana_alert", {key: yaml.safe_dump(rules or alert_rules(), sort_keys=False)})


def dashboard_cm(board: dict | None = None, key: str = "fraud-detector-dev.json") -> dict:
    board = (
        board
        if board is not None
        else {
            "uid": "fraud-detector-dev",
            "title": "fraud-detector (dev)",
            "panels": [{"type": "timeseries", "title": "latency"}],
        }
    )
    return config_map("fd-dashboard", "grafana_dashboard", {key: json.dumps(board)})


def model_set(model: str = "fraud-detector") -> list[dict]:
    """One model's rendered objects, as a generator would emit them."""
    ns = {"namespace": "models"}
    selector = {"matchLabels": {"app.kubernetes.io/name": f"{model}-drift"}}
    return [
        seldon(model),
        deployment(f"{model}-drift"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{model}-drift", **ns},
            "spec": {
                "selector": {"app.kubernetes.io/name": f"{model}-drift"},
                "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
            },
        },
        alerts_cm(alert_rules(f"{model}-dev-drift"), key=f"{model}-dev-alerts.yaml", name=f"{model}-alerts"),
        {
            **dashboard_cm({"uid": f"{model}-dev", "title": model, "panels": []}, key=f"{model}-dev.json"),
            "metadata": {
                "name": f"{model}-dashboard",
                "namespace": "monitoring",
                "labels": {"grafana_dashboard": "1"},
            },
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": model, **ns},
            "spec": {
                "selector": selector,
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
            },
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": model, **ns},
            "spec": {
                "groups": [
                    {
                        "name": model,
                        "partial_response_strategy": "warn",
                        "rules": [
                            {
                                "alert": "HighLatency",
                                "expr": "histogram_quantile(0.99, rate(x[5m])) > 1",
                                "for": "5m",
                                "labels": {"severity": "warning"},
                                "annotations": {"summary": "slow"},
                            }
                        ],
                    }
                ]
            },
        },
        {
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "KafkaTopic",
            "metadata": {
                "name": f"{model}-requests",
                "namespace": "kafka",
                "labels": {"strimzi.io/cluster": "kafka"},
            },
            "spec": {"partitions": 3, "replicas": 1, "config": {"retention.ms": 604800000}},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": model, **ns},
            "spec": {
                "podSelector": selector,
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"port": 8080, "protocol": "TCP"}]}],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": model, **ns},
            "spec": {"minAvailable": 1, "selector": selector},
        },
        {
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": {"name": f"{model}-rclone", **ns},
            "spec": {
                "refreshInterval": "1h",
                "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
                "target": {"name": f"{model}-rclone", "creationPolicy": "Owner"},
                "data": [
                    {
                        "secretKey": "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY",
                        "remoteRef": {"key": "mlops/minio", "property": "secret_key"},
                    }
                ],
            },
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": f"{model}-dev", "namespace": "argocd"},
            "spec": {
                "project": "mlops",
                "destination": {"server": "https://kubernetes.default.svc", "namespace": "models"},
                "source": {
                    "repoURL": "https://git.example.com/mlops.git",
                    "targetRevision": "main",
                    "path": f"environments/dev/rendered/models/{model}",
                },
                "syncPolicy": {
                    "automated": {"prune": True, "selfHeal": True},
                    "syncOptions": ["ServerSideApply=true"],
                },
            },
        },
    ]


def platform_set() -> list[dict]:
    """Shared objects: the remaining vendored kinds, plus a Job and a cluster-scoped Namespace."""
    volumes = [{"name": "extra", "configMap": {"name": "kafka-extra"}}]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "models"}},
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "mlops", "namespace": "argocd"},
            "spec": {
                "sourceRepos": ["https://git.example.com/mlops.git"],
                "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "models"}],
            },
        },
        {
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "Kafka",
            "metadata": {"name": "kafka", "namespace": "kafka"},
            "spec": {
                "kafka": {
                    "listeners": [{"name": "plain", "port": 9092, "type": "internal", "tls": False}],
                    "template": {"pod": {"volumes": volumes}},
                }
            },
        },
        {
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "KafkaNodePool",
            "metadata": {"name": "dual", "namespace": "kafka", "labels": {"strimzi.io/cluster": "kafka"}},
            "spec": {"replicas": 1, "roles": ["controller", "broker"], "storage": {"type": "ephemeral"}},
        },
        {
            "apiVersion": "bitnami.com/v1alpha1",
            "kind": "SealedSecret",
            "metadata": {"name": "minio", "namespace": "models"},
            "spec": {"encryptedData": {"sk": "AgBy3i4OJSWK..."}, "template": {"metadata": {"name": "minio"}}},
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {"name": "seldon", "namespace": "models"},
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/managed-by": "seldon-core"}},
                "podMetricsEndpoints": [{"port": "metrics", "path": "/prometheus"}],
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "train-fraud", "namespace": "models"},
            "spec": {
                "backoffLimit": 1,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [container("train")],
                        "securityContext": {"runAsNonRoot": True},
                    }
                },
            },
        },
    ]


def check(validator: Validator, docs: list[dict], env: str = "dev", path: str = "x.yaml") -> list[Problem]:
    return validator.validate([Manifest(path=path, doc=doc, env=env) for doc in docs])


def at(problems: list[Problem], field: str) -> list[Problem]:
    return [p for p in problems if p.field == field]


def one(problems: list[Problem], field: str, text: str) -> Problem:
    """The single problem at ``field``; asserts it mentions ``text`` and says how to fix it."""
    found = at(problems, field)
    assert len(found) == 1, f"expected one problem at {field}, got {[str(p) for p in problems]}"
    assert text in found[0].message and found[0].fix, str(found[0])
    return found[0]


# --- good sets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_good_manifests_give_no_problems(validator: Validator, env: str) -> None:
    assert check(validator, model_set() + model_set("churn") + platform_set(), env=env) == []


def test_same_names_in_different_environments_are_fine(validator: Validator) -> None:
    manifests = [Manifest(f"{env}.yaml", doc, env) for env in ("dev", "prod") for doc in model_set()]
    assert validator.validate(manifests) == []


# --- schemas ------------------------------------------------------------------------------------


def test_strict_mode_catches_grahp_typo_in_seldondeployment(validator: Validator) -> None:
    sdep = seldon()
    sdep["spec"]["predictors"][0]["grahp"] = sdep["spec"]["predictors"][0].pop("graph")
    problems = check(validator, [sdep])
    typo = one(problems, "spec.predictors[0].grahp", "unknown field 'grahp'")
    assert "did you mean 'graph'" in typo.fix
    assert typo.message.startswith("SeldonDeployment/fraud-detector: ")
    one(problems, "spec.predictors[0].graph", "required field 'graph' is missing")


def test_schema_type_error_has_field_path(validator: Validator) -> None:
    sdep = seldon()
    sdep["spec"]["predictors"][1]["traffic"] = "ten"
    problem = one(check(validator, [sdep]), "spec.predictors[1].traffic", "is not of type 'integer'")
    assert "integer" in problem.fix


def test_builtin_kinds_use_strict_kubernetes_schemas(validator: Validator) -> None:
    dep = deployment()
    dep["spec"]["replica"] = dep["spec"].pop("replicas")
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    problems = check(validator, [dep])
    assert "did you mean 'replicas'" in one(problems, "spec.replica", "unknown field").fix
    one(problems, "spec.template.spec.containers[0].ports[0].containerPort", "not of type")


def test_unknown_custom_resource_has_no_schema(validator: Validator) -> None:
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x", "namespace": "models"},
        "spec": {},
    }
    problem = one(check(validator, [doc]), "apiVersion", "no schema for apiVersion serving.kserve.io/v1beta1")
    assert "schemas/" in problem.fix and "provenance" in problem.fix


def test_misspelled_builtin_kind_is_reported(validator: Validator) -> None:
    doc = {"apiVersion": "apps/v1", "kind": "Deploymnt", "metadata": {"name": "x", "namespace": "models"}}
    one(check(validator, [doc]), "apiVersion", "has no apps/v1 Deploymnt")


def test_prometheusrule_case_insensitive_pattern_is_usable(validator: Validator) -> None:
    rule = model_set()[6]
    assert rule["kind"] == "PrometheusRule"
    rule["spec"]["groups"][0]["partial_response_strategy"] = "sometimes"
    one(check(validator, [rule]), "spec.groups[0].partial_response_strategy", "does not match")
    rule["spec"]["groups"][0]["partial_response_strategy"] = "ABORT"
    assert check(validator, [rule]) == []


def test_preserve_unknown_fields_stays_open(validator: Validator) -> None:
    sealed = platform_set()[4]
    # kubeseal writes creationTimestamp: null here; upstream marks this node preserve-unknown-fields
    sealed["spec"]["template"]["metadata"]["creationTimestamp"] = None
    assert check(validator, [sealed]) == []
    sealed["spec"]["encryptedDate"] = {}
    one(check(validator, [sealed]), "spec.encryptedDate", "unknown field")


# --- metadata -----------------------------------------------------------------------------------


def test_metadata_policy(validator: Validator) -> None:
    svc = model_set()[2]
    svc["metadata"]["name"] = "x" * 64
    cm = config_map("Bad_Name", "app", {})
    del cm["metadata"]["namespace"]
    cm["metadata"]["labels"] = {"team": "a" * 64, "bad key!": "x", "enabled": True, "example.com/ok": ""}
    one(check(validator, [svc]), "metadata.name", "Service name")
    problems = check(validator, [cm])
    one(problems, "metadata.name", "is not a DNS-1123 subdomain")
    one(problems, "metadata.namespace", "no metadata.namespace")
    one(problems, "metadata.labels.team", "label value")
    one(problems, 'metadata.labels["bad key!"]', "label key 'bad key!' is invalid")
    assert any("not a string" in p.message for p in at(problems, "metadata.labels.enabled"))
    assert at(problems, 'metadata.labels["example.com/ok"]') == []


def test_service_name_must_start_with_a_letter(validator: Validator) -> None:
    svc = model_set()[2]
    svc["metadata"]["name"] = "1-drift"
    one(check(validator, [svc]), "metadata.name", "Service name '1-drift'")


def test_long_names_are_fine_for_non_services(validator: Validator) -> None:
    dep = deployment("a" * 100)
    assert at(check(validator, [dep]), "metadata.name") == []


# --- Grafana ------------------------------------------------------------------------------------


def test_grafana_rule_unknown_key_is_caught(validator: Validator) -> None:
    rules = alert_rules()
    rules["groups"][0]["rules"][0]["conditon"] = "C"
    problem = one(
        check(validator, [alerts_cm(rules)]),
        'data["fraud-detector-dev-alerts.yaml"].groups[0].rules[0].conditon',
        "unknown field",
    )
    assert "did you mean 'condition'" in problem.fix


@pytest.mark.parametrize("uid", ["x" * 41, "has space", "dots.are.bad"])
def test_grafana_rule_uid_format(validator: Validator, uid: str) -> None:
    problems = check(validator, [alerts_cm(alert_rules(uid))])
    assert at(problems, 'data["fraud-detector-dev-alerts.yaml"].groups[0].rules[0].uid')


def test_grafana_interval_must_be_multiple_of_ten_seconds(validator: Validator) -> None:
    rules = alert_rules()
    rules["groups"][0]["interval"] = "15s"
    assert at(
        check(validator, [alerts_cm(rules)]), 'data["fraud-detector-dev-alerts.yaml"].groups[0].interval'
    )


def test_grafana_alert_file_name_and_syntax(validator: Validator) -> None:
    bad_suffix = alerts_cm(key="alerts.txt")
    broken = config_map("broken", "grafana_alert", {"broken.yaml": "groups: [unclosed"})
    empty = config_map("empty", "grafana_alert", {})
    problems = check(validator, [bad_suffix, broken, empty])
    assert "alerts.txt.yaml" in one(problems, 'data["alerts.txt"]', ".yaml, .yml or .json").fix
    one(problems, 'data["broken.yaml"]', "does not parse")
    one(problems, "data", "no alert files")


def test_grafana_dashboard_checks(validator: Validator) -> None:
    problems = check(
        validator,
        [
            dashboard_cm({"uid": "u" * 41, "panels": {}}, key="a.json"),
            dashboard_cm(key="b.yaml"),
            {**dashboard_cm(), "data": {"c.json": "{not json"}},
        ],
    )
    one(problems, 'data["a.json"].uid', "1-40 characters")
    one(problems, 'data["a.json"].title', "no title")
    one(problems, 'data["a.json"].panels', "no panels list")
    one(problems, 'data["b.yaml"]', "must end in .json")
    one(problems, 'data["c.json"]', "not valid JSON")


def test_duplicate_grafana_uids_and_objects_in_one_environment(validator: Validator) -> None:
    first, second = alerts_cm(key="a.yaml", name="a"), alerts_cm(key="b.yaml", name="b")
    problems = validator.validate(
        [
            Manifest("one.yaml", first, "dev"),
            Manifest("two.yaml", second, "dev"),
            Manifest("three.yaml", deployment(), "dev"),
            Manifest("three.yaml", deployment(), "dev"),
        ]
    )
    uid = one(problems, 'data["b.yaml"].groups[0].rules[0].uid', "Grafana alert rule uid")
    assert uid.file == "two.yaml" and "one.yaml" in uid.message
    one(problems, "metadata.name", "object 'Deployment.apps models/fraud-detector-drift' is already defined")


def test_duplicate_rule_uid_within_one_file(validator: Validator) -> None:
    rules = alert_rules()
    rules["groups"][0]["rules"].append({**rules["groups"][0]["rules"][0], "title": "second"})
    problems = check(validator, [alerts_cm(rules)])
    one(
        problems, 'data["fraud-detector-dev-alerts.yaml"].groups[0].rules[1].uid', "already defined in x.yaml"
    )
    assert len(problems) == 1


# --- Seldon admission rules ---------------------------------------------------------------------


def test_traffic_must_sum_to_100(validator: Validator) -> None:
    sdep = seldon(
        predictors=[predictor("main", 90), predictor("canary", 20), predictor("mirror", 0, shadow=True)]
    )
    problem = one(check(validator, [sdep]), "spec.predictors[1].traffic", "must sum to 100")
    assert "main=90, canary=20" in problem.message


@pytest.mark.parametrize("traffic, ok", [(0, True), (100, True), (50, False)])
def test_single_predictor_traffic(validator: Validator, traffic: int, ok: bool) -> None:
    problems = check(validator, [seldon(predictors=[predictor("main", traffic)])])
    assert (at(problems, "spec.predictors[0].traffic") == []) is ok


def test_shadow_rules(validator: Validator) -> None:
    two = seldon(
        predictors=[predictor("main", 100), predictor("s1", 0, shadow=True), predictor("s2", 0, shadow=True)]
    )
    one(check(validator, [two]), "spec.predictors[2].shadow", "more than one shadow")
    alone = seldon(predictors=[predictor("s1", 100, shadow=True)])
    one(check(validator, [alone]), "spec.predictors[0].shadow", "cannot be the only predictor")
    ok = seldon(predictors=[predictor("main", 100), predictor("s1", 100, shadow=True)])
    assert check(validator, [ok]) == []


def test_duplicate_predictor_names(validator: Validator) -> None:
    sdep = seldon(predictors=[predictor("main", 50), predictor("main", 50)])
    one(check(validator, [sdep]), "spec.predictors[1].name", "duplicate predictor name 'main'")


@pytest.mark.parametrize("key, value", [("protocol", "http"), ("transport", "REST"), ("serverType", "batch")])
def test_seldon_enums(validator: Validator, key: str, value: str) -> None:
    one(check(validator, [seldon(**{key: value})]), f"spec.{key}", "is not supported")


def test_logger_needs_mode(validator: Validator) -> None:
    sdep = seldon()
    del sdep["spec"]["predictors"][0]["graph"]["logger"]["mode"]
    one(check(validator, [sdep]), "spec.predictors[0].graph.logger.mode", "logger needs a mode")


def test_kafka_server_type_needs_env(validator: Validator) -> None:
    sdep = seldon(serverType="kafka")
    kafka_env = [
        {"name": n, "value": "x"} for n in ("KAFKA_BROKER", "KAFKA_INPUT_TOPIC", "KAFKA_OUTPUT_TOPIC")
    ]
    sdep["spec"]["predictors"][0]["svcOrchSpec"]["env"] += kafka_env
    problem = one(check(validator, [sdep]), "spec.predictors[1].svcOrchSpec.env", "serverType kafka needs")
    assert "KAFKA_BROKER" in problem.message
    assert at(check(validator, [sdep]), "spec.predictors[0].svcOrchSpec.env") == []


def test_graph_units(validator: Validator) -> None:
    sdep = seldon(protocol="tensorflow")
    graph = sdep["spec"]["predictors"][0]["graph"]
    graph["children"] = [
        {
            "name": "router",
            "implementation": "SIMPLE_ROUTER",
            "children": [{"name": "missing-container"}, {"name": "x", "implementation": "MAGIC"}],
        },
        {"name": "sk", "implementation": "SKLEARN_SERVER"},
    ]
    problems = check(validator, [sdep])
    one(problems, "spec.predictors[0].graph.children[0].children[0].name", "no container of that name")
    one(
        problems,
        "spec.predictors[0].graph.children[0].children[1].implementation",
        "unknown implementation 'MAGIC'",
    )
    one(problems, "spec.predictors[0].graph.children[1].modelUri", "SKLEARN_SERVER needs a modelUri")
    one(problems, "spec.predictors[0].graph.implementation", "does not speak the tensorflow protocol")


def test_graph_unit_matching_a_container_is_fine(validator: Validator) -> None:
    sdep = seldon(predictors=[predictor("main", 100)])
    del sdep["spec"]["predictors"][0]["graph"]["implementation"]
    assert check(validator, [sdep]) == []


# --- platform policies --------------------------------------------------------------------------


def test_plain_secret_is_rejected(validator: Validator) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "models"},
        "stringData": {"k": "v"},
    }
    problem = one(check(validator, [secret]), "kind", "plain Secrets are not allowed")
    assert "SealedSecret" in problem.fix and "ExternalSecret" in problem.fix


def test_limits_and_security_context(validator: Validator) -> None:
    dep = deployment()
    pod = dep["spec"]["template"]["spec"]
    del pod["initContainers"][0]["resources"]["limits"]["memory"]
    del pod["securityContext"]
    del pod["containers"][0]["securityContext"]["runAsNonRoot"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    problems = check(validator, [dep])
    one(problems, "spec.template.spec.initContainers[0].resources.limits", "no memory limit")
    one(problems, "spec.template.spec.containers[0].securityContext.runAsNonRoot", "may run as root")
    one(
        problems,
        "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
        "privilege escalation",
    )
    assert at(problems, "spec.template.spec.initContainers[0].securityContext.runAsNonRoot") == []


def test_pod_level_run_as_non_root_covers_containers(validator: Validator) -> None:
    job = platform_set()[6]
    del job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]
    assert check(validator, [job]) == []
    del job["spec"]["template"]["spec"]["securityContext"]
    one(
        check(validator, [job]),
        "spec.template.spec.containers[0].securityContext.runAsNonRoot",
        "may run as root",
    )


def test_container_setting_overrides_pod_run_as_non_root(validator: Validator) -> None:
    sdep = seldon()
    sdep["spec"]["predictors"][1]["componentSpecs"][0]["spec"]["containers"][0]["securityContext"][
        "runAsNonRoot"
    ] = False
    field = "spec.predictors[1].componentSpecs[0].spec.containers[0].securityContext.runAsNonRoot"
    one(check(validator, [sdep]), field, "may run as root")


def test_run_as_user_zero_contradicts_run_as_non_root(validator: Validator) -> None:
    job = platform_set()[6]
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
    one(check(validator, [job]), "spec.template.spec.containers[0].securityContext.runAsUser", "runAsUser 0")


@pytest.mark.parametrize(("key", "value", "shown"), [("runAsUser", 1000, "1000"), ("runAsGroup", 999, "999"),
                                                     ("runAsUser", None, "<image default>")])
def test_user_and_group_ids_below_10000_are_refused(validator: Validator, key: str, value, shown: str) -> None:
    # A uid below 10000 can be a host account: a container escape would act as it.
    job = platform_set()[6]
    job["spec"]["template"]["spec"].pop("securityContext", None)
    container_context = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    if value is None:
        del container_context[key]
    else:
        container_context[key] = value
    problem = one(check(validator, [job]), f"spec.template.spec.containers[0].securityContext.{key}",
                  f"runs with {key} {shown}, below 10000")
    assert problem.fix.startswith(f"set securityContext.{key}: 10001")


def test_pod_level_ids_cover_containers(validator: Validator) -> None:
    job = platform_set()[6]
    job["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 10001,
                                                          "runAsGroup": 10001}
    for c in job["spec"]["template"]["spec"]["containers"]:
        c["securityContext"].pop("runAsUser"), c["securityContext"].pop("runAsGroup")
    assert check(validator, [job]) == []


def test_job_containers_need_limits(validator: Validator) -> None:
    job = platform_set()[6]
    del job["spec"]["template"]["spec"]["containers"][0]["resources"]
    one(
        check(validator, [job]),
        "spec.template.spec.containers[0].resources.limits",
        "no cpu and memory limit",
    )


@pytest.mark.parametrize("env, flagged", [("dev", False), ("staging", True), ("prod", True), ("qa", False)])
def test_images_pinned_by_digest_in_staging_and_prod(validator: Validator, env: str, flagged: bool) -> None:
    sdep = seldon()
    sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["image"] = "fraud:1.2.3"
    problems = at(
        check(validator, [sdep], env=env), "spec.predictors[0].componentSpecs[0].spec.containers[0].image"
    )
    assert bool(problems) is flagged
    if flagged:
        assert "not pinned by digest" in problems[0].message and "@sha256:" in problems[0].fix


@pytest.mark.parametrize("env, digest, flagged", [("dev", None, False), ("staging", None, True),
                                                  ("prod", "ABC", True), ("prod", "ab" * 32, False)])
def test_model_servers_are_given_their_artifact_digest_in_staging_and_prod(
        validator: Validator, env: str, digest: str | None, flagged: bool) -> None:
    """A hand edit of the rendered SeldonDeployment that drops (or garbles) the digest is refused where
    artifacts must be pinned; containers that are not our model server are not asked."""
    sdep = seldon()
    container = sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]
    container["env"] = [{"name": "MODEL_SERVER_MODEL_URI", "value": "s3://mlflow-artifacts/1/run/artifacts/model"}]
    if digest is not None:
        container["env"].append({"name": "MODEL_SERVER_ARTIFACT_SHA256", "value": digest})
    problems = at(check(validator, [sdep], env=env), "spec.predictors[0].componentSpecs[0].spec.containers[0].env")
    assert bool(problems) is flagged
    if flagged:
        assert f"without MODEL_SERVER_ARTIFACT_SHA256 in {env}" in problems[0].message
        assert "release.artifact_sha256" in problems[0].fix
    assert not at(check(validator, [sdep], env=env), "spec.predictors[1].componentSpecs[0].spec.containers[0].env")


def test_secret_like_env_vars_need_value_from(validator: Validator) -> None:
    dep = deployment()
    dep["spec"]["template"]["spec"]["containers"][0]["env"] += [
        {"name": "DB_PASSWORD", "value": "hunter2"},
        {"name": "api_token", "value": "t"},
        {"name": "AWS_ACCESS_KEY_ID", "value": "AKIA"},
        {"name": "LOG_LEVEL", "value": "INFO"},
    ]
    sdep = seldon()
    sdep["spec"]["predictors"][0]["svcOrchSpec"]["env"].append({"name": "KAFKA_SASL_PASSWORD", "value": "p"})
    problems = check(validator, [dep, sdep])
    for k in (1, 2, 3):
        one(problems, f"spec.template.spec.containers[0].env[{k}].value", "literal secret value")
    assert at(problems, "spec.template.spec.containers[0].env[4].value") == []
    one(problems, "spec.predictors[0].svcOrchSpec.env[1].value", "KAFKA_SASL_PASSWORD")


# --- robustness ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {
            "apiVersion": "machinelearning.seldon.io/v1",
            "kind": "SeldonDeployment",
            "metadata": [],
            "spec": {"predictors": "lots", "protocol": ["v2"]},
        },
        {
            "apiVersion": "machinelearning.seldon.io/v1",
            "kind": "SeldonDeployment",
            "metadata": {"name": "x"},
            "spec": {"predictors": [None, {"graph": "g", "componentSpecs": [{"spec": {"containers": [7]}}]}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "x", "labels": ["a"]},
            "spec": "x",
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {"grafana_alert": "1"}},
            "data": {"a.yaml": 5, "b.yaml": "- just\n- a list"},
        },
        {"kind": "Deployment"},
    ],
)
def test_malformed_documents_are_reported_not_raised(validator: Validator, doc: dict) -> None:
    problems = check(validator, [doc])
    assert problems and all(isinstance(p, Problem) for p in problems)
    assert not any("internal validator error" in p.message for p in problems)


def test_unsupported_kubernetes_version() -> None:
    with pytest.raises(MlopsError, match="not 9.1"):
        Validator(SCHEMAS, kubernetes_version="9.1")


def test_missing_schema_file_is_a_clear_error(tmp_path: Path) -> None:
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    (tmp_path / "schemas" / "bitnami.com" / "sealedsecret_v1alpha1.json").unlink()
    with pytest.raises(MlopsError, match="sealedsecret_v1alpha1.json"):
        Validator(tmp_path / "schemas")


# --- load_rendered_tree -------------------------------------------------------------------------


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


HEADER = f"{HEADER_PREFIX}; DO NOT EDIT.\n"


def test_load_rendered_tree(tmp_path: Path) -> None:
    base = "environments/dev/rendered/models/fraud-detector"
    two_docs = HEADER + yaml.safe_dump(deployment()) + "---\n" + yaml.safe_dump(model_set()[2]) + "---\n"
    write(tmp_path, f"{base}/drift.yaml", two_docs)
    write(tmp_path, f"{base}/handmade.yaml", yaml.safe_dump(model_set()[5]))
    write(tmp_path, f"{base}/broken.yaml", HEADER + "kind: Service\nmetadata: name: x\n")
    write(tmp_path, f"{base}/dupe.yaml", HEADER + "kind: ConfigMap\nkind: Secret\n")
    write(tmp_path, f"{base}/scalar.yaml", HEADER + "just text\n")
    write(tmp_path, f"{base}/notes.txt", "ignored")
    write(tmp_path, "environments/staging/rendered/apps/app.yaml", HEADER + "created: 2024-01-01\n")

    manifests, problems = load_rendered_tree(tmp_path, ["dev", "staging", "prod"])

    assert [(m.path, m.doc.get("kind"), m.env) for m in manifests] == [
        (f"{base}/drift.yaml", "Deployment", "dev"),
        (f"{base}/drift.yaml", "Service", "dev"),
        (f"{base}/handmade.yaml", "ServiceMonitor", "dev"),
        ("environments/staging/rendered/apps/app.yaml", None, "staging"),
    ]
    assert manifests[-1].doc == {"created": "2024-01-01"}  # dates stay strings, as in Kubernetes
    by_file = {p.file: p for p in problems}
    assert "header" in by_file[f"{base}/handmade.yaml"].message
    broken = by_file[f"{base}/broken.yaml"]
    assert broken.message.startswith("YAML does not parse: mapping values are not allowed")
    assert (
        broken.message.endswith("at line 3") and broken.line == 3 and "<unicode string>" not in broken.message
    )
    assert "duplicate key 'kind'" in by_file[f"{base}/dupe.yaml"].message
    assert "not a mapping" in by_file[f"{base}/scalar.yaml"].message
    assert "no rendered output" in by_file["environments/prod/rendered"].message
    assert len(problems) == 5 and all(p.fix for p in problems)


def test_loaded_tree_validates_clean(tmp_path: Path, validator: Validator) -> None:
    text = HEADER + "---\n".join(yaml.safe_dump(doc) for doc in model_set())
    write(tmp_path, "environments/prod/rendered/models/fraud-detector/all.yaml", text)
    manifests, problems = load_rendered_tree(tmp_path, ["prod"])
    assert problems == [] and len(manifests) == len(model_set())
    assert validator.validate(manifests) == []
