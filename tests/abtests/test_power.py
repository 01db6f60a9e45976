"""Power analysis: statsmodels' answers, and the planned power seen in simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower, TTestIndPower  # type: ignore[import-untyped]
from statsmodels.stats.proportion import proportion_effectsize  # type: ignore[import-untyped]

from plinth.abtests.power import Kind, PowerResult, duration_days, sample_size
from plinth.errors import InvalidArgument


def test_the_t_test_case_of_the_cli_example() -> None:
    result = sample_size("means", 0.05)
    assert result.per_arm_exact == pytest.approx(6280.0489, abs=1e-3)
    assert result.per_arm == 6281
    assert result.total == 12562
    assert result.effect_size == 0.05
    assert (result.alpha, result.power, result.arms) == (0.05, 0.8, 2)
    assert "t-test" in result.method and "Cohen's d" in result.method


def test_proportions_agree_with_statsmodels() -> None:
    result = sample_size("proportions", 0.02, baseline=0.10, power=0.9)
    h = proportion_effectsize(0.12, 0.10)
    expected = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.9, ratio=1)
    assert result.effect_size == pytest.approx(h)
    assert result.per_arm_exact == pytest.approx(expected)
    assert result.per_arm == int(np.ceil(expected))
    assert "Cohen's h" in result.method


def test_more_arms_compare_each_with_control_at_a_bonferroni_alpha() -> None:
    three = sample_size("means", 0.1, arms=3)
    expected = TTestIndPower().solve_power(effect_size=0.1, alpha=0.025, power=0.8, ratio=1)
    assert three.per_arm_exact == pytest.approx(expected)
    assert three.per_arm > sample_size("means", 0.1).per_arm
    assert three.total == three.per_arm * 3
    assert three.alpha == 0.05
    assert "Bonferroni" in three.method and "0.025" in three.method
    assert "Bonferroni" not in sample_size("means", 0.1).method


def test_the_planned_sample_detects_the_effect_at_about_the_planned_power() -> None:
    rng = np.random.default_rng(20261204)
    plan = sample_size("means", 0.25, power=0.8)
    experiments = 4000
    control = rng.normal(0.0, 1.0, size=(experiments, plan.per_arm))
    treated = rng.normal(0.25, 1.0, size=(experiments, plan.per_arm))
    rejected = stats.ttest_ind(treated, control, axis=1).pvalue < 0.05
    # 3 standard errors of a proportion over 4,000 experiments: about +-0.019
    assert rejected.mean() == pytest.approx(0.8, abs=0.02)


def test_the_planned_sample_for_proportions_gives_about_the_planned_power() -> None:
    rng = np.random.default_rng(7)
    plan = sample_size("proportions", 0.03, baseline=0.10, power=0.8)
    n, experiments = plan.per_arm, 4000
    control = rng.binomial(n, 0.10, size=experiments)
    treated = rng.binomial(n, 0.13, size=experiments)
    pooled = (control + treated) / (2 * n)
    z = (treated - control) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    rejected = 2 * stats.norm.sf(np.abs(z)) < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.025)


def test_duration_follows_the_traffic() -> None:
    plan = sample_size("means", 0.05)
    assert duration_days(plan, 1000) == pytest.approx(12.562)
    with pytest.raises(InvalidArgument, match="units_per_day"):
        duration_days(plan, 0)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"kind": "means", "effect": 0}, "effect"),
        ({"kind": "means", "effect": -0.1}, "effect"),
        ({"kind": "means", "effect": 0.1, "alpha": 0}, "alpha"),
        ({"kind": "means", "effect": 0.1, "alpha": 1.5}, "alpha"),
        ({"kind": "means", "effect": 0.1, "power": 1}, "power"),
        ({"kind": "means", "effect": 0.1, "arms": 1}, "arms"),
        ({"kind": "means", "effect": 50.0}, "effect"),
        ({"kind": "medians", "effect": 0.1}, "kind"),
        ({"kind": "proportions", "effect": 0.1}, "baseline"),
        ({"kind": "proportions", "effect": 0.1, "baseline": 0}, "baseline"),
        ({"kind": "proportions", "effect": 0.1, "baseline": 1.2}, "baseline"),
        ({"kind": "proportions", "effect": 0.2, "baseline": 0.9}, "effect"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{named}"):
        sample_size(**kwargs)  # type: ignore[arg-type]


def test_a_result_is_a_frozen_value() -> None:
    plan = sample_size("means", 0.2)
    assert isinstance(plan, PowerResult)
    with pytest.raises(AttributeError):
        plan.per_arm = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kind", "effect", "baseline", "said"),
    [
        ("proportions", 1e-17, 0.1, "an effect size of 0 is too small to plan a sample for"),
        ("proportions", 1e-11, 0.1, "an effect size of 3.333e-11 is too small"),
        ("means", 1e-9, None, "an effect size of 1e-09 is too small"),
        ("means", 50.0, None, "an effect size of 50 is too large"),
    ],
)
def test_an_effect_no_sample_fits_is_refused_saying_which_way(
    kind: Kind, effect: float, baseline: float | None, said: str
) -> None:
    with pytest.raises(InvalidArgument, match=f"^effect: {said}"):
        sample_size(kind, effect, baseline=baseline)
