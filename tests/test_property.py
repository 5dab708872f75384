"""Property: any spec the loader accepts renders to manifests that pass every schema and policy."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.check.manifest import Manifest
from generator.check.validate import Validator
from generator.render.renderer import KAFKA_USER_FILES, MODEL_FILES, Renderer
from generator.spec.layout import RepoLayout
from generator.spec.loader import LoadedEnvironment, load_model
from generator.spec.models import Environment
from helpers import environment, release

LAYOUT = RepoLayout(Path(__file__).resolve().parents[1])
VALIDATOR = Validator(LAYOUT.schemas_dir)
RENDERER = Renderer(LAYOUT)
ENVS = {name: Environment.model_validate(environment(name)) for name in ("dev", "staging", "prod")}

names = st.from_regex(r"\A[a-z][a-z0-9-]{0,38}[a-z0-9]\Z")
feature_names = st.from_regex(r"\A[a-z][a-z0-9_]{0,12}\Z")
durations = st.sampled_from(["30s", "1m", "5m", "10m", "1h", "1h30m"])


@st.composite
def features(draw):
    chosen = draw(st.lists(feature_names, min_size=1, max_size=8, unique=True))
    kinds = draw(st.lists(st.sampled_from(["numeric", "categorical"]), min_size=len(chosen), max_size=len(chosen)))
    items = [{"name": n, "type": k} for n, k in zip(chosen, kinds, strict=True)]
    methods = ["tabular"] + (["ks", "cvm_online"] if set(kinds) == {"numeric"} else []) + (
        ["chi2"] if set(kinds) == {"categorical"} else [])
    window = draw(st.integers(10, 100_000))
    return {"method": draw(st.sampled_from(methods)), "features": items, "ert": 10 * window,
            "p_value": draw(st.floats(0.0001, 0.2)), "window": window}


@st.composite
def rollouts(draw):
    strategy = draw(st.sampled_from(["replace", "canary", "shadow", "ab"]))
    if strategy == "replace":
        return None
    if strategy == "shadow":
        return {"strategy": "shadow", "candidates": [{"name": "shadow", "shadow": True, "release": release(2)}]}
    count = 1 if strategy == "canary" else draw(st.integers(1, 3))
    shares = draw(st.lists(st.integers(1, 30), min_size=count, max_size=count))
    candidates = [{"name": f"v{i + 2}", "traffic": share, "release": release(i + 2)} for i, share in enumerate(shares)]
    if draw(st.booleans()):
        candidates.append({"name": "shadow", "shadow": True, "release": release(9)})
    return {"strategy": strategy, "main_traffic": 100 - sum(shares), "candidates": candidates}


@st.composite
def specs(draw):
    name = draw(names)
    low = draw(st.integers(1, 5))
    spec = {
        "model": name,
        "owner": draw(names),
        "release": release(1),
        "serving": {"replicas": {"min": low, "max": draw(st.integers(low, 20))},
                    "cpu_target_percent": draw(st.integers(10, 100)), "workers": draw(st.integers(1, 8))},
        "drift": draw(features()),
        "alerts": {"drift_for": draw(durations), "no_traffic_for": draw(durations),
                   "detector_down_for": draw(durations),
                   "error_rate": draw(st.floats(0.001, 0.5)), "latency_p95_ms": draw(st.integers(1, 10_000)),
                   "interval": draw(st.sampled_from(["10s", "30s", "1m", "2m"]))},
        "retrain": {"on_drift": draw(st.booleans()), "max_runs_per_day": draw(st.integers(0, 24))},
    }
    if (rollout := draw(rollouts())) is not None:
        spec["rollout"] = rollout
    return spec


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), env_name=st.sampled_from(sorted(ENVS)))
def test_any_valid_spec_renders_to_schema_valid_manifests(spec, env_name):
    env = ENVS[env_name]
    path = LAYOUT.model_spec(env_name, spec["model"])
    loaded, problems = load_model(LAYOUT, env, path, yaml.safe_dump(spec, sort_keys=False))
    assert problems == [] and loaded is not None
    files = RENDERER.render_model(LoadedEnvironment(env_name, env, LAYOUT.env_file(env_name), (loaded,)), loaded)
    kafka_users = len(KAFKA_USER_FILES) if env.kafka.security_protocol == "SASL_SSL" else 0
    assert len(files) == len(MODEL_FILES) + kafka_users + 1  # and the model's Application
    found = VALIDATOR.validate(Manifest(f.path, f.document, f.env) for f in files)
    assert found == [], "\n".join(map(str, found))
    sdep = next(f.document for f in files if f.document["kind"] == "SeldonDeployment")
    live = [p.get("traffic", 0) for p in sdep["spec"]["predictors"] if not p.get("shadow")]
    assert sum(live) == 100
