"""Render a platform Application's chart offline, as Argo CD would: Helm's own Go SDK, the vendored archive.

Argo CD runs ``helm template <chart> --name-template <releaseName> --namespace <destination> --kube-version
<cluster> --api-versions <cluster's APIs> --include-crds`` with the Application's ``valuesObject``. The
PyPI package ``helm-python-sdk`` binds the same Helm (v4) library: :class:`ChartRenderer` loads each
vendored archive once and renders it with those inputs, with no binary, cluster or network.

Renders are cached on disk (``.cache/mlops/charts``, git-ignored) by the hash of archive, values and
render options, so an unchanged repository re-validates without calling Helm again. Renders that do reach
Helm run in worker processes (:mod:`generator.render.helm_pool`), one per CPU, started only when needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from generator.render import helm_pool
from generator.render.helm_pool import HelmPool, HelmRenderError, render_files
from generator.render.helm_pool import digest as _digest
from generator.spec.charts import VendoredChart
from generator.spec.errors import RepositoryError

CACHE_FORMAT = 2
"""Bumped when what a cache entry holds changes, so old entries are ignored rather than misread."""
CAPABILITIES = re.compile(r"Capabilities(?!\.(?:KubeVersion|HelmVersion)\b)")
"""A template reference to ``.Capabilities`` that may reach its API versions (anything but these two)."""
NOT_INSTALLED = ("the chart checks need helm-python-sdk (Helm's Go SDK for Python): "
                 "pip install 'mlops-gitops[charts]' (make test and make demo install it)")


class _ChartYamlLoader(yaml.CSafeLoader):
    """Chart output is YAML 1.1 read by Kubernetes' parser: a bare ``=`` is a string there, not PyYAML's
    ``value`` tag (kube-prometheus-stack's CRDs have them)."""


_ChartYamlLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def load_documents(text: str) -> list[Any]:
    """Every YAML document of a chart's output."""
    return list(yaml.load_all(text, Loader=_ChartYamlLoader))


def _helm() -> Any:
    try:
        import helm_python
    except ImportError as exc:  # an optional extra: say how to get it instead of a traceback
        raise RepositoryError(NOT_INSTALLED) from exc
    return helm_python


class ChartRenderError(Exception):
    """Helm refused the values or a template failed; the message is Helm's."""


@dataclass(frozen=True)
class Rendered:
    """One render: Helm's output per template path (``NOTES.txt`` and empty templates left out)."""

    files: dict[str, str]

    @property
    def digest(self) -> str:
        """sha256 of the whole output, independent of dict order."""
        return _digest(self.files)

    def documents(self) -> list[tuple[str, dict]]:
        """Every non-empty YAML document as ``(template path, document)``, in template order."""
        found = []
        for path in sorted(self.files):
            for document in load_documents(self.files[path]):
                if isinstance(document, dict) and document:
                    found.append((path, document))
        return found


class ChartRenderer:
    """Loads each vendored archive once and renders it; thread-safe (Helm releases the GIL while rendering)."""

    def __init__(self, cache_dir: Path | None, kube_version: str, api_versions: frozenset[str] = frozenset(),
                 pool: HelmPool | None | bool = True) -> None:
        """``kube_version``: ``major.minor`` of the target cluster; ``api_versions``: the CRD group/versions
        the platform installs (added to Helm's built-in set, as Argo CD passes the cluster's); ``pool``: the
        worker processes that render (``True``: the process's shared pool; ``None``/``False``: in this
        process)."""
        self.cache_dir = cache_dir
        self.pool = helm_pool.shared_pool() if pool is True else (pool or None)
        self.kube_version = f"v{kube_version}.0" if kube_version.count(".") == 1 else f"v{kube_version}"
        self.api_versions = api_versions
        self._charts: dict[Path, Any] = {}
        self._memo: dict[str, Any] = {}
        self._folders: set[Path] = set()
        self._lock = threading.Lock()
        self._calls = [0]  # shared with with_api_versions() copies

    def with_api_versions(self, api_versions: frozenset[str]) -> ChartRenderer:
        """A renderer sharing loaded charts but telling charts that these APIs exist."""
        other = ChartRenderer(self.cache_dir, self.kube_version.removeprefix("v"), api_versions, self.pool)
        other._charts, other._memo, other._lock, other._calls = self._charts, self._memo, self._lock, self._calls
        other._folders = self._folders
        return other

    @property
    def helm_calls(self) -> int:
        """How many renders reached Helm (the rest came from the cache): the benchmark reports it."""
        return self._calls[0]

    def chart(self, vendored: VendoredChart) -> Any:
        """The loaded ``helm_python.Chart`` of an archive (loaded once)."""
        with self._lock:
            if vendored.path not in self._charts:
                self._charts[vendored.path] = _helm().Chart.load(vendored.path)
            return self._charts[vendored.path]

    def render(self, vendored: VendoredChart, values: dict, release: str, namespace: str) -> Rendered:
        """Helm's output for these inputs (from the cache when the same inputs were rendered before).

        Raises:
            ChartRenderError: Helm refused the values or a template failed.
        """
        options = self._options(vendored, values, release, namespace)
        key = self._key("render", vendored, values, options)
        cached = self.cache_get(key)
        if cached is not None:
            return Rendered(cached)
        files = self._render_uncached(vendored, values, options)
        self.cache_put(key, files)
        return Rendered(files)

    def probe_digest(self, vendored: VendoredChart, values: dict, release: str, namespace: str,
                     unstable: frozenset[str]) -> str | None:
        """:func:`output_digest` of a render, or ``None`` when Helm refuses the values. Only the digest is
        cached: the value-consumption check renders hundreds of variants and compares nothing else."""
        options = self._options(vendored, values, release, namespace)
        key = self._key("probe", vendored, values, options, sorted(unstable))
        cached = self.cache_get(key)
        if cached is not None:
            return cached["digest"]
        try:
            if self.pool is not None:
                self._count()
                digest: str | None = self.pool.render(str(vendored.path), values, options, sorted(unstable))
            else:
                digest = _digest(self._render_uncached(vendored, values, options), unstable)
        except (ChartRenderError, HelmRenderError):
            digest = None
        self.cache_put(key, {"digest": digest})
        return digest

    def documents(self, rendered: Rendered) -> list[tuple[str, dict]]:
        """:meth:`Rendered.documents`, cached as JSON by the output's digest (parsing YAML is the slow part);
        CRDs keep only what the checks read (group, names, scope, version names), not their schemas."""
        key = hashlib.sha256(f"{CACHE_FORMAT}:documents:{rendered.digest}".encode()).hexdigest()
        cached = self.cache_get(key)
        if cached is None:
            cached = {"documents": [[path, _slim(doc)] for path, doc in rendered.documents()]}
            self.cache_put(key, cached)
        return [(path, doc) for path, doc in cached["documents"]]

    def _options(self, vendored: VendoredChart, values: dict, release: str, namespace: str) -> dict:
        # A chart that never reads the API versions renders the same with or without them: leaving them out
        # lets the render that finds the platform's APIs and the one that uses them share one cache entry.
        api_versions = sorted(self.api_versions) if self.api_versions and (
            self.reads_api_versions(vendored) or CAPABILITIES.search(json.dumps(values))) else []
        return {"name": release, "namespace": namespace, "kube_version": self.kube_version,
                "api_versions": api_versions}

    def reads_api_versions(self, vendored: VendoredChart) -> bool:
        """Whether any file of the archive (templates, helpers, values that ``tpl`` may evaluate, files
        ``.Files.Get`` reads) names ``.Capabilities`` other than its KubeVersion and HelmVersion: only then
        can the API versions change the output. Read once per archive (and cached)."""
        key = hashlib.sha256(json.dumps([CACHE_FORMAT, "reads-api-versions", vendored.entry.sha256]).encode()
                             ).hexdigest()
        cached = self.cache_get(key)
        if cached is None:
            with tarfile.open(vendored.path, mode="r:gz") as archive:
                reads = any(CAPABILITIES.search(archive.extractfile(member).read().decode("utf-8", "replace"))
                            for member in archive.getmembers() if member.isfile())
            cached = {"reads": reads}
            self.cache_put(key, cached)
        return bool(cached["reads"])

    @staticmethod
    def _key(kind: str, vendored: VendoredChart, values: dict, options: dict, *extra: Any) -> str:
        payload = json.dumps([CACHE_FORMAT, kind, vendored.entry.sha256, values, options, *extra], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def render_uncached(self, vendored: VendoredChart, values: dict, release: str, namespace: str) -> Rendered:
        """A fresh render, never from the cache: what the determinism check compares."""
        return Rendered(self._render_uncached(vendored, values, self._options(vendored, values, release, namespace)))

    def _count(self) -> None:
        with self._lock:
            self._calls[0] += 1

    def _render_uncached(self, vendored: VendoredChart, values: dict, options: dict) -> dict[str, str]:
        self._count()
        if self.pool is not None:
            try:
                return self.pool.render(str(vendored.path), values, options)
            except HelmRenderError as exc:
                raise ChartRenderError(str(exc)) from exc
        helm = _helm()
        chart = self.chart(vendored)
        try:
            # tests/test_charts.py fails if the native call stops taking `helm template`'s capability options.
            return render_files(helm, chart, values, options)
        except helm.HelmError as exc:
            raise ChartRenderError(" ".join(str(exc).split())) from exc

    def crds(self, vendored: VendoredChart) -> list[dict]:
        """The CRDs in the chart's (and its subcharts') ``crds/`` folders, which Argo CD applies too
        (``--include-crds``), as ``{"file", "name", "group", "kind", "scope", "versions"}``.

        They do not depend on values, so they are read once per archive (and cached: some are megabytes)."""
        key = hashlib.sha256(json.dumps([CACHE_FORMAT, "crds", vendored.entry.sha256]).encode()).hexdigest()
        cached = self.cache_get(key)
        if cached is not None:
            return cached["crds"]
        found = []
        for crd in self.chart(vendored).crds:
            for document in load_documents(crd["data"]):
                if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                    spec = document.get("spec") or {}
                    found.append({"file": crd["filename"], "name": (document.get("metadata") or {}).get("name"),
                                  "group": spec.get("group"), "kind": (spec.get("names") or {}).get("kind"),
                                  "scope": spec.get("scope"),
                                  "versions": [v.get("name") for v in spec.get("versions") or []]})
        self.cache_put(key, {"crds": found})
        return found

    def remember(self, kind: str, vendored: VendoredChart, inputs: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``'s JSON answer about an archive and ``inputs``, from the cache when it was asked before
        (answers that depend only on the archive and the values: schema verdicts, defaults, dependencies)."""
        key = hashlib.sha256(json.dumps([CACHE_FORMAT, kind, vendored.entry.sha256, inputs], sort_keys=True)
                             .encode()).hexdigest()
        cached = self.cache_get(key)
        if cached is None:
            cached = {"value": compute()}
            self.cache_put(key, cached)
        return cached["value"]

    def _cache_file(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def cache_get(self, key: str) -> dict | None:
        """An entry of the render cache (memory first, then disk), or ``None``."""
        if key in self._memo:
            return self._memo[key]
        path = self._cache_file(key)
        if path is None or not path.is_file():
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # a torn or foreign file: render again and overwrite it
        self._memo[key] = value
        return value

    def cache_put(self, key: str, files: dict) -> None:
        """Store an entry in memory and, when the renderer has a cache directory, on disk."""
        self._memo[key] = files
        path = self._cache_file(key)
        if path is None:
            return
        try:
            if path.parent not in self._folders:  # 256 folders, hundreds of entries: make each once
                path.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(path.parent)
            partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            partial.write_text(json.dumps(files), encoding="utf-8")
            partial.replace(path)  # atomic: a parallel run never reads half an entry
        except OSError:
            pass  # a read-only checkout still validates, only slower


def _slim(doc: dict) -> dict:
    if doc.get("kind") != "CustomResourceDefinition":
        return doc
    spec = doc.get("spec") or {}
    return {**doc, "spec": {"group": spec.get("group"), "names": spec.get("names"), "scope": spec.get("scope"),
                            "versions": [{"name": v.get("name")} for v in spec.get("versions") or []]}}


def output_digest(rendered: Rendered, unstable: frozenset[str]) -> str:
    """Digest of a render without the templates that differ from one render to the next."""
    return _digest(rendered.files, unstable)
