"""Simulated experiments (fixed seeds): error rates and power are what the methods promise.

"Within sampling error" means a two-sided binomial test of the observed rate against the
promised one does not reject at 0.001 (the rates are deterministic given the seeds).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize

from plinth.abtests.checks import adjust_p_values
from plinth.abtests.cuped import compare_cuped
from plinth.abtests.sequential import confidence_sequence, mixing_variance_for_horizon
from plinth.abtests.stats import (
    compare,
    proportion_from_counts,
    summarize_mean,
    summarize_proportion,
    summarize_ratio,
)

ALPHA = 0.05
EXPERIMENTS = 2000


def _within_sampling_error(hits: int, rate: float) -> bool:
    return bool(stats.binomtest(hits, EXPERIMENTS, rate).pvalue > 0.001)


def _mean_rejections(control: np.ndarray, treatment: np.ndarray) -> int:
    return sum(
        compare(summarize_mean(c), summarize_mean(t), alpha=ALPHA).p_value < ALPHA
        for c, t in zip(control, treatment, strict=True)
    )


def test_aa_welch_false_positive_rate_is_alpha_on_skewed_data() -> None:
    rng = np.random.default_rng(101)
    data = rng.exponential(20.0, (2, EXPERIMENTS, 400))
    hits = _mean_rejections(data[0], data[1])
    assert _within_sampling_error(hits, ALPHA), hits / EXPERIMENTS


def test_aa_two_proportion_false_positive_rate_is_alpha() -> None:
    rng = np.random.default_rng(102)
    counts = rng.binomial(3000, 0.08, (2, EXPERIMENTS))
    hits = sum(
        compare(proportion_from_counts(c, 3000), proportion_from_counts(t, 3000)).p_value < ALPHA
        for c, t in zip(counts[0], counts[1], strict=True)
    )
    assert _within_sampling_error(hits, ALPHA), hits / EXPERIMENTS


def test_aa_ratio_false_positive_rate_is_alpha_when_units_are_clustered() -> None:
    # Each user has their own click rate, so a user's sessions are correlated: a test that
    # treated sessions as independent would reject far too often; the delta method does not.
    rng = np.random.default_rng(103)
    shape = (2, EXPERIMENTS, 300)
    sessions = rng.poisson(4.0, shape) + 1
    clicks = rng.binomial(sessions, rng.beta(1.0, 4.0, shape))
    hits = sum(
        compare(summarize_ratio(cn, cd), summarize_ratio(tn, td)).p_value < ALPHA
        for cn, cd, tn, td in zip(clicks[0], sessions[0], clicks[1], sessions[1], strict=True)
    )
    assert _within_sampling_error(hits, ALPHA), hits / EXPERIMENTS


def _peeking(effect: float, seed: int, looks: int = 20, batch: int = 100) -> tuple[np.ndarray, ...]:
    """Cumulative differences, their variances and Welch p-values at every look: arrays of
    shape (experiments, looks)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 1.0, (2, EXPERIMENTS, looks * batch))
    data[1] += effect
    ends = np.arange(batch, looks * batch + 1, batch)
    sums = np.cumsum(data, axis=-1)[..., ends - 1]
    squares = np.cumsum(data**2, axis=-1)[..., ends - 1]
    means = sums / ends
    variances = (squares - sums**2 / ends) / (ends - 1)
    welch = stats.ttest_ind_from_stats(
        means[1],
        np.sqrt(variances[1]),
        ends,
        means[0],
        np.sqrt(variances[0]),
        ends,
        equal_var=False,
    )
    diff = means[1] - means[0]
    variance = (variances[0] + variances[1]) / ends
    return diff, variance, welch.pvalue


def test_peeking_inflates_the_fixed_test_but_not_the_sequential_one() -> None:
    diff, variance, naive_p = _peeking(effect=0.0, seed=104)
    naive_rate = (naive_p < ALPHA).any(axis=1).mean()
    assert naive_rate > 3 * ALPHA  # about 0.25 with 20 looks

    tau2 = mixing_variance_for_horizon(2.0 / 2000, alpha=ALPHA)
    p, low, high = confidence_sequence(diff, variance, alpha=ALPHA, mixing_variance=tau2)
    assert (p[:, -1] <= ALPHA).mean() <= ALPHA
    # The last look's p-value is the running minimum: rejecting at any look is the same.
    assert ((p <= ALPHA).any(axis=1) == (p[:, -1] <= ALPHA)).all()
    assert ((low <= 0) & (high >= 0)).all(axis=1).mean() >= 1 - ALPHA


