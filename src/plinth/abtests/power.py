"""Power analysis: how many units each arm needs to detect an effect, and for how long.

Means use the two-sample t-test on Cohen's d (statsmodels ``TTestIndPower``); proportions
the normal test on Cohen's h, ``h = 2 asin(sqrt(p1)) - 2 asin(sqrt(p0))`` (statsmodels
``NormalIndPower``). With more than two arms each treatment is compared with control at a
Bonferroni-adjusted alpha, ``alpha / (arms - 1)``, so the family of comparisons keeps the
planned false-positive rate; every arm gets the same number of units.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

from statsmodels.stats.power import (  # type: ignore[import-untyped]
    NormalIndPower,
    TTestIndPower,
)
from statsmodels.stats.proportion import proportion_effectsize  # type: ignore[import-untyped]

from plinth.errors import InvalidArgument

Kind = Literal["means", "proportions"]


@dataclass(frozen=True)
class PowerResult:
    """A planned sample. ``alpha`` is the family-wise alpha asked for; with more than two
    arms ``method`` states the per-comparison alpha actually used."""

    kind: str
    effect: float
    effect_size: float  # Cohen's d (means) or h (proportions)
    alpha: float
    power: float
    arms: int
    per_arm_exact: float
    per_arm: int
    total: int
    method: str


def sample_size(
    kind: Kind,
    effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
    baseline: float | None = None,
) -> PowerResult:
    """Units per arm to detect ``effect`` with probability ``power`` at level ``alpha``.

    ``kind="means"``: ``effect`` is Cohen's d (the difference in means over the standard
    deviation). ``kind="proportions"``: ``effect`` is the absolute difference in rates to
    detect and ``baseline`` the control's rate (both make Cohen's h)."""
    _check_common(effect, alpha, power, arms)
    per_comparison = alpha / (arms - 1)
    if kind == "means":
        size = effect
        exact = _solve(TTestIndPower(), size, per_comparison, power)
        test = "two-sample t-test on Cohen's d (statsmodels TTestIndPower)"
    elif kind == "proportions":
        size = _cohens_h(effect, baseline)
        exact = _solve(NormalIndPower(), size, per_comparison, power)
        test = "two-proportion normal test on Cohen's h (statsmodels NormalIndPower)"
    else:
        raise InvalidArgument(f"kind: 'means' or 'proportions', got {kind!r}")
    # solver noise must not turn an exact 400.0000000001 into 401 units
    per_arm = max(math.ceil(round(exact, 6)), 2)
    return PowerResult(
        kind=kind,
        effect=effect,
        effect_size=size,
        alpha=alpha,
        power=power,
        arms=arms,
        per_arm_exact=exact,
        per_arm=per_arm,
        total=per_arm * arms,
        method=_method(test, alpha, arms, per_comparison),
    )


def duration_days(result: PowerResult, units_per_day: float) -> float:
    """Days until every arm has its units, at ``units_per_day`` entering the experiment
    (all arms together, split evenly)."""
    if not math.isfinite(units_per_day) or units_per_day <= 0:
        raise InvalidArgument(f"units_per_day: a positive rate of traffic, got {units_per_day}")
    return result.total / units_per_day


def _check_common(effect: float, alpha: float, power: float, arms: int) -> None:
    if not math.isfinite(effect) or effect <= 0:
        raise InvalidArgument(f"effect: a positive effect to detect, got {effect}")
    if not 0 < alpha < 1:
        raise InvalidArgument(f"alpha: a level between 0 and 1 (exclusive), got {alpha}")
    if not 0 < power < 1:
        raise InvalidArgument(f"power: a probability between 0 and 1 (exclusive), got {power}")
    if isinstance(arms, bool) or not isinstance(arms, int) or arms < 2:
        raise InvalidArgument(f"arms: at least 2 (control and one treatment), got {arms!r}")


def _cohens_h(effect: float, baseline: float | None) -> float:
    if baseline is None:
        raise InvalidArgument("baseline: proportions need the control's rate, e.g. 0.10")
    if not 0 < baseline < 1:
        raise InvalidArgument(f"baseline: a rate between 0 and 1 (exclusive), got {baseline}")
    if not 0 < baseline + effect < 1:
        raise InvalidArgument(
            f"effect: baseline + effect must stay a rate between 0 and 1, "
            f"got {baseline} + {effect} = {baseline + effect}"
        )
    return abs(float(proportion_effectsize(baseline + effect, baseline)))


def _solve(
    analysis: TTestIndPower | NormalIndPower, size: float, alpha: float, power: float
) -> float:
    # statsmodels warns (and returns nan) where its root finder fails, and raises where the
    # effect size is 0; we report both as an error of our own naming the effect
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n = analysis.solve_power(
                effect_size=size, alpha=alpha, power=power, ratio=1, alternative="two-sided"
            )
        exact = float(n)
    except (ValueError, ZeroDivisionError, OverflowError):
        exact = math.nan
    if not math.isfinite(exact) or exact <= 0:
        if size < 1:
            raise InvalidArgument(
                f"effect: an effect size of {size:.4g} is too small to plan a sample for "
                "(statsmodels found none): it would take more units than can be counted; "
                "raise mde"
            )
        raise InvalidArgument(
            f"effect: an effect size of {size:.4g} is too large to plan a sample for "
            f"(statsmodels found none); an effect this large needs only a few units per arm"
        )
    return exact


def _method(test: str, alpha: float, arms: int, per_comparison: float) -> str:
    if arms == 2:
        return f"{test}, two-sided, equal arms"
    return (
        f"{test}, two-sided, equal arms; each of {arms - 1} treatments against control at "
        f"Bonferroni-adjusted alpha {alpha:g}/{arms - 1} = {per_comparison:.4g}"
    )
