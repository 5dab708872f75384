"""Offline checks of the app-of-apps graph: from each root app to every child and the files it syncs.

Argo CD would only find these at sync time, in the cluster: a child in a project that does not exist,
a destination or a kind its project refuses, a source path that is not in the repository, a chart
pinned to a range, an automated prod Application. ``mlops validate`` reports them all before merge.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from generator.check.manifest import documents
from generator.check.policies import CLUSTER_SCOPED_KINDS
from generator.render.bootstrap import PROD_LIKE
from generator.render.platform import SYSTEM_NAMESPACES
from generator.spec.components import EXACT_VERSION_RE
from generator.spec.errors import Problem, SpecError
from generator.spec.layout import PROJECTS_DIR, RepoLayout, env_file_path, root_app_path

_EXACT_VERSION = re.compile(EXACT_VERSION_RE)
KUSTOMIZE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class _App:
    path: str
    doc: dict

    @property
    def name(self) -> str:
        return (self.doc.get("metadata") or {}).get("name", "<no name>")

    @property
    def spec(self) -> dict:
        return self.doc.get("spec") or {}


def graph_problems(layout: RepoLayout, envs: list[str]) -> list[Problem]:
    """Every problem in the graph rooted at ``bootstrap/root-<env>.yaml`` for each environment."""
    projects, problems = load_projects(layout)
    for env in envs:
        root_path = layout.root / root_app_path(env)
        if not root_path.is_file():
            problems.append(Problem(layout.relative(root_path), "root app is missing",
                                    fix="run `mlops render` (without --env) to write it"))
            continue
        apps = [_App(layout.relative(root_path), _load(layout, root_path))]
        apps += [_App(layout.relative(p), _load(layout, p)) for p in sorted(layout.rendered_apps_dir(env).glob("*.yaml"))]
        for app in apps:
            problems += _app_problems(layout, env, app, projects)
        problems += _namespace_order_problems(layout, apps[1:])
    return problems


def _wave(app: _App) -> int:
    return int((app.doc.get("metadata") or {}).get("annotations", {}).get("argocd.argoproj.io/sync-wave", 0))


def _objects(layout: RepoLayout, app: _App) -> list[dict]:
    path = (app.spec.get("source") or {}).get("path")
    folder = layout.root / str(path) if path else None
    if folder is None or not folder.is_dir():
        return []
    return [d for p in sorted(folder.glob("*.yaml")) for d in documents(layout, p) if isinstance(d, dict)]


def _namespace_order_problems(layout: RepoLayout, apps: list[_App]) -> list[Problem]:
    """Every namespace an Application syncs into must exist by its wave: created in an earlier wave by a
    Namespace object, or by the Application itself (CreateNamespace=true for its destination)."""
    created: dict[str, int] = {}
    contents = {app.path: _objects(layout, app) for app in apps}
    for app in apps:
        for doc in contents[app.path]:
            if doc.get("kind") == "Namespace":
                name = (doc.get("metadata") or {}).get("name", "")
                created[name] = min(created.get(name, _wave(app)), _wave(app))
    problems = []
    for app in apps:
        destination = (app.spec.get("destination") or {}).get("namespace", "")
        own = destination if "CreateNamespace=true" in ((app.spec.get("syncPolicy") or {}).get("syncOptions") or []) else None
        needed = {(d.get("metadata") or {}).get("namespace") or destination for d in contents[app.path]
                  if d.get("kind") not in CLUSTER_SCOPED_KINDS}
        for namespace in sorted(needed - SYSTEM_NAMESPACES - {own}):
            if created.get(namespace, _wave(app)) >= _wave(app):
                problems.append(Problem(app.path, f"Application/{app.name}: syncs into namespace {namespace!r} "
                                        f"(wave {_wave(app)}), which no earlier wave creates",
                                        field="metadata.annotations", fix="add the namespace to a component in "
                                        "apps/ (platform-namespaces creates them first), or sync this app later"))
    return problems


def _app_problems(layout: RepoLayout, env: str, app: _App, projects: dict[str, dict]) -> list[Problem]:
    def problem(field: str, message: str, fix: str) -> Problem:
        return Problem(app.path, f"Application/{app.name}: {message}", field=field, fix=fix)

    spec, found = app.spec, []
    project = projects.get(spec.get("project", ""))
    if project is None:
        return [problem("spec.project", f"project {spec.get('project')!r} does not exist",
                        f"use one of {', '.join(sorted(projects))} (bootstrap/argocd/projects/)")]
    source = spec.get("source") or {}
    if not _matches(source.get("repoURL", ""), project.get("sourceRepos") or []):
        found.append(problem("spec.source.repoURL", f"{source.get('repoURL')!r} is not a source of project "
                             f"{spec['project']}", "add the repository to the project's sourceRepos (apps/ pins)"))
    if "chart" in source:
        if not _EXACT_VERSION.match(str(source.get("targetRevision", ""))):
            found.append(problem("spec.source.targetRevision", f"chart {source['chart']} is pinned to "
                                 f"{source.get('targetRevision')!r}, not an exact version",
                                 "pin an exact release (x.y.z) in apps/<component>/component.yaml"))
    else:
        folder = layout.root / str(source.get("path", ""))
        if not source.get("path") or not folder.is_dir() or not any(folder.glob("*.yaml")):
            found.append(problem("spec.source.path", f"path {source.get('path')!r} holds no manifests in this "
                                 "repository", "render it with `mlops render`, or fix the path"))
        else:
            found += _content_problems(layout, app, folder, project, spec.get("destination") or {})
    destination = spec.get("destination") or {}
    if not _allows(project, destination.get("server", ""), destination.get("namespace", "")):
        found.append(problem("spec.destination", f"project {spec['project']} does not allow "
                             f"{destination.get('server')} namespace {destination.get('namespace')}",
                             "add the destination to the project, or change the Application's namespace"))
    if env in PROD_LIKE and (spec.get("syncPolicy") or {}).get("automated") is not None:
        found.append(problem("spec.syncPolicy.automated", "prod Applications must not sync automatically",
                             f"set argocd.sync.automated: false in {env_file_path(env)}"))
    return found


def _content_problems(layout: RepoLayout, app: _App, folder: Path, project: dict, destination: dict) -> list[Problem]:
    """What the Application would apply: every object's namespace and kind must pass its project."""
    objects = [(f"{layout.relative(path)}: {doc.get('kind', '')}/{(doc.get('metadata') or {}).get('name')}", doc)
               for path in sorted(folder.glob("*.yaml")) for doc in documents(layout, path)
               if isinstance(doc, dict)]
    return project_problems(app.path, app.name, objects, project, destination, CLUSTER_SCOPED_KINDS)