def test_the_confidence_sequence_covers_a_real_lift_at_every_look_and_finds_it() -> None:
    diff, variance, _ = _peeking(effect=0.15, seed=105)
    tau2 = mixing_variance_for_horizon(2.0 / 2000, alpha=ALPHA)
    p, low, high = confidence_sequence(diff, variance, alpha=ALPHA, mixing_variance=tau2)
    assert ((low <= 0.15) & (high >= 0.15)).all(axis=1).mean() >= 1 - ALPHA
    # 2,000 units per arm give a fixed test 98 % power at 0.15 sd; the price of peeking
    # freely is some of it.
    assert (p[:, -1] <= ALPHA).mean() > 0.8


def test_ab_mean_effect_is_detected_at_the_planned_power() -> None:
    n = math.ceil(TTestIndPower().solve_power(effect_size=0.2, alpha=ALPHA, power=0.8))
    rng = np.random.default_rng(106)
    data = rng.normal(0.0, 1.0, (2, EXPERIMENTS, n))
    data[1] += 0.2
    hits = _mean_rejections(data[0], data[1])
    assert n == 394
    assert _within_sampling_error(hits, 0.8), hits / EXPERIMENTS


def test_ab_conversion_effect_is_detected_at_the_planned_power() -> None:
    effect = proportion_effectsize(0.12, 0.10)
    n = math.ceil(NormalIndPower().solve_power(effect_size=effect, alpha=ALPHA, power=0.8))
    rng = np.random.default_rng(107)
    control, treatment = rng.binomial(n, 0.10, EXPERIMENTS), rng.binomial(n, 0.12, EXPERIMENTS)
    hits = sum(
        compare(proportion_from_counts(c, n), proportion_from_counts(t, n)).p_value < ALPHA
        for c, t in zip(control, treatment, strict=True)
    )
    assert _within_sampling_error(hits, 0.8), hits / EXPERIMENTS


def test_aa_cuped_false_positive_rate_is_alpha() -> None:
    rng = np.random.default_rng(108)
    covariate = rng.gamma(2.0, 5.0, (2, EXPERIMENTS, 300))
    outcome = 0.9 * covariate + rng.normal(0.0, 3.0, covariate.shape)
    hits = sum(
        compare_cuped({"a": y[0], "b": y[1]}, {"a": x[0], "b": x[1]}, "a")["b"].p_value < ALPHA
        for y, x in zip(outcome.swapaxes(0, 1), covariate.swapaxes(0, 1), strict=True)
    )
    assert _within_sampling_error(hits, ALPHA), hits / EXPERIMENTS


def test_corrections_hold_the_family_wise_rate_across_arms_and_metrics() -> None:
    # Three arms against one control, two metrics each: six tests of true nulls per experiment.
    rng = np.random.default_rng(109)
    experiments = 1000
    revenue = rng.exponential(10.0, (experiments, 4, 300))
    converted = rng.random((experiments, 4, 300)) < 0.1
    any_raw = any_holm = any_bh = 0
    for rev, conv in zip(revenue, converted, strict=True):
        p_values = {}
        for arm in (1, 2, 3):
            p_values[("revenue", arm)] = compare(
                summarize_mean(rev[0]), summarize_mean(rev[arm])
            ).p_value
            p_values[("converted", arm)] = compare(
                summarize_proportion(conv[0]), summarize_proportion(conv[arm])
            ).p_value
        any_raw += min(p_values.values()) < ALPHA
        any_holm += any(a.rejected for a in adjust_p_values(p_values, method="holm").values())
        any_bh += any(
            a.rejected for a in adjust_p_values(p_values, method="benjamini-hochberg").values()
        )
    assert any_raw / experiments > 3 * ALPHA  # about 0.2 uncorrected
    upper = stats.binom.ppf(0.999, experiments, ALPHA) / experiments
    assert any_holm / experiments <= upper and any_bh / experiments <= upper
