"""Render an environment's platform: one child Application per enabled component, plus the model
namespace's tenancy objects and the credentials Application.

Everything lands in ``environments/<env>/rendered/apps/`` (Applications, read by the root app) and
``environments/<env>/rendered/platform/<part>/`` (manifests those Applications sync).
"""

from __future__ import annotations

from typing import Any

from generator.render import network, retrain_pipeline, trigger
from generator.render.renderer import MODELS_WAVE, RenderedFile, Renderer, generated_file
from generator.spec import naming
from generator.spec.components import LoadedComponent, enabled_components, environment_values
from generator.spec.images import CHART_DIGEST_ENVS, digest_values, read_image_lock
from generator.spec.layout import RepoLayout, rendered_path
from generator.spec.loader import LoadedEnvironment, deep_merge

PLATFORM_PROJECT = "platform"
COMPONENT_CONTEXTS = {trigger.COMPONENT: trigger.component_context,
                      retrain_pipeline.COMPONENT: retrain_pipeline.component_context}
"""Extra template context of manifest components, by name:
``(environment, namespace, settings, components) -> dict``."""
NAMESPACES_WAVE = -40
"""Namespaces first: credentials and components sync into namespaces that already exist."""
NETWORK_WAVE = NAMESPACES_WAVE + 1
"""Network policies right after the namespaces, before any pod starts in them."""
SECRETS_WAVE = -28
"""Credentials sync right after the Sealed Secrets controller (wave -30), before anything uses them."""
TENANCY_WAVE = MODELS_WAVE - 10
IGNORE_WEBHOOK_CA = [
    # Operators inject their own CA into their webhooks at run time; Git never holds it.
    {"group": "admissionregistration.k8s.io", "kind": "MutatingWebhookConfiguration",
     "jqPathExpressions": [".webhooks[]?.clientConfig.caBundle"]},
    {"group": "admissionregistration.k8s.io", "kind": "ValidatingWebhookConfiguration",
     "jqPathExpressions": [".webhooks[]?.clientConfig.caBundle"]},
]


