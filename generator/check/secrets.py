"""Credentials an environment needs versus what it provides: sealed Secrets in Git, or ExternalSecrets.

Rendered manifests only reference Secrets by name; this check makes sure each referenced Secret is
provided by the environment's backend (a SealedSecret committed in ``environments/<env>/secrets/``, or an
item of ``platform.secrets.items`` for external-secrets), so nothing syncs waiting for a missing Secret.
"""

from __future__ import annotations

import yaml

from generator.check.manifest import Manifest
from generator.spec import naming, yamlio
from generator.spec.components import LoadedComponent, enabled_components, load_components
from generator.spec.errors import Problem, SpecError
from generator.spec.layout import RepoLayout, sealed_secret_path
from generator.spec.loader import LoadedEnvironment, load_environment


def secret_manifests(layout: RepoLayout, loaded: LoadedEnvironment) -> tuple[list[Manifest], list[Problem]]:
    """The sealed credentials committed in ``environments/<env>/secrets/`` (sealed-secrets backend)."""
    if loaded.env.platform.secrets.backend != "sealed-secrets":
        return [], []
    manifests, problems = [], []
    for path in sorted(layout.secrets_dir(loaded.name).glob("*.yaml")):
        display = layout.relative(path)
        try:
            documents = yamlio.load_all(layout.read_text(path))
        except SpecError as exc:
            problems += exc.problems
            continue
        except yaml.YAMLError as exc:
            problems.append(Problem(display, f"not valid YAML: {exc}", fix="re-create it with kubeseal --format yaml"))
            continue
        manifests += [Manifest(display, doc, loaded.name) for doc in documents if doc is not None]
    return manifests, problems


def required_secrets(loaded: LoadedEnvironment, components: list[LoadedComponent]) -> dict[tuple[str, str], str]:
    """Every Secret the environment's manifests reference, as (namespace, name) → who needs it."""
    env = loaded.env
    needed = {(env.namespaces.models, env.s3.credentials_secret): "model servers (s3.credentials_secret)",
              (env.namespaces.models, naming.DRIFT_S3_SECRET): "drift detectors (their own read-only S3 identity)"}
    if env.kafka.security_protocol == "SASL_SSL" and loaded.models:
        needed[(env.namespaces.models, naming.KAFKA_CA_SECRET)] = ("Kafka clients (a copy of Strimzi's "
                                                                   f"{env.kafka.cluster}-cluster-ca-cert)")
        for model in loaded.models:
            names = naming.model_names(model.spec.model, env.name)
            for user in (names.kafka_user_model_server, names.kafka_user_drift_detector):
                secret = naming.kafka_password_secret(user)
                needed[(env.namespaces.kafka, secret)] = f"KafkaUser {user} (its SCRAM password)"
                needed[(env.namespaces.models, secret)] = f"{user}'s pods (the same password, mounted)"
    for component in enabled_components(components, env):
        for name in component.spec.secrets:
            needed.setdefault((component.spec.namespace, name), f"component {component.name}")
    return needed


def secret_problems(layout: RepoLayout, loaded: LoadedEnvironment, components: list[LoadedComponent],
                    sealed: list[Manifest]) -> list[Problem]:
    """Referenced Secrets that no SealedSecret (or ExternalSecret) of the environment provides."""
    env = loaded.env
    display = layout.relative(loaded.path)
    if env.platform.secrets.backend == "external-secrets":
        provided = {(item.namespace, item.name) for item in env.platform.secrets.items}
        if env.platform.secrets.store is None:
            return [Problem(display, "external-secrets needs a secret store", field="platform.secrets.store",
                            fix="set platform.secrets.store: {kind: ClusterSecretStore, name: <store>}")]
    else:
        provided = {((m.doc.get("metadata") or {}).get("namespace"), (m.doc.get("metadata") or {}).get("name"))
                    for m in sealed if m.doc.get("kind") == "SealedSecret"}
    problems = []
    for (namespace, name), needed_by in sorted(required_secrets(loaded, components).items()):
        if (namespace, name) in provided:
            continue
        key, source, note = _known_keys(env, name)
        if env.platform.secrets.backend == "external-secrets":
            fix = f"add {{name: {name}, namespace: {namespace}, keys: [{key or '...'}]}} to platform.secrets.items{note}"
        else:
            fix = (f"seal it: kubectl create secret generic {name} -n {namespace} {source} "
                   f"--dry-run=client -o yaml | kubeseal --cert sealed-secrets-{env.name}.crt --format yaml "
                   f"> {sealed_secret_path(env.name, namespace, name)}{note}")
        problems.append(Problem(display, f"Secret {namespace}/{name} is needed by {needed_by} but nothing in "
                                f"{env.platform.secrets.backend} provides it", field="platform.secrets", fix=fix))
    return problems


def committed_secret_problems(layout: RepoLayout, envs: list[str]) -> list[Problem]:
    """For ``mlops validate``: every Secret each of ``envs`` needs that nothing committed provides (the
    sealed files are inputs, not rendered output: one deleted after rendering leaves the output as it was)."""
    try:
        components = load_components(layout)
    except SpecError as exc:
        return exc.problems
    problems = []
    for name in envs:
        try:
            loaded = load_environment(layout, name)
        except SpecError as exc:
            problems += exc.problems
            continue
        sealed, found = secret_manifests(layout, loaded)
        problems += found + secret_problems(layout, loaded, components, sealed)
    return problems


def _known_keys(env, name: str) -> tuple[str, str, str]:
    """(key, kubectl source, note) of a Secret whose keys this project defines; generic otherwise."""
    if name.endswith(naming.kafka_password_secret("")):
        return (naming.KAFKA_PASSWORD_KEY, f'--from-literal={naming.KAFKA_PASSWORD_KEY}="$PASSWORD"',
                f" (the same password in namespaces {env.namespaces.kafka} and {env.namespaces.models}; README, \"Kafka\")")
    if name == naming.KAFKA_CA_SECRET:
        return (naming.KAFKA_CA_KEY, f"--from-file={naming.KAFKA_CA_KEY}",
                f" (ca.crt of Secret {env.kafka.cluster}-cluster-ca-cert in namespace {env.namespaces.kafka}, "
                "after the cluster's first sync; README, \"Kafka\")")
    return "", "--from-literal=KEY=VALUE", ""
