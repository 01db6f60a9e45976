"""CUPED: less variance from a pre-experiment covariate (Deng, Xu, Kohavi & Walker, 2013).

Each unit's outcome loses the part its pre-experiment covariate predicts:
``y' = y - theta (x - mean(x))`` with ``theta = cov(y, x) / var(x)``, both pooled over all
arms' units (randomisation makes ``x`` independent of the arm, so the adjustment shifts
no arm's mean in expectation). ``Var(y') = (1 - rho^2) Var(y)``, where ``rho`` is the pooled
correlation of ``y`` and ``x``: that share ``rho^2`` is the reported variance reduction.
The arms' means of ``y'`` are then compared by Welch's test.

``compare_cuped_moments`` gives the same figures from each arm's moments (units, means,
sample variances and covariance of outcome and covariate), which a database computes
without moving per-unit rows: pooled sums of squares are the arms' own plus their means'
spread around the pooled mean, and an arm's adjusted values have mean
``mean(y) - theta (mean(x) - pooled mean(x))`` and variance
``Var(y) - 2 theta Cov(x, y) + theta^2 Var(x)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from plinth.abtests.stats import (
    ArmSummary,
    Comparison,
    as_units,
    compare,
    mean_from_moments,
    summarize_mean,
)
from plinth.errors import InvalidArgument


@dataclass(frozen=True)
class CupedFit:
    """``theta`` pooled over arms, the pooled covariate mean, and the share of the
    outcome's variance that the adjustment removes."""

    theta: float
    covariate_mean: float
    variance_reduction: float


def fit_cuped(outcomes: Mapping[str, ArrayLike], covariates: Mapping[str, ArrayLike]) -> CupedFit:
    """``theta`` and the covariate mean pooled over all arms' units."""
    if set(outcomes) != set(covariates) or not outcomes:
        raise InvalidArgument("CUPED needs a covariate array for every arm that has outcomes")
    ys = [as_units(outcomes[arm], f"outcomes of {arm!r}") for arm in outcomes]
    xs = [as_units(covariates[arm], f"covariates of {arm!r}") for arm in outcomes]
    for arm, y, x in zip(outcomes, ys, xs, strict=True):
        if y.size != x.size:
            raise InvalidArgument(
                f"CUPED: arm {arm!r} has {y.size} outcomes and {x.size} covariates; one each per unit"
            )
    # Pooled moments arm by arm around the pooled means: dot products, no concatenated copy.
    units = sum(y.size for y in ys)
    y_mean = sum(float(y.sum()) for y in ys) / units
    x_mean = sum(float(x.sum()) for x in xs) / units
    syy = sxx = sxy = 0.0
    for y, x in zip(ys, xs, strict=True):
        dy, dx = y - y_mean, x - x_mean
        syy, sxx, sxy = syy + float(dy @ dy), sxx + float(dx @ dx), sxy + float(dx @ dy)
    if sxx == 0:
        raise InvalidArgument("CUPED: the covariate is constant, it cannot reduce variance")
    reduction = sxy**2 / (sxx * syy) if syy > 0 else 0.0
    return CupedFit(sxy / sxx, x_mean, reduction)


@dataclass(frozen=True)
class CupedMoments:
    """One arm's units and the moments of its outcome ``y`` and covariate ``x`` (sample
    variances and covariance, ddof=1)."""

    units: int
    mean_outcome: float
    mean_covariate: float
    var_outcome: float
    var_covariate: float
    covariance: float


def fit_cuped_moments(arms: Mapping[str, CupedMoments]) -> CupedFit:
    """``fit_cuped`` from the arms' moments."""
    if not arms:
        raise InvalidArgument("CUPED needs at least one arm")
    units = sum(m.units for m in arms.values())
    y_mean = sum(m.units * m.mean_outcome for m in arms.values()) / units
    x_mean = sum(m.units * m.mean_covariate for m in arms.values()) / units
    syy = sxx = sxy = 0.0
    for m in arms.values():
        dy, dx = m.mean_outcome - y_mean, m.mean_covariate - x_mean
        syy += (m.units - 1) * m.var_outcome + m.units * dy * dy
        sxx += (m.units - 1) * m.var_covariate + m.units * dx * dx
        sxy += (m.units - 1) * m.covariance + m.units * dx * dy
    if sxx <= 0:
        raise InvalidArgument("CUPED: the covariate is constant, it cannot reduce variance")
    reduction = sxy**2 / (sxx * syy) if syy > 0 else 0.0
    return CupedFit(sxy / sxx, x_mean, min(reduction, 1.0))


def compare_cuped_moments(
    arms: Mapping[str, CupedMoments], control: str, *, alpha: float = 0.05
) -> dict[str, Comparison]:
    """``compare_cuped`` from the arms' moments."""
    if control not in arms:
        raise InvalidArgument(f"control arm {control!r} is not among the arms {sorted(arms)}")
    fit = fit_cuped_moments(arms)
    t = fit.theta
    summaries = {
        arm: mean_from_moments(
            m.units,
            m.mean_outcome - t * (m.mean_covariate - fit.covariate_mean),
            max(m.var_outcome - 2 * t * m.covariance + t * t * m.var_covariate, 0.0),
        )
        for arm, m in arms.items()
    }
    return _compared(summaries, control, fit, alpha)


def _compared(
    summaries: Mapping[str, ArmSummary], control: str, fit: CupedFit, alpha: float
) -> dict[str, Comparison]:
    method = f"CUPED (theta {fit.theta:.4g}, pooled over arms); Welch t-test on adjusted values"
    return {
        arm: replace(
            compare(summaries[control], summary, alpha=alpha),
            method=method,
            variance_reduction=fit.variance_reduction,
        )
        for arm, summary in summaries.items()
        if arm != control
    }


def cuped_adjust(outcome: ArrayLike, covariate: ArrayLike, fit: CupedFit) -> NDArray[np.float64]:
    """``y - theta (x - mean x)`` per unit."""
    y = as_units(outcome, "outcomes")
    x = as_units(covariate, "covariates")
    return y - fit.theta * (x - fit.covariate_mean)


def compare_cuped(
    outcomes: Mapping[str, ArrayLike],
    covariates: Mapping[str, ArrayLike],
    control: str,
    *,
    alpha: float = 0.05,
) -> dict[str, Comparison]:
    """Welch's test on CUPED-adjusted outcomes, every arm against control.

    Works for means and for 0/1 outcomes (the adjusted values are no longer 0/1, so the
    comparison is of means). ``variance_reduction`` is ``corr(y, x)^2`` pooled over arms.
    """
    if control not in outcomes:
        raise InvalidArgument(f"control arm {control!r} is not among the arms {sorted(outcomes)}")
    fit = fit_cuped(outcomes, covariates)
    summaries = {
        arm: summarize_mean(cuped_adjust(outcomes[arm], covariates[arm], fit)) for arm in outcomes
    }
    return _compared(summaries, control, fit, alpha)