def render_platform(renderer: Renderer, layout: RepoLayout, loaded: LoadedEnvironment,
                    components: list[LoadedComponent]) -> list[RenderedFile]:
    """All platform files of one environment, in a stable order."""
    env = loaded.env
    source = layout.relative(loaded.path)
    base = {"env": loaded.env_json}
    files: list[RenderedFile] = []

    def emit(template: str, path: str, context: dict[str, Any]) -> None:
        files.append(generated_file(path, source, renderer.render_document(template, {**base, **context}, source),
                                    env.name))

    rendered = rendered_path(env.name)
    image_lock = read_image_lock(layout)
    for component in enabled_components(components, env):
        override = env.platform.components.get(component.name)
        spec = component.spec
        if spec.source.kind == "helm":
            values = deep_merge(deep_merge(deep_merge(component.values, environment_values(component, loaded.env_json)),
                                           _generated_values(component, loaded, components)),
                                override.values if override else {})
            if env.name in CHART_DIGEST_ENVS and spec.image_digests:
                # Digests seen published (vendor/images.yaml); an override of the same value still wins.
                values = deep_merge(deep_merge(values, digest_values(component.name, spec.image_digests,
                                                                     image_lock)), override.values if override else {})
            app_source = {"repoURL": spec.source.repo_url, "chart": spec.source.chart,
                          "targetRevision": spec.source.version,
                          "helm": {"releaseName": spec.source.release_name, "valuesObject": values}}
        else:
            folder = f"{rendered}/platform/{component.name}"
            settings = {**spec.settings, **(override.settings if override else {})}
            context = {"settings": settings, "component": spec.render_dump()}
            if provider := COMPONENT_CONTEXTS.get(component.name):
                # Components rendered from more than the environment (the trigger: the models' policies).
                context.update(provider(loaded, spec.namespace, settings, components))
            for template in component.templates:
                name = template.rsplit("/", 1)[-1].removesuffix(".j2")
                emit(f"@apps/{template}", f"{folder}/{name}", context)
            app_source = _repo_source(env, folder)
        emit("application.yaml.j2", f"{rendered}/apps/platform-{component.name}.yaml", {"app": _app(
            env, f"platform-{component.name}", spec.namespace, spec.wave, app_source,
            ["CreateNamespace=true", "ServerSideApply=true", "PruneLast=true", "RespectIgnoreDifferences=true"],
            component.name, IGNORE_WEBHOOK_CA + spec.ignore_differences)})

    folder = f"{rendered}/platform/namespaces"
    namespaces = namespaces_context(loaded, components)
    for namespace in namespaces:
        emit("namespace.yaml.j2", f"{folder}/{namespace['name']}.yaml", {"namespace": namespace})
    emit("application.yaml.j2", f"{rendered}/apps/platform-namespaces.yaml", {"app": _app(
        env, "platform-namespaces", env.namespaces.models, NAMESPACES_WAVE, _repo_source(env, folder), [],
        "namespaces")})

    folder = f"{rendered}/platform/network"
    policies = network.network_policies(loaded, components, [n["name"] for n in namespaces],
                                        {**_tenancy_labels(env.name), "app.kubernetes.io/component": "network"})
    for key in policies:
        emit("networkpolicy.yaml.j2", f"{folder}/{key}.yaml", {"policy": key, "network_policies": policies})
    emit("application.yaml.j2", f"{rendered}/apps/platform-network.yaml", {"app": _app(
        env, "platform-network", env.namespaces.models, NETWORK_WAVE, _repo_source(env, folder), ["PruneLast=true"],
        "network")})

    mesh = next((c.spec.namespace for c in enabled_components(components, env) if c.name == ISTIO_CONTROL_PLANE), None)
    tenancy = tenancy_context(loaded, mesh)
    folder = f"{rendered}/platform/tenancy"
    for template, name in (("resourcequota.yaml.j2", "resourcequota.yaml"), ("limitrange.yaml.j2", "limitrange.yaml")):
        emit(template, f"{folder}/{name}", {"tenancy": tenancy})
    for policy in tenancy["network_policies"]:
        emit("networkpolicy.yaml.j2", f"{folder}/networkpolicy-{policy.replace('_', '-')}.yaml",
             {"policy": policy, "network_policies": tenancy["network_policies"]})
    for peer in tenancy["peer_authentications"]:
        emit("peerauthentication.yaml.j2", f"{folder}/peerauthentication-{peer}.yaml",
             {"peer": peer, "peer_authentications": tenancy["peer_authentications"]})
    emit("application.yaml.j2", f"{rendered}/apps/platform-tenancy.yaml", {"app": _app(
        env, "platform-tenancy", env.namespaces.models, TENANCY_WAVE, _repo_source(env, folder), ["PruneLast=true"],
        "tenancy")})

    secrets = env.platform.secrets
    if secrets.backend == "external-secrets":
        folder = f"{rendered}/platform/secrets"
        external = external_secrets_context(loaded)
        for name in external:
            emit("externalsecret.yaml.j2", f"{folder}/externalsecret-{name}.yaml",
                 {"external_secrets": external, "secret": name})
        secrets_path = folder
    else:
        secrets_path = layout.relative(layout.secrets_dir(env.name))
    emit("application.yaml.j2", f"{rendered}/apps/platform-secrets.yaml", {"app": _app(
        env, "platform-secrets", env.namespaces.models, SECRETS_WAVE, _repo_source(env, secrets_path),
        ["PruneLast=true"], "secrets")})
    return files


def _generated_values(component: LoadedComponent, loaded: LoadedEnvironment,
                      components: list[LoadedComponent]) -> dict:
    """Helm values computed from the rest of the platform: with ``alerting.prometheus_rule``, Alertmanager's
    route and HTTPS receiver to the retrain trigger (:func:`generator.render.trigger.alertmanager_values`)."""
    if component.name != "kube-prometheus-stack" or not loaded.env.alerting.prometheus_rule:
        return {}
    receiver = next((c for c in enabled_components(components, loaded.env) if c.name == trigger.COMPONENT), None)
    return trigger.alertmanager_values(receiver.spec.namespace) if receiver else {}


def _app(env: Any, name: str, namespace: str, wave: int, source: dict, sync_options: list[str],
         component: str, ignore_differences: list[dict] | None = None) -> dict:
    extra = {"ignore_differences": ignore_differences} if ignore_differences else {}
    return {**extra, "name": f"{name}-{env.name}", "project": PLATFORM_PROJECT, "namespace": namespace, "wave": wave,
            "labels": {"app.kubernetes.io/name": component, "app.kubernetes.io/component": "platform",
                       "app.kubernetes.io/part-of": "mlops-gitops", "app.kubernetes.io/managed-by": "mlops-gitops",
                       f"{naming.LABEL_PREFIX}/environment": env.name},
            "source": source, "sync_options": sync_options}


def _repo_source(env: Any, path: str) -> dict:
    return {"repoURL": env.argocd.repo_url, "targetRevision": env.argocd.target_revision, "path": path}


SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "default"})
"""Namespaces Kubernetes owns: components may deploy there, the platform never manages them."""


