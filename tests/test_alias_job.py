"""The generic Job template (templates/job.yaml.j2 through generator.jobs) and the MLflow alias Job.

The alias Job's script is run exactly as rendered (its command, arguments and environment taken from
the rendered manifest) against a real MLflow server.
"""

from __future__ import annotations

import pytest

from generator.jobs import job_context
from generator.layout import RepoLayout
from generator.render import Renderer
from generator.validate import Manifest, Validator
from helpers import REPO, digest

IMAGE = f"ghcr.io/acme/retrain@sha256:{digest('retrain')}"
RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}}
LABELS = {"app.kubernetes.io/name": "churn", "app.kubernetes.io/component": "prefect-deploy"}


def render_job(context: dict) -> dict:
    return Renderer(RepoLayout(REPO)).render_document("job.yaml.j2", {"jobs": {"x": context}, "job": "x"}, "test")


def test_generic_job_renders_a_hook_with_configmap_volumes_and_passes_policies() -> None:
    context = job_context(
        name="churn-prefect-deploy", namespace="prefect", labels=LABELS, image=IMAGE, resources=RESOURCES,
        command=["prefect"], args=["deploy", "--all"], working_dir="/flows",
        env=[{"name": "PREFECT_API_URL", "value": "http://prefect-server.prefect.svc:4200/api"},
             {"name": "PREFECT_API_KEY", "valueFrom": {"secretKeyRef": {"name": "prefect-api", "key": "key"}}}],
        hook="PostSync", volumes=[{"name": "flow", "config_map": "churn-flow", "mount_path": "/flows",
                                   "items": [{"key": "prefect.yaml", "path": "prefect.yaml"}]}])
    doc = render_job(context)

    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "Job"
    assert doc["metadata"]["annotations"] == {"argocd.argoproj.io/hook": "PostSync",
                                              "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation"}
    pod = doc["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["prefect"] and container["args"] == ["deploy", "--all"]
    assert container["workingDir"] == "/flows"
    assert container["volumeMounts"] == [{"name": "flow", "mountPath": "/flows", "readOnly": True},
                                         {"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0] == {"name": "flow", "configMap": {
        "name": "churn-flow", "items": [{"key": "prefect.yaml", "path": "prefect.yaml"}]}}
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert doc["spec"]["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    # Kubernetes' own schema (strict) and every platform policy, as prod applies them.
    assert Validator(RepoLayout(REPO).schemas_dir).validate([Manifest("job.yaml", doc, "prod")]) == []


def test_generic_job_without_hook_or_volumes_is_a_plain_job() -> None:
    doc = render_job(job_context(name="once", namespace="ns", labels=LABELS, image=IMAGE, resources=RESOURCES,
                                 args=["--help"], service_account="runner", ttl_seconds_after_finished=3600))
    assert "annotations" not in doc["metadata"]
    assert doc["spec"]["ttlSecondsAfterFinished"] == 3600
    pod = doc["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "runner" and pod["automountServiceAccountToken"] is True
    assert "command" not in pod["containers"][0] and pod["containers"][0]["args"] == ["--help"]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert Validator(RepoLayout(REPO).schemas_dir).validate([Manifest("job.yaml", doc, "prod")]) == []


def test_tag_pinned_job_image_fails_validation_in_prod() -> None:
    doc = render_job(job_context(name="once", namespace="ns", labels=LABELS, image="ghcr.io/acme/retrain:1.0",
                                 resources=RESOURCES))
    problems = Validator(RepoLayout(REPO).schemas_dir).validate([Manifest("job.yaml", doc, "prod")])
    assert [p.field for p in problems] == ["spec.template.spec.containers[0].image"]
    assert "not pinned by digest in prod" in problems[0].message


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"hook": "AfterSync"}, "unknown Argo CD hook"),
    ({"hook": "PostSync", "hook_delete_policy": "Never"}, "unknown hook delete policy"),
    ({"volumes": [{"name": "flow"}]}, "lacks config_map, mount_path"),
])
def test_job_context_refuses_mistakes(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        job_context(name="x", namespace="ns", labels=LABELS, image=IMAGE, resources=RESOURCES, **kwargs)
