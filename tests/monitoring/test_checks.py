"""Each kind of monitor's check, end to end on the embedded default: ok without drift, a
breach naming what drifted or fell, skipped (saying why) when it cannot judge."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import update

from plinth.client import Client
from plinth.monitoring.checks import evaluate, newest_event
from plinth.monitoring.data import MonitoringData
from plinth.monitoring.labels import LabelIn
from plinth.monitoring.types import Monitor, MonitorSpec
from plinth.stats.drift import drift_report
from plinth.stats.profile import profile
from plinth.store.profiles import save_profile
from plinth.store.schema import feature_commits
from tests.monitoring.conftest import (
    DAY,
    NOW,
    churn_model,
    customers,
    log_predictions,
    outcomes,
)


def monitor(kind: str, target: str = "churn", **spec: Any) -> Monitor:
    at = datetime.now(UTC)
    return Monitor(
        name="watch", kind=kind, target=target, spec=MonitorSpec(**spec), schedule_seconds=None,
        on_event=False, webhook_url=None, cooldown_seconds=3600, enabled=True, owner="ann",
        created_at=at, updated_at=at,
    )  # fmt: skip


def check(data: MonitoringData, kind: str, trigger: str = "manual", **spec: Any) -> Any:
    return evaluate(data, monitor(kind, **spec), now_ms=NOW, trigger=trigger)


# -- model input and prediction drift --------------------------------------------------------


def test_input_drift_breaches_naming_the_shifted_columns(
    client: Client, data: MonitoringData
) -> None:
    churn_model(client)
    log_predictions(client, NOW - 2 * DAY, NOW - DAY, 2_000, seed=60)
    log_predictions(client, NOW - DAY, NOW, 2_000, seed=61, age_shift=15, pro=0.8)
    shifted = check(data, "input_drift", model_version=1)  # the newest day only
    assert shifted.status == "breach"
    assert (
        "(age, plan)" in shifted.summary and "breach: drifted share 67% >= 50%" in shifted.summary
    )
    assert shifted.reference_profile is not None and shifted.current_profile is not None
    assert shifted.result["drifted_columns"] == ["age", "plan"]
    json.dumps(shifted.result)  # JSON-able as stored
    lenient = check(data, "input_drift", max_drifted_share=0.9)
    assert lenient.status == "ok" and lenient.result["drifted_columns"] == ["age", "plan"]


def test_a_window_like_training_is_ok(client: Client, data: MonitoringData) -> None:
    churn_model(client)
    log_predictions(client, NOW - DAY, NOW, 2_000, seed=62)
    outcome = check(data, "input_drift")
    assert outcome.status == "ok", outcome.summary
    assert check(data, "prediction_drift").status == "ok"


def test_prediction_drift_breaches_when_predictions_leave_the_training_labels(
    client: Client, data: MonitoringData
) -> None:
    churn_model(client)
    log_predictions(client, NOW - DAY, NOW, 2_000, seed=63, age_shift=15)
    outcome = check(data, "prediction_drift")
    assert outcome.status == "breach"
    assert "predictions drifted from the training labels" in outcome.summary


def test_model_checks_that_cannot_judge_are_skipped(client: Client, data: MonitoringData) -> None:
    churn_model(client, labelled=False)
    found = check(data, "input_drift")
    assert found.status == "skipped" and "no predictions of version 1 of churn" in found.summary
    log_predictions(client, NOW - DAY, NOW, 500, seed=64)
    found = check(data, "prediction_drift")
    assert found.status == "skipped"
    assert found.summary.startswith("skipped: training dataset 1 (churn:v1) has no label")


def test_a_score_job_triggers_a_drift_check_of_its_inputs(
    client: Client, data: MonitoringData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.serving.batch import score

    churn_model(client)
    watch = monitor("input_drift")
    assert newest_event(data, watch) is None
    monkeypatch.setenv("PLINTH_TRUST_PICKLE", "true")
    path = tmp_path / "in.parquet"
    customers(1_000, seed=65, pro=0.9).drop(columns=["p", "customer_id"]).to_parquet(path)
    job = score(
        client, "models:/churn/1", str(path), str(tmp_path / "scores"),
        trust_pickle=True, allow_failed_checks=True,
    )  # fmt: skip
    assert job.job_id is not None and newest_event(data, watch) == job.job_id
    outcome = evaluate(data, watch, now_ms=NOW, trigger=f"job:{job.job_id}")
    assert outcome.event == job.job_id and outcome.result["subject"] == f"score job {job.job_id}"
    assert outcome.result["drifted_columns"] == ["plan"]


# -- performance -------------------------------------------------------------------------------


def labelled_day(client: Client, data: MonitoringData) -> None:
    """A day of predictions labelled by request id, then a day without labels yet."""
    day = log_predictions(client, NOW - 2 * DAY, NOW - DAY, 2_000, seed=70).frame
    log_predictions(client, NOW - DAY, NOW, 1_000, seed=71)
    y = outcomes(day["p"].to_numpy(), seed=72)
    data.log_labels(
        "churn",
        [
            LabelIn(int(v), request_id=r, row=int(i))
            for v, r, i in zip(y, day["request_id"], day["row"], strict=True)
        ],
    )


def test_measured_performance_against_bounds(client: Client, data: MonitoringData) -> None:
    churn_model(client)
    assert check(data, "performance").status == "skipped"  # nothing logged, nothing labelled
    labelled_day(client, data)
    ok = check(data, "performance", min_value=0.5)
    assert ok.status == "ok", ok.summary
    assert "measured auc 0.7" in ok.summary and "on 2000 prediction(s)" in ok.summary
    high = check(data, "performance", min_value=0.9)
    assert high.status == "breach" and high.summary.endswith("breach: below min_value 0.9")
    # without a bound of its own: the validation metric (0.85) minus the tolerance
    fell = check(data, "performance")
    assert fell.status == "breach"
    assert fell.summary.endswith("breach: below validation val_auc 0.85 - tolerance 0.05")
    assert check(data, "performance", tolerance=0.2).status == "ok"
    loss = check(data, "performance", metric="log_loss", max_value=0.1)
    assert loss.status == "breach" and "above max_value 0.1" in loss.summary
    unbound = check(data, "performance", metric="accuracy")
    assert unbound.status == "skipped" and "no bound for accuracy" in unbound.summary


def test_estimated_performance_before_labels(client: Client, data: MonitoringData) -> None:
    churn_model(client)
    log_predictions(client, NOW - DAY, NOW, 1_000, seed=73)
    found = check(data, "estimated_performance", min_value=0.5)
    assert found.status == "skipped" and "no reference to fit it on" in found.summary
    labelled_day(client, data)
    found = check(data, "estimated_performance", min_value=0.5)
    assert found.status == "ok" and "estimated auc" in found.summary
    assert found.result["windows"][-1]["labelled"] == 0
    assert check(data, "estimated_performance", min_value=0.95).status == "breach"


# -- feature group drift ---------------------------------------------------------------------


def test_feature_drift_reads_the_stored_verdict_or_computes_one(
    client: Client, data: MonitoringData
) -> None:
    churn_model(client)
    store = client.tracking.store
    group = client.feature_store().get_feature_group("customer_stats")
    first = customers(2_000, seed=80).drop(columns=["p"])
    moved = customers(2_000, seed=81, age_shift=20).drop(columns=["p"])
    for frame in (first, moved):
        group.insert(frame.assign(event_time=pd.Timestamp("2026-02-01", tz="UTC")))  # type: ignore[attr-defined]
    commits = client.features.list_commit_versions("customer_stats", 1)
    last, before = commits[-1], commits[-2]
    with store.write() as conn:
        for version, frame in ((before, first), (last, moved)):
            save_profile(
                conn, profile(frame[["age", "spend", "plan"]]), subject_kind="feature_commit",
                subject=f"customer_stats/1@{version}", group_name="customer_stats",
                group_version=1, commit_version=version,
            )  # fmt: skip
    watch = monitor(
        "feature_drift", target="customer_stats", reference="previous", max_drifted_share=0.3
    )
    assert newest_event(data, watch) == last
    computed = evaluate(data, watch, now_ms=NOW, trigger="manual")
    assert computed.status == "breach" and computed.event == last
    assert computed.summary.startswith(
        f"feature group customer_stats v1 commit {last} against previous commit {before}"
    )
    assert "(age)" in computed.summary and computed.current_profile is not None
    # the default reference reads the verdict drift on write stored with the commit
    verdict = drift_report(profile(first), profile(first), columns=["age"]).to_dict()
    with store.write() as conn:
        conn.execute(
            update(feature_commits)
            .where(feature_commits.c.commit_version == last)
            .values(drift=json.dumps({**verdict, "reference": "previous commit 1"}))
        )
    stored = evaluate(
        data,
        monitor("feature_drift", target="customer_stats:v1"),
        now_ms=NOW,
        trigger=f"commit:{last}",
    )
    assert stored.status == "ok" and "against previous commit 1" in stored.summary
