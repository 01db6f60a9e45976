"""Checks over an experiment's results: sample-ratio mismatch, multiple testing, guardrails."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped]
from statsmodels.stats.multitest import multipletests  # type: ignore[import-untyped]

from plinth.abtests.stats import Comparison, Interval
from plinth.errors import InvalidArgument

K = TypeVar("K", bound=Hashable)

SRM_THRESHOLD = 0.001
Correction = Literal["holm", "benjamini-hochberg"]
_CORRECTION_NAME: dict[str, str] = {
    "holm": "Holm step-down (family-wise error rate)",
    "benjamini-hochberg": "Benjamini-Hochberg (false discovery rate)",
}


@dataclass(frozen=True)
class SrmCheck:
    """Observed units per arm against the planned shares; ``flagged`` when the assignment
    is very unlikely to have produced the counts (p below ``threshold``)."""

    method: str
    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    df: int
    p_value: float
    threshold: float
    flagged: bool


@dataclass(frozen=True)
class AdjustedPValue:
    method: str
    p_value: float
    adjusted_p_value: float
    rejected: bool


@dataclass(frozen=True)
class GuardrailCheck:
    """Whether a lift crosses a "must not get worse by more than ``bound``" line.

    ``breached``: the interval reaches past the bound (a harm that large cannot be ruled
    out at this level). ``significant``: the whole interval lies past it (the harm is
    established); an automatic stop that must not fire on early noise may prefer it.
    """

    method: str
    relative: bool
    higher_is_better: bool
    bound: float
    lift: float
    ci: Interval
    breached: bool
    significant: bool
    evidence: str


def sample_ratio_mismatch(
    observed: Mapping[str, int],
    planned_shares: Mapping[str, float],
    *,
    threshold: float = SRM_THRESHOLD,
) -> SrmCheck:
    """Chi-square goodness of fit of the units per arm to the planned shares (which are
    normalised to sum to 1, so traffic weights work too)."""
    if set(observed) != set(planned_shares) or len(observed) < 2:
        raise InvalidArgument(
            f"SRM check needs the same two or more arms in observed ({sorted(observed)}) and planned shares ({sorted(planned_shares)})"
        )
    arms = list(planned_shares)
    shares = np.array([planned_shares[arm] for arm in arms], dtype=np.float64)
    counts = np.array([observed[arm] for arm in arms], dtype=np.float64)
    if (shares <= 0).any() or not np.isfinite(shares).all():
        raise InvalidArgument(f"planned shares must be positive, got {dict(planned_shares)}")
    if (counts < 0).any() or counts.sum() == 0:
        raise InvalidArgument(f"observed units must be >= 0 and not all 0, got {dict(observed)}")
    expected = counts.sum() * shares / shares.sum()
    statistic = float(((counts - expected) ** 2 / expected).sum())
    df = len(arms) - 1
    p_value = float(stats.chi2.sf(statistic, df))
    return SrmCheck(
        method="chi-square goodness of fit to the planned shares",
        observed={arm: int(observed[arm]) for arm in arms},
        expected=dict(zip(arms, expected.tolist(), strict=True)),
        statistic=statistic,
        df=df,
        p_value=p_value,
        threshold=threshold,
        flagged=p_value < threshold,
    )


def adjust_p_values(
    p_values: Mapping[K, float], *, method: Correction, alpha: float = 0.05
) -> dict[K, AdjustedPValue]:
    """Corrects a family of p-values (e.g. keyed by ``(metric, arm)``).

    Benjamini-Hochberg is statsmodels' ``multipletests(method="fdr_bh")``. Holm is computed
    here, equal to ``multipletests(method="holm")`` (the tests compare them): statsmodels'
    Holm branch runs ``gc.collect()`` on every call, 50 ms or more in a busy process.
    """
    if method not in _CORRECTION_NAME:
        raise InvalidArgument(
            f"correction must be one of {sorted(_CORRECTION_NAME)}, got {method!r}"
        )
    if not 0 < alpha < 1:
        raise InvalidArgument(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    if not p_values:
        return {}
    keys = list(p_values)
    raw = np.array([p_values[key] for key in keys], dtype=np.float64)
    if not ((raw >= 0) & (raw <= 1)).all():
        raise InvalidArgument(f"p-values must lie in [0, 1], got {raw.tolist()}")
    if method == "holm":
        adjusted = _holm(raw)
        rejected = adjusted <= alpha
    else:
        rejected, adjusted, _, _ = multipletests(raw, alpha=alpha, method="fdr_bh")
    name = _CORRECTION_NAME[method]
    return {
        key: AdjustedPValue(name, float(p), float(a), bool(r))
        for key, p, a, r in zip(keys, raw, adjusted, rejected, strict=True)
    }


def _holm(raw: NDArray[np.float64]) -> NDArray[np.float64]:
    """Holm's step-down: the i-th smallest of m p-values times ``m - i`` (from 0), made
    non-decreasing in that order, capped at 1."""
    order = np.argsort(raw, kind="stable")
    steps = np.maximum.accumulate((raw.size - np.arange(raw.size)) * raw[order])
    adjusted = np.empty_like(raw)
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


def check_guardrail(
    comparison: Comparison,
    *,
    max_worsening: float,
    relative: bool = True,
    higher_is_better: bool = True,
) -> GuardrailCheck:
    """The comparison's relative (or absolute) lift against a bound: a metric where higher
    is better must not drop by more than ``max_worsening`` (0.05 = 5 % when relative); one
    where lower is better (latency, errors) must not rise by more than it."""
    if relative:
        if comparison.relative_lift is None or comparison.relative_ci is None:
            raise InvalidArgument("relative guardrail: control's estimate is 0, no relative lift")
        lift, ci = comparison.relative_lift, comparison.relative_ci
    else:
        lift, ci = comparison.absolute_lift, comparison.absolute_ci
    return check_interval(
        lift,
        ci,
        max_worsening=max_worsening,
        relative=relative,
        higher_is_better=higher_is_better,
        method=f"{comparison.method}; interval at level {1 - comparison.alpha:g}",
    )


def check_interval(
    lift: float,
    ci: Interval,
    *,
    max_worsening: float,
    relative: bool,
    higher_is_better: bool,
    method: str,
) -> GuardrailCheck:
    """The same check on any lift and interval (e.g. a sequential confidence sequence's)."""
    if not max_worsening >= 0 or math.isinf(max_worsening):
        raise InvalidArgument(f"max_worsening must be a finite number >= 0, got {max_worsening}")
    low, high = ci
    if higher_is_better:
        bound = -max_worsening
        breached, significant = low < bound, high < bound
        side, word = ("lower", low), "drop"
    else:
        bound = max_worsening
        breached, significant = high > bound, low > bound
        side, word = ("upper", high), "rise"
    fmt = _percent if relative else _number
    kind = "relative" if relative else "absolute"
    size = fmt(max_worsening).lstrip("+")
    state = (
        f"the whole interval is past the bound: a {word} beyond {size} is established"
        if significant
        else f"its {side[0]} bound {fmt(side[1])} is past the bound {fmt(bound)}: a {word} beyond {size} cannot be ruled out"
        if breached
        else f"its {side[0]} bound {fmt(side[1])} is within the bound {fmt(bound)}"
    )
    evidence = f"{kind} lift {fmt(lift)}, interval [{fmt(low)}, {fmt(high)}]; {state}"
    return GuardrailCheck(
        method, relative, higher_is_better, bound, lift, ci, breached, significant, evidence
    )


def _percent(value: float) -> str:
    return f"{value * 100:+.2f}%"


def _number(value: float) -> str:
    return f"{value:+.4g}"
