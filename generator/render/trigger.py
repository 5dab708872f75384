"""Template context of the ``retrain-trigger`` platform component (``apps/retrain-trigger/``).

The trigger (``components/retrain_trigger``) runs once per environment in the Prefect namespace. Its
templates render a Deployment, a Service, a NetworkPolicy, the per-model retrain policy (a ConfigMap
the trigger reads) and, in Grafana's namespace, the contact point and notification policy that route
drift alerts labelled ``retrain="true"`` to it. Everything they print is computed here.

The policy file holds the environment's ``defaults.retrain`` and only the models whose retrain policy
differs from it. ``mlops generate-model`` renders one model, never this environment-wide file; a model
it creates takes the defaults, so the file stays current (``mlops render --check`` passes), and a hand
edit of a ``retrain`` block is rendered here by ``mlops render``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from generator.render import network
from generator.render.retrain_pipeline import flow_image, read_prefect_file, repository_root
from generator.spec import naming
from generator.spec.components import LoadedComponent
from generator.spec.loader import LoadedEnvironment
from generator.spec.models import Retrain

COMPONENT = "retrain-trigger"
HTTP_PORT = 8080
POLICY_CONFIGMAP = "retrain-trigger-policy"
POLICY_KEY = "policy.json"
POLICY_DIR = "/etc/retrain-trigger"
TOKEN_SECRET = "retrain-trigger-token"
"""Secret (key ``token``) with the shared webhook secret: in the trigger's namespace and in Grafana's."""
TOKEN_KEY = "token"
TOKEN_DIR = "/var/run/secrets/retrain-trigger"
TOKEN_FILE = "retrain_trigger_token"
"""The token's file in ``TOKEN_DIR``: the trigger's settings read field ``token`` from the file of that name
(``retrain_trigger.settings.SECRETS_DIR`` and ``TOKEN_FILE_NAME``)."""
GRAFANA_TOKEN_ENV = "RETRAIN_TRIGGER_TOKEN"
PREFECT_AUTH_SECRET = "prefect-api-auth"
PREFECT_AUTH_KEY = "auth-string"
"""The Prefect server's basic-auth Secret and key (apps/prefect-server/values.yaml ``server.basicAuth``)."""
"""Grafana's environment variable holding the token (apps/kube-prometheus-stack/values.yaml,
``grafana.envValueFrom``); the contact point refers to it, so no credential is written in a file."""
CONTACT_POINT = "mlops-retrain-trigger"
ALERTS_PATH = "/v1/alerts/grafana"
ENFORCED_FIELDS = ("on_drift", "max_runs_per_day")
"""The parts of a model's ``retrain`` block the trigger enforces (the flow reads the rest from Git)."""


def retrain_policy(loaded: LoadedEnvironment) -> dict[str, Any]:
    """The trigger's policy file: environment, default, and the models that differ from the default."""
    default = _enforced(loaded.env.defaults.retrain)
    models = {m.spec.model: _enforced(m.spec.retrain) for m in loaded.models}
    return {"environment": loaded.env.name, "default": default,
            "models": {name: policy for name, policy in sorted(models.items()) if policy != default}}


def _enforced(retrain: Retrain) -> dict[str, Any]:
    return {field: getattr(retrain, field) for field in ENFORCED_FIELDS}


