"""``python -m drift_detector fit``: fit a detector on reference data and persist it with its sha256.

Usage::

    python -m drift_detector fit --reference data.csv --config config.yaml --out detector.npz \\
        [--backend builtin|alibi] [--n-bootstraps N] [--window-sizes 20,100] [--seed S]

``--reference`` is a CSV file whose header names the features (extra columns are ignored) or an
``.npz`` with one 1-D array per feature name. Categorical columns hold the category values listed in
the config (``grocery``, ``0``...); they are stored as the category's index. ``--config`` is the
detector config file (the ``config.yaml`` of the rendered ConfigMap, or just its ``method``,
``p_value``, ``correction``, ``window``, ``ert`` and ``features``). The artifact is written to
``--out``, its sha256 to ``<out>.sha256`` (``sha256sum`` format), and both are printed: put the hash
in the release spec's ``detector.sha256``.

Exit status (:class:`drift_detector.ExitCode`): 0 on success, 1 for bad input (message on stderr naming the
file, column and row), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from drift_detector import ExitCode
from drift_detector.artifacts import save
from drift_detector.detector import BACKENDS, CORRECTIONS, METHODS, FeatureSpec, fit
from drift_detector.methods.base import check_config

__all__ = ["FitInputError", "load_fit_config", "main", "read_reference"]

# Keys of the rendered config file that fitting does not use but must accept.
_IGNORED_KEYS = {"model", "environment", "predictors"}
_DEFAULTS: dict[str, Any] = {"method": "tabular", "p_value": 0.01, "correction": "bonferroni", "window": 1000, "ert": 1000}


class FitInputError(ValueError):
    """Bad reference data or config; the message names the file and the offending column or key."""


def load_fit_config(path: Path) -> dict[str, Any]:
    """Read the detector config file: returns method, p_value, correction, window, ert and features
    (a list of :class:`FeatureSpec`)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FitInputError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise FitInputError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise FitInputError(f"{path}: the config must be a mapping")
    unknown = set(data) - set(_DEFAULTS) - {"features"} - _IGNORED_KEYS
    if unknown:
        raise FitInputError(f"{path}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    cfg = {key: data.get(key, default) for key, default in _DEFAULTS.items()}
    if cfg["method"] not in METHODS:
        raise FitInputError(f"{path}: method {cfg['method']!r} is not one of {', '.join(METHODS)}")
    if cfg["correction"] not in CORRECTIONS:
        raise FitInputError(f"{path}: correction {cfg['correction']!r} is not one of {', '.join(CORRECTIONS)}")
    for key, kind in (("p_value", (int, float)), ("window", int), ("ert", int)):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], kind):
            raise FitInputError(f"{path}: {key} must be a number, got {cfg[key]!r}")
    raw = data.get("features")
    if not isinstance(raw, list) or not raw:
        raise FitInputError(f"{path}: features must be a non-empty list")
    features = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise FitInputError(f"{path}: features[{i}] needs a name")
        kind = item.get("type", item.get("kind"))
        if kind not in ("numeric", "categorical"):
            raise FitInputError(f"{path}: feature {item['name']!r}: type must be numeric or categorical, got {kind!r}")
        cats = item.get("categories")
        if kind == "categorical" and (not isinstance(cats, list) or not cats):
            raise FitInputError(f"{path}: categorical feature {item['name']!r} needs a list of categories")
        features.append(FeatureSpec(item["name"], kind, list(cats) if kind == "categorical" else None))
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise FitInputError(f"{path}: feature names must be unique")
    cfg["features"] = features
    try:  # method vs feature types and value ranges, before any data is read
        check_config(cfg["method"], features, cfg["p_value"], cfg["correction"], cfg["window"], cfg["ert"], "builtin")
    except ValueError as exc:
        raise FitInputError(f"{path}: {exc}") from None
    return cfg


def _category_lookup(feature: FeatureSpec) -> dict[str, int]:
    # CSV cells are text: match a category by its text ("grocery", "0") and, for non-strings, by its
    # JSON spelling too ("true" for a YAML true).
    lut: dict[str, int] = {}
    for code, cat in enumerate(feature.categories or []):
        lut.setdefault(str(cat), code)
        if not isinstance(cat, str):
            lut.setdefault(json.dumps(cat), code)
            if isinstance(cat, float) and cat.is_integer():
                lut.setdefault(str(int(cat)), code)
    return lut


def _cell_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


def _column(feature: FeatureSpec, values: Sequence[Any], source: str, row_offset: int) -> np.ndarray:
    out = np.empty(len(values))
    if feature.kind == "numeric":
        for i, value in enumerate(values):
            try:
                x = float(value)
            except (TypeError, ValueError):
                raise FitInputError(
                    f"{source}: column {feature.name!r} row {i + row_offset}: {value!r} is not a number"
                ) from None
            if not math.isfinite(x):
                raise FitInputError(f"{source}: column {feature.name!r} row {i + row_offset}: {value!r} is not finite")
            out[i] = x
        return out
    lut = _category_lookup(feature)
    for i, value in enumerate(values):
        code = lut.get(_cell_text(value))
        if code is None:
            raise FitInputError(
                f"{source}: column {feature.name!r} row {i + row_offset}: {value!r} is not one of the "
                f"categories {feature.categories}"
            )
        out[i] = code
    return out


