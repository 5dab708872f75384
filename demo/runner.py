"""Run rendered manifests as local processes: the cluster path and the local path share the manifests.

What Argo CD would apply (``environments/<env>/rendered/``) is read as it is: each container of a
``SeldonDeployment`` predictor, a ``Deployment`` or a ``Job`` becomes one local process that runs the
container's command from its image (built here by :mod:`demo.images`, the way the Dockerfile builds it)
with the container's environment. Only what a cluster would inject is replaced, and nothing else:

- **the operator's environment**: Seldon's ``PREDICTOR_ID`` and ``PREDICTIVE_UNIT_*`` ports;
- **Secret values**, which Git holds only sealed: the :class:`Site` provides them by Secret name and key;
- **cluster addresses**: every ``<service>.<namespace>.svc[...]:<port>`` (and the Git URL) the
  :class:`Site` maps is rewritten to this machine's address;
- **ports and volumes**: each declared ``containerPort`` gets a free local port (an env var ``*_PORT``
  that names it follows), ConfigMap and Secret volumes become files in the process's folder, an
  ``emptyDir`` a folder, and every env value under a mount path points into the process's folder.

``KafkaTopic`` documents become :class:`Topic`\\ s for whatever creates topics locally, and
``ServiceMonitor``/``PodMonitor`` documents become Prometheus scrape targets with the labels the
Prometheus operator would add (``namespace``, ``pod``, the pod target labels), which the alert rules use.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from demo.images import ImageEnv
from demo.processes import free_port

IMAGE_COMPONENTS = {"model-server": "model_server", "drift-detector": "drift_detector", "retrain": "retrain"}
"""Image name (the last path segment of the reference, before ``@`` or ``:``) → component folder."""


class ManifestError(ValueError):
    """A rendered manifest asks for something this machine cannot provide (the message says what)."""


@dataclass
class Site:
    """What the cluster provides, as this machine provides it."""

    rewrites: dict[str, str]
    """Cluster address or URL → local one, applied to env values and arguments (longest first)."""
    secrets: dict[str, dict[str, str]]
    """Secret name → key → value (Git holds them only sealed)."""
    workdir: Path
    """Each process gets ``<workdir>/<process name>/`` for its volumes, ``/tmp`` and HOME."""
    image: Callable[[str, Path], ImageEnv]
    """(component, work folder) → the built image; :func:`demo.images.build_image` or a cached wrapper."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """Added to every process (for example ``DO_NOT_TRACK``)."""
    scratch: Path | None = None
    """Where ``emptyDir`` volumes go (node-local scratch in a cluster); default: the process's folder. Keep it
    short: a Unix socket path in it (multiprocessing's, in the model server's /tmp) must stay under 108 bytes."""

    @cached_property
    def _addresses(self) -> re.Pattern[str] | None:
        """One alternation of the mapped addresses, longest first (built once; ``rewrites`` is fixed)."""
        ordered = sorted(self.rewrites, key=len, reverse=True)
        return re.compile("|".join(re.escape(address) for address in ordered)) if ordered else None

    def rewrite(self, text: str) -> str:
        """``text`` with every mapped cluster address replaced, in one pass (longest address first)."""
        if self._addresses is None:
            return text
        return self._addresses.sub(lambda match: self.rewrites[match.group(0)], text)

    def secret(self, name: str, key: str, where: str) -> str:
        try:
            return self.secrets[name][key]
        except KeyError:
            raise ManifestError(f"{where} needs Secret {name!r} key {key!r}, which this machine does not "
                                f"provide: add it to the site's secrets") from None


@dataclass
class LocalProcess:
    """One container of a rendered workload, ready to start here."""

    name: str
    """``<workload>[-<predictor>]-<container>``: unique in a namespace, used for logs and folders."""
    kind: str
    """``SeldonDeployment``, ``Deployment`` or ``Job``: a Job runs to completion, the others serve."""
    namespace: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ports: dict[str, int]
    """Container port name (or number as text) → the local port it listens on."""
    ready_url: str | None
    labels: dict[str, str]
    """The pod's labels (what monitors select on)."""
    predictor: str | None = None
    traffic: int = 0
    """The predictor's traffic share (SeldonDeployment only): the local gateway splits by it."""
    shadow: bool = False
    template_hash: str = ""
    """sha256 of the rendered pod template (or predictor component): what changing rolls a pod in a cluster."""

    def url(self, port: str = "http", path: str = "") -> str:
        """The local URL of container port ``port``: ``https://`` for the port named https (the trigger's)."""
        return f"{'https' if port == 'https' else 'http'}://127.0.0.1:{self.ports[port]}{path}"


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    config: dict[str, str]


@dataclass(frozen=True)
class ScrapeTarget:
    """One Prometheus scrape target as the operator would configure it from a monitor."""

    job: str
    address: str
    path: str
    labels: dict[str, str]


def read_documents(folder: Path) -> list[dict[str, Any]]:
    """Every YAML document under ``folder`` (rendered files), in path order."""
    documents = []
    for path in sorted(folder.rglob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict))
    return documents


