"""Render the generated part of ``bootstrap/``: the AppProjects and one root Application per environment.

They follow from the specs (namespaces, repository, chart repositories of ``apps/``), so they are
rendered rather than hand-written: a new component's chart repository or a renamed namespace reaches
the projects that guard them in the same change.
"""

from __future__ import annotations

from dataclasses import replace

from generator.render.platform import PLATFORM_PROJECT
from generator.render.renderer import RenderedFile, Renderer, generated_file
from generator.spec import naming
from generator.spec.components import LoadedComponent
from generator.spec.layout import PROJECTS_DIR, RepoLayout, rendered_apps_path, root_app_path
from generator.spec.loader import LoadedEnvironment

SOURCE = "environments/*/environment.yaml and apps/*/component.yaml"
RELEASE_MANAGERS_GROUP = "mlops-release-managers"
PLATFORM_ADMINS_GROUP = "mlops-platform-admins"
PROD_LIKE = ("prod",)

# Cluster-scoped kinds the platform's charts install; everything else cluster-wide is refused.
PLATFORM_CLUSTER_RESOURCES = [
    {"group": "", "kind": "Namespace"},
    {"group": "apiextensions.k8s.io", "kind": "CustomResourceDefinition"},
    {"group": "rbac.authorization.k8s.io", "kind": "ClusterRole"},
    {"group": "rbac.authorization.k8s.io", "kind": "ClusterRoleBinding"},
    {"group": "admissionregistration.k8s.io", "kind": "MutatingWebhookConfiguration"},
    {"group": "admissionregistration.k8s.io", "kind": "ValidatingWebhookConfiguration"},
    {"group": "scheduling.k8s.io", "kind": "PriorityClass"},
]
# Model projects never touch the guard rails the platform sets, nor plain Secrets.
MODEL_NAMESPACE_BLACKLIST = [
    {"group": "", "kind": "ResourceQuota"},
    {"group": "", "kind": "LimitRange"},
    {"group": "", "kind": "Secret"},
]


def render_bootstrap(renderer: Renderer, layout: RepoLayout, environments: list[LoadedEnvironment],
                     components: list[LoadedComponent]) -> list[RenderedFile]:
    """AppProjects (platform + one per environment), their kustomization, and the root apps."""
    files: list[RenderedFile] = []

    def emit(template: str, path: str, context: dict) -> None:
        files.append(generated_file(path, SOURCE, renderer.render_document(template, context, SOURCE), "bootstrap"))

    first = environments[0].env_json
    projects = [platform_project(environments, components)] + [model_project(e) for e in environments]
    for project in projects:
        emit("appproject.yaml.j2", f"{PROJECTS_DIR}/{project['name']}.yaml", {"project": project, "env": first})
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": [f"{p['name']}.yaml" for p in projects]}
    # Not a Kubernetes object: written, never validated.
    files.append(replace(generated_file(f"{PROJECTS_DIR}/kustomization.yaml", SOURCE, kustomization, "bootstrap"),
                         document=None))
    for environment in environments:
        emit("application.yaml.j2", root_app_path(environment.name),
             {"app": root_app(environment), "env": environment.env_json})
    return files


def platform_project(environments: list[LoadedEnvironment], components: list[LoadedComponent]) -> dict:
    """The project of platform components, tenancy, credentials and the root apps themselves."""
    repos = sorted({e.env.argocd.repo_url for e in environments}
                   | {c.spec.source.repo_url for c in components if c.spec.source.kind == "helm"})
    namespaces = sorted({c.spec.namespace for c in components}
                        | {e.env.namespaces.models for e in environments}
                        | {e.env.namespaces.argocd for e in environments})
    servers = sorted({e.env.argocd.destination_server for e in environments})
    return {
        "name": PLATFORM_PROJECT,
        "argocd_namespace": environments[0].env.namespaces.argocd,
        "labels": _labels("platform"),
        "description": "Platform components, tenancy, credentials and the root app of each environment",
        "source_repos": repos,
        "destinations": [{"server": s, "namespace": n} for s in servers for n in namespaces],
        "cluster_resources": PLATFORM_CLUSTER_RESOURCES,
        "namespace_blacklist": [],
        "roles": [{"name": "platform-admins", "description": "Operate every platform Application",
                   "policies": [f"p, proj:{PLATFORM_PROJECT}:platform-admins, applications, *, {PLATFORM_PROJECT}/*, allow"],
                   "groups": [PLATFORM_ADMINS_GROUP]}],
        "sync_windows": [],
    }


def model_project(loaded: LoadedEnvironment) -> dict:
    """The project of one environment's model Applications: only this repo, only its namespaces."""
    env = loaded.env
    name = env.argocd.project
    ns = env.namespaces
    prod = env.name in PROD_LIKE
    policies = [f"p, proj:{name}:release-managers, applications, {action}, {name}/*, allow"
                for action in ("get", "sync", "override", "action/*")]
    return {
        "name": name,
        "argocd_namespace": ns.argocd,
        "labels": {**_labels("models"), f"{naming.LABEL_PREFIX}/environment": env.name},
        "description": f"Models of the {env.name} environment"
                       + (" (sync and rollback by release managers only)" if prod else ""),
        "source_repos": [env.argocd.repo_url],
        "destinations": [{"server": env.argocd.destination_server, "namespace": n}
                         for n in sorted({ns.models, ns.monitoring, ns.kafka})],
        "cluster_resources": [],
        "namespace_blacklist": MODEL_NAMESPACE_BLACKLIST,
        "roles": [{"name": "release-managers",
                   "description": f"Sync and roll back {env.name} models",
                   "policies": policies, "groups": [RELEASE_MANAGERS_GROUP]}],
        # Prod: no syncs from Friday evening to Monday morning, except a release manager's manual sync.
        "sync_windows": [{"kind": "deny", "schedule": "0 18 * * 5", "duration": "62h", "applications": ["*"],
                          "manualSync": True, "timeZone": "UTC",
                          "description": "weekend change freeze; release managers may sync by hand"}]
        if prod else [],
    }


def root_app(loaded: LoadedEnvironment) -> dict:
    """The environment's app-of-apps: syncs rendered/apps/, never undoes a child's UI rollback."""
    env = loaded.env
    return {
        "name": f"root-{env.name}", "project": PLATFORM_PROJECT, "namespace": env.namespaces.argocd, "wave": 0,
        "labels": {**_labels("root"), f"{naming.LABEL_PREFIX}/environment": env.name},
        "source": {"repoURL": env.argocd.repo_url, "targetRevision": env.argocd.target_revision,
                   "path": rendered_apps_path(env.name)},
        "sync_options": ["RespectIgnoreDifferences=true", "PruneLast=true"],
        # A rollback in the UI turns a child's automated sync off; ignoring syncPolicy keeps the root
        # from switching it back on (and re-deploying what was rolled back).
        "ignore_differences": [{"group": "argoproj.io", "kind": "Application", "jsonPointers": ["/spec/syncPolicy"]}],
    }


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "mlops-gitops", "app.kubernetes.io/managed-by": "mlops-gitops",
            "app.kubernetes.io/component": component}
