"""The mSPRT's p-value and confidence sequence follow the documented formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from plinth.abtests.sequential import (
    confidence_sequence,
    mixing_variance_for_horizon,
    sequential_test,
)
from plinth.abtests.stats import ArmSummary, mean_from_moments, proportion_from_counts
from plinth.errors import InvalidArgument


def _log_lambda(d: float, v: float, tau2: float, theta0: float = 0.0) -> float:
    return 0.5 * math.log(v / (v + tau2)) + tau2 * (d - theta0) ** 2 / (2 * v * (v + tau2))


def test_one_look_is_the_mixture_likelihood_ratio() -> None:
    d, v, tau2 = 0.3, 0.01, 0.05
    p, low, high = confidence_sequence([d], [v], alpha=0.05, mixing_variance=tau2)
    assert p[0] == pytest.approx(math.exp(-_log_lambda(d, v, tau2)))
    # The interval's ends are exactly where the ratio reaches 1 / alpha.
    for end in (low[0], high[0]):
        assert _log_lambda(d, v, tau2, theta0=end) == pytest.approx(math.log(20))
    assert low[0] < d < high[0] and d - low[0] == pytest.approx(high[0] - d)


def test_the_interval_excludes_zero_exactly_when_p_is_below_alpha() -> None:
    v, tau2 = np.full(200, 0.01), 0.05
    d = np.linspace(0, 0.6, 200)
    p, low, _ = confidence_sequence(d[:, None], v[:, None], alpha=0.05, mixing_variance=tau2)
    assert ((p[:, 0] <= 0.05) == (low[:, 0] > 0)).all()


def test_p_values_only_fall_and_intervals_only_shrink() -> None:
    rng = np.random.default_rng(3)
    v = 1.0 / np.arange(100, 2100, 100)
    d = rng.normal(0, np.sqrt(v))
    p, low, high = confidence_sequence(d, v, alpha=0.1, mixing_variance=0.01)
    assert (np.diff(p) <= 0).all()
    assert (np.diff(low) >= 0).all() and (np.diff(high) <= 0).all()
    assert p[0] == pytest.approx(min(1.0, math.exp(-_log_lambda(d[0], v[0], 0.01))))


def test_a_look_without_variance_is_no_evidence() -> None:
    p, low, high = confidence_sequence([0.5, 0.5], [0.0, 0.01], alpha=0.05, mixing_variance=0.1)
    assert p[0] == 1.0 and low[0] == -math.inf and high[0] == math.inf
    assert math.isfinite(low[1]) and p[1] < 1.0


def test_the_horizon_mixing_variance_gives_the_narrowest_interval() -> None:
    alpha, horizon = 0.05, 0.004

    def width(tau2: float) -> float:
        _, low, high = confidence_sequence([0.0], [horizon], alpha=alpha, mixing_variance=tau2)
        return float(high[0] - low[0])

    best = mixing_variance_for_horizon(horizon, alpha=alpha)
    numeric = optimize.minimize_scalar(
        width, bounds=(1e-6, 1.0), method="bounded", options={"xatol": 1e-9}
    )
    assert best == pytest.approx(numeric.x, rel=1e-3)
    assert width(best) < width(best / 2) and width(best) < width(best * 2)


def test_sequential_test_on_cumulative_summaries() -> None:
    control = [mean_from_moments(n, 10.0, 4.0) for n in (100, 400, 1600)]
    treatment = [mean_from_moments(n, 10.4, 4.0) for n in (100, 400, 1600)]
    result = sequential_test(control, treatment, alpha=0.05, mixing_variance=0.05)

    d, v = 0.4, 8.0 / np.array([100, 400, 1600])
    p, low, high = confidence_sequence(np.full(3, d), v, alpha=0.05, mixing_variance=0.05)
    assert [look.p_value for look in result.looks] == pytest.approx(list(p))
    assert [look.ci[0] for look in result.looks] == pytest.approx(list(low))
    assert [look.ci[1] for look in result.looks] == pytest.approx(list(high))
    assert result.latest.units_control == 1600 and result.latest.lift == pytest.approx(0.4)
    assert result.significant is bool(p[-1] <= 0.05)
    assert result.significant and not result.looks[0].p_value <= 0.05
    assert "mSPRT" in result.method and result.mixing_variance == 0.05


@pytest.mark.parametrize(
    ("control", "treatment", "message"),
    [
        ([mean_from_moments(10, 1, 1)], [], "one control and one treatment"),
        (
            [mean_from_moments(20, 1, 1), mean_from_moments(10, 1, 1)],
            [mean_from_moments(10, 1, 1), mean_from_moments(20, 1, 1)],
            "cumulative",
        ),
        ([mean_from_moments(10, 1, 1)], [proportion_from_counts(1, 10)], "one metric kind"),
    ],
)
def test_bad_looks_are_refused(
    control: list[ArmSummary], treatment: list[ArmSummary], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        sequential_test(control, treatment, mixing_variance=0.1)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="mixing"):
        confidence_sequence([0.1], [0.1], alpha=0.05, mixing_variance=0.0)
    with pytest.raises(InvalidArgument, match="alpha"):
        mixing_variance_for_horizon(0.1, alpha=0.0)