def topics(documents: Iterable[dict[str, Any]]) -> list[Topic]:
    """The Strimzi ``KafkaTopic``\\ s, as a local broker should create them."""
    return [Topic(doc["metadata"]["name"], int(doc["spec"].get("partitions", 1)),
                  {k: str(v) for k, v in (doc["spec"].get("config") or {}).items()})
            for doc in documents if doc.get("kind") == "KafkaTopic"]


def _config_maps(documents: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
    return {(doc["metadata"].get("namespace", ""), doc["metadata"]["name"]): dict(doc.get("data") or {})
            for doc in documents if doc.get("kind") == "ConfigMap"}


def _workloads(documents: Iterable[dict[str, Any]]) -> Iterator[tuple[dict, str, dict, dict[str, str], dict]]:
    """(document, workload name, pod spec, pod labels, predictor info) for every pod template."""
    for doc in documents:
        kind, meta = doc.get("kind"), doc.get("metadata", {})
        if kind == "SeldonDeployment":
            for predictor in doc["spec"]["predictors"]:
                for component in predictor.get("componentSpecs", []):
                    labels = {**meta.get("labels", {}), **predictor.get("labels", {}),
                              **component.get("metadata", {}).get("labels", {})}
                    info = {"predictor": predictor["name"], "traffic": int(predictor.get("traffic", 0)),
                            "shadow": bool(predictor.get("shadow", False))}
                    info["template_hash"] = _digest(component)
                    yield doc, f"{meta['name']}-{predictor['name']}", component["spec"], labels, info
        elif kind in ("Deployment", "Job"):
            template = doc["spec"]["template"]
            yield (doc, meta["name"], template["spec"], dict(template.get("metadata", {}).get("labels", {})),
                   {"template_hash": _digest(template)})


def _digest(template: dict) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()


def local_processes(documents: list[dict[str, Any]], site: Site,
                    only: Callable[[dict[str, Any]], bool] = lambda doc: True) -> list[LocalProcess]:
    """Every container of the workloads in ``documents`` (those ``only`` accepts) as a local process.

    Images are built (cached) through ``site.image``; nothing is started. Raises :class:`ManifestError`
    for an image with no component here, a missing Secret value or an unsupported volume.
    """
    config_maps = _config_maps(documents)
    processes = []
    for doc, workload, pod, labels, predictor in _workloads(documents):
        if not only(doc):
            continue
        namespace = doc["metadata"].get("namespace", "")
        for container in pod["containers"]:
            name = f"{workload}-{container['name']}"
            folder = site.workdir / namespace / name
            processes.append(_process(doc["kind"], namespace, name, folder, pod, container, labels, predictor,
                                      doc["metadata"]["name"], config_maps, site))
    return processes


def _process(kind: str, namespace: str, name: str, folder: Path, pod: dict, container: dict,
             labels: dict[str, str], predictor: dict, workload: str,
             config_maps: dict[tuple[str, str], dict[str, str]], site: Site) -> LocalProcess:
    where = f"{kind} {namespace}/{workload} container {container['name']}"
    image = site.image(component_of(container["image"], where), folder / "image")
    ports = {str(p.get("name") or p["containerPort"]): free_port() for p in container.get("ports", [])}
    by_number = {str(p["containerPort"]): ports[str(p.get("name") or p["containerPort"])]
                 for p in container.get("ports", [])}
    mounts = _mount_volumes(pod, container, folder, config_maps, site, namespace, where)
    tmp = mounts.get("/tmp", folder / "tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    paths = {"/app": image.app, "/opt/venv": image.venv, **mounts}

    def local(value: str) -> str:
        value = site.rewrite(value)
        for mount_path, target in sorted(paths.items(), key=lambda item: len(item[0]), reverse=True):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return str(target) + value[len(mount_path.rstrip("/")):]
        return value

    env = {**image.env, "HOME": str(tmp), "TMPDIR": str(tmp), **site.extra_env}
    for item in container.get("env", []):
        if "value" in item:
            value = str(item["value"])
            if item["name"].endswith("_PORT") and value in by_number:
                value = str(by_number[value])
            env[item["name"]] = local(value)
        else:
            source = item.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = site.secret(ref["name"], ref["key"], where)
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[item["name"]] = local(config_maps[(namespace, ref["name"])][ref["key"]])
            else:
                raise ManifestError(f"{where}: env {item['name']} uses {sorted(source)}, which runs only in a "
                                    f"cluster")
    if kind == "SeldonDeployment":
        # What Seldon's operator injects into every model container.
        env.update({"PREDICTOR_ID": predictor["predictor"], "PREDICTIVE_UNIT_ID": container["name"],
                    "SELDON_DEPLOYMENT_ID": workload,
                    "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(ports.get("http", free_port())),
                    "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(ports.get("metrics", free_port()))})
    program = container.get("command") or image.entrypoint
    arguments = container.get("args") if "args" in container else ([] if "command" in container else image.cmd)
    argv = [local(str(part)) for part in [*program, *arguments]]
    executable = image.venv / "bin" / argv[0]
    if executable.exists():
        argv[0] = str(executable)
    cwd = Path(local(container["workingDir"])) if "workingDir" in container else image.workdir
    probe = (container.get("readinessProbe") or {}).get("httpGet")
    ready_url = None
    if probe:
        port = str(probe["port"])
        local_port = ports.get(port) or by_number.get(port)
        ready_url = f"{probe.get('scheme', 'HTTP').lower()}://127.0.0.1:{local_port}{probe.get('path', '/')}"
    return LocalProcess(name, kind, namespace, argv, env, cwd, ports, ready_url, labels,
                        predictor.get("predictor"), predictor.get("traffic", 0), predictor.get("shadow", False),
                        predictor["template_hash"])


def component_of(image: str, where: str) -> str:
    """The component folder whose Dockerfile builds ``image`` (by the image's name)."""
    name = re.split(r"[@:]", image.rsplit("/", 1)[-1], maxsplit=1)[0]
    if name not in IMAGE_COMPONENTS:
        raise ManifestError(f"{where}: image {image} is not built from this repository ({', '.join(IMAGE_COMPONENTS)})")
    return IMAGE_COMPONENTS[name]


def _mount_volumes(pod: dict, container: dict, folder: Path, config_maps: dict[tuple[str, str], dict[str, str]],
                   site: Site, namespace: str, where: str) -> dict[str, Path]:
    """Write each mounted volume into ``folder``; returns mount path → local folder."""
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        target = folder / "volumes" / mount["name"]
        if "emptyDir" in volume and site.scratch is not None:
            target = site.scratch / hashlib.sha256(str(target).encode()).hexdigest()[:10]
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            data = config_maps.get((namespace, volume["configMap"]["name"]))
            if data is None:
                raise ManifestError(f"{where} mounts ConfigMap {volume['configMap']['name']}, which is not rendered")
            for key, value in data.items():
                (target / key).write_text(value)
        elif "secret" in volume:
            _write_secret(volume["secret"]["secretName"], volume["secret"].get("items"), target, site, where)
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                if "secret" not in source:
                    raise ManifestError(f"{where}: projected volume {mount['name']} has {sorted(source)}")
                _write_secret(source["secret"]["name"], source["secret"].get("items"), target, site, where)
        elif "emptyDir" not in volume:
            raise ManifestError(f"{where}: volume {mount['name']} is {sorted(set(volume) - {'name'})}, "
                                f"which runs only in a cluster")
        mounts[mount["mountPath"]] = target
    return mounts


def _write_secret(name: str, items: list[dict] | None, target: Path, site: Site, where: str) -> None:
    keys = [(item["key"], item["path"]) for item in items] if items else [(k, k) for k in site.secrets.get(name, {})]
    for key, path in keys:
        file = target / path
        file.write_text(site.secret(name, key, where))
        file.chmod(0o600)


def scrape_targets(documents: list[dict[str, Any]], processes: list[LocalProcess]) -> list[ScrapeTarget]:
    """The targets the Prometheus operator would derive from the rendered monitors, pointed at ``processes``.

    A ``PodMonitor`` or ``ServiceMonitor`` selects pods by ``matchLabels`` in its own namespace; every
    endpoint's named port becomes one target with ``namespace``, ``pod``, ``container`` and the pod target
    labels (sanitised as Prometheus does: ``mlops-gitops.io/predictor`` → ``mlops_gitops_io_predictor``).
    """
    targets = []
    for doc in documents:
        if doc.get("kind") not in ("PodMonitor", "ServiceMonitor"):
            continue
        spec, namespace = doc["spec"], doc["metadata"].get("namespace", "")
        selector = spec.get("selector", {}).get("matchLabels", {})
        endpoints = spec.get("podMetricsEndpoints") or spec.get("endpoints") or []
        for process in processes:
            if process.namespace != namespace or process.kind == "Job":
                continue
            if any(process.labels.get(key) != value for key, value in selector.items()):
                continue
            for endpoint in endpoints:
                if endpoint["port"] not in process.ports:
                    continue
                labels = {"namespace": namespace, "pod": process.name, "job": doc["metadata"]["name"]}
                for key in spec.get("podTargetLabels", []):
                    if key in process.labels:
                        labels[re.sub(r"[^a-zA-Z0-9_]", "_", key)] = process.labels[key]
                targets.append(ScrapeTarget(doc["metadata"]["name"], f"127.0.0.1:{process.ports[endpoint['port']]}",
                                            endpoint.get("path", "/metrics"), labels))
    return targets


def prometheus_scrape_configs(targets: list[ScrapeTarget], interval: str = "5s") -> list[dict[str, Any]]:
    """``scrape_configs`` entries for ``targets`` (one per target: each keeps its own labels)."""
    return [{"job_name": f"{target.job}-{target.labels['pod']}", "scrape_interval": interval,
             "metrics_path": target.path,
             "static_configs": [{"targets": [target.address], "labels": target.labels}]}
            for target in targets]