def namespaces_context(loaded: LoadedEnvironment, components: list[LoadedComponent]) -> list[dict]:
    """Every namespace the environment's platform and models use, with its labels, sorted by name."""
    env = loaded.env
    base = {"app.kubernetes.io/part-of": "mlops-gitops", "app.kubernetes.io/managed-by": "mlops-gitops",
            f"{naming.LABEL_PREFIX}/environment": env.name}
    names = {c.spec.namespace for c in enabled_components(components, env)} | {
        env.namespaces.monitoring, env.namespaces.kafka, env.namespaces.ingress, env.namespaces.models}
    result = []
    for name in sorted(names - SYSTEM_NAMESPACES):
        security, annotations = network.pod_security_labels(name, loaded, components)
        labels = _models_namespace_labels(env.name) if name == env.namespaces.models else base
        # Deleting a Namespace deletes everything in it: Argo CD never prunes or deletes one.
        result.append({"name": name, "labels": {**labels, **security}, "annotations": {
            "argocd.argoproj.io/sync-options": "Prune=false,Delete=false", **annotations}})
    return result


ISTIO_CONTROL_PLANE = "istiod"
ISTIOD_XDS_PORT = 15012
"""Sidecars in the model namespace fetch config and certificates from istiod on this port."""


def _tenancy_labels(env_name: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "mlops-gitops", "app.kubernetes.io/managed-by": "mlops-gitops",
            "app.kubernetes.io/component": "tenancy", f"{naming.LABEL_PREFIX}/environment": env_name}


def _models_namespace_labels(env_name: str) -> dict[str, str]:
    # Pod Security levels come from generator.spec.network (baseline here, and why).
    return {**_tenancy_labels(env_name), "istio-injection": "enabled"}


def tenancy_context(loaded: LoadedEnvironment, mesh_namespace: str | None = None) -> dict:
    """Namespace labels, quota, default resources and network policies of the model namespace: deny all
    but DNS, plus the sidecars' connection to istiod when the mesh runs (``mesh_namespace``)."""
    env = loaded.env
    labels = _tenancy_labels(env.name)
    tenancy = env.platform.tenancy
    return {
        "namespace": env.namespaces.models,
        "labels": labels,
        "quota": tenancy.quota.model_dump(mode="json"),
        "default_limits": tenancy.default_limits.model_dump(mode="json"),
        "default_requests": tenancy.default_requests.model_dump(mode="json"),
        "network_policies": {
            "default_deny": {"name": "default-deny", "namespace": env.namespaces.models, "labels": labels,
                             "pod_selector": {}, "ingress": [], "egress": []},
            **({"allow_istio": {"name": "allow-istio-control-plane", "namespace": env.namespaces.models,
                                "labels": labels, "pod_selector": {}, "ingress": [],
                                "egress": [{"namespace": mesh_namespace, "port": ISTIOD_XDS_PORT}]}}
               if mesh_namespace else {}),
        },
        "peer_authentications": _peer_authentications(env.namespaces.models, labels) if mesh_namespace else {},
    }


def _peer_authentications(namespace: str, labels: dict[str, str]) -> dict[str, dict]:
    """Mutual TLS only in the model namespace; plain text only on the metrics ports Prometheus (outside the
    mesh) scrapes, per kind of pod (``portLevelMtls`` needs a workload selector)."""
    base = {"namespace": namespace, "labels": labels}
    return {
        "strict": {**base, "name": "default", "selector": {}, "permissive_ports": []},
        "model-server-metrics": {**base, "name": "model-server-metrics",
                                 "selector": {"app.kubernetes.io/component": "model-server"},
                                 "permissive_ports": [naming.MODEL_SERVER_METRICS_PORT,
                                                      naming.MODEL_SERVER_APP_METRICS_PORT]},
        "drift-detector-metrics": {**base, "name": "drift-detector-metrics",
                                   "selector": {"app.kubernetes.io/component": "drift-detector"},
                                   "permissive_ports": [naming.DRIFT_HTTP_PORT]},
    }


def external_secrets_context(loaded: LoadedEnvironment) -> dict[str, dict]:
    """ExternalSecret settings per secret name (external-secrets backend only)."""
    env = loaded.env
    store = env.platform.secrets.store
    labels = {"app.kubernetes.io/part-of": "mlops-gitops", "app.kubernetes.io/managed-by": "mlops-gitops",
              "app.kubernetes.io/component": "secrets", f"{naming.LABEL_PREFIX}/environment": env.name}
    return {item.name: {"name": item.name, "namespace": item.namespace, "secret_keys": item.keys, "labels": labels,
                        "remote_key": item.remote_key or f"mlops/{env.name}/{item.name}",
                        "store": {"kind": store.kind, "name": store.name} if store else {}}
            for item in env.platform.secrets.items}
