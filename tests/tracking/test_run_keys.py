"""What the runs table of an experiment may show: the metric names and params of its
newest runs (a bounded sample), and the runs ordered and filtered by duration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plinth.errors import InvalidArgument, NotFound
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import open_store
from plinth.store.schema import runs
from plinth.tracking.service import TrackingService
from tests.backends import empty_tables
from tests.ui.pages.test_tracking import log


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def tracking(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrackingService]:
    if request.param == "postgres":
        store = open_store(request.getfixturevalue("postgres_uri"))
        empty_tables(store)
    else:
        store = open_store(f"sqlite:///{tmp_path / 'plinth.db'}")
    yield TrackingService(store, ArtifactStore(str(tmp_path / "artifacts")))


def started(tracking: TrackingService, experiment: str, name: str, at: int) -> str:
    run_id = tracking.create_run(experiment, name=name).id
    with tracking.store.write() as conn:  # a start time of our choosing: no clock to wait on
        conn.execute(runs.update().where(runs.c.id == run_id).values(start_time=at))
    return run_id


def test_the_keys_of_the_newest_runs_of_an_experiment(tracking: TrackingService) -> None:
    old = started(tracking, "churn", "old", 1_000)
    tracking.log_params(old, {"lr": 0.1}, "legacy")
    new = started(tracking, "churn", "new", 2_000)
    tracking.log_params(new, {"lr": 0.2, "depth": 3}, "hyper")
    tracking.log_params(new, {"kind": "gbm"}, "model")
    other = started(tracking, "fraud", "other", 3_000)
    tracking.log_params(other, {"alpha": 1}, "hyper")
    for run_id, key in [(old, "auc"), (new, "acc"), (new, "loss"), (other, "recall")]:
        log(tracking, run_id, {key: [0.5]})
    every = tracking.list_run_keys("churn")
    assert every.metrics == ["acc", "auc", "loss"]
    assert every.params == ["hyper.depth", "hyper.lr", "legacy.lr", "model.kind"]
    newest = tracking.list_run_keys("churn", newest=1)
    assert newest.metrics == ["acc", "loss"]
    assert newest.params == ["hyper.depth", "hyper.lr", "model.kind"]
    with pytest.raises(InvalidArgument, match="newest must be 1 to 10000"):
        tracking.list_run_keys("churn", newest=0)
    with pytest.raises(NotFound):
        tracking.list_run_keys("nope")


def test_runs_order_and_filter_by_duration(tracking: TrackingService) -> None:
    for name, took in [("quick", 5), ("slow", 500), ("going", None)]:
        run_id = started(tracking, "churn", name, 1_000)
        if took is not None:
            tracking.end_run(run_id)
            with tracking.store.write() as conn:
                conn.execute(runs.update().where(runs.c.id == run_id).values(end_time=1_000 + took))
    ordered = tracking.search_runs(order_by=["duration DESC"], experiments=["churn"])
    assert [r.name for r in ordered] == ["slow", "quick", "going"]  # none last
    longer = tracking.search_runs(filter="duration > 100", experiments=["churn"])
    assert [r.name for r in longer] == ["slow"]
    with pytest.raises(InvalidArgument, match="duration is a number"):
        tracking.search_runs(filter="duration > 'long'")
