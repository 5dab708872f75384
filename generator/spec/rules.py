"""Rules that span fields or files, checked after the specs have the right shape.

Each rule returns :class:`~generator.spec.errors.Problem` objects with the exact field path, so the loader
can add the file and line. They mirror Seldon's admission webhook (traffic, shadows) and the platform's
policies (digest-pinned images in staging and prod) so mistakes surface before a pull request.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal

from generator.spec.errors import Problem
from generator.spec.layout import env_path
from generator.spec.models import (
    ARTIFACT_SCHEMES,
    KAFKA_AUTH_REQUIRED_ENVIRONMENTS,
    MODEL_NAME_MAX,
    PREDICTOR_NAME_MAX,
    Environment,
    ModelSpec,
    Release,
    Resources,
    is_digest_pinned,
    requires_digest,
)

_QUANTITY_SUFFIXES = {
    "": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
}


def parse_quantity(quantity: str) -> Decimal:
    """The numeric value of a Kubernetes quantity already checked by ``spec.QUANTITY_RE``."""
    number = quantity.rstrip("kmMGTi")
    return Decimal(number) * _QUANTITY_SUFFIXES[quantity[len(number):]]


def threads_per_process(cpu_limit: str, processes: int = 1) -> int:
    """BLAS/OpenMP threads for each of ``processes`` processes sharing a container's ``cpu_limit``.

    numpy's OpenBLAS (and MKL, OpenMP) start one thread per core of the node, not of the CPU limit, so
    several gunicorn workers on a large node would run dozens of threads against a quota of a core or
    two and be throttled. Each process gets its share of the limit, whole cores, at least one.
    """
    return max(1, int(parse_quantity(cpu_limit) // processes))


def parse_duration_seconds(duration: str) -> int:
    """Seconds in a duration already checked by ``spec.DURATION_RE`` (``1h30m`` → 5400)."""
    total, digits = 0, ""
    for char in duration:
        if char.isdigit():
            digits += char
        else:
            total += int(digits) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[char]
            digits = ""
    return total


def check_environment(env: Environment, dir_name: str) -> list[Problem]:
    """Rules on one ``environment.yaml``; ``dir_name`` is the folder it was found in."""
    problems = []
    if env.name != dir_name:
        problems.append(Problem("", f"is {env.name!r} but the file is in {env_path(dir_name)}/",
                                field="name", fix=f"set name: {dir_name}"))
    if requires_digest(env.name) and not env.images.require_digest:
        problems.append(Problem("", f"must be true in {env.name}: staging and prod run only digest-pinned images",
                                field="images.require_digest", fix="set images.require_digest: true"))
    if env.name in KAFKA_AUTH_REQUIRED_ENVIRONMENTS and env.kafka.security_protocol != "SASL_SSL":
        problems.append(Problem("", f"must be SASL_SSL in {env.name}: model servers and drift detectors authenticate "
                                "to Kafka as their own KafkaUser over TLS", field="kafka.security_protocol",
                                fix="set kafka.security_protocol: SASL_SSL and kafka.bootstrap_servers to the tls "
                                    "listener (<cluster>-kafka-bootstrap.<namespace>.svc:9093)"))
    problems += _resource_problems(env.defaults.serving.resources, "defaults.serving.resources")
    problems += _resource_problems(env.defaults.drift.resources, "defaults.drift.resources")
    return problems


def check_model(spec: ModelSpec, env: Environment, file_stem: str) -> list[Problem]:
    """Rules on one release spec in the context of its environment."""
    problems = list(_naming_problems(spec, file_stem))
    problems += _rollout_problems(spec)
    problems += _release_problems(spec.release, "release", env)
    for index, candidate in enumerate(spec.rollout.candidates):
        problems += _release_problems(candidate.release, f"rollout.candidates[{index}].release", env)
    problems += _drift_problems(spec)
    problems += _serving_problems(spec)
    problems += _alert_problems(spec)
    return problems


def _naming_problems(spec: ModelSpec, file_stem: str) -> Iterator[Problem]:
    if spec.model != file_stem:
        yield Problem("", f"is {spec.model!r} but the file is named {file_stem}.yaml", field="model",
                      fix=f"set model: {file_stem}, or rename the file to {spec.model}.yaml")
    if len(spec.model) > MODEL_NAME_MAX:
        yield Problem("", f"is {len(spec.model)} characters; at most {MODEL_NAME_MAX} keep derived names "
                      "(Services, Seldon deployments, Grafana uids) within Kubernetes' 63", field="model",
                      fix="choose a shorter model name")


def _rollout_problems(spec: ModelSpec) -> Iterator[Problem]:
    rollout = spec.rollout
    live = [c for c in rollout.candidates if not c.shadow]
    shadows = [i for i, c in enumerate(rollout.candidates) if c.shadow]
    strategy = rollout.strategy

    if strategy == "replace" and rollout.candidates:
        yield Problem("", "strategy replace takes no candidates", field="rollout.candidates",
                      fix="remove the candidates, or set rollout.strategy to canary, shadow or ab")
    if strategy == "canary" and len(live) != 1:
        yield Problem("", f"canary needs exactly one candidate with traffic, found {len(live)}",
                      field="rollout.candidates", fix="give one candidate with traffic: 1-99 (shadow: false)")
    if strategy == "shadow" and (live or not shadows):
        yield Problem("", "shadow needs exactly one candidate with shadow: true and no live candidates",
                      field="rollout.candidates", fix="set shadow: true on the one candidate, traffic: 0")
    if strategy == "ab" and not live:
        yield Problem("", "ab needs at least one candidate with traffic", field="rollout.candidates",
                      fix="add a candidate with traffic, e.g. 50")
    if len(shadows) > 1:
        yield Problem("", f"{len(shadows)} candidates are shadows; Seldon allows at most one",
                      field=f"rollout.candidates[{shadows[1]}].shadow", fix="keep shadow: true on one candidate only")

    for index, candidate in enumerate(rollout.candidates):
        where = f"rollout.candidates[{index}]"
        if candidate.shadow and candidate.traffic:
            yield Problem("", "a shadow gets a copy of all traffic; its own share must be 0",
                          field=f"{where}.traffic", fix="remove traffic from the shadow candidate")
        if not candidate.shadow and candidate.traffic == 0:
            yield Problem("", "a live candidate with 0% traffic never serves",
                          field=f"{where}.traffic", fix="give it traffic, or set shadow: true")
        if candidate.name == "main" or candidate.name in [c.name for c in rollout.candidates[:index]]:
            yield Problem("", f"predictor name {candidate.name!r} is already used (the release is 'main')",
                          field=f"{where}.name", fix="give every candidate a unique name other than main")
        if len(candidate.name) > PREDICTOR_NAME_MAX:
            yield Problem("", f"is longer than {PREDICTOR_NAME_MAX} characters", field=f"{where}.name",
                          fix="use a short predictor name such as canary or v2")
        if candidate.release == spec.release:
            yield Problem("", "is the same release as main", field=f"{where}.release",
                          fix="give the candidate a different model version, or use strategy replace")

    total = rollout.effective_main_traffic + sum(c.traffic for c in live)
    if rollout.main_traffic is not None and total != 100:
        yield Problem("", f"traffic sums to {total}%: main {rollout.effective_main_traffic} + candidates "
                      f"{[c.traffic for c in live]}", field="rollout.main_traffic",
                      fix=f"make main_traffic {100 - sum(c.traffic for c in live)} so the total is 100")
    elif not 0 < rollout.effective_main_traffic <= 100:
        yield Problem("", f"candidates take {100 - rollout.effective_main_traffic}% of traffic, leaving main "
                      f"{rollout.effective_main_traffic}%", field="rollout.candidates",
                      fix="lower the candidates' traffic so that main keeps a share and the total is 100")


def _release_problems(release: Release, where: str, env: Environment) -> Iterator[Problem]:
    if release.artifact_uri.startswith("models:/"):
        yield Problem("", f"{release.artifact_uri!r} is an MLflow registry URI, which Seldon cannot download",
                      field=f"{where}.artifact_uri",
                      fix="run mlops generate-model with --mlflow-uri to resolve it, or give the s3:// artifact URI")
    elif not release.artifact_uri.startswith(ARTIFACT_SCHEMES):
        yield Problem("", f"{release.artifact_uri!r} has no supported scheme", field=f"{where}.artifact_uri",
                      fix=f"use one of {', '.join(ARTIFACT_SCHEMES)}")
    if not release.detector.uri.startswith(ARTIFACT_SCHEMES):
        yield Problem("", f"{release.detector.uri!r} has no supported scheme", field=f"{where}.detector.uri",
                      fix=f"use one of {', '.join(ARTIFACT_SCHEMES)}")
    if requires_digest(env.name, env.images.require_digest):
        if release.artifact_sha256 is None:
            yield Problem("", f"{env.name} serves only hash-pinned model artifacts, and the release has no "
                          "artifact digest", field=f"{where}.artifact_sha256",
                          fix="run mlops generate-model --registry-version N with MLflow in dev (it reads the "
                              "digest the retrain flow recorded) or --artifact-sha256 HEX, then promote; "
                              "python -m service_kit.artifact_digest MODEL_DIR prints it")
        for key in ("server_image", "drift_image"):
            image = getattr(release, key)
            if not is_digest_pinned(image):
                yield Problem("", f"{image!r} is a mutable tag; {env.name} runs only digest-pinned images",
                              field=f"{where}.{key}",
                              fix=f"pin it as {image.split('@')[0].rsplit(':', 1)[0] if '/' in image else image}"
                                  "@sha256:<digest> (the digest printed by the image build)")


def _drift_problems(spec: ModelSpec) -> Iterator[Problem]:
    drift = spec.drift
    types = {f.type for f in drift.features}
    needs = {"ks": "numeric", "cvm_online": "numeric", "chi2": "categorical"}.get(drift.method)
    if needs and types != {needs}:
        yield Problem("", f"method {drift.method} takes only {needs} features", field="drift.method",
                      fix="use method tabular for mixed features, or change the feature types")
    if drift.method == "cvm_online" and drift.ert < 10 * drift.window:
        # ERT counts records, not windows: at ert == window about 63% of windows would hold a false alarm.
        share = 100 * (1 - math.exp(-drift.window / drift.ert))
        yield Problem("", f"{drift.ert} counts records; with window {drift.window} about {share:.0f}% of windows "
                      "would raise a false alarm", field="drift.ert", fix=f"set ert to at least {10 * drift.window}")
    seen: set[str] = set()
    for index, feature in enumerate(drift.features):
        if feature.name in seen:
            yield Problem("", f"feature {feature.name!r} is listed twice", field=f"drift.features[{index}].name",
                          fix="list every feature once, in the order the model expects them")
        seen.add(feature.name)
        if feature.categories is not None and feature.type != "categorical":
            yield Problem("", "categories only apply to categorical features",
                          field=f"drift.features[{index}].categories",
                          fix="set type: categorical or remove categories")


def _serving_problems(spec: ModelSpec) -> Iterator[Problem]:
    replicas = spec.serving.replicas
    if replicas.min > replicas.max:
        yield Problem("", f"min {replicas.min} is above max {replicas.max}", field="serving.replicas",
                      fix="make replicas.min <= replicas.max")
    yield from _resource_problems(spec.serving.resources, "serving.resources")
    yield from _resource_problems(spec.drift.resources, "drift.resources")


def _resource_problems(resources: Resources, where: str) -> list[Problem]:
    problems = []
    for key in ("cpu", "memory"):
        request, limit = getattr(resources.requests, key), getattr(resources.limits, key)
        if parse_quantity(request) > parse_quantity(limit):
            problems.append(Problem("", f"request {request} is above limit {limit}", field=f"{where}.requests.{key}",
                                    fix=f"make requests.{key} <= limits.{key}"))
    return problems


def _alert_problems(spec: ModelSpec) -> Iterator[Problem]:
    interval = parse_duration_seconds(spec.alerts.interval)
    # Grafana rejects the whole provisioning directory when a group interval is not a multiple of 10 s.
    if interval == 0 or interval % 10:
        yield Problem("", f"{spec.alerts.interval} is not a positive multiple of 10s, which Grafana requires",
                      field="alerts.interval", fix="use e.g. 30s, 1m or 5m")