def read_reference(path: Path, features: Sequence[FeatureSpec]) -> np.ndarray:
    """Reference data as float64 ``(n, n_features)`` in feature order, categorical values as codes."""
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                cols = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError) as exc:
            raise FitInputError(f"{path}: cannot read .npz ({exc})") from exc
        missing = [f.name for f in features if f.name not in cols]
        if missing:
            raise FitInputError(
                f"{path}: no array for column(s) {', '.join(map(repr, missing))} (arrays: {', '.join(sorted(cols))})"
            )
        lengths = {f.name: cols[f.name].shape for f in features}
        if any(len(s) != 1 for s in lengths.values()) or len({s[0] for s in lengths.values()}) != 1:
            raise FitInputError(f"{path}: feature arrays must be 1-D and of equal length, got {lengths}")
        data = [_column(f, cols[f.name].tolist(), str(path), 0) for f in features]
    else:
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                header = next(reader, None)
                rows = list(reader)
        except OSError as exc:
            raise FitInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        except (UnicodeDecodeError, csv.Error) as exc:
            raise FitInputError(f"{path}: not a readable CSV file ({exc})") from exc
        if not header:
            raise FitInputError(f"{path}: empty file, expected a header naming the features")
        header = [h.strip() for h in header]
        index = {name: i for i, name in enumerate(header)}
        missing = [f.name for f in features if f.name not in index]
        if missing:
            raise FitInputError(
                f"{path}: missing column(s) {', '.join(map(repr, missing))} (header: {', '.join(header)})"
            )
        short = next((i for i, r in enumerate(rows) if len(r) != len(header)), None)
        if short is not None:
            raise FitInputError(f"{path}: row {short + 2} has {len(rows[short])} fields, the header has {len(header)}")
        # Row numbers in messages count the header as row 1, like a spreadsheet.
        data = [_column(f, [r[index[f.name]] for r in rows], str(path), 2) for f in features]
    ref = np.stack(data, axis=1) if data else np.empty((0, 0))
    if ref.shape[0] < 2:
        raise FitInputError(f"{path}: at least 2 reference rows are needed, got {ref.shape[0]}")
    return ref


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m drift_detector fit",
        description="Fit a drift detector on reference data and write it as a hash-pinned artifact.",
    )
    p.add_argument("--reference", required=True, type=Path, help="reference data: CSV with a header, or .npz")
    p.add_argument("--config", required=True, type=Path, help="detector config file (config.yaml)")
    p.add_argument("--out", required=True, type=Path, help="artifact to write (.npz)")
    p.add_argument("--backend", choices=BACKENDS, default="builtin", help="scoring backend (default builtin)")
    p.add_argument("--n-bootstraps", type=int, default=None, help="cvm_online: simulated streams")
    p.add_argument("--window-sizes", default=None, help="cvm_online: comma-separated test window sizes")
    p.add_argument("--seed", type=int, default=None, help="cvm_online: random seed (reproducible thresholds)")
    return p


def main(argv: list[str] | None = None) -> ExitCode:
    """Run the fit subcommand (``argv`` without the leading ``fit``; a leading ``fit`` is tolerated)."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["fit"]:
        args_in = args_in[1:]
    try:
        args = _parser().parse_args(args_in)
    except SystemExit as exc:  # argparse printed the usage error (2), or the help (0)
        return ExitCode.CONFIG if exc.code else ExitCode.OK
    try:
        cfg = load_fit_config(args.config)
        reference = read_reference(args.reference, cfg["features"])
        sizes = None
        if args.window_sizes:
            try:
                sizes = [int(s) for s in args.window_sizes.split(",") if s.strip()]
            except ValueError:
                raise FitInputError(f"--window-sizes {args.window_sizes!r}: expected integers like 20,100") from None
        started = time.perf_counter()
        detector = fit(
            reference,
            cfg["features"],
            cfg["method"],
            p_value=float(cfg["p_value"]),
            correction=cfg["correction"],
            window=cfg["window"],
            ert=cfg["ert"],
            backend=args.backend,
            window_sizes=sizes,
            n_bootstraps=args.n_bootstraps,
            seed=args.seed,
        )
        detector.meta.update({"reference_rows": int(reference.shape[0]), "reference_file": args.reference.name})
        elapsed = time.perf_counter() - started
        digest = save(detector, args.out)
        Path(f"{args.out}.sha256").write_text(f"{digest}  {args.out.name}\n", encoding="utf-8")
    except (FitInputError, ValueError, RuntimeError, OSError) as exc:
        print(f"fit: error: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    print(f"{args.out}")
    print(f"sha256 {digest}")
    print(
        f"method {detector.method}, {reference.shape[0]} reference rows x {reference.shape[1]} features, "
        f"fitted in {elapsed:.2f}s",
        file=sys.stderr,
    )
    return ExitCode.OK
