"""Real pipeline records for the pipelines pages and their browser tests: runs made by the
runner from a real pipeline (its steps' logs, outputs and a failed step's traceback),
schedules and decisions made through the services; nothing written to the tables by hand.

- ``churn-retrain``: ``load`` (an Arrow table, logs its rows) then ``fit`` (prints, returns
  its score; raises when ``fail`` is set). Run 1 succeeds, run 2 fails in ``fit``.
  Schedules: a nightly cron one and an hourly one, paused.
- the model ``churn`` (versions 1-3, v2 in PRODUCTION) with two decisions: run 1's
  challenger promoted (0.91 over 0.85; run 1 is the alert's run when an alert is given),
  a later one kept (0.80 under 0.91).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
from sklearn.dummy import DummyClassifier

from plinth.pipelines.pipeline import Pipeline
from plinth.pipelines.step import step
from plinth.pipelines.types import PipelineRun, PipelineSpec, Schedule, ScheduleSpec
from plinth.registry.types import Decision

NAME = "churn-retrain"
MODEL = "churn"
FAILURE = "the holdout is empty: nothing to score the model on"


@step
def load(context: Any, rows: int = 12) -> pa.Table:
    context.log.info("loaded %d rows of customers", rows)
    return pa.table(
        {"customer_id": list(range(rows)), "churned": [i % 3 == 0 for i in range(rows)]}
    )


@step
def fit(context: Any, load: pa.Table, fail: bool = False) -> dict[str, float]:
    print(f"fitting on {load.num_rows} rows")
    if fail:
        raise ValueError(FAILURE)
    return {"auc": 0.91}


churn_retrain = Pipeline(NAME, [load, fit], params={"rows": 12, "fail": False})


@dataclass(frozen=True)
class Seeded:
    ok: PipelineRun
    failed: PipelineRun
    nightly: Schedule
    hourly: Schedule
    promoted: Decision
    kept: Decision


def seed(client: Any, alert_id: int | None = None) -> Seeded:
    """Register ``churn-retrain``, run it twice (the second fails), schedule it, and record
    two decisions on the model ``churn`` (the first made by run 1, after ``alert_id``)."""
    from plinth.pipelines.runner import run_pipeline

    service = client.pipelines
    service.register_pipeline(
        PipelineSpec(
            name=NAME,
            entrypoint=f"{__name__}:churn_retrain",
            description="Retrain the churn model on fresh data",
            steps=["load", "fit"],
            params={"rows": 12, "fail": False},
        )
    )
    # the run that decides is the alert's when there is one: a decision names its run's alert
    ok = (
        run_pipeline(client, churn_retrain) if alert_id is None else run_for_alert(client, alert_id)
    )
    failed = run_pipeline(client, churn_retrain, params={"fail": True})
    nightly = service.create_schedule(NAME, ScheduleSpec(kind="cron", cron="0 3 * * *"))
    hourly = service.create_schedule(NAME, ScheduleSpec(kind="cron", cron="0 * * * *"))
    hourly = service.pause_schedule(hourly.id)
    registry = client.registry
    # decisions name real versions: v1 the old champion, v2 promoted over it, v3 kept out
    example = pd.DataFrame({"x": [0.0, 1.0]})
    model = DummyClassifier(strategy="prior").fit(example, [0, 1])
    for _ in range(3):
        client.register_model(model, MODEL, input_example=example)
    client.set_stage(MODEL, 2, "PRODUCTION", "champion/challenger: run 1")
    promoted = Decision(
        outcome="promoted",
        model_name=MODEL,
        metric="auc",
        direction="max",
        challenger_run_id=ok.run_id,
        challenger_score=0.91,
        champion_version=1,
        champion_score=0.85,
        version=2,
        reason="auc 0.91 beats the champion's 0.85 on the same holdout",
        challenger_version=2,
        key=f"pipeline-run:{ok.id}:decide",
        pipeline_run=ok.id,
        alert_id=alert_id,
        evidence={"holdout": {"rows": 400, "sha256": "ab12"}, "gates": ["not worse on auc"]},
    )
    kept = Decision(
        outcome="kept",
        model_name=MODEL,
        metric="auc",
        direction="max",
        challenger_run_id=None,
        challenger_score=0.80,
        champion_version=2,
        champion_score=0.91,
        version=None,
        reason="auc 0.80 does not beat the champion's 0.91",
        challenger_version=3,
        key="manual:kept",
        evidence={"holdout": {"rows": 400}},
    )
    promoted = registry.record_decision(MODEL, promoted)
    kept = registry.record_decision(MODEL, kept)
    return Seeded(ok, failed, nightly, hourly, promoted, kept)


def run_for_alert(client: Any, alert_id: int) -> PipelineRun:
    """A run of ``churn-retrain`` triggered by a monitor's alert, as the scheduler queues
    one (active retraining), executed here."""
    from plinth.pipelines import records
    from plinth.pipelines.runner import execute

    store = client.tracking.store
    with store.write() as conn:
        run_id = records.insert_run(
            conn, pipeline=NAME, trigger="alert", created_by="scheduler", alert_id=alert_id
        )
    assert run_id is not None
    return execute(client, churn_retrain, run_id)
