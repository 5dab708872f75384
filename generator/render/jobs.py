"""Context for ``templates/job.yaml.j2``, the generic batch/v1 Job (one-off work next to a sync).

:func:`job_context` fills every key the template reads, with safe defaults: non-root, no API token,
resource requests and limits, no Istio sidecar (a sidecar keeps running after the job's container
exits, so the Job would never complete). Pass ``hook="PostSync"`` (or another Argo CD hook) to run
the Job as an Argo CD resource hook instead of a synced object.

Render it with ``{"jobs": {key: job_context(...)}, "job": key}`` in the template context, the same
way the NetworkPolicy and ConfigMap templates select one entry of a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from generator.spec import naming

ARGOCD_HOOKS = ("PreSync", "Sync", "PostSync", "SyncFail", "PostDelete", "Skip")
HOOK_DELETE_POLICIES = ("BeforeHookCreation", "HookSucceeded", "HookFailed")
DEFAULT_RUN_AS_USER = naming.RUN_AS_UID
"""The uid the platform's own images run as (see components/*/Dockerfile)."""


def job_context(*, name: str, namespace: str, labels: Mapping[str, str], image: str,
                resources: Mapping[str, Mapping[str, str]], command: Sequence[str] = (),
                args: Sequence[str] = (), env: Sequence[Mapping[str, Any]] = (), working_dir: str | None = None,
                container_name: str | None = None, hook: str | None = None,
                hook_delete_policy: str = "BeforeHookCreation", annotations: Mapping[str, str] | None = None,
                pod_labels: Mapping[str, str] | None = None, pod_annotations: Mapping[str, str] | None = None,
                volumes: Sequence[Mapping[str, Any]] = (), backoff_limit: int = 2,
                active_deadline_seconds: int = 600, ttl_seconds_after_finished: int | None = None,
                service_account: str | None = None, run_as_user: int = DEFAULT_RUN_AS_USER,
                istio_sidecar: bool = False) -> dict[str, Any]:
    """The ``jobs[<key>]`` entry ``templates/job.yaml.j2`` renders.

    Args:
        name, namespace, labels: the Job's metadata (labels also go on the pod unless ``pod_labels``).
        image: container image; staging and prod need an ``@sha256:`` digest (``mlops validate``).
        resources: ``{"requests": {...}, "limits": {...}}`` with ``cpu`` and ``memory``.
        command, args, env, working_dir: the container's; ``env`` items are Kubernetes EnvVar mappings
            (``{"name", "value"}`` or ``{"name", "valueFrom": {"secretKeyRef": ...}}``; never a literal secret).
        hook, hook_delete_policy: run as an Argo CD resource hook (e.g. ``PostSync``); ``BeforeHookCreation``
            keeps the last run (and its logs) until the next sync.
        volumes: ConfigMaps to mount read-only: ``{"name", "config_map", "mount_path"}`` and optional ``items``
            (``[{"key", "path"}]``).
        service_account: mount an API token of this ServiceAccount; ``None`` mounts none.
        istio_sidecar: keep Istio's injected sidecar (off: it would keep the pod running after the job).

    Raises:
        ValueError: an unknown hook or delete policy, or a volume without its keys (a programming error).
    """
    if hook is not None and hook not in ARGOCD_HOOKS:
        raise ValueError(f"unknown Argo CD hook {hook!r}; use one of {', '.join(ARGOCD_HOOKS)}")
    if hook_delete_policy not in HOOK_DELETE_POLICIES:
        raise ValueError(f"unknown hook delete policy {hook_delete_policy!r}")
    mounts = []
    for volume in volumes:
        if missing := {"name", "config_map", "mount_path"} - set(volume):
            raise ValueError(f"volume {volume!r} lacks {', '.join(sorted(missing))}")
        mounts.append({"name": volume["name"], "config_map": volume["config_map"],
                       "mount_path": volume["mount_path"], "items": list(volume.get("items") or [])})
    pod_annotations = dict(pod_annotations or {})
    if not istio_sidecar:
        pod_annotations.setdefault("sidecar.istio.io/inject", "false")
    return {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels),
        "annotations": dict(annotations or {}),
        "hook": {"event": hook, "delete_policy": hook_delete_policy} if hook else None,
        "backoff_limit": backoff_limit,
        "active_deadline_seconds": active_deadline_seconds,
        "ttl_seconds_after_finished": ttl_seconds_after_finished,
        "pod_labels": dict(pod_labels if pod_labels is not None else labels),
        "pod_annotations": pod_annotations,
        "service_account": service_account,
        "run_as_user": run_as_user,
        "container": {
            "name": container_name or name,
            "image": image,
            "command": list(command),
            "args": list(args),
            "working_dir": working_dir,
            "env": [dict(item) for item in env],
            "resources": {"requests": dict(resources["requests"]), "limits": dict(resources["limits"])},
        },
        "volumes": mounts,
    }
