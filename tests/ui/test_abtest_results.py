"""The A/B results view: how far an experiment is towards its planned sample."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

import plinth
from plinth.abtests.power import sample_size
from plinth.abtests.types import Status
from plinth.ui.abtest_results import plan_progress
from tests.ui.pages.abtests_data import design, traffic


def test_progress_towards_the_planned_sample() -> None:
    ab = plinth.default_client().abtests
    design(ab)
    ab.start_abtest("churn")
    traffic(ab, "churn", {"control": 1000, "b": 1000}, {"control": 100, "b": 150})
    exp, results = ab.get_abtest("churn"), ab.abtest_results("churn")
    plan = sample_size("proportions", 0.02, 0.05, 0.8, 2, 0.1)  # mde 0.02, control's 10 %
    now = datetime.now(UTC)
    found = plan_progress(replace(exp, started_at=now - timedelta(days=2)), results, [])
    assert found is not None
    assert (found.per_arm, found.fewest) == (plan.per_arm, 1000)
    assert found.share == pytest.approx(1000 / plan.per_arm)
    assert found.units_per_day == pytest.approx(1000, rel=1e-3)  # 2,000 units in 2 days
    assert found.days_left == pytest.approx((2 * plan.per_arm - 2000) / 1000, rel=1e-3)
    assert found.method == plan.method
    young = plan_progress(replace(exp, started_at=now - timedelta(minutes=5)), results, [])
    assert young is not None and (young.units_per_day, young.days_left) == (None, None)
    stopped = replace(exp, status=Status.STOPPED, started_at=now - timedelta(days=2))
    done = plan_progress(replace(stopped, stopped_at=now - timedelta(days=1)), results, [])
    assert done is not None and done.units_per_day == pytest.approx(2000, rel=1e-3)
    assert done.days_left is None  # it will get no more units
    assert plan_progress(replace(exp, started_at=None), results, []) is None
