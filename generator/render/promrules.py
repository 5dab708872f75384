"""Translate rendered Grafana alert rules into the equivalent Prometheus rule file, for ``promtool``.

Grafana evaluates each rendered rule as a pipeline: an instant PromQL query (``A``), a ``reduce``
(``B``) and a ``threshold`` (``C``, the rule's condition). Every series the query returns becomes one
alert instance with the series' labels plus the rule's labels, pending for ``for`` before it fires.
Prometheus evaluates ``<query> > <threshold>`` with the same ``for`` and labels the same way, so the
pipeline translates one to one, and ``promtool test rules`` can then prove that the rendered PromQL
fires on real metric names and labels.

Why translate instead of rendering the alert condition straight into the query: Grafana treats a
query used as the condition as firing when its value is non-zero, so ``sum(...) < 1`` (the no-traffic
rule) would never fire on its value 0; and the reduce step keeps the measured value for annotations
(``$values.B.Value``). The translation is strict: anything whose Prometheus meaning would differ
(range queries, other reducers or modes, hysteresis, math expressions, ``NoData``/``KeepLast``
states, ...) is refused with the rule and field named, never approximated.

Mapping: reduce ``last``/``min``/``max``/``mean`` of an instant query is its one sample, so the
identity; threshold ``gt``/``lt``/``within_range``/``outside_range`` become PromQL comparisons (which
keep the sample value, so ``$values.<reduce>.Value`` becomes ``$value``); ``noDataState: Alerting``
adds ``or absent(<query>)``; ``OK`` adds nothing; Grafana's ``grafana_folder`` label and its title as
``alertname`` are kept. ``execErrState`` has no Prometheus counterpart (a failing query fires nothing).
"""

from __future__ import annotations

import re
from typing import Any

from generator.spec.errors import Problem, RenderError

EXPRESSION_DATASOURCE = "__expr__"
IDENTITY_REDUCERS = frozenset({"last", "min", "max", "mean"})
"""Reducers that return the single sample of an instant query unchanged."""
TRANSLATED_NO_DATA = frozenset({"OK", "Alerting"})
# Rule keys that change when or whether a Grafana rule fires and have no faithful translation here.
REFUSED_RULE_KEYS = ("record", "keepFiringFor", "missing_series_evals_to_resolve")
_VALUES_REF = re.compile(r"\$values\.([A-Za-z0-9_]+)\.Value")


def prometheus_rules(document: dict, source: str) -> dict:
    """The Prometheus rule file equivalent to one Grafana alerting provisioning file.

    Args:
        document: the parsed provisioning file (``apiVersion: 1``, ``groups``).
        source: where it came from, named in errors.

    Returns:
        ``{"groups": [...]}`` in Prometheus' rule-file format; alert names are the Grafana titles.

    Raises:
        RenderError: with every rule (and field) that has no faithful Prometheus equivalent.
    """
    problems: list[Problem] = []
    groups = []
    for g, group in enumerate(document.get("groups") or []):
        rules = []
        for r, rule in enumerate(group.get("rules") or []):
            where = f"groups[{g}].rules[{r}]"
            try:
                rules.append(_alerting_rule(rule, group, where, source))
            except _Untranslatable as exc:
                problems.append(Problem(source, f"rule {rule.get('title')!r}: {exc.message}",
                                        field=exc.field or where, fix=exc.fix))
        groups.append({"name": group["name"], "interval": group["interval"], "rules": rules})
    if problems:
        raise RenderError(problems)
    return {"groups": groups}


def alert_names(document: dict) -> list[str]:
    """The ``alertname`` of every rule in a Grafana provisioning file (Grafana uses the title)."""
    return [rule["title"] for group in document.get("groups") or [] for rule in group.get("rules") or []]


