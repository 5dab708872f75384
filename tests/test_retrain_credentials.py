"""The retrain flow runs' credentials: the work pool's base job template (apps/prefect-worker/values.yaml)
and the SealedSecret ``retrain-credentials`` it loads into every flow-run container.

The template is checked against Prefect's own kubernetes worker (prefect-kubernetes): it is Prefect's
default plus exactly the documented changes, a real Prefect server accepts it as a work pool and a
deployment's job variables against it, and the Job the worker would create for a run of that deployment
passes ``mlops validate``'s schemas and policies.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from generator.check.manifest import Manifest
from generator.check.validate import Validator
from generator.external.githost import host_from_env
from generator.spec.errors import GitHostError
from services import PrefectServer

REPO = Path(__file__).resolve().parent.parent
WORKER_VALUES = REPO / "apps/prefect-worker/values.yaml"
WORKER_COMPONENT = REPO / "apps/prefect-worker/component.yaml"
PREFECT_FILE = REPO / "components/retrain/prefect.yaml"
ENVIRONMENTS = ("dev", "staging", "prod")
SECRET = "retrain-credentials"
SECRET_KEYS = {"MLOPS_GIT_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
RESOURCE_DEFAULTS = {"cpu_request": "500m", "cpu_limit": "2", "memory_request": "1Gi", "memory_limit": "4Gi"}


def our_template() -> dict:
    values = yaml.safe_load(WORKER_VALUES.read_text(encoding="utf-8"))
    configuration = values["worker"]["config"]["baseJobTemplate"]["configuration"]
    assert isinstance(configuration, str), "the chart takes the template as a JSON string"
    return json.loads(configuration)


def prefect_default() -> dict:
    kubernetes_worker = pytest.importorskip("prefect_kubernetes.worker")
    return kubernetes_worker.KubernetesWorker.get_default_base_job_template()


def flow_run_container(template: dict) -> dict:
    containers = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def prefect_file_job_variables() -> dict:
    document = yaml.safe_load(PREFECT_FILE.read_text(encoding="utf-8"))
    return copy.deepcopy(document["deployments"][0]["work_pool"]["job_variables"])


def test_the_template_is_prefects_default_plus_the_documented_changes():
    expected = prefect_default()
    for name, value in RESOURCE_DEFAULTS.items():
        expected["variables"]["properties"][name]["default"] = value
    template = expected["job_configuration"]["job_manifest"]["spec"]["template"]
    template["metadata"] = {"labels": {"mlops-gitops.io/workload": "retrain-flow-run"}}
    pod = template["spec"]
    pod.update({"automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "volumes": [{"name": "tmp", "emptyDir": {}}]})
    pod["containers"][0].update({
        "envFrom": [{"secretRef": {"name": SECRET}}],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]})
    # A new prefect-kubernetes with a different default fails here: re-derive values.yaml from it.
    assert our_template() == expected


def test_the_variables_keep_prefects_names_and_types():
    ours, default = our_template()["variables"], prefect_default()["variables"]
    assert ours.keys() == default.keys()
    assert ours["properties"].keys() == default["properties"].keys()
    for name, schema in default["properties"].items():
        without_default = {k: v for k, v in schema.items() if k != "default"}
        assert {k: v for k, v in ours["properties"][name].items() if k != "default"} == without_default, name
        if name not in RESOURCE_DEFAULTS:
            assert ours["properties"][name].get("default") == schema.get("default"), name


def test_the_flow_run_container_loads_the_secret_and_runs_locked_down():
    container = flow_run_container(our_template())
    assert {"secretRef": {"name": SECRET}} in container["envFrom"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    # The image's user (components/retrain/Dockerfile: USER 10001:10001), so HOME=/tmp is writable.
    assert "USER 10001:10001" in (REPO / "components/retrain/Dockerfile").read_text(encoding="utf-8")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_rendered_worker_application_carries_the_template(env):
    path = REPO / f"environments/{env}/rendered/apps/platform-prefect-worker.yaml"
    application = yaml.safe_load(path.read_text(encoding="utf-8"))
    config = application["spec"]["source"]["helm"]["valuesObject"]["worker"]["config"]
    assert config["workPool"] == "mlops-kubernetes"
    assert json.loads(config["baseJobTemplate"]["configuration"]) == our_template()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environment_seals_the_keys_the_flow_reads(env):
    sealed = yaml.safe_load((REPO / f"environments/{env}/secrets/prefect-{SECRET}.yaml").read_text(encoding="utf-8"))
    assert sealed["kind"] == "SealedSecret"
    assert (sealed["metadata"]["name"], sealed["metadata"]["namespace"]) == (SECRET, "prefect")
    assert sealed["spec"]["template"]["metadata"] == {"name": SECRET, "namespace": "prefect"}
    assert set(sealed["spec"]["encryptedData"]) == SECRET_KEYS
    # The flow runs in namespace prefect (prefect.yaml), where the Secret is; `mlops render` requires it
    # because the worker component declares it (test_render_check_names_the_missing_sealed_secret).
    assert prefect_file_job_variables()["namespace"] == "prefect"
    assert SECRET in yaml.safe_load(WORKER_COMPONENT.read_text(encoding="utf-8"))["secrets"]


def test_the_token_key_is_the_one_the_flow_pushes_and_opens_pull_requests_with():
    host = host_from_env({"MLOPS_GIT_TOKEN": "t0ken", "MLOPS_GIT_REPO": "acme/gitops"})
    assert host is not None
    with pytest.raises(GitHostError, match="MLOPS_GIT_TOKEN"):  # the key the Secret must hold
        host_from_env({"MLOPS_GIT_REPO": "acme/gitops"})


async def _flow_run_job(api_url: str, template: dict, job_variables: dict) -> dict:
    """The Job the kubernetes worker would create for a run of a deployment on a pool with ``template``."""
    from prefect.client.orchestration import PrefectClient
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    pool_name = f"retrain-credentials-{uuid.uuid4().hex[:8]}"
    async with PrefectClient(api_url) as client:
        # The server validates the template (every placeholder declared) and the job variables against it.
        response = await client._client.post("/work_pools/", json={
            "name": pool_name, "type": "kubernetes", "base_job_template": template})
        assert response.status_code == 201, response.text
        flow_id = await client._client.post("/flows/", json={"name": "retrain"})
        response = await client._client.post("/deployments/", json={
            # A name of its own: the session's Prefect server may hold retrain/fraud-detector from another
            # test, with a parameter schema this bare deployment's run would not satisfy.
            "name": f"credentials-{pool_name}", "flow_id": flow_id.json()["id"], "work_pool_name": pool_name,
            "entrypoint": "retrain/flow.py:retrain", "job_variables": job_variables})
        assert response.status_code in (200, 201), response.text
        deployment = await client.read_deployment(uuid.UUID(response.json()["id"]))
        flow_run = await client.create_flow_run_from_deployment(deployment.id)
        flow = await client.read_flow(deployment.flow_id)
        pool = await client.read_work_pool(pool_name)
        configuration = await KubernetesWorkerJobConfiguration.from_template_and_values(
            pool.base_job_template, deployment.job_variables, client=client)
        configuration.prepare_for_flow_run(flow_run, deployment, flow)
        await client._client.delete(f"/deployments/{deployment.id}")
        await client._client.delete(f"/work_pools/{pool_name}")
        return configuration.job_manifest


def test_a_real_worker_configuration_builds_a_valid_locked_down_job(prefect_server: PrefectServer):
    job_variables = prefect_file_job_variables()
    # What the deploy Job's environment fills in (apps/retrain-pipeline); literals here.
    filled = {"RETRAIN_ENVIRONMENT": "dev", "RETRAIN_CODE_DIR": "/app", "PYTHONPATH": "/app"}
    job_variables["env"] = {name: filled.get(name, "https://example.invalid") if "{{" in str(value) else value
                            for name, value in job_variables["env"].items()}
    job = asyncio.run(_flow_run_job(prefect_server.api_url, our_template(), job_variables))

    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["RETRAIN_ENVIRONMENT"] == "dev" and "PREFECT__FLOW_RUN_ID" in env
    assert not SECRET_KEYS & env.keys(), "credentials come from the Secret, never as literal env"
    assert container["image"] == job_variables["image"]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}}
    assert job["metadata"]["namespace"] == "prefect"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    # The label the rendered flow-run NetworkPolicy selects the pods by survives the worker's own labels.
    assert job["spec"]["template"]["metadata"]["labels"]["mlops-gitops.io/workload"] == "retrain-flow-run"
    policy = yaml.safe_load((REPO / "environments/dev/rendered/platform/retrain-pipeline/"
                                     "networkpolicy-flow-runs.yaml").read_text())
    assert policy["metadata"]["namespace"] == job["metadata"]["namespace"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= job["spec"]["template"]["metadata"]["labels"].items()

    job["metadata"]["name"] = job["metadata"].pop("generateName") + "x"  # the API server names it
    # Prefect's model requires these two in the pod spec (it refuses a template without them); Pod has no
    # such fields, so the API server drops them with a warning. Everything else must pass as it is.
    assert (pod.pop("completions"), pod.pop("parallelism")) == (1, 1)
    problems = Validator(REPO / "schemas").validate([Manifest("flow-run-job.yaml", job, "dev")])
    assert problems == [], [str(p) for p in problems]


def test_a_run_without_job_variables_still_gets_limits(prefect_server: PrefectServer):
    job = asyncio.run(_flow_run_job(prefect_server.api_url, our_template(), {"namespace": "prefect"}))
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}


def test_the_server_rejects_job_variables_of_the_wrong_type(prefect_server: PrefectServer):
    async def create() -> httpx.Response:
        from prefect.client.orchestration import PrefectClient
        pool_name = f"retrain-credentials-{uuid.uuid4().hex[:8]}"
        async with PrefectClient(prefect_server.api_url) as client:
            await client._client.post("/work_pools/", json={"name": pool_name, "type": "kubernetes",
                                                             "base_job_template": our_template()})
            flow_id = (await client._client.post("/flows/", json={"name": "retrain"})).json()["id"]
            try:
                return await client._client.post("/deployments/", json={
                    "name": "wrong-types", "flow_id": flow_id, "work_pool_name": pool_name,
                    "entrypoint": "retrain/flow.py:retrain", "job_variables": {"cpu_limit": 2}})
            except httpx.HTTPStatusError as exc:
                return exc.response
            finally:
                await client._client.delete(f"/work_pools/{pool_name}")

    response = asyncio.run(create())
    assert response.status_code == 422, response.text
    assert "cpu_limit" in response.text


def test_render_check_names_the_missing_sealed_secret(tmp_path):
    from click.testing import CliRunner

    from generator.cli import cli
    from helpers import copy_example_repo

    root = copy_example_repo(tmp_path)
    (root / f"environments/staging/secrets/prefect-{SECRET}.yaml").unlink()
    result = CliRunner().invoke(cli, ["render", "--check", "--repo-root", str(root)])
    assert result.exit_code != 0
    assert f"Secret prefect/{SECRET} is needed by component prefect-worker" in result.output
    assert f"> environments/staging/secrets/prefect-{SECRET}.yaml" in result.output