def project_problems(app_path: str, app_name: str, objects: list[tuple[str, dict]], project: dict,
                     destination: dict, cluster_scoped: frozenset[str] | set[str]) -> list[Problem]:
    """Objects an Application applies (``(where, document)``) that its AppProject refuses: a cluster-scoped
    kind outside ``clusterResourceWhitelist``, a namespace outside ``destinations``, a blacklisted kind."""
    server = destination.get("server", "")
    whitelist = project.get("clusterResourceWhitelist") or []
    blacklist = project.get("namespaceResourceBlacklist") or []
    name = project["metadata"]["name"]
    problems = []
    for where, doc in objects:
        kind, group = doc.get("kind", ""), str(doc.get("apiVersion", "")).rpartition("/")[0]
        meta = doc.get("metadata") or {}
        if kind in cluster_scoped:
            if not any(fnmatch.fnmatchcase(group, r.get("group", "")) and fnmatch.fnmatchcase(kind, r.get("kind", ""))
                       for r in whitelist):
                problems.append(Problem(app_path, f"Application/{app_name}: {where} is cluster-scoped and not in "
                                        f"project {name}'s clusterResourceWhitelist",
                                        field="spec.project", fix="whitelist the kind in the project, or drop it"))
            continue
        namespace = meta.get("namespace") or destination.get("namespace", "")
        if not _allows(project, server, namespace):
            problems.append(Problem(app_path, f"Application/{app_name}: {where} goes to namespace {namespace!r}, "
                                    f"which project {name} does not allow",
                                    field="spec.project", fix="add the namespace to the project's destinations"))
        if any(fnmatch.fnmatchcase(group, r.get("group", "")) and fnmatch.fnmatchcase(kind, r.get("kind", ""))
               for r in blacklist):
            problems.append(Problem(app_path, f"Application/{app_name}: {where} is a kind project "
                                    f"{name} refuses", field="spec.project",
                                    fix="move the object to a platform component"))
    return problems


def _allows(project: dict, server: str, namespace: str) -> bool:
    return any(fnmatch.fnmatchcase(server, d.get("server", "")) and fnmatch.fnmatchcase(namespace, d.get("namespace", ""))
               for d in (project.get("spec") or {}).get("destinations") or [])


def _matches(value: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def load_projects(layout: RepoLayout) -> tuple[dict[str, dict], list[Problem]]:
    """The generated AppProjects by name (their spec keys at the top, plus ``metadata`` and ``spec``)."""
    projects, problems = {}, []
    for path in sorted(layout.projects_dir.glob("*.yaml")):
        doc = _load(layout, path)
        if doc.get("kind") == "AppProject":
            projects[doc["metadata"]["name"]] = {**(doc.get("spec") or {}), "metadata": doc["metadata"],
                                                 "spec": doc.get("spec") or {}}
    if not projects:
        problems.append(Problem(PROJECTS_DIR, "no AppProjects", fix="run `mlops render` (without --env)"))
    return projects, problems


def _load(layout: RepoLayout, path: Path) -> dict:
    try:
        parsed = documents(layout, path)
        document = parsed[0] if len(parsed) == 1 else None
    except (OSError, SpecError, yaml.YAMLError):
        return {}  # unreadable files are reported by the rendered-tree checks
    return document if isinstance(document, dict) else {}


def kustomize_problems(layout: RepoLayout) -> list[Problem]:
    """``kubectl kustomize bootstrap/argocd`` must build offline, as the bootstrap step runs it.

    A build that passed is remembered by the hash of every file it reads and of the kubectl binary
    (in the cache folder, never committed), so an unchanged tree is not built again.
    """
    folder = layout.bootstrap_dir / "argocd"
    if not (folder / "kustomization.yaml").is_file():
        return [Problem(layout.relative(folder), "no kustomization.yaml", fix="restore bootstrap/argocd from Git")]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return [Problem(layout.relative(folder), "kubectl is not installed, so the bootstrap build cannot be checked",
                        fix="install kubectl (it bundles kustomize)")]
    marker = layout.cache_dir / "kustomize" / _build_inputs_digest(folder, Path(kubectl))
    if marker.is_file():
        return []
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True,
                            timeout=KUSTOMIZE_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        return [Problem(layout.relative(folder), f"kubectl kustomize fails: {result.stderr.strip()[-500:]}",
                        fix="fix the kustomization; it must build offline from vendored files")]
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs the next run a build
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("built\n", encoding="utf-8")
    return []


def _build_inputs_digest(folder: Path, kubectl: Path) -> str:
    digest = hashlib.sha256()
    binary = kubectl.resolve().stat()
    digest.update(f"{kubectl.resolve()}:{binary.st_size}:{binary.st_mtime_ns}\n".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
