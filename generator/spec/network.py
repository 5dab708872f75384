"""Who talks to whom inside the cluster: the one description the platform's NetworkPolicies, the Pod
Security labels of every namespace, ``mlops validate``'s network checks and the README's security section
are generated from (:mod:`generator.render.network`, :mod:`generator.check.network`).

Everything not described here is denied: every managed namespace gets a default-deny NetworkPolicy (DNS
egress only), then one allow per described flow on each side (egress where it starts, ingress where it
ends). Namespaces are named by reference: ``models``, ``monitoring``, ``kafka`` and ``ingress`` are the
environment's namespaces (``environment.yaml`` ``namespaces``); any other name is a component, meaning
that component's namespace. A group or flow whose component is disabled in an environment is left out.

The model namespace's own policies (per model: gateway and Prometheus in; DNS, Kafka, S3, MLflow out)
are rendered with each model (:func:`generator.render.renderer.model_context`); the flows into other
namespaces that those policies start are described here, so the other side lets them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KUBE_API = "kube-apiserver"
"""The Kubernetes API server: not a pod, reached (and calling webhooks) from the node network."""
OUTSIDE = "outside"
"""Anything outside the cluster (the Git host, the GitHub API)."""
ANY_CIDR = "0.0.0.0/0"
KUBE_API_PORTS = (443, 6443)
"""The API server's Service port and its usual node port. Narrow the ipBlock to your control plane's
addresses where they are fixed (the NetworkPolicy API cannot name the API server)."""

ACCEPTED_PLAINTEXT = {
    ("prefect", "prefect-server"): (
        "Prefect clients send the basic-auth string over in-cluster HTTP to port 4200: Prefect's server serves no "
        "TLS and the prefect namespace is outside the mesh (its Jobs would wait on a sidecar that never exits); only "
        "the worker, the trigger, flow runs and the deploy Job may connect (NetworkPolicy). To close it: serve "
        "Prefect's API behind TLS (PREFECT_API_URL https://..., PREFECT_API_TLS_INSECURE_SKIP_VERIFY false) or "
        "mesh the namespace with Istio native sidecars so Jobs complete"),
}
"""(namespace, service) that receive credentials over plain HTTP today, and what closes it (README)."""


@dataclass(frozen=True)
class S3Identity:
    """One consumer's own SeaweedFS S3 identity (an entry of ``seaweedfs-s3-config``): where its key pair
    is delivered, how, and the per-bucket actions it holds."""

    name: str
    namespace: str
    secret: str
    actions: tuple[str, ...]
    delivery: str
    """``file`` (mounted, read by the client) or why it must be environment variables."""


ARTIFACT_BUCKET = "mlflow-artifacts"
_READ = (f"Read:{ARTIFACT_BUCKET}", f"List:{ARTIFACT_BUCKET}")
_READ_WRITE = (*_READ, f"Write:{ARTIFACT_BUCKET}", f"Tagging:{ARTIFACT_BUCKET}")
S3_IDENTITIES = (
    S3Identity("model-server", "models", "s3-credentials", _READ,
               "environment: Seldon's storage initializer reads only the variables of envSecretRefName, and "
               "MLflow's client in the server only AWS_* variables or a file it is not configured for here"),
    S3Identity("drift-detector", "models", "s3-credentials-drift-detector", _READ,
               "file: AWS_SHARED_CREDENTIALS_FILE, read by boto3"),
    S3Identity("mlflow", "mlflow", "s3-credentials", _READ_WRITE,
               "environment: the mlflow chart's artifactRoot.s3.existingSecret sets only AWS_* variables"),
    S3Identity("retrain-flow", "retrain-pipeline", "retrain-credentials", _READ_WRITE,
               "environment: the work pool's base job template loads the Secret with envFrom (with the Git token); "
               "a mounted credentials file would need a volume in that template"),
)
"""Least privilege per consumer on the one bucket (SeaweedFS identity actions ``<Action>:<bucket>``, from its
wiki page Amazon-S3-API, "S3 Authentication"); nobody holds ``Admin``. Not enforced by any test here: no
SeaweedFS process runs in the tests."""


@dataclass(frozen=True)
class Group:
    """A set of pods: a namespace reference and pod labels (``None``: every pod in the namespace)."""

    namespace: str
    pods: dict[str, str] | None = None
    component: str | None = None
    """The component that must be enabled for this group to exist (default: ``namespace`` if it names one)."""


@dataclass(frozen=True)
class Flow:
    """``source`` may open connections to ``target`` on ``ports`` (empty: every port)."""

    source: str
    target: str
    ports: tuple[int, ...]
    why: str


@dataclass(frozen=True)
class NamespacePolicy:
    """Pod Security Standard enforced in a namespace, and why when it is not ``restricted``."""

    level: str
    reason: str = ""


@dataclass(frozen=True)
class Description:
    groups: dict[str, Group]
    flows: tuple[Flow, ...]
    internal: dict[str, str] = field(default_factory=dict)
    """Namespaces whose pods may talk to each other on any port, and why (one product's own pods)."""
    pod_security: dict[str, NamespacePolicy] = field(default_factory=dict)


_UNVERIFIED = ("containers set no seccompProfile in the pinned chart ({what}); restricted needs RuntimeDefault, "
               "so enforcing it would refuse the pods. Warned and audited as restricted meanwhile")

DESCRIPTION = Description(
    groups={
        KUBE_API: Group(KUBE_API),
        OUTSIDE: Group(OUTSIDE),
        "gateway": Group("ingress", {"app": "istio-ingressgateway"}, component="istio-gateway"),
        "istiod": Group("istiod", {"app": "istiod"}),
        "model-pods": Group("models"),
        "prometheus": Group("monitoring", {"app.kubernetes.io/name": "prometheus"}, component="kube-prometheus-stack"),
        "grafana": Group("monitoring", {"app.kubernetes.io/name": "grafana"}, component="kube-prometheus-stack"),
        "alertmanager": Group("monitoring", {"app.kubernetes.io/name": "alertmanager"},
                              component="kube-prometheus-stack"),
        "prometheus-operator": Group("monitoring", {"app.kubernetes.io/name":
                                                    "kube-prometheus-stack-prometheus-operator"},
                                     component="kube-prometheus-stack"),
        "monitoring-controllers": Group("monitoring", None, component="kube-prometheus-stack"),
        "kafka-pods": Group("kafka", None, component="kafka-cluster"),
        "kafka-brokers": Group("kafka", {"strimzi.io/kind": "Kafka"}, component="kafka-cluster"),
        "postgres": Group("postgres-cluster", {"cnpg.io/cluster": "mlops-postgres"}),
        "cnpg-operator": Group("cloudnative-pg", {"app.kubernetes.io/name": "cloudnative-pg"}),
        "s3": Group("seaweedfs", {"app.kubernetes.io/name": "seaweedfs", "app.kubernetes.io/component": "filer"}),
        "seldon-operator": Group("seldon-core-operator", {"control-plane": "seldon-controller-manager"}),
        "mlflow": Group("mlflow", {"app.kubernetes.io/name": "mlflow"}),
        "prefect-server": Group("prefect-server", {"app.kubernetes.io/name": "prefect-server"}),
        "prefect-worker": Group("prefect-worker", {"app.kubernetes.io/name": "prefect-worker"}),
        "retrain-trigger": Group("retrain-trigger", {"app.kubernetes.io/name": "retrain-trigger",
                                                      "app.kubernetes.io/component": "retrain-trigger"}),
        "retrain-flow-runs": Group("retrain-pipeline", {"mlops-gitops.io/workload": "retrain-flow-run"}),
        "retrain-deploy": Group("retrain-pipeline", {"app.kubernetes.io/name": "retrain-pipeline",
                                                     "app.kubernetes.io/component": "prefect-deploy"}),
    },
    flows=(
        # Serving and drift (the model namespace's side is rendered per model).
        Flow("gateway", "model-pods", (8000,), "requests reach Seldon's executor through the ingress gateway"),
        Flow("model-pods", "istiod", (15012,), "sidecars fetch config and certificates"),
        # The TLS listener with SCRAM-SHA-512 (kafka.security_protocol SASL_SSL). PLAINTEXT (9092) is for a local
        # broker without NetworkPolicies (make demo): in a cluster these policies would not admit it.
        Flow("model-pods", "kafka-brokers", (9093,), "model servers write, drift detectors read the inference log "
             "(each as its own KafkaUser)"),
        Flow("model-pods", "s3", (8333,), "model servers and detectors read artifacts"),
        Flow("model-pods", "mlflow", (5000,), "the PostSync Job moves the environment's MLflow alias"),
        # Platform services.
        Flow("mlflow", "postgres", (5432,), "MLflow's backend store"),
        Flow("mlflow", "s3", (8333,), "MLflow's artifact store"),
        Flow("prefect-server", "postgres", (5432,), "Prefect's database"),
        Flow("cnpg-operator", "postgres", (8000, 5432), "the operator reads instance status and manages roles"),
        # Retraining: only these four reach Prefect's API (item 1 of issue 16).
        Flow("prefect-worker", "prefect-server", (4200,), "the worker polls its work pool and reports runs"),
        Flow("retrain-trigger", "prefect-server", (4200,), "the trigger starts retrain runs"),
        Flow("retrain-flow-runs", "prefect-server", (4200,), "flow runs report their state"),
        Flow("retrain-deploy", "prefect-server", (4200,), "the PostSync Job registers the deployments"),
        Flow("retrain-flow-runs", "mlflow", (5000,), "the flow registers the candidate model"),
        Flow("retrain-flow-runs", "s3", (8333,), "the flow reads training data and writes artifacts"),
        Flow("retrain-flow-runs", OUTSIDE, (443,), "the flow clones, pushes and opens the pull request"),
        Flow("retrain-deploy", OUTSIDE, (443,), "the deploy Job fetches the synced commit"),
        # Alerts.
        Flow("grafana", "retrain-trigger", (8080,), "drift alerts (webhook contact point; HTTPS, CA-verified)"),
        Flow("alertmanager", "retrain-trigger", (8080,), "drift alerts (Alertmanager webhook; HTTPS, CA-verified)"),
        # Metrics.
        Flow("prometheus", "model-pods", (8000, 6000, 6001, 8080), "scrapes executors, model servers, detectors"),
        Flow("prometheus", "retrain-trigger", (8080,), "scrapes the trigger (HTTPS, CA-verified)"),
        Flow("prometheus", "kafka-brokers", (9404,), "scrapes Kafka"),
        Flow("prometheus", "postgres", (9187,), "scrapes PostgreSQL"),
        Flow("prometheus", "istiod", (15014,), "scrapes istiod"),
        Flow("prometheus", KUBE_API, (), "scrapes the API server, kubelets and node exporters on the node network"),
        # Controllers that watch the API server, and webhooks it calls.
        Flow("prefect-worker", KUBE_API, KUBE_API_PORTS, "creates flow-run Jobs"),
        Flow("istiod", KUBE_API, KUBE_API_PORTS, "watches services and pods"),
        Flow("cnpg-operator", KUBE_API, KUBE_API_PORTS, "reconciles clusters"),
        Flow("postgres", KUBE_API, KUBE_API_PORTS, "the instance manager reads its Cluster"),
        Flow("kafka-pods", KUBE_API, KUBE_API_PORTS, "Strimzi's operators reconcile the cluster and topics"),
        Flow("seldon-operator", KUBE_API, KUBE_API_PORTS, "reconciles SeldonDeployments"),
        Flow("monitoring-controllers", KUBE_API, KUBE_API_PORTS,
             "the Prometheus operator, kube-state-metrics and Grafana's sidecars watch the API"),
        Flow(KUBE_API, "istiod", (15017,), "sidecar injection webhook"),
        Flow(KUBE_API, "cnpg-operator", (9443,), "CloudNativePG's admission webhook"),
        Flow(KUBE_API, "seldon-operator", (4443,), "Seldon's admission webhook"),
        Flow(KUBE_API, "prometheus-operator", (10250,), "the Prometheus operator's admission webhook"),
    ),
    internal={
        "ingress": "the gateway fetches config and certificates from istiod",
        "kafka": "brokers, controllers and Strimzi's operators replicate and reconcile",
        "monitoring": "Prometheus, Alertmanager, Grafana and Loki query each other",
        "postgres-cluster": "PostgreSQL instances replicate",
        "seaweedfs": "master, volume and filer servers",
    },
    pod_security={
        "models": NamespacePolicy("baseline", "Istio's init container (without the Istio CNI) needs NET_ADMIN and "
                                  "Seldon's injected executor sets no seccompProfile"),
        "ingress": NamespacePolicy("baseline", _UNVERIFIED.format(what="istiod, istio-gateway")),
        "monitoring": NamespacePolicy("privileged", "the node exporter DaemonSet uses the host's network, PID "
                                      "namespace and hostPath mounts to read node metrics"),
        "kafka": NamespacePolicy("baseline", "Strimzi creates the broker pods at run time: not rendered here, so "
                                 "not verified against restricted"),
        "postgres-cluster": NamespacePolicy("baseline", "CloudNativePG creates the instance pods at run time: not "
                                            "rendered here, so not verified against restricted"),
        "cloudnative-pg": NamespacePolicy("restricted"),
        "seaweedfs": NamespacePolicy("baseline", _UNVERIFIED.format(what="seaweedfs")),
        "seldon-core-operator": NamespacePolicy("baseline", _UNVERIFIED.format(what="seldon-core-operator")),
        "mlflow": NamespacePolicy("baseline", _UNVERIFIED.format(what="mlflow")),
        "prefect-server": NamespacePolicy("restricted"),
    },
)
