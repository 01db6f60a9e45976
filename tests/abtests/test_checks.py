"""SRM, multiple-testing corrections and guardrails."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from plinth.abtests.checks import (
    adjust_p_values,
    check_guardrail,
    check_interval,
    sample_ratio_mismatch,
)
from plinth.abtests.stats import compare, mean_from_moments, proportion_from_counts
from plinth.errors import InvalidArgument


def test_srm_is_scipy_chisquare_against_planned_shares() -> None:
    observed = {"control": 50_421, "b": 24_800, "c": 24_779}
    check = sample_ratio_mismatch(observed, {"control": 0.5, "b": 0.25, "c": 0.25})
    expected = stats.chisquare([50_421, 24_800, 24_779], [50_000, 25_000, 25_000])
    assert check.statistic == pytest.approx(expected.statistic)
    assert check.p_value == pytest.approx(expected.pvalue)
    assert check.df == 2 and check.expected == {"control": 50_000, "b": 25_000, "c": 25_000}
    assert not check.flagged  # p ~ 0.029: unusual, not the 0.001 an SRM takes
    assert "chi-square" in check.method


def test_a_skewed_log_is_flagged_and_a_fair_one_is_not() -> None:
    # Treatment lost 1.5 % of its units (a crash before logging): far beyond chance at 200k.
    skewed = sample_ratio_mismatch({"a": 100_000, "b": 98_500}, {"a": 1, "b": 1})
    fair = sample_ratio_mismatch({"a": 100_000, "b": 99_800}, {"a": 1, "b": 1})
    assert skewed.flagged and skewed.p_value < 0.001
    assert not fair.flagged and fair.p_value > 0.1


def test_srm_refuses_arms_that_do_not_match() -> None:
    with pytest.raises(InvalidArgument, match="same two or more arms"):
        sample_ratio_mismatch({"a": 10, "b": 10}, {"a": 0.5, "c": 0.5})
    with pytest.raises(InvalidArgument, match="positive"):
        sample_ratio_mismatch({"a": 10, "b": 10}, {"a": 1.0, "b": 0.0})


def test_holm_and_bh_by_hand_and_by_statsmodels() -> None:
    p_values = {("ctr", "b"): 0.01, ("revenue", "b"): 0.04, ("ctr", "c"): 0.03}
    holm = adjust_p_values(p_values, method="holm")
    bh = adjust_p_values(p_values, method="benjamini-hochberg")
    # Holm: 3 * 0.01, then max(0.03, 2 * 0.03), then max(0.06, 1 * 0.04).
    assert {k: v.adjusted_p_value for k, v in holm.items()} == pytest.approx(
        {("ctr", "b"): 0.03, ("ctr", "c"): 0.06, ("revenue", "b"): 0.06}
    )
    # BH: 3/1 * 0.01; min(3/2 * 0.03, 0.04); 3/3 * 0.04.
    assert {k: v.adjusted_p_value for k, v in bh.items()} == pytest.approx(
        {("ctr", "b"): 0.03, ("ctr", "c"): 0.04, ("revenue", "b"): 0.04}
    )
    assert [v.rejected for v in holm.values()] == [True, False, False]
    assert all(v.rejected for v in bh.values())
    assert holm[("ctr", "b")].p_value == 0.01 and "Holm" in holm[("ctr", "b")].method

    raw = [0.001, 0.2, 0.012, 0.04, 0.5, 0.0301]
    for ours, theirs in (("holm", "holm"), ("benjamini-hochberg", "fdr_bh")):
        reject, adjusted, _, _ = multipletests(raw, alpha=0.05, method=theirs)
        got = adjust_p_values(dict(enumerate(raw)), method=ours)  # type: ignore[arg-type]
        assert [got[i].adjusted_p_value for i in range(6)] == list(adjusted)
        assert [got[i].rejected for i in range(6)] == list(reject)


def test_holm_equals_statsmodels_with_ties_and_extremes() -> None:
    rng = np.random.default_rng(11)
    for size in (1, 2, 7, 12):
        raw = np.round(rng.random(size) ** 3, 3)  # rounding makes ties
        raw[0] = 1.0
        reject, adjusted, _, _ = multipletests(raw, alpha=0.05, method="holm")
        got = adjust_p_values(dict(enumerate(raw)), method="holm")
        assert [got[i].adjusted_p_value for i in range(size)] == pytest.approx(list(adjusted))
        assert [got[i].rejected for i in range(size)] == list(reject)


def test_corrections_refuse_bad_input() -> None:
    with pytest.raises(InvalidArgument, match="correction must be one of"):
        adjust_p_values({"a": 0.1}, method="bonferroni")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"\[0, 1\]"):
        adjust_p_values({"a": 1.1}, method="holm")
    assert adjust_p_values({}, method="holm") == {}


def test_guardrail_breached_when_the_interval_reaches_past_the_bound() -> None:
    comparison = compare(
        mean_from_moments(5000, 100.0, 400.0), mean_from_moments(5000, 97.0, 400.0)
    )
    low, high = comparison.relative_ci or (0.0, 0.0)
    assert low < -0.035 < high < -0.02  # -3 % with an interval of about +-0.8 %

    ok = check_guardrail(comparison, max_worsening=0.05)
    breached = check_guardrail(comparison, max_worsening=0.035)
    established = check_guardrail(comparison, max_worsening=0.02)
    assert not ok.breached and not ok.significant
    assert breached.breached and not breached.significant
    assert established.breached and established.significant
    assert breached.bound == -0.035
    assert "cannot be ruled out" in breached.evidence and "-3.50%" in breached.evidence
    assert "established" in established.evidence
    assert "Welch" in ok.method


def test_guardrail_on_a_metric_where_lower_is_better() -> None:
    # Error rate 10 % -> 10.9 %: absolute rise of 0.009.
    comparison = compare(proportion_from_counts(2000, 20_000), proportion_from_counts(2180, 20_000))
    check = check_guardrail(comparison, max_worsening=0.01, relative=False, higher_is_better=False)
    assert check.breached and not check.significant
    assert check.bound == 0.01 and check.ci == comparison.absolute_ci
    assert not check_guardrail(
        comparison, max_worsening=0.03, relative=False, higher_is_better=False
    ).breached


def test_guardrail_on_any_interval() -> None:
    check = check_interval(
        -0.1, (-0.15, -0.06), max_worsening=0.05, relative=True, higher_is_better=True, method="m"
    )
    assert check.breached and check.significant
    with pytest.raises(InvalidArgument, match="max_worsening"):
        check_interval(0, (0, 0), max_worsening=-1, relative=True, higher_is_better=True, method="")