class _Untranslatable(Exception):
    def __init__(self, message: str, field: str | None = None, fix: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.fix = message, field, fix


def _alerting_rule(rule: dict, group: dict, where: str, source: str) -> dict:
    for key in REFUSED_RULE_KEYS:
        if key in rule:
            raise _Untranslatable(f"{key} has no faithful Prometheus translation", f"{where}.{key}",
                                  "remove it, or extend generator/render/promrules.py with a tested translation")
    if rule.get("isPaused"):
        raise _Untranslatable("a paused rule never fires", f"{where}.isPaused", "unpause it")
    queries = {entry["refId"]: (i, entry) for i, entry in enumerate(rule.get("data") or [])}
    condition = rule.get("condition")
    if condition not in queries:
        raise _Untranslatable(f"condition {condition!r} names no data entry", f"{where}.condition",
                              "set condition to the refId of the threshold expression")

    index, threshold = queries[condition]
    model = threshold.get("model") or {}
    if threshold.get("datasourceUid") != EXPRESSION_DATASOURCE or model.get("type") != "threshold":
        raise _Untranslatable("the condition is not a threshold expression (a raw query or reduce fires on "
                              "any non-zero value, which PromQL comparisons do not mirror)",
                              f"{where}.data[{index}]", "end the pipeline with a threshold expression")
    comparison = _comparison(model, f"{where}.data[{index}].model")

    reduce_ref = model.get("expression")
    if reduce_ref not in queries:
        raise _Untranslatable(f"threshold input {reduce_ref!r} names no data entry",
                              f"{where}.data[{index}].model.expression")
    index, upstream = queries[reduce_ref]
    value_refs = {reduce_ref}
    if upstream.get("datasourceUid") == EXPRESSION_DATASOURCE:
        reduce = upstream.get("model") or {}
        field = f"{where}.data[{index}].model"
        if reduce.get("type") != "reduce":
            raise _Untranslatable(f"expression type {reduce.get('type')!r} is not translated", f"{field}.type",
                                  "use query -> reduce -> threshold")
        if reduce.get("reducer") not in IDENTITY_REDUCERS or reduce.get("settings"):
            raise _Untranslatable(f"reducer {reduce.get('reducer')!r} with settings {reduce.get('settings')} "
                                  "is not the identity on an instant sample", f"{field}.reducer",
                                  f"use one of {sorted(IDENTITY_REDUCERS)} without settings")
        query_ref = reduce.get("expression")
        if query_ref not in queries:
            raise _Untranslatable(f"reduce input {query_ref!r} names no data entry", f"{field}.expression")
        index, upstream = queries[query_ref]
        value_refs.add(query_ref)
    expr = _instant_query(upstream, f"{where}.data[{index}]")

    condition_expr = comparison(f"({expr})")
    no_data = rule.get("noDataState", "NoData")
    if no_data not in TRANSLATED_NO_DATA:
        raise _Untranslatable(f"noDataState {no_data!r} raises Grafana's own DatasourceNoData alert, not this rule",
                              f"{where}.noDataState", "use OK or Alerting")
    if no_data == "Alerting":
        condition_expr = f"{condition_expr} or absent({expr})"

    translated: dict[str, Any] = {"alert": rule["title"], "expr": condition_expr}
    if rule.get("for"):
        translated["for"] = rule["for"]
    # Grafana adds the folder title as a label to every alert instance it sends.
    translated["labels"] = {**(rule.get("labels") or {}), "grafana_folder": group["folder"]}
    annotations = {key: _annotation(text, value_refs, f"{where}.annotations.{key}")
                   for key, text in (rule.get("annotations") or {}).items()}
    if annotations:
        translated["annotations"] = annotations
    return translated


def _comparison(model: dict, field: str):
    if model.get("unloadEvaluator"):
        raise _Untranslatable("a recovery threshold (unloadEvaluator) has no PromQL equivalent",
                              f"{field}.unloadEvaluator", "remove it")
    conditions = model.get("conditions") or []
    if len(conditions) != 1:
        raise _Untranslatable(f"{len(conditions)} threshold conditions, expected exactly one", f"{field}.conditions")
    evaluator = conditions[0].get("evaluator") or {}
    kind, params = evaluator.get("type"), [_number(p) for p in evaluator.get("params") or []]
    # Grafana's ranges are exclusive at both ends, like PromQL's strict comparisons.
    operators = {
        "gt": (1, lambda e: f"{e} > {params[0]}"),
        "lt": (1, lambda e: f"{e} < {params[0]}"),
        "within_range": (2, lambda e: f"{e} > {params[0]} < {params[1]}"),
        "outside_range": (2, lambda e: f"{e} < {params[0]} or {e} > {params[1]}"),
    }
    if kind not in operators:
        raise _Untranslatable(f"threshold type {kind!r} is not translated", f"{field}.conditions[0].evaluator.type",
                              f"use one of {sorted(operators)}")
    arity, build = operators[kind]
    if len(params) < arity:
        raise _Untranslatable(f"threshold {kind} needs {arity} params, has {len(params)}",
                              f"{field}.conditions[0].evaluator.params")
    return build


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Untranslatable(f"threshold parameter {value!r} is not a number")
    return repr(value)


def _instant_query(entry: dict, field: str) -> str:
    model = entry.get("model") or {}
    expr = model.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        raise _Untranslatable("the query has no PromQL expr", f"{field}.model.expr")
    if not model.get("instant") or model.get("range"):
        raise _Untranslatable("only instant queries are translated (a range query reduces over time)",
                              f"{field}.model.instant", "set instant: true")
    relative = entry.get("relativeTimeRange") or {}
    if relative.get("to", 0) != 0:
        raise _Untranslatable("an instant query is evaluated at now - to; only to: 0 matches Prometheus",
                              f"{field}.relativeTimeRange.to", "set to: 0")
    return expr


def _annotation(text: str, value_refs: set[str], field: str) -> str:
    def replace(match: re.Match) -> str:
        if match.group(1) not in value_refs:
            raise _Untranslatable(f"$values.{match.group(1)} is not the query or reduce value", field,
                                  f"use one of {sorted(value_refs)}")
        return "$value"

    translated = _VALUES_REF.sub(replace, text)
    if "$values" in translated:
        raise _Untranslatable("only $values.<ref>.Value is translated", field)
    return translated
