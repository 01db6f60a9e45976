"""Bayesian read-outs against closed forms and numerical integrals from scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from plinth.abtests.bayes import beta_binomial, normal_approximation
from plinth.abtests.stats import mean_from_moments, proportion_from_counts
from plinth.errors import InvalidArgument


def _beta_beats(a_c: float, b_c: float, a_t: int, b_t: float) -> float:
    """P(T > C) for T ~ Beta(a_t, b_t), C ~ Beta(a_c, b_c), integer a_t (closed form)."""
    i = np.arange(a_t)
    terms = (
        special.betaln(a_c + i, b_c + b_t)
        - np.log(b_t + i)
        - special.betaln(1 + i, b_t)
        - special.betaln(a_c, b_c)
    )
    return float(np.exp(terms).sum())


def _beta_loss(control: stats.rv_continuous, treatment: stats.rv_continuous) -> float:
    """E[max(C - T, 0)] by quadrature: for each t, E[max(C - t, 0)] is in closed form."""
    a, b = control.args

    def inner(t: float) -> float:
        upper_mean = a / (a + b) * stats.beta.sf(t, a + 1, b)
        return float(upper_mean - t * control.sf(t))

    low, high = treatment.ppf([1e-12, 1 - 1e-12])
    return float(integrate.quad(lambda t: treatment.pdf(t) * inner(t), low, high, limit=200)[0])


def test_beta_binomial_matches_the_closed_form_and_quadrature() -> None:
    result = beta_binomial((120, 1000), (140, 1000))
    control, treatment = stats.beta(121, 881), stats.beta(141, 861)
    exact = _beta_beats(121, 881, 141, 861)
    standard_error = math.sqrt(exact * (1 - exact) / result.draws)  # type: ignore[operator]
    assert abs(result.probability_to_beat_control - exact) < 4 * standard_error
    assert result.expected_loss_treatment == pytest.approx(_beta_loss(control, treatment), rel=0.02)
    assert result.expected_loss_control == pytest.approx(_beta_loss(treatment, control), rel=0.02)
    assert result.lift == pytest.approx(141 / 1002 - 121 / 1002, abs=2e-4)
    assert result.lift_interval[0] < 0.02 < result.lift_interval[1]
    assert "Monte Carlo" in result.method and result.prior == "Beta(1, 1) on each arm's rate"


def test_beta_binomial_is_reproducible_and_takes_a_prior() -> None:
    assert beta_binomial((5, 50), (9, 50)) == beta_binomial((5, 50), (9, 50))
    informed = beta_binomial((5, 50), (9, 50), prior=(10, 90))
    exact = _beta_beats(15, 135, 19, 131)
    assert informed.probability_to_beat_control == pytest.approx(exact, abs=0.004)
    assert (
        informed.probability_to_beat_control
        < beta_binomial((5, 50), (9, 50)).probability_to_beat_control
    )


def test_normal_approximation_is_the_closed_form_of_a_normal_difference() -> None:
    control, treatment = mean_from_moments(2000, 50.0, 400.0), mean_from_moments(2000, 51.0, 441.0)
    result = normal_approximation(control, treatment)
    m, s = 1.0, math.sqrt(0.2 + 0.2205)
    difference = stats.norm(m, s)
    assert result.probability_to_beat_control == pytest.approx(difference.sf(0))
    loss_t = integrate.quad(lambda d: -d * difference.pdf(d), m - 12 * s, 0)[0]
    loss_c = integrate.quad(lambda d: d * difference.pdf(d), 0, m + 12 * s)[0]
    assert result.expected_loss_treatment == pytest.approx(loss_t, rel=1e-6)
    assert result.expected_loss_control == pytest.approx(loss_c, rel=1e-6)
    assert result.lift_interval == pytest.approx(difference.interval(0.95))
    assert result.draws is None and "closed form" in result.method


def test_normal_approximation_without_variance() -> None:
    same = normal_approximation(proportion_from_counts(0, 10), proportion_from_counts(0, 10))
    assert same.probability_to_beat_control == 0.5 and same.expected_loss_treatment == 0.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="prior"):
        beta_binomial((1, 10), (1, 10), prior=(0, 1))
    with pytest.raises(InvalidArgument, match="treatment"):
        beta_binomial((1, 10), (11, 10))
    with pytest.raises(InvalidArgument, match="draws"):
        beta_binomial((1, 10), (1, 10), draws=10)
    with pytest.raises(InvalidArgument, match="level"):
        normal_approximation(mean_from_moments(10, 1, 1), mean_from_moments(10, 1, 1), level=2)
