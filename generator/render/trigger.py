"""Template context of the ``retrain-trigger`` platform component (``apps/retrain-trigger/``).

The trigger (``components/retrain_trigger``) runs once per environment in the Prefect namespace. Its
templates render a Deployment, a Service, a NetworkPolicy, the per-model retrain policy (a ConfigMap
the trigger reads) and, in Grafana's namespace, the contact point and notification policy that route
drift alerts labelled ``retrain="true"`` to it. Everything they print is computed here.

The webhook carries the trigger's bearer token, so it travels over HTTPS only: the trigger serves a
certificate from Secret ``retrain-trigger-tls`` (signed by the environment's own CA, README "Security in
the cluster"); Grafana's contact point, Prometheus' scrape and, with ``alerting.prometheus_rule``,
Alertmanager's receiver (:func:`alertmanager_values`) verify it with that CA (Secret ``retrain-trigger-ca``
in Grafana's namespace, ``ca.crt`` of the TLS Secret in the trigger's).

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
"""Grafana's environment variable holding the token (apps/kube-prometheus-stack/values.yaml,
``grafana.envValueFrom``); the contact point refers to it, so no credential is written in a file."""
TLS_SECRET = "retrain-trigger-tls"
"""Secret (keys ``tls.crt``, ``tls.key``, ``ca.crt``) with the trigger's serving certificate, in its namespace."""
TLS_DIR = "/var/run/secrets/retrain-trigger-tls"
CA_SECRET = "retrain-trigger-ca"
"""Secret (key ``ca.crt``) in Grafana's namespace: the CA that signed the trigger's certificate."""
CA_KEY = "ca.crt"
GRAFANA_CA_ENV = "RETRAIN_TRIGGER_CA"
"""Grafana's environment variable holding the CA certificate (``grafana.envValueFrom``, as the token)."""
ALERTMANAGER_SECRETS_DIR = "/etc/alertmanager/secrets"
"""Where the Prometheus operator mounts each Secret of ``alertmanagerSpec.secrets`` (a folder per Secret)."""
PREFECT_AUTH_SECRET = "prefect-api-auth"
PREFECT_AUTH_KEY = "auth-string"
"""The Prefect server's basic-auth Secret and key (apps/prefect-server/values.yaml ``server.basicAuth``)."""
CONTACT_POINT = "mlops-retrain-trigger"
ALERTS_PATH = "/v1/alerts/grafana"
ALERTMANAGER_ALERTS_PATH = "/v1/alerts/alertmanager"
ALERTMANAGER_RECEIVER = "retrain-trigger"
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
    service_url = trigger_url(namespace)
    env_vars = [
        {"name": "RETRAIN_TRIGGER_PREFECT_API_URL", "value": settings["prefect_api_url"]},
        {"name": "RETRAIN_TRIGGER_DEPLOYMENT_NAME", "value": settings["deployment_name"]},
        {"name": "RETRAIN_TRIGGER_POLICY_FILE", "value": f"{POLICY_DIR}/{POLICY_KEY}"},
        {"name": "RETRAIN_TRIGGER_HTTP_PORT", "value": str(HTTP_PORT)},
        {"name": "RETRAIN_TRIGGER_CREDENTIALS_DIR", "value": TOKEN_DIR},
        {"name": "RETRAIN_TRIGGER_TLS_CERT_FILE", "value": f"{TLS_DIR}/tls.crt"},
        {"name": "RETRAIN_TRIGGER_TLS_KEY_FILE", "value": f"{TLS_DIR}/tls.key"},
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
            # The serving certificate; Prometheus verifies the scrape with ca.crt of the same Secret.
            "tls": {"secret": TLS_SECRET, "dir": TLS_DIR, "ca_key": CA_KEY, "server_name": service_host(namespace)},
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


def service_host(namespace: str) -> str:
    """The host name Grafana, Alertmanager and Prometheus reach the trigger by (in its certificate)."""
    return f"{COMPONENT}.{namespace}.svc.cluster.local"


def trigger_url(namespace: str) -> str:
    """The trigger's base URL inside the cluster: HTTPS, always."""
    return f"https://{service_host(namespace)}:{HTTP_PORT}"


def alertmanager_values(namespace: str) -> dict[str, Any]:
    """kube-prometheus-stack values that route alerts labelled ``retrain="true"`` from Alertmanager to the
    trigger (rendered with ``alerting.prometheus_rule``, where Prometheus' ruler evaluates the rules).

    The receiver posts over HTTPS, verifying the trigger's certificate with the CA and sending the bearer
    token, both read from files: the operator mounts each Secret of ``alertmanagerSpec.secrets`` (Secrets of
    Alertmanager's own namespace) at ``/etc/alertmanager/secrets/<name>/``. Every other alert keeps going to
    the chart's ``null`` receiver, as without this. ``namespace`` is the trigger's.
    """
    return {"alertmanager": {
        "alertmanagerSpec": {"secrets": [TOKEN_SECRET, CA_SECRET]},
        "config": {
            # The chart's root route (receiver "null") stays; its routes are replaced (Helm replaces lists).
            "route": {"routes": [
                {"receiver": "null", "matchers": ['alertname = "Watchdog"']},  # the chart's default route, kept
                {"receiver": ALERTMANAGER_RECEIVER, "matchers": ['retrain="true"', 'mlops_alert="drift"'],
                 "group_by": ["alertname", "model", "env"],
                 "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h", "continue": True}]},
            "receivers": [{"name": "null"}, {"name": ALERTMANAGER_RECEIVER, "webhook_configs": [{
                "url": f"{trigger_url(namespace)}{ALERTMANAGER_ALERTS_PATH}",
                # Resolved notifications would only be ignored by the trigger.
                "send_resolved": False,
                "http_config": {
                    "authorization": {"type": "Bearer",
                                      "credentials_file": f"{ALERTMANAGER_SECRETS_DIR}/{TOKEN_SECRET}/{TOKEN_KEY}"},
                    "tls_config": {"ca_file": f"{ALERTMANAGER_SECRETS_DIR}/{CA_SECRET}/{CA_KEY}",
                                   "server_name": service_host(namespace)}},
            }]}],
        },
    }}


def grafana_alerting(env_name: str, url: str, root_receiver: str) -> dict[str, Any]:
    """Grafana alerting provisioning file: the trigger's webhook contact point and the notification policy.

    The contact point posts over HTTPS and verifies the trigger's certificate with the CA in Grafana's
    environment (``tlsConfig.caCertificate``: PEM text, expanded at provisioning like the token).

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
                         "authorization_credentials": f"${GRAFANA_TOKEN_ENV}", "maxAlerts": 0,
                         # Verify the trigger's certificate with the environment's CA (never skip it).
                         "tlsConfig": {"caCertificate": f"${GRAFANA_CA_ENV}", "insecureSkipVerify": False}},
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
