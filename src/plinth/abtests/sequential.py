"""Sequential testing that stays valid however often the results are looked at.

A fixed-horizon test read at every look and stopped at the first "significant" result
rejects a true null far more often than ``alpha``. The mixture sequential probability ratio
test (mSPRT) does not: its p-value and interval are *always valid*, i.e. the chance that
they ever exclude the true lift, at any look, is at most ``alpha``.

The formula (normal mixture; Johari, Koomen, Pekelis & Walsh, "Peeking at A/B tests",
KDD 2017, and Johari, Pekelis & Walsh, "Always valid inference", Operations Research 2022;
the same boundary is Howard, Ramdas, McAuliffe & Sekhon's normal-mixture confidence
sequence, Annals of Statistics 2021). In our own words:

At a look, let ``d`` be the observed difference of the arms' estimates (treatment minus
control) and ``V`` its variance (the sum of the arms' squared standard errors; it shrinks
like 1/n). Weigh every possible true lift ``theta`` with a normal prior of mean ``theta0``
and variance ``tau2`` (the *mixing variance*) and average the likelihood ratio of "lift is
theta" against "lift is theta0" over that prior. For a normal ``d`` the average is::

    Lambda = sqrt(V / (V + tau2)) * exp( tau2 * (d - theta0)^2 / (2 V (V + tau2)) )

Under ``theta0`` this is a non-negative martingale starting at 1, so by Ville's inequality
it ever reaches ``1 / alpha`` with probability at most ``alpha``. Hence:

- always-valid p-value for ``theta0 = 0``: the running minimum over looks of
  ``min(1, 1 / Lambda)``;
- confidence sequence: the ``theta0`` with ``Lambda < 1 / alpha``, i.e.
  ``d +- sqrt( V (V + tau2) / tau2 * (2 log(1/alpha) + log((V + tau2) / V)) )``,
  intersected with every earlier look's interval (the running intersection stays valid).

The guarantee is exact for normal data with known variance and holds asymptotically when
``V`` is estimated from the data, as it is here (the arms' summaries are averages).
``tau2`` only moves where the test is most powerful: ``mixing_variance_for_horizon`` picks
the one that makes the interval narrowest at the planned sample size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from plinth.abtests.stats import ArmSummary, Interval
from plinth.errors import InvalidArgument

METHOD = "mSPRT, normal mixture (always-valid p-value and confidence sequence)"


@dataclass(frozen=True)
class SequentialLook:
    """The always-valid figures at one look (the absolute lift, treatment minus control)."""

    units_control: int
    units_treatment: int
    lift: float
    ci: Interval
    p_value: float
    method: str = METHOD


@dataclass(frozen=True)
class SequentialResult:
    method: str
    alpha: float
    mixing_variance: float
    looks: tuple[SequentialLook, ...]

    @property
    def latest(self) -> SequentialLook:
        return self.looks[-1]

    @property
    def significant(self) -> bool:
        """The null (no lift) rejected at some look; valid to stop on."""
        return self.latest.p_value <= self.alpha


def mixing_variance_for_horizon(variance_at_horizon: float, *, alpha: float = 0.05) -> float:
    """The ``tau2`` that makes the interval narrowest when the difference's variance is
    ``variance_at_horizon`` (its value at the planned sample size).

    With ``r = tau2 / V`` the squared half-width is ``V (1 + 1/r) (2 log(1/alpha) + log(1 + r))``;
    its minimum satisfies ``r = 2 log(1/alpha) + log(1 + r)``, solved by fixed-point iteration
    (a contraction: the right side's slope is below 1).
    """
    _check(alpha, variance_at_horizon)
    a = 2 * math.log(1 / alpha)
    r = a
    for _ in range(50):
        r = a + math.log1p(r)
    return r * variance_at_horizon


def confidence_sequence(
    diff: ArrayLike, variance: ArrayLike, *, alpha: float, mixing_variance: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Always-valid p-values and interval bounds, vectorised: the last axis holds the looks
    in time order (other axes are independent experiments). Returns ``(p, low, high)``."""
    _check(alpha, mixing_variance)
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    tau2 = mixing_variance
    known = v > 0
    safe_v = np.where(known, v, 1.0)
    log_lambda = 0.5 * np.log(safe_v / (safe_v + tau2)) + tau2 * d**2 / (
        2 * safe_v * (safe_v + tau2)
    )
    # No variance yet (too few units): no evidence, an unbounded interval.
    log_lambda = np.where(known, log_lambda, 0.0)
    p = np.minimum.accumulate(np.exp(-np.maximum(log_lambda, 0.0)), axis=-1)
    half = np.sqrt(
        safe_v * (safe_v + tau2) / tau2 * (2 * math.log(1 / alpha) + np.log1p(tau2 / safe_v))
    )
    half = np.where(known, half, np.inf)
    low = np.maximum.accumulate(d - half, axis=-1)
    high = np.minimum.accumulate(d + half, axis=-1)
    return p, low, high


def sequential_test(
    control_looks: Sequence[ArmSummary],
    treatment_looks: Sequence[ArmSummary],
    *,
    alpha: float = 0.05,
    mixing_variance: float,
) -> SequentialResult:
    """The arms' cumulative summaries at each look so far, oldest first."""
    if len(control_looks) != len(treatment_looks) or not control_looks:
        raise InvalidArgument(
            f"sequential test needs one control and one treatment summary per look, got {len(control_looks)} and {len(treatment_looks)}"
        )
    kinds = {s.kind for s in (*control_looks, *treatment_looks)}
    if len(kinds) != 1:
        raise InvalidArgument(
            f"sequential test: every look must be of one metric kind, got {sorted(kinds)}"
        )
    for given, arm in ((control_looks, "control"), (treatment_looks, "treatment")):
        units = [s.units for s in given]
        if units != sorted(units):
            raise InvalidArgument(
                f"sequential test: {arm}'s looks must be cumulative, units {units}"
            )
    d = np.array(
        [t.estimate - c.estimate for c, t in zip(control_looks, treatment_looks, strict=True)]
    )
    v = np.array(
        [t.variance + c.variance for c, t in zip(control_looks, treatment_looks, strict=True)]
    )
    p, low, high = confidence_sequence(d, v, alpha=alpha, mixing_variance=mixing_variance)
    looks = tuple(
        SequentialLook(c.units, t.units, float(d[i]), (float(low[i]), float(high[i])), float(p[i]))
        for i, (c, t) in enumerate(zip(control_looks, treatment_looks, strict=True))
    )
    return SequentialResult(METHOD, alpha, mixing_variance, looks)


def _check(alpha: float, variance: float) -> None:
    if not 0 < alpha < 1:
        raise InvalidArgument(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    if not (variance > 0 and math.isfinite(variance)):
        raise InvalidArgument(
            f"the (mixing) variance must be a positive finite number, got {variance}"
        )
