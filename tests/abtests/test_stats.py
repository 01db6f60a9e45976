"""Fixed-horizon comparisons agree with scipy and statsmodels on the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats._delta_method import NonlinearDeltaCov
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from plinth.abtests.stats import (
    ArmSummary,
    compare,
    compare_arms,
    mean_from_moments,
    proportion_from_counts,
    ratio_from_moments,
    summarize_mean,
    summarize_proportion,
    summarize_ratio,
)
from plinth.errors import InvalidArgument


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_proportions_match_statsmodels_pooled_z_and_wald_interval() -> None:
    rng = _rng()
    control = (rng.random(4000) < 0.10).astype(int)
    treatment = (rng.random(3800) < 0.12).astype(int)
    result = compare(summarize_proportion(control), summarize_proportion(treatment), alpha=0.1)

    z, p = proportions_ztest([treatment.sum(), control.sum()], [treatment.size, control.size])
    low, high = confint_proportions_2indep(
        treatment.sum(), treatment.size, control.sum(), control.size, method="wald", alpha=0.1
    )
    assert result.statistic == pytest.approx(z, rel=1e-10)
    assert result.p_value == pytest.approx(p, rel=1e-10)
    assert result.absolute_ci == pytest.approx((low, high), rel=1e-10)
    assert result.absolute_lift == pytest.approx(treatment.mean() - control.mean())
    assert result.method.startswith("two-proportion z-test (pooled)")
    assert result.control.units == 4000 and result.treatment.units == 3800
    assert summarize_proportion(control) == proportion_from_counts(int(control.sum()), 4000)


def test_means_match_scipy_welch() -> None:
    rng = _rng()
    control = rng.exponential(10.0, 3000)
    treatment = rng.exponential(10.8, 2500)
    result = compare(summarize_mean(control), summarize_mean(treatment))

    welch = stats.ttest_ind(treatment, control, equal_var=False)
    assert result.statistic == pytest.approx(welch.statistic, rel=1e-10)
    assert result.p_value == pytest.approx(welch.pvalue, rel=1e-10)
    assert result.df == pytest.approx(welch.df, rel=1e-10)
    ci = welch.confidence_interval(0.95)
    assert result.absolute_ci == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert result.method.startswith("Welch t-test")


def test_means_from_moments_match_scipy_from_stats() -> None:
    control = mean_from_moments(1200, 5.0, 4.0)
    treatment = mean_from_moments(900, 5.3, 6.25)
    result = compare(control, treatment)
    expected = stats.ttest_ind_from_stats(5.3, 2.5, 900, 5.0, 2.0, 1200, equal_var=False)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-10)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-10)


def test_relative_lift_interval_is_statsmodels_delta_method() -> None:
    control, treatment = mean_from_moments(1000, 4.0, 9.0), mean_from_moments(1000, 4.4, 10.0)
    result = compare(control, treatment, alpha=0.05)
    delta = NonlinearDeltaCov(
        lambda p: np.array([p[1] / p[0] - 1]),
        np.array([4.0, 4.4]),
        np.diag([control.variance, treatment.variance]),
    )
    low, high = delta.conf_int(alpha=0.05)[0]
    assert result.relative_lift == pytest.approx(0.1)
    assert result.relative_ci == pytest.approx((low, high), rel=1e-6)
    assert "delta method" in result.relative_method


def test_ratio_variance_is_statsmodels_delta_method() -> None:
    rng = _rng()
    sessions = rng.poisson(3.0, 5000) + 1
    clicks = rng.binomial(sessions, 0.2)
    summary = summarize_ratio(clicks, sessions)

    cov = np.cov(clicks, sessions, ddof=1) / clicks.size
    delta = NonlinearDeltaCov(
        lambda p: np.array([p[0] / p[1]]), np.array([clicks.mean(), sessions.mean()]), cov
    )
    assert summary.estimate == pytest.approx(clicks.sum() / sessions.sum(), rel=1e-12)
    assert summary.variance == pytest.approx(delta.var()[0], rel=1e-6)
    assert summary.kind == "ratio" and summary.units == 5000


def test_ratio_comparison_is_a_z_test_on_the_delta_method_variances() -> None:
    control = ratio_from_moments(2000, 0.6, 3.0, 0.8, 2.0, 0.5)
    treatment = ratio_from_moments(2100, 0.7, 3.0, 0.9, 2.1, 0.55)
    result = compare(control, treatment)
    se = np.sqrt(control.variance + treatment.variance)
    z = (treatment.estimate - control.estimate) / se
    assert result.statistic == pytest.approx(z)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert result.df is None
    assert result.method.startswith("delta method")


def test_a_ratio_over_a_constant_denominator_is_the_mean() -> None:
    values = _rng().normal(2.0, 1.0, 500)
    ratio, mean = summarize_ratio(values, np.ones(500)), summarize_mean(values)
    assert ratio.estimate == pytest.approx(mean.estimate)
    assert ratio.variance == pytest.approx(mean.variance)


def test_every_arm_is_compared_with_control() -> None:
    arms = {
        "control": proportion_from_counts(100, 1000),
        "b": proportion_from_counts(120, 1000),
        "c": proportion_from_counts(90, 1000),
    }
    results = compare_arms(arms, "control")
    assert sorted(results) == ["b", "c"]
    assert results["c"].absolute_lift == pytest.approx(-0.01)
    with pytest.raises(InvalidArgument, match="'ctrl'"):
        compare_arms(arms, "ctrl")


def test_no_conversions_anywhere_is_no_evidence() -> None:
    result = compare(proportion_from_counts(0, 500), proportion_from_counts(0, 500))
    assert result.p_value == 1.0
    assert result.absolute_ci == (0.0, 0.0)
    assert result.relative_lift is None and result.relative_ci is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: summarize_proportion([0, 1, 2]), "0 or 1"),
        (lambda: summarize_mean([1.0]), "at least 2 units"),
        (lambda: summarize_mean([1.0, np.nan]), "NaN"),
        (lambda: summarize_ratio([1, 2], [0, 0]), "denominator"),
        (lambda: summarize_ratio([1, 2, 3], [1, 2]), "one value per unit"),
        (lambda: proportion_from_counts(11, 10), "successes"),
        (lambda: mean_from_moments(10, 1.0, -1.0), "variance"),
        (
            lambda: compare(proportion_from_counts(1, 10), mean_from_moments(10, 1.0, 1.0)),
            "proportion arm with a mean arm",
        ),
        (
            lambda: compare(
                proportion_from_counts(1, 10), proportion_from_counts(1, 10), alpha=1.5
            ),
            "alpha",
        ),
    ],
)
def test_bad_input_is_refused_by_name(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(InvalidArgument, match=message):
        call()


def test_summaries_are_plain_values() -> None:
    assert ArmSummary("mean", 10, 1.0, 0.1) == mean_from_moments(10, 1.0, 1.0)
