"""Bayesian read-outs: the probability that an arm beats control, and the expected loss.

Expected loss is what a wrong choice costs on average, in the metric's own units: choosing
the treatment costs ``E[max(control - treatment, 0)]`` (zero where the treatment is
better), keeping control costs ``E[max(treatment - control, 0)]``. Stop when the loss of
the choice falls below a threshold of caring.

- Proportions: Beta-Binomial. Prior ``Beta(a, b)`` per arm (default ``Beta(1, 1)``, uniform
  on the rate), posterior ``Beta(a + successes, b + failures)``. The figures are Monte Carlo
  integrals over ``draws`` joint posterior draws from a fixed seed, so they are
  reproducible; their standard error is at most ``0.5 / sqrt(draws)`` for the probability
  (about 0.0008 at the default 400,000 draws).
- Means (and any ``ArmSummary``): normal approximation. Flat prior on each arm's mean,
  posterior ``N(estimate, standard error^2)``, so the difference is normal and every figure
  is in closed form (no sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from plinth.abtests.stats import ArmSummary, Interval
from plinth.errors import InvalidArgument

DEFAULT_DRAWS = 400_000
DEFAULT_SEED = 20_130_213


@dataclass(frozen=True)
class BayesComparison:
    """A treatment against control. ``lift_interval`` is the equal-tailed credible interval
    of the absolute lift at ``level``; ``draws`` is ``None`` when the figures are exact."""

    method: str
    prior: str
    probability_to_beat_control: float
    expected_loss_treatment: float
    expected_loss_control: float
    lift: float
    lift_interval: Interval
    level: float
    draws: int | None


def beta_binomial(
    control: tuple[int, int],
    treatment: tuple[int, int],
    *,
    prior: tuple[float, float] = (1.0, 1.0),
    level: float = 0.95,
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
) -> BayesComparison:
    """Arms given as ``(successes, units)``; ``prior`` is ``(a, b)`` of the Beta prior."""
    a, b = prior
    if not (a > 0 and b > 0):
        raise InvalidArgument(f"Beta prior parameters must be positive, got {prior}")
    if draws < 1000:
        raise InvalidArgument(f"draws must be at least 1,000 for a usable estimate, got {draws}")
    _check_level(level)
    rng = np.random.default_rng(seed)
    samples = []
    for name, (successes, units) in (("control", control), ("treatment", treatment)):
        if not 0 <= successes <= units or units < 1:
            raise InvalidArgument(
                f"{name} needs 0 <= successes <= units and units >= 1, got {(successes, units)}"
            )
        samples.append(rng.beta(a + successes, b + units - successes, size=draws))
    diff = samples[1] - samples[0]
    tail = (1 - level) / 2
    low, high = np.quantile(diff, [tail, 1 - tail])
    return BayesComparison(
        method=f"Beta-Binomial posteriors, Monte Carlo ({draws:,} draws, seed {seed})",
        prior=f"Beta({a:g}, {b:g}) on each arm's rate",
        probability_to_beat_control=float((diff > 0).mean()),
        expected_loss_treatment=float(np.maximum(-diff, 0).mean()),
        expected_loss_control=float(np.maximum(diff, 0).mean()),
        lift=float(diff.mean()),
        lift_interval=(float(low), float(high)),
        level=level,
        draws=draws,
    )


def normal_approximation(
    control: ArmSummary, treatment: ArmSummary, *, level: float = 0.95
) -> BayesComparison:
    """Closed form for a normal difference ``D ~ N(m, s^2)``: ``P(D > 0) = Phi(m/s)``,
    ``E[max(-D, 0)] = s phi(m/s) - m Phi(-m/s)``, ``E[max(D, 0)] = s phi(m/s) + m Phi(m/s)``."""
    if control.kind != treatment.kind:
        raise InvalidArgument(f"cannot compare a {control.kind} arm with a {treatment.kind} arm")
    _check_level(level)
    m = treatment.estimate - control.estimate
    s = math.sqrt(control.variance + treatment.variance)
    if s == 0:
        probability = 0.5 if m == 0 else float(m > 0)
        loss_t, loss_c = max(-m, 0.0), max(m, 0.0)
        interval = (m, m)
    else:
        z = m / s
        density = float(stats.norm.pdf(z))
        probability = float(stats.norm.cdf(z))
        loss_t = s * density - m * float(stats.norm.cdf(-z))
        loss_c = s * density + m * probability
        q = float(stats.norm.isf((1 - level) / 2))
        interval = (m - q * s, m + q * s)
    return BayesComparison(
        method="normal approximation of each arm's posterior mean (closed form)",
        prior="flat (improper uniform) on each arm's mean",
        probability_to_beat_control=probability,
        expected_loss_treatment=loss_t,
        expected_loss_control=loss_c,
        lift=m,
        lift_interval=interval,
        level=level,
        draws=None,
    )


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise InvalidArgument(f"level must be between 0 and 1 (exclusive), got {level}")
