"""A metric downsampled for a chart keeps its shape, its extremes and its best points."""

from __future__ import annotations

import math

import numpy as np
import pytest

import plinth
from plinth.client import Client
from plinth.tracking.series import downsample


def test_a_long_series_comes_back_short_with_its_extremes_and_best_points(
    client: Client,
) -> None:
    rng = np.random.default_rng(7)
    values = np.cumsum(rng.normal(size=5000))
    values[1234] = 1e6  # a spike no downsampling may lose
    values[4321] = -1e6
    with client.start_run(experiment="churn") as run:
        for step, value in enumerate(values):
            run.log_metric("loss", float(value), step=step)
    series = client.get_metric_series(run.id, "loss", max_points=300)
    assert series.count == 5000 and series.downsampled
    assert 250 <= len(series.steps) <= 300
    assert series.steps == sorted(series.steps)
    assert {1234, 4321, 0, 4999} <= set(series.steps)
    assert max(series.values) == 1e6 and min(series.values) == -1e6
    pairs = dict(zip(series.steps, series.values, strict=True))
    assert all(pairs[s] == values[s] for s in series.steps)  # real points, not averages
    # the best points (a loss goal: the running minimum) are all there, apart
    history = client.get_metric_history(run.id, "loss")
    assert series.best_steps == [p.step for p in history if p.is_best]


def test_a_range_of_steps_comes_at_full_detail(client: Client) -> None:
    with client.start_run(experiment="churn") as run:
        for step in range(1000):
            run.log_metric("acc", step / 1000, step=step)
    zoomed = client.get_metric_series(run.id, "acc", max_points=300, start=100.4, end=199.6)
    # the whole steps around the ends included: the curve runs to the edges of the chart
    assert zoomed.steps == list(range(100, 201)) and not zoomed.downsampled
    empty = client.get_metric_series(run.id, "acc", start=5000, end=6000)
    assert empty.count == 0 and empty.steps == []


def test_nan_points_are_gaps_not_lines(client: Client) -> None:
    with client.start_run(experiment="churn") as run:
        for step, value in enumerate([1.0, math.nan, 3.0]):
            run.log_metric("m", value, step=step)
    series = client.get_metric_series(run.id, "m")
    assert series.steps == [0, 2] and series.count == 3


def test_bad_requests_name_what_is_wrong(client: Client) -> None:
    with client.start_run(experiment="churn") as run:
        run.log_metric("m", 1.0)
    with pytest.raises(plinth.InvalidArgument, match="max_points"):
        client.get_metric_series(run.id, "m", max_points=1)
    with pytest.raises(plinth.InvalidArgument, match="after end"):
        client.get_metric_series(run.id, "m", start=5, end=1)
    with pytest.raises(plinth.NotFound, match="no metric 'nope'"):
        client.get_metric_series(run.id, "nope")
    with pytest.raises(plinth.NotFound):
        client.get_metric_series("0" * 32, "m")


def test_downsample_keeps_first_last_and_extremes_of_repeated_steps() -> None:
    x = np.repeat(np.arange(500), 2)  # every step twice
    y = np.sin(np.arange(1000) / 30)
    y[777] = 9.0
    kept = downsample(x, y, 50)
    assert {0, 999, 777, int(np.argmin(y))} <= set(kept.tolist())
    assert len(kept) <= 52 and list(kept) == sorted(kept)


def test_bounds_must_be_finite(client: Client) -> None:
    with client.start_run(experiment="churn") as run:
        run.log_metric("m", 1.0)
    for bound in (math.nan, math.inf):
        with pytest.raises(plinth.InvalidArgument, match="finite"):
            client.get_metric_series(run.id, "m", start=bound)
