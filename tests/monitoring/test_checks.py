"""Each kind of monitor's check, end to end on the embedded default: ok without drift, a
breach naming what drifted or fell, skipped (saying why) when it cannot judge."""

from __future__ import annotations

import json
import re
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
from plinth.store.schema import feature_commits
from tests.monitoring.conftest import (
    BACKENDS,
    DAY,
    INPUTS,
    NOW,
    churn_model,
    customers,
    local_client_on,
    log_predictions,
    outcomes,
)


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Client:
    return local_client_on(request, tmp_path)


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
    assert re.match(r"skipped: training dataset \d+ \(churn:v1\) has no label", found.summary)


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


def test_a_job_seen_before_its_profile_arrives_is_checked_once_it_has(
    client: Client, data: MonitoringData
) -> None:
    """The race: the scheduler looks between a job's DELIVERED and its profile's upload.
    That look is skipped without recording the job as seen; the next pass checks it."""
    import pyarrow as pa

    from plinth.monitoring.loop import run_once
    from plinth.monitoring.service import MonitorService
    from plinth.stats.profile import profile

    churn_model(client)
    service = MonitorService(client.tracking.store, data)
    service.create_monitor("on-jobs", "input_drift", "churn", on_event=True)
    jobs = client.score_jobs
    job = jobs.start_score_job("late", "churn", 1, "in.parquet", "out")
    jobs.finish_score_job("late", "DELIVERED", 300)
    [early] = run_once(service)
    assert early.detail.startswith(f"skipped (job:{job.id}): skipped: score job {job.id} has no")
    assert service.get_monitor("on-jobs").last_event is None  # not seen: looked at again
    frame = customers(300, seed=9, pro=0.9)[INPUTS]
    jobs.record_score_profile("late", profile(pa.Table.from_pandas(frame)).to_dict())
    [checked] = run_once(service)
    assert f"(job:{job.id}): version 1 of churn, score job {job.id}: 1 of 3 columns drifted" in (
        checked.detail
    )
    assert service.get_monitor("on-jobs").last_event == job.id
    assert run_once(service) == []  # nothing new


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
    churn_model(client)  # commit 0 of customer_stats
    store = client.tracking.store
    group = client.feature_store().get_feature_group("customer_stats")
    for seed, shift in ((80, 0.0), (81, 20.0)):
        frame = customers(2_000, seed=seed, age_shift=shift).drop(columns=["p"])
        group.insert(frame.assign(event_time=pd.Timestamp("2026-02-01", tz="UTC")))  # type: ignore[attr-defined]
    commits = client.features.list_commit_versions("customer_stats", 1)
    first, before, last = commits[0], commits[-2], commits[-1]
    # the default: the verdict drift on write stored with the newest commit
    stored = evaluate(
        data, monitor("feature_drift", target="customer_stats", max_drifted_share=0.3),
        now_ms=NOW, trigger="manual",
    )  # fmt: skip
    assert stored.status == "breach" and stored.event == last, stored.summary
    assert stored.summary.startswith(f"feature group customer_stats v1 commit {last} against")
    assert "(age)" in stored.summary and stored.current_profile is not None
    # computed from the stored commit profiles against a pinned commit
    watch = monitor(
        "feature_drift", target="customer_stats:v1", reference=f"commit:{before}",
        max_drifted_share=0.3,
    )  # fmt: skip
    assert newest_event(data, watch) == last
    computed = evaluate(data, watch, now_ms=NOW, trigger="manual")
    assert computed.status == "breach" and "(age)" in computed.summary
    assert f"against commit {before}" in computed.summary
    calm = evaluate(data, watch, now_ms=NOW, trigger=f"commit:{before}")
    assert (calm.status == "skipped" and "no earlier" not in calm.summary) or calm.status == "ok"
    # a first commit has no reference; a failed check on write is named
    default = monitor("feature_drift", target="customer_stats")
    opening = evaluate(data, default, now_ms=NOW, trigger=f"commit:{first}")
    assert opening.status == "skipped" and opening.event == first, opening.summary
    failed = {"reference": "previous commit 1", "error": "drift check failed: boom"}
    with store.write() as conn:
        conn.execute(
            update(feature_commits)
            .where(feature_commits.c.commit_version == last)
            .values(drift=json.dumps(failed))
        )
    named = evaluate(data, default, now_ms=NOW, trigger="manual")
    assert named.status == "skipped" and named.summary.endswith("drift check failed: boom")


def test_a_monitor_service_runs_these_checks(client: Client, data: MonitoringData) -> None:
    from plinth.monitoring.service import MonitorService
    from plinth.store.sql import now_ms

    churn_model(client)
    now = now_ms()
    log_predictions(client, now - DAY + 60_000, now, 2_000, seed=96, age_shift=15, pro=0.8)
    service = MonitorService(client.tracking.store, data)
    service.create_monitor("inputs", "input_drift", "churn")
    found = service.run_monitor("inputs")
    assert found.status == "breach" and "(age, plan)" in found.summary
    assert found.reference_profile is not None and found.current_profile is not None
    assert found.result["drifted_columns"] == ["age", "plan"]
    shown = data.get_profile(found.current_profile, compare_to=found.reference_profile)
    age = next(c for c in shown.columns if c.name == "age")
    reference = data.get_profile(found.reference_profile, compare_to=found.current_profile)
    assert age.edges == next(c for c in reference.columns if c.name == "age").edges
