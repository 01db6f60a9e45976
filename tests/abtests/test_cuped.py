"""CUPED agrees with least squares and Welch's test on the adjusted values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from plinth.abtests.cuped import compare_cuped, cuped_adjust, fit_cuped
from plinth.abtests.stats import compare, summarize_mean
from plinth.errors import InvalidArgument


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_cuped_theta_and_reduction_match_least_squares() -> None:
    rng = _rng()
    x = {arm: rng.normal(10, 2, 3000) for arm in ("a", "b")}
    y = {arm: 0.8 * x[arm] + rng.normal(0, 1, 3000) + (0.1 if arm == "b" else 0) for arm in x}
    fit = fit_cuped(y, x)
    x_all, y_all = np.concatenate([x["a"], x["b"]]), np.concatenate([y["a"], y["b"]])
    slope = stats.linregress(x_all, y_all)
    assert fit.theta == pytest.approx(slope.slope, rel=1e-10)
    assert fit.variance_reduction == pytest.approx(slope.rvalue**2, rel=1e-10)

    cuped = compare_cuped(y, x, "a")["b"]
    adjusted = {arm: y[arm] - fit.theta * (x[arm] - x_all.mean()) for arm in x}
    welch = stats.ttest_ind(adjusted["b"], adjusted["a"], equal_var=False)
    assert cuped.p_value == pytest.approx(welch.pvalue, rel=1e-8)
    assert "CUPED" in cuped.method and cuped.variance_reduction == fit.variance_reduction

    plain = compare(summarize_mean(y["a"]), summarize_mean(y["b"]))
    plain_width = plain.absolute_ci[1] - plain.absolute_ci[0]
    cuped_width = cuped.absolute_ci[1] - cuped.absolute_ci[0]
    # Var(y') = (1 - rho^2) Var(y), so the interval narrows by sqrt(1 - rho^2) (here ~0.53).
    assert cuped_width == pytest.approx(plain_width * np.sqrt(1 - fit.variance_reduction), rel=0.05)
    assert cuped_width < 0.6 * plain_width
    assert plain.variance_reduction is None


def test_adjusting_removes_the_covariates_prediction() -> None:
    fit = fit_cuped({"a": [1.0, 2.0, 3.0], "b": [2.0, 4.0, 6.5]}, {"a": [1, 2, 3], "b": [2, 4, 6]})
    adjusted = cuped_adjust([2.0, 4.0, 6.5], [2, 4, 6], fit)
    expected = np.array([2.0, 4.0, 6.5]) - fit.theta * (np.array([2, 4, 6]) - 3.0)
    assert fit.covariate_mean == 3.0
    assert adjusted == pytest.approx(expected)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="constant"):
        fit_cuped({"a": [1, 2, 3]}, {"a": [1, 1, 1]})
    with pytest.raises(InvalidArgument, match="covariate array for every arm"):
        fit_cuped({"a": [1, 2, 3]}, {"b": [1, 2, 3]})
    with pytest.raises(InvalidArgument, match="3 outcomes and 2 covariates"):
        fit_cuped({"a": [1, 2, 3]}, {"a": [1, 2]})
    with pytest.raises(InvalidArgument, match="'z'"):
        compare_cuped({"a": [1, 2, 3]}, {"a": [1, 2, 4]}, "z")
