"""Promotion gates: checks a version must pass before it enters STAGING or PRODUCTION."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plinth.errors import InvalidArgument
from plinth.registry.types import GateResult, ModelVersion, Stage

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
_JSON = {"ser_json_inf_nan": "strings"}
_THRESHOLD = re.compile(
    r"^\s*([A-Za-z_][\w.\-/]*)\s*(>=|<=|==|>|<)\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*$"
)


@dataclass(frozen=True)
class Gate:
    """``metric``: a threshold such as ``auc >= 0.8`` on the version's metrics;
    ``not_worse``: at least as good as the production version on the same holdout data."""

    kind: str  # metric | not_worse
    expression: str = ""  # for metric gates
    metric: str = ""  # for not_worse gates
    direction: str = "max"
    stages: list[Stage] = field(default_factory=lambda: [Stage.STAGING, Stage.PRODUCTION])


def check_gate(gate: Gate) -> Gate:
    if gate.kind == "metric":
        if not _THRESHOLD.match(gate.expression):
            raise InvalidArgument(
                f"metric gate {gate.expression!r} is not 'METRIC OP NUMBER' (e.g. 'auc >= 0.8')"
            )
    elif gate.kind == "not_worse":
        if not gate.metric or gate.direction not in ("max", "min"):
            raise InvalidArgument("a not_worse gate needs a metric and a direction 'max' or 'min'")
    else:
        raise InvalidArgument(f"unknown gate kind {gate.kind!r}; use 'metric' or 'not_worse'")
    return gate


def evaluate(
    gates: list[Gate],
    candidate: ModelVersion,
    production: ModelVersion | None,
    target: Stage,
    evidence: dict[str, Any],
) -> list[GateResult]:
    """Every gate that applies to ``target``, plus the built-in signature checks."""
    results: list[GateResult] = []
    if target is Stage.PRODUCTION:
        results.append(_has_signature(candidate))
        if production is not None and production.version != candidate.version:
            results.append(_signature_compatible(candidate, production))
    for gate in gates:
        if target not in gate.stages:
            continue
        if gate.kind == "metric":
            results.append(_threshold(gate, candidate, evidence))
        else:
            results.append(_not_worse(gate, production, evidence))
    return results


def _has_signature(candidate: ModelVersion) -> GateResult:
    ok = candidate.signature is not None
    detail = (
        "has a signature"
        if ok
        else ("has no signature: register it with an input_example before it can reach PRODUCTION")
    )
    return GateResult("signature", ok, detail)


def _signature_compatible(candidate: ModelVersion, production: ModelVersion) -> GateResult:
    from plinth.registry.signature import compatible

    if candidate.signature is None or production.signature is None:
        return GateResult("signature compatibility", True, "production has no signature to match")
    problems = compatible(production.signature, candidate.signature)
    detail = "; ".join(problems) if problems else f"inputs compatible with v{production.version}"
    return GateResult("signature compatibility", not problems, detail)


def _threshold(gate: Gate, candidate: ModelVersion, evidence: dict[str, Any]) -> GateResult:
    match = _THRESHOLD.match(gate.expression)
    assert match is not None  # checked when the gate was set
    metric, op, number = match.group(1), match.group(2), float(match.group(3))
    value = evidence.get("metrics", {}).get(
        metric, candidate.lineage.get("metrics", {}).get(metric)
    )
    if value is None:
        return GateResult(gate.expression, False, f"the version has no metric {metric!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return GateResult(gate.expression, False, f"{metric} = {value!r} is not a number")
    ok = _OPS[op](value, number)
    return GateResult(gate.expression, ok, f"{metric} = {float(value):.6g}")


def _not_worse(gate: Gate, production: ModelVersion | None, evidence: dict[str, Any]) -> GateResult:
    name = f"not worse than production on {gate.metric}"
    if production is None:
        return GateResult(name, True, "there is no production version yet")
    holdout = evidence.get("holdout") or {}
    if holdout.get("metric") != gate.metric or "candidate" not in holdout:
        return GateResult(
            name,
            False,
            f"needs holdout scores on {gate.metric!r}: pass holdout=(X, y) when promoting",
        )
    if holdout.get("production_version") != production.version:
        return GateResult(name, False, f"holdout scores are not against v{production.version}")
    try:
        mine, theirs = float(holdout["candidate"]), float(holdout["production"])
    except (TypeError, ValueError, KeyError):
        return GateResult(name, False, "holdout scores must be numbers")
    ok = mine >= theirs if gate.direction == "max" else mine <= theirs
    return GateResult(
        name, ok, f"candidate {mine:.6g} vs production v{production.version} {theirs:.6g}"
    )
