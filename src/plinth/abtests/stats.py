"""Fixed-horizon comparisons of one arm with control, for three kinds of metric.

Every arm is first reduced to an ``ArmSummary`` (its units, its estimate and the variance of
that estimate), from per-unit arrays (``summarize_*``) or from sufficient statistics that a
database can compute (``*_from_counts`` / ``*_from_moments``). ``compare`` then gives the
absolute lift with its interval and p-value, and the relative lift with its interval:

- proportion: two-proportion z-test with the pooled variance for the p-value; Wald interval
  with the unpooled variance for the lift (as statsmodels' ``proportions_ztest`` and
  ``confint_proportions_2indep(method="wald")``);
- mean: Welch t-test, interval on the Welch-Satterthwaite degrees of freedom;
- ratio (sum of numerators over sum of denominators, e.g. clicks per session when the unit
  is a user): the variance of each arm's ratio by the delta method on the per-unit
  numerator and denominator, then a z-test.

The relative lift ``treatment / control - 1`` gets its interval by the delta method (arms
independent): ``Var(t/c) ~ Var(t)/c^2 + t^2 Var(c)/c^4``, normal quantiles.

CUPED is in ``plinth.abtests.cuped``.

All inputs are numpy arrays; nothing loops over units in Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special  # type: ignore[import-untyped]

from plinth.errors import InvalidArgument

MetricKind = Literal["proportion", "mean", "ratio"]
Interval = tuple[float, float]

_TESTS: dict[str, str] = {
    "proportion": "two-proportion z-test (pooled); Wald interval (unpooled)",
    "mean": "Welch t-test; interval on Welch-Satterthwaite df",
    "ratio": "delta method (ratio of sums); z-test",
}


@dataclass(frozen=True)
class ArmSummary:
    """One arm of one metric: its units, its estimate (rate, mean or ratio of sums) and the
    variance of that estimate (the squared standard error)."""

    kind: MetricKind
    units: int
    estimate: float
    variance: float


@dataclass(frozen=True)
class Comparison:
    """A treatment arm against control for one metric (two-sided, level ``1 - alpha``).

    ``relative_lift`` and its interval are ``None`` when control's estimate is 0.
    ``variance_reduction`` is CUPED's (``1 - Var(y')/Var(y)``), ``None`` without CUPED.
    """

    kind: MetricKind
    method: str
    alpha: float
    control: ArmSummary
    treatment: ArmSummary
    absolute_lift: float
    absolute_ci: Interval
    relative_lift: float | None
    relative_ci: Interval | None
    relative_method: str
    statistic: float
    df: float | None
    p_value: float
    variance_reduction: float | None = None


def as_units(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Per-unit values as a float array, refused by ``name`` unless 1-D, finite, >= 2 units."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise InvalidArgument(f"{name} must be a one-dimensional array of per-unit values")
    if array.size < 2:
        raise InvalidArgument(f"{name} needs at least 2 units, got {array.size}")
    if not np.isfinite(array).all():
        raise InvalidArgument(f"{name} contains NaN or infinite values")
    return array


def _units(units: int, name: str) -> int:
    if units < 2:
        raise InvalidArgument(f"{name}: units must be at least 2, got {units}")
    return int(units)


def summarize_proportion(values: ArrayLike) -> ArmSummary:
    """Per-unit 0/1 outcomes (converted or not)."""
    array = as_units(values, "proportion values")
    if not ((array == 0) | (array == 1)).all():
        raise InvalidArgument("proportion values must be 0 or 1 per unit")
    return proportion_from_counts(int(array.sum()), array.size)


def proportion_from_counts(successes: int, units: int) -> ArmSummary:
    units = _units(units, "proportion")
    if not 0 <= successes <= units:
        raise InvalidArgument(f"successes must be between 0 and units ({units}), got {successes}")
    rate = successes / units
    return ArmSummary("proportion", units, rate, rate * (1 - rate) / units)


def summarize_mean(values: ArrayLike) -> ArmSummary:
    array = as_units(values, "mean values")
    return mean_from_moments(array.size, float(array.mean()), float(array.var(ddof=1)))


def mean_from_moments(units: int, mean: float, variance: float) -> ArmSummary:
    """``variance`` is the per-unit sample variance (ddof=1)."""
    units = _units(units, "mean")
    if variance < 0 or not math.isfinite(mean):
        raise InvalidArgument(f"mean needs a finite mean and a variance >= 0, got {variance}")
    return ArmSummary("mean", units, mean, variance / units)


def summarize_ratio(numerator: ArrayLike, denominator: ArrayLike) -> ArmSummary:
    """Per-unit numerator and denominator (e.g. a user's clicks and sessions)."""
    num = as_units(numerator, "ratio numerator")
    den = as_units(denominator, "ratio denominator")
    if num.size != den.size:
        raise InvalidArgument(
            f"ratio numerator and denominator need one value per unit each, got {num.size} and {den.size}"
        )
    # Centred dot products: a third of np.cov's time on millions of units.
    n_mean, d_mean = float(num.mean()), float(den.mean())
    dn, dd = num - n_mean, den - d_mean
    scale = 1 / (num.size - 1)
    return ratio_from_moments(
        num.size,
        n_mean,
        d_mean,
        float(dn @ dn) * scale,
        float(dd @ dd) * scale,
        float(dn @ dd) * scale,
    )


def ratio_from_moments(
    units: int,
    mean_numerator: float,
    mean_denominator: float,
    var_numerator: float,
    var_denominator: float,
    covariance: float,
) -> ArmSummary:
    """Per-unit means, sample variances (ddof=1) and covariance of numerator and denominator.

    Delta method: ``Var(N/D) ~ (Var N / mu_d^2 - 2 mu_n Cov / mu_d^3 + mu_n^2 Var D / mu_d^4) / n``.
    """
    units = _units(units, "ratio")
    if mean_denominator == 0:
        raise InvalidArgument("ratio: the denominator's sum is 0 in an arm")
    mn, md = mean_numerator, mean_denominator
    per_unit = var_numerator / md**2 - 2 * mn * covariance / md**3 + mn**2 * var_denominator / md**4
    return ArmSummary("ratio", units, mn / md, max(float(per_unit), 0.0) / units)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise InvalidArgument(f"alpha must be between 0 and 1 (exclusive), got {alpha}")


# scipy.special's distribution functions, not scipy.stats' objects: the same numbers at a
# hundredth of the call overhead (simulations and dashboards call this per arm and metric).
def _two_sided(statistic: float, df: float | None) -> float:
    tail = -abs(statistic)
    return float(2 * (special.ndtr(tail) if df is None else special.stdtr(df, tail)))


def _quantile(alpha: float, df: float | None) -> float:
    """The two-sided critical value at level ``1 - alpha``."""
    upper = 1 - alpha / 2
    return float(special.ndtri(upper) if df is None else special.stdtrit(df, upper))


def _test(control: ArmSummary, treatment: ArmSummary) -> tuple[float, float | None, float]:
    """The test statistic, its df (``None`` for a z-test) and the standard error of the
    unpooled difference (for the interval)."""
    diff = treatment.estimate - control.estimate
    se = math.sqrt(control.variance + treatment.variance)
    df: float | None = None
    if control.kind == "proportion":
        pooled = (control.estimate * control.units + treatment.estimate * treatment.units) / (
            control.units + treatment.units
        )
        test_se = math.sqrt(pooled * (1 - pooled) * (1 / control.units + 1 / treatment.units))
    else:
        test_se = se
    if control.kind == "mean" and se > 0:
        df = se**4 / (
            control.variance**2 / (control.units - 1)
            + treatment.variance**2 / (treatment.units - 1)
        )
    if test_se == 0:
        statistic = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    else:
        statistic = diff / test_se
    return statistic, df, se


def _relative(
    control: ArmSummary, treatment: ArmSummary, z: float
) -> tuple[float, Interval] | None:
    c, t = control.estimate, treatment.estimate
    if c == 0:
        return None
    ratio = t / c  # divided before squaring: large estimates must not overflow
    se = math.sqrt(treatment.variance / c / c + ratio * ratio * control.variance / c / c)
    lift = ratio - 1
    return lift, (lift - z * se, lift + z * se)


def compare(
    control: ArmSummary,
    treatment: ArmSummary,
    *,
    alpha: float = 0.05,
) -> Comparison:
    """Treatment against control; both summaries of the same metric kind."""
    _check_alpha(alpha)
    if control.kind != treatment.kind:
        raise InvalidArgument(f"cannot compare a {control.kind} arm with a {treatment.kind} arm")
    statistic, df, se = _test(control, treatment)
    quantile = _quantile(alpha, df)
    diff = treatment.estimate - control.estimate
    relative = _relative(control, treatment, _quantile(alpha, None))
    return Comparison(
        kind=control.kind,
        method=_TESTS[control.kind],
        alpha=alpha,
        control=control,
        treatment=treatment,
        absolute_lift=diff,
        absolute_ci=(diff - quantile * se, diff + quantile * se),
        relative_lift=None if relative is None else relative[0],
        relative_ci=None if relative is None else relative[1],
        relative_method="delta method (ratio of arm estimates, normal quantiles)",
        statistic=statistic,
        df=df,
        p_value=_two_sided(statistic, df),
    )


def compare_arms(
    arms: Mapping[str, ArmSummary], control: str, *, alpha: float = 0.05
) -> dict[str, Comparison]:
    """Every arm but control against control, by arm name."""
    if control not in arms:
        raise InvalidArgument(f"control arm {control!r} is not among the arms {sorted(arms)}")
    return {
        name: compare(arms[control], summary, alpha=alpha)
        for name, summary in arms.items()
        if name != control
    }
