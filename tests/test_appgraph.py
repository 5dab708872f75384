"""The app-of-apps graph checks of `mlops validate`: one passing tree, one broken fixture per rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generator.check.appgraph import graph_problems
from generator.spec.layout import RepoLayout
from helpers import copy_example_repo

ENVS = ["dev", "staging", "prod"]
PROD_APP = "environments/prod/rendered/apps/model-fraud-detector.yaml"
DEV_APP = "environments/dev/rendered/apps/platform-tenancy.yaml"


def edit(root: Path, path: str, change) -> None:
    target = root / path
    lines = target.read_text().splitlines(keepends=True)
    document = yaml.safe_load("".join(lines[1:]))
    change(document)
    target.write_text(lines[0] + yaml.safe_dump(document, sort_keys=False))


def messages(root: Path) -> str:
    return "\n".join(str(p) for p in graph_problems(RepoLayout(root), ENVS))


def test_committed_graph_is_clean():
    assert graph_problems(RepoLayout(Path(__file__).resolve().parents[1]), ENVS) == []


def test_unknown_project(tmp_path):
    root = copy_example_repo(tmp_path)
    edit(root, DEV_APP, lambda d: d["spec"].update(project="nope"))
    assert "Application/platform-tenancy-dev: project 'nope' does not exist" in messages(root)


def test_destination_outside_the_project(tmp_path):
    root = copy_example_repo(tmp_path)
    edit(root, PROD_APP, lambda d: d["spec"]["destination"].update(namespace="kube-system"))
    assert "project models-prod does not allow https://kubernetes.default.svc namespace kube-system" in messages(root)


def test_object_in_a_namespace_the_project_refuses(tmp_path):
    root = copy_example_repo(tmp_path)
    edit(root, "environments/prod/rendered/models/fraud-detector/drift-detector-service.yaml",
         lambda d: d["metadata"].update(namespace="default"))
    assert "goes to namespace 'default', which project models-prod does not allow" in messages(root)


def test_blacklisted_kind_in_a_model_folder(tmp_path):
    root = copy_example_repo(tmp_path)
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "models-dev"},
             "spec": {"hard": {"pods": "1"}}}
    (root / "environments/dev/rendered/models/fraud-detector/quota.yaml").write_text(yaml.safe_dump(quota))
    assert "ResourceQuota/q is a kind project models-dev refuses" in messages(root)


def test_cluster_scoped_kind_not_whitelisted(tmp_path):
    root = copy_example_repo(tmp_path)
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}}
    (root / "environments/dev/rendered/models/fraud-detector/role.yaml").write_text(yaml.safe_dump(role))
    assert "ClusterRole/r is cluster-scoped and not in project models-dev's clusterResourceWhitelist" in messages(root)


def test_source_path_missing(tmp_path):
    root = copy_example_repo(tmp_path)
    edit(root, DEV_APP, lambda d: d["spec"]["source"].update(path="environments/dev/rendered/nowhere"))
    assert "path 'environments/dev/rendered/nowhere' holds no manifests" in messages(root)


@pytest.mark.parametrize("revision", ["1.x", ">=1.2.0", "HEAD", "latest", "*"])
def test_chart_pinned_to_a_range(tmp_path, revision):
    root = copy_example_repo(tmp_path)
    edit(root, DEV_APP, lambda d: d["spec"].update(source={
        "repoURL": "https://github.com/acme/mlops-gitops.git", "chart": "demo", "targetRevision": revision}))
    assert f"chart demo is pinned to {revision!r}, not an exact version" in messages(root)


def test_source_repository_outside_the_project(tmp_path):
    root = copy_example_repo(tmp_path)
    edit(root, PROD_APP, lambda d: d["spec"]["source"].update(repoURL="https://github.com/evil/fork.git"))
    assert "'https://github.com/evil/fork.git' is not a source of project models-prod" in messages(root)


def test_automated_prod_application(tmp_path):
    root = copy_example_repo(tmp_path)
    edit(root, PROD_APP, lambda d: d["spec"]["syncPolicy"].update(automated={"prune": True}))
    assert "prod Applications must not sync automatically" in messages(root)


def test_missing_root_app(tmp_path):
    root = copy_example_repo(tmp_path)
    (root / "bootstrap/root-staging.yaml").unlink()
    assert "bootstrap/root-staging.yaml: root app is missing" in messages(root)


def test_namespace_must_exist_before_the_wave_that_uses_it(tmp_path):
    root = copy_example_repo(tmp_path)
    secret = root / "environments/dev/secrets/models-dev-s3-credentials.yaml"
    secret.write_text(secret.read_text().replace("namespace: models-dev", "namespace: analytics"))
    assert ("Application/platform-secrets-dev: syncs into namespace 'analytics' (wave -28), which no earlier "
            "wave creates") in messages(root)


def test_namespaces_app_must_come_first(tmp_path):
    root = copy_example_repo(tmp_path)
    edit(root, "environments/dev/rendered/apps/platform-namespaces.yaml",
         lambda d: d["metadata"]["annotations"].update({"argocd.argoproj.io/sync-wave": "0"}))
    assert "Application/platform-secrets-dev: syncs into namespace 'databases' (wave -28)" in messages(root)


def test_bootstrap_build_is_checked(tmp_path):
    from generator.check.appgraph import kustomize_problems

    root = copy_example_repo(tmp_path)
    assert kustomize_problems(RepoLayout(root)) == []
    # a build that passed is remembered for exactly these inputs; a change to any of them builds again
    (marker,) = (RepoLayout(root).cache_dir / "kustomize").iterdir()
    assert kustomize_problems(RepoLayout(root)) == [] and list(marker.parent.iterdir()) == [marker]
    kustomization = root / "bootstrap/argocd/kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("upstream/install.yaml", "upstream/missing.yaml"))
    (problem,) = kustomize_problems(RepoLayout(root))
    assert problem.file == "bootstrap/argocd" and "kubectl kustomize fails" in problem.message
