"""Thompson sampling: traffic shares that follow each arm's probability of being best.

Each arm's KPI gets a posterior: a rate ``Beta(1 + successes, 1 + failures)`` (uniform
prior), a mean ``Normal(mean, variance / count)`` (flat prior, large-sample). ``draws``
samples from every posterior give the probability that each arm is best; the shares are
those probabilities, except that no arm drops below ``floor``: arms under it are lifted to
it and the rest of the traffic is divided among the others in proportion to their
probabilities. The floor keeps every arm measured, so an arm that was unlucky early can
recover. The shares feed ``assign.allocate(shares, previous)``, which moves only the
buckets that change hands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from plinth.errors import InvalidArgument


@dataclass(frozen=True)
class Rate:
    """A proportion KPI so far: ``successes`` of ``trials`` units converted."""

    successes: int
    trials: int


@dataclass(frozen=True)
class Mean:
    """A numeric KPI so far: its sample mean and variance over ``count`` units."""

    mean: float
    variance: float
    count: int


@dataclass(frozen=True)
class Reallocation:
    shares: dict[str, float]
    probability_best: dict[str, float]
    draws: int
    floor: float
    reason: str


def reallocate(
    arms: Mapping[str, Rate] | Mapping[str, Mean],
    floor: float = 0.05,
    draws: int = 10_000,
    seed: int | np.random.Generator | None = None,
    higher_is_better: bool = True,
) -> Reallocation:
    """New traffic shares for ``arms`` (all rates or all means), at least ``floor`` each.

    ``seed`` makes the draws, and so the shares, reproducible."""
    names = list(arms)
    _check(arms, floor, draws)
    rng = np.random.default_rng(seed)
    samples = _posterior_draws(arms, draws, rng)
    best = samples.argmax(axis=1) if higher_is_better else samples.argmin(axis=1)
    probability = np.bincount(best, minlength=len(names)) / draws
    p_best = {name: float(p) for name, p in zip(names, probability, strict=True)}
    shares, floored = _with_floor(p_best, floor)
    return Reallocation(shares, p_best, draws, floor, _reason(p_best, floor, floored))


def _check(arms: Mapping[str, Rate] | Mapping[str, Mean], floor: float, draws: int) -> None:
    if len(arms) < 2:
        raise InvalidArgument(f"arms: a bandit needs at least two arms, got {len(arms)}")
    kinds = {type(stats) for stats in arms.values()}
    if len(kinds) != 1 or not kinds <= {Rate, Mean}:
        raise InvalidArgument("arms: give every arm a Rate, or every arm a Mean, not a mix")
    for name, stats in arms.items():
        _check_arm(name, stats)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise InvalidArgument(f"draws: a positive number of posterior draws, got {draws!r}")
    if not math.isfinite(floor) or floor < 0:
        raise InvalidArgument(f"floor: a share between 0 and 1/arms, got {floor}")
    if floor * len(arms) > 1 + 1e-12:
        raise InvalidArgument(
            f"floor: {len(arms)} arms at a floor of {floor:g} need {floor * len(arms):g} "
            f"of the traffic; at most {1 / len(arms):.4g} each can be guaranteed"
        )


def _check_arm(name: str, stats: Rate | Mean) -> None:
    if isinstance(stats, Rate):
        if not 0 <= stats.successes <= stats.trials:
            raise InvalidArgument(
                f"arm {name!r}: successes must be between 0 and trials, "
                f"got {stats.successes} of {stats.trials}"
            )
    elif stats.count < 2:
        raise InvalidArgument(
            f"arm {name!r}: a mean needs at least 2 units to estimate its variance, "
            f"got count {stats.count}"
        )
    elif not (math.isfinite(stats.mean) and math.isfinite(stats.variance)) or stats.variance < 0:
        raise InvalidArgument(
            f"arm {name!r}: mean and variance must be finite and the variance >= 0, "
            f"got mean {stats.mean}, variance {stats.variance}"
        )


def _posterior_draws(
    arms: Mapping[str, Rate] | Mapping[str, Mean], draws: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """One column of ``draws`` posterior samples per arm."""
    stats = list(arms.values())
    if all(isinstance(s, Rate) for s in stats):
        wins = np.array([s.successes for s in stats if isinstance(s, Rate)], dtype=float)
        trials = np.array([s.trials for s in stats if isinstance(s, Rate)], dtype=float)
        return rng.beta(1 + wins, 1 + trials - wins, size=(draws, len(stats)))
    means = np.array([s.mean for s in stats if isinstance(s, Mean)])
    errors = np.array([math.sqrt(s.variance / s.count) for s in stats if isinstance(s, Mean)])
    return rng.normal(means, errors, size=(draws, len(stats)))


def _with_floor(p_best: dict[str, float], floor: float) -> tuple[dict[str, float], list[str]]:
    """Shares proportional to ``p_best`` with none below ``floor``, and the arms held at the
    floor. Lifting one arm takes traffic from the others, which may push another under the
    floor, hence the loop (at most once per arm)."""
    floored: list[str] = []
    while True:
        free = [name for name in p_best if name not in floored]
        left = 1 - floor * len(floored)
        mass = sum(p_best[name] for name in free)
        shares = {name: left * p_best[name] / mass if mass else left / len(free) for name in free}
        under = [name for name in free if shares[name] < floor]
        if not under or len(free) == len(under):
            break
        floored += under
    shares.update(dict.fromkeys(floored, floor))
    return {name: shares[name] for name in p_best}, floored


def _reason(p_best: dict[str, float], floor: float, floored: list[str]) -> str:
    leader = max(p_best, key=lambda name: p_best[name])
    said = f"arm {leader} is best with probability {p_best[leader]:.2f}"
    if floored:
        return f"{said}; floor {floor * 100:g} % kept for {', '.join(sorted(floored))}"
    return f"{said}; every arm above the floor of {floor * 100:g} %, shares follow that probability"
