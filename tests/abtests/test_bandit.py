"""Thompson sampling: toward the best arm, never below the floor, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from plinth.abtests.bandit import Mean, Rate, Reallocation, reallocate
from plinth.abtests.buckets import BUCKETS, allocate, shares_to_counts
from plinth.errors import InvalidArgument


def test_traffic_converges_toward_the_best_arm() -> None:
    rng = np.random.default_rng(11)
    true_rates = {"a": 0.10, "b": 0.12, "c": 0.09}
    seen = {arm: Rate(0, 0) for arm in true_rates}
    step = reallocate(seen, seed=0)
    assert step.shares["b"] == pytest.approx(1 / 3, abs=0.02)  # no data: no favourite
    for day in range(1, 21):
        units = rng.multinomial(1000, list(step.shares.values()))
        for (arm, rate), n in zip(true_rates.items(), units, strict=True):
            wins = int(rng.binomial(n, rate))
            seen[arm] = Rate(seen[arm].successes + wins, seen[arm].trials + int(n))
        step = reallocate(seen, floor=0.05, seed=day)
    assert step.shares["b"] == pytest.approx(0.9)  # everything but the two floors
    assert step.probability_best["b"] > 0.95
    assert step.reason.startswith("arm b is best with probability")
    assert seen["b"].trials > 3 * (seen["a"].trials + seen["c"].trials)


def test_a_numeric_kpi_uses_a_normal_posterior() -> None:
    clear = reallocate({"a": Mean(10.0, 4.0, 400), "b": Mean(11.0, 4.0, 400)}, seed=1)
    assert clear.probability_best["b"] > 0.99
    lower = reallocate(
        {"a": Mean(10.0, 4.0, 400), "b": Mean(11.0, 4.0, 400)}, seed=1, higher_is_better=False
    )
    assert lower.probability_best["a"] > 0.99
    # equal means, a wide posterior: a coin toss
    even = reallocate({"a": Mean(10.0, 4.0, 50), "b": Mean(10.0, 4.0, 50)}, seed=1)
    assert even.probability_best["a"] == pytest.approx(0.5, abs=0.03)


def test_floors_are_kept_and_the_rest_follows_the_probabilities() -> None:
    arms = {"a": Rate(100, 1000), "b": Rate(150, 1000), "c": Rate(95, 1000), "d": Rate(140, 1000)}
    result = reallocate(arms, floor=0.1, seed=3)
    assert all(share >= 0.1 - 1e-12 for share in result.shares.values())
    assert sum(result.shares.values()) == pytest.approx(1)
    assert result.shares["a"] == result.shares["c"] == 0.1
    p = result.probability_best
    assert result.shares["b"] / result.shares["d"] == pytest.approx(p["b"] / p["d"])
    assert "floor 10 % kept for a, c" in result.reason


def test_a_floor_lifting_one_arm_may_push_another_under_it() -> None:
    arms = {"a": Rate(500, 1000), "b": Rate(380, 1000), "c": Rate(495, 1000)}
    result = reallocate(arms, floor=0.3, seed=5)
    # b alone is under 0.3 at first; lifting it squeezes c (over 0.3 by itself) under
    assert result.probability_best["b"] < 0.3 < result.probability_best["c"] < 0.3 / 0.7
    assert result.shares["b"] == result.shares["c"] == 0.3
    assert result.shares["a"] == pytest.approx(0.4)


def test_without_a_floor_the_shares_are_the_probabilities() -> None:
    result = reallocate({"a": Rate(10, 100), "b": Rate(12, 100)}, floor=0, seed=9)
    assert result.shares == result.probability_best
    assert "shares follow that probability" in result.reason


def test_the_same_seed_gives_the_same_shares() -> None:
    arms = {"a": Rate(50, 500), "b": Rate(56, 500), "c": Rate(53, 500)}
    first, again = reallocate(arms, seed=42), reallocate(arms, seed=42)
    assert first == again
    assert reallocate(arms, seed=43).probability_best != first.probability_best
    assert isinstance(first, Reallocation) and first.draws == 10_000


def test_reallocating_moves_only_the_buckets_that_change_hands() -> None:
    before = reallocate({"a": Rate(50, 500), "b": Rate(55, 500), "c": Rate(50, 500)}, seed=1)
    after = reallocate({"a": Rate(100, 1000), "b": Rate(140, 1000), "c": Rate(90, 1000)}, seed=2)
    first = allocate(before.shares)
    second = allocate(after.shares, first)
    old, new = first.owners(), second.owners()
    moved = [i for i in range(BUCKETS) if old[i] != new[i]]
    old_counts, new_counts = shares_to_counts(before.shares), shares_to_counts(after.shares)
    gained = {arm: new_counts[arm] - old_counts[arm] for arm in new_counts}
    assert len(moved) == sum(g for g in gained.values() if g > 0) > 0
    assert all(gained[str(old[i])] < 0 < gained[str(new[i])] for i in moved)
    assert second.counts() == new_counts


@pytest.mark.parametrize(
    ("arms", "kwargs", "named"),
    [
        ({"a": Rate(1, 10)}, {}, "arms"),
        ({"a": Rate(1, 10), "b": Mean(1.0, 1.0, 10)}, {}, "arms"),
        ({"a": Rate(11, 10), "b": Rate(1, 10)}, {}, "arm 'a'"),
        ({"a": Rate(-1, 10), "b": Rate(1, 10)}, {}, "arm 'a'"),
        ({"a": Mean(1.0, 1.0, 1), "b": Mean(1.0, 1.0, 10)}, {}, "arm 'a'"),
        ({"a": Mean(1.0, -1.0, 10), "b": Mean(1.0, 1.0, 10)}, {}, "arm 'a'"),
        ({"a": Mean(float("nan"), 1.0, 10), "b": Mean(1.0, 1.0, 10)}, {}, "arm 'a'"),
        ({"a": Rate(1, 10), "b": Rate(1, 10)}, {"floor": 0.6}, "floor"),
        ({"a": Rate(1, 10), "b": Rate(1, 10)}, {"floor": -0.1}, "floor"),
        ({"a": Rate(1, 10), "b": Rate(1, 10)}, {"draws": 0}, "draws"),
    ],
)
def test_bad_input_is_refused_naming_what_is_wrong(
    arms: dict[str, Rate | Mean], kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(InvalidArgument, match=f"^{named}"):
        reallocate(arms, **kwargs)  # type: ignore[arg-type]
