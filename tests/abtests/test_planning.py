"""An experiment's plan: the power analysis of its design and the duration its arms' recent
traffic (their models' prediction logs) gives it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plinth.abtests.power import duration_days, sample_size
from plinth.abtests.types import Arm, Kpi, KpiKind, Unit
from plinth.client import Client
from plinth.errors import InvalidArgument, NotFound
from plinth.serving.predlog import Entry, PredictionLog
from tests.abtests.test_service import create
from tests.backends import local_client

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

DAY_MS = 86_400_000
REVENUE = Kpi("revenue", KpiKind.MEAN, "revenue")


def log_requests(client: Client, model: str, ages_days: list[float]) -> None:
    log = PredictionLog(client.tracking.store)
    now = int(time.time() * 1000)
    frame = pd.DataFrame({"age": [33]})
    for i, age in enumerate(ages_days):
        log.record(
            Entry(model, 1, f"{model}-{i}", now - int(age * DAY_MS), frame, np.array([1]), 1.0)
        )
    log.close()


def test_the_duration_follows_the_arms_recent_traffic(tmp_path: Path) -> None:
    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    # churn serves 70 requests in the last 7 days (and 30 older ones, outside the window);
    # another model's traffic does not count
    log_requests(client, "churn", [i / 10 for i in range(70)] + [8 + i / 10 for i in range(30)])
    log_requests(client, "other", [0.5] * 40)
    create(client.abtests, "by-request", primary=REVENUE, mde=0.05, unit=Unit.REQUEST)
    found = client.abtests.plan_abtest("by-request")
    expected = sample_size("means", 0.05, 0.05, 0.8, 2)
    assert found.sample == expected and found.sample.per_arm == 6281
    assert found.units_per_day == pytest.approx(10.0)
    assert found.days == pytest.approx(duration_days(expected, 10.0))
    assert (
        "70 requests in the prediction logs of churn over the last 7 days" in found.traffic_method
    )
    assert "lower bound" not in found.traffic_method
    # by user, half the layer's traffic, over 14 days: 100 requests / 14 days * 0.5
    create(client.abtests, "by-user", primary=REVENUE, mde=0.05, layer="home", traffic=0.5)
    by_user = client.abtests.plan_abtest("by-user", days=14)
    assert by_user.units_per_day == pytest.approx(100 / 14 * 0.5)
    assert "x traffic 0.5" in by_user.traffic_method
    assert "duration is a lower bound" in by_user.traffic_method


def test_a_plan_without_traffic_or_with_bad_input(client: Client) -> None:
    ab = client.abtests
    create(ab)  # a conversion rate
    with pytest.raises(InvalidArgument, match=r"baseline: conversion is a proportion"):
        ab.plan_abtest("churn-v3")
    found = ab.plan_abtest("churn-v3", baseline=0.1)
    assert found.sample == sample_size("proportions", 0.02, 0.05, 0.8, 2, 0.1)
    assert (found.units_per_day, found.days) == (None, None)
    assert found.traffic_method.startswith("no requests in the prediction logs of churn")
    with pytest.raises(InvalidArgument, match=r"days: a window of 1 to 90 days"):
        ab.plan_abtest("churn-v3", baseline=0.1, days=0)
    with pytest.raises(InvalidArgument, match=r"baseline: a rate between 0 and 1"):
        ab.plan_abtest("churn-v3", baseline=1.5)
    with pytest.raises(NotFound):
        ab.plan_abtest("nope")
    by_url = [
        Arm("a", 0.5, url="http://127.0.0.1:9/predict", control=True),
        Arm("b", 0.5, url="http://127.0.0.1:9/predict"),
    ]
    create(ab, "urls", primary=REVENUE, arms=by_url, mde=0.1)
    assert "no arm serves a registered model" in ab.plan_abtest("urls").traffic_method