def component_context(loaded: LoadedEnvironment, namespace: str, settings: dict[str, Any],
                      components: list[LoadedComponent]) -> dict[str, Any]:
    """Everything ``apps/retrain-trigger/manifests/*.yaml.j2`` print, for the component in ``namespace``."""
    env = loaded.env
    labels = {"app.kubernetes.io/name": COMPONENT, "app.kubernetes.io/component": COMPONENT,
              "app.kubernetes.io/part-of": "mlops-gitops", "app.kubernetes.io/managed-by": "mlops-gitops",
              f"{naming.LABEL_PREFIX}/environment": env.name}
    selector = {"app.kubernetes.io/name": COMPONENT, "app.kubernetes.io/component": COMPONENT}
    policy_text = json.dumps(retrain_policy(loaded), indent=2, sort_keys=True) + "\n"
    # One pin for the retrain image: the trigger runs what prefect.yaml gives the flow runs and the deploy Job.
    image = settings["image"] or flow_image(read_prefect_file(repository_root(loaded), settings["prefect_file"])[1],
                                            settings["prefect_file"])
    service_url = f"http://{COMPONENT}.{namespace}.svc.cluster.local:{HTTP_PORT}"
    env_vars = [
        {"name": "RETRAIN_TRIGGER_PREFECT_API_URL", "value": settings["prefect_api_url"]},
        {"name": "RETRAIN_TRIGGER_DEPLOYMENT_NAME", "value": settings["deployment_name"]},
        {"name": "RETRAIN_TRIGGER_POLICY_FILE", "value": f"{POLICY_DIR}/{POLICY_KEY}"},
        {"name": "RETRAIN_TRIGGER_HTTP_PORT", "value": str(HTTP_PORT)},
        {"name": "RETRAIN_TRIGGER_CREDENTIALS_DIR", "value": TOKEN_DIR},
    ]
    return {
        "trigger": {
            "name": COMPONENT, "namespace": namespace, "labels": labels, "selector": selector,
            "image": image, "port": HTTP_PORT,
            "resources": settings["resources"], "env": env_vars,
            # A new policy restarts the pod: the trigger reads the file once, at start.
            "policy_hash": hashlib.sha256(policy_text.encode()).hexdigest()[:16],
            "policy": {"configmap": POLICY_CONFIGMAP, "key": POLICY_KEY, "dir": POLICY_DIR, "text": policy_text},
            "token": {"secret": TOKEN_SECRET, "key": TOKEN_KEY, "dir": TOKEN_DIR, "file": TOKEN_FILE},
            # Prefect's basic auth, beside the token (settings field prefect_auth_string).
            "prefect_auth": {"secret": PREFECT_AUTH_SECRET, "key": PREFECT_AUTH_KEY,
                             "file": "retrain_trigger_prefect_auth_string"},
            "grafana": {
                "configmap": f"{COMPONENT}-grafana-alerting", "namespace": env.namespaces.monitoring,
                "labels": {**labels, "grafana_alert": "1"},
                "file": f"mlops-{env.name}-retrain-trigger.yaml",
                "document": grafana_alerting(env.name, f"{service_url}{ALERTS_PATH}",
                                             settings["grafana_root_receiver"]),
            },
        },
        # For templates/networkpolicy.yaml.j2 (included by the component's networkpolicy template): the flows
        # of generator/spec/network.py that end or start here (Grafana, Alertmanager and Prometheus in;
        # Prefect's API out).
        "network_policies": {"retrain_trigger": {
            "name": COMPONENT, "namespace": namespace, "labels": labels, "pod_selector": selector,
            **dict(zip(("ingress", "egress"), network.group_rules(COMPONENT, network.resolve(loaded, components)),
                       strict=True)),
        }},
        "policy": "retrain_trigger",
        "run_as_user": naming.RUN_AS_UID,
    }


def grafana_alerting(env_name: str, url: str, root_receiver: str) -> dict[str, Any]:
    """Grafana alerting provisioning file: the trigger's webhook contact point and the notification policy.

    The policy tree is the organisation's whole tree (Grafana replaces it on provisioning), so this is
    the one file that owns it: everything goes to ``root_receiver`` except drift alerts that ask for a
    retrain, which go to the trigger first (``continue``: routes people add later still see them).
    """
    return {
        "apiVersion": 1,
        "contactPoints": [{"orgId": 1, "name": CONTACT_POINT, "receivers": [{
            "uid": f"retrain-trigger-{env_name}"[:40],
            "type": "webhook",
            # Resolved notifications would only be ignored by the trigger.
            "disableResolveMessage": True,
            "settings": {"url": url, "httpMethod": "POST", "authorization_scheme": "Bearer",
                         # Expanded by Grafana from its environment at provisioning: no credential in Git.
                         "authorization_credentials": f"${GRAFANA_TOKEN_ENV}", "maxAlerts": 0},
        }]}],
        "policies": [{
            "orgId": 1, "receiver": root_receiver, "group_by": ["grafana_folder", "alertname"],
            "routes": [{
                "receiver": CONTACT_POINT,
                "object_matchers": [["retrain", "=", "true"], ["mlops_alert", "=", "drift"]],
                "group_by": ["alertname", "model", "env"],
                "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h",
                "continue": True,
            }],
        }],
    }
