"""Retraining end to end on the embedded default store: a registered pipeline of the
ready-made steps, run by the scheduler in worker subprocesses on a cron schedule (passive:
one retraining promotes, one keeps the champion) and on a drift alert (active: the alert
linked to the run and to the decision)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from plinth.client import Client
from plinth.monitoring.types import MonitorSpec
from plinth.pipelines.cron import next_at
from plinth.pipelines.scheduler import Scheduler
from plinth.pipelines.types import PipelineRun, PipelineSpec, ScheduleSpec
from plinth.store.sql import now_ms
from tests.backends import local_client
from tests.pipelines.test_steps import T0, customers, holdout, spine

pytestmark = pytest.mark.slow

PIPELINE = """
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression

import plinth
from plinth.features.types import Expectation
from plinth.pipelines import steps

HERE = Path(__file__).parent


def fresh_spine(context):
    return pd.read_parquet(HERE / "spine.parquet")


def holdout(context):
    return pd.read_parquet(HERE / "holdout.parquet")


pipeline = plinth.Pipeline(
    "churn-retrain",
    [
        steps.training_data("churn", fresh_spine),
        steps.validate_data(expectations=[Expectation("not_null", column="spend")]),
        steps.train(LogisticRegression(max_iter=500)),
        steps.validate_model("auc", holdout=holdout, slices=["segment"]),
        steps.register("churn"),
        steps.champion_challenger("churn", "auc", holdout=holdout),
    ],
)
"""
CRON = "0 3 * * *"


@pytest.fixture
def client(tmp_path: Path) -> Client:
    made = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    fs = made.feature_store()
    fs.create_entity("customer", join_keys=["customer_id"])
    first = customers(1).assign(event_time=T0)
    group = fs.create_feature_group("customer_stats", "customer", "event_time", first.dtypes)
    group.insert(first)
    fs.create_feature_view(
        "churn", ["customer_stats:spend", "customer_stats:visits"], label="churned"
    )
    code = tmp_path / "pipes"
    code.mkdir()
    (code / "retrain.py").write_text(PIPELINE)
    holdout().to_parquet(code / "holdout.parquet")
    made.pipelines.register_pipeline(
        PipelineSpec(name="churn-retrain", entrypoint=f"{code / 'retrain.py'}:pipeline")
    )
    return made


@pytest.fixture
def scheduler(client: Client, tmp_path: Path) -> Iterator[Scheduler]:
    made = Scheduler(client, max_workers=1, log_dir=tmp_path / "worker-logs")
    yield made
    for child in made.children.values():  # only the workers this test started
        child.kill()
        child.wait()


def fresh_spine(client: Client, tmp_path: Path, days: int, noisy: bool = False) -> None:
    """New feature values ``days`` after T0 and the spine the pipeline reads next."""
    later = customers(days).assign(event_time=T0 + timedelta(days=days))
    client.feature_store().insert("customer_stats", later)
    rows = spine(later, T0 + timedelta(days=days, hours=1), days)
    if noisy:  # labels that no longer follow the features: a worse model
        rows["churned"] = np.random.default_rng(days).permutation(rows.churned.to_numpy())
    rows.to_parquet(tmp_path / "pipes" / "spine.parquet")


def finished(client: Client, scheduler: Scheduler, at: int) -> PipelineRun:
    """Tick at ``at`` (the trigger fires, a worker starts), then until the run ends."""
    started = [a for a in scheduler.tick(now=at) if a.action == "started"]
    assert len(started) == 1, started
    run_id = started[0].pipeline_run
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        scheduler.tick()
        run = client.pipelines.get_run(run_id)
        if run.status not in ("queued", "running"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"pipeline run {run_id} did not finish in 120 s")


def decision_entries(client: Client) -> list[Any]:
    return [h for h in client.model_history("churn") if h.action == "decision"]


def test_scheduled_retraining_promotes_then_keeps_the_champion(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    client.pipelines.create_schedule("churn-retrain", ScheduleSpec(cron=CRON))
    fresh_spine(client, tmp_path, 1)
    first_at = next_at(CRON, "UTC", now_ms())
    first = finished(client, scheduler, first_at + 1000)
    assert first.status == "succeeded", first.error
    assert first.trigger == "cron" and first.scheduled_for is not None
    promoted = client.registry.get_decision(f"pipeline-run:{first.id}:champion_challenger")
    assert (promoted.outcome, promoted.challenger_version, promoted.pipeline_run) == (
        "promoted",
        1,
        first.id,
    )

    fresh_spine(client, tmp_path, 2, noisy=True)
    second = finished(client, scheduler, next_at(CRON, "UTC", first_at) + 1000)
    assert second.status == "succeeded", second.error
    kept = client.registry.get_decision(f"pipeline-run:{second.id}:champion_challenger")
    assert (kept.outcome, kept.challenger_version, kept.champion_version) == ("kept", 2, 1)
    assert kept.challenger_score is not None and kept.champion_score is not None
    assert kept.challenger_score < kept.champion_score
    assert client.get_model_version("models:/churn@production").version == 1

    # the decision and its evidence are in the model's history either way
    entries = decision_entries(client)
    assert [(e.version, e.to_value) for e in entries] == [(1, "promoted"), (2, "kept")]
    evidence = entries[1].details["evidence"]["holdout"]
    assert evidence["production_version"] == 1 and evidence["rows"] == len(holdout())
    # each version knows the pipeline run and the training data it came from
    challenger = client.get_model_version("churn", 2)
    assert challenger.tags["plinth.pipeline_run"] == str(second.id)
    assert challenger.lineage["training_datasets"]


def test_a_drift_alert_triggers_retraining_linked_to_the_decision(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    client.monitors.create_monitor(
        "stats-drift", "feature_drift", "customer_stats", MonitorSpec(reference="previous")
    )
    client.pipelines.create_schedule(
        "churn-retrain", ScheduleSpec(kind="alert", target="stats-drift")
    )
    shifted = customers(5, shift=90.0).assign(event_time=T0 + timedelta(days=5))
    client.feature_store().insert("customer_stats", shifted)
    evaluation = client.monitors.run_monitor("stats-drift")
    assert evaluation.status == "breach", evaluation
    (alert,) = client.monitors.list_alerts(monitor="stats-drift").items
    rows = spine(shifted, T0 + timedelta(days=5, hours=1), 5)
    rows.to_parquet(tmp_path / "pipes" / "spine.parquet")

    run = finished(client, scheduler, now_ms())
    assert run.status == "succeeded", run.error
    assert (run.trigger, run.alert_id) == ("alert", alert.id)
    (decision,) = client.list_decisions(pipeline_run=run.id).items
    assert (decision.alert_id, decision.outcome) == (alert.id, "promoted")
    (entry,) = decision_entries(client)
    assert entry.details["alert_id"] == alert.id and entry.details["pipeline_run"] == run.id
    assert pd.Timestamp(decision.at) >= pd.Timestamp(alert.at)
