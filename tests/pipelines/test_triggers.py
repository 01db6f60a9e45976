from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert, update

from plinth.client import Client
from plinth.pipelines.triggers import enqueue_due
from plinth.store.schema import alerts, feature_commits, monitors, pipeline_schedules, score_jobs
from tests.pipelines.scheduled import (
    HOUR,
    MINUTE,
    NOW,
    add_pipeline,
    add_schedule,
    cursor,
    runs,
    store_client,
)

START = NOW - NOW % HOUR  # on the hour


@pytest.fixture
def client(tmp_path: Path) -> Client:
    made = store_client(tmp_path)
    add_pipeline(made, retries=2)
    return made


def hourly(client: Client, catchup: str) -> int:
    return add_schedule(client, cron="0 * * * *", catchup=catchup, cursor=START)


def test_a_cron_schedule_enqueues_each_occurrence_once(client: Client) -> None:
    schedule = hourly(client, "latest")
    assert enqueue_due(client.tracking.store, START + HOUR - 1) == []
    done = enqueue_due(client.tracking.store, START + HOUR + 5)
    assert [d.trigger_key for d in done] == [f"cron:{START + HOUR}"]
    assert enqueue_due(client.tracking.store, START + HOUR + 2 * MINUTE) == []
    (run,) = runs(client)
    assert (run.status, run.trigger, run.schedule_id) == ("queued", "cron", schedule)
    assert (run.scheduled_for, run.max_attempts, run.attempt) == (START + HOUR, 3, 1)
    assert '"since": "2026-01-01"' in run.params  # the pipeline's own params
    assert cursor(client, schedule) == START + HOUR


def test_occurrences_do_not_drift_with_a_late_scheduler(client: Client) -> None:
    hourly(client, "latest")
    # each tick comes 59 minutes late: the next occurrence is still on the hour
    for hour in range(1, 25):
        enqueue_due(client.tracking.store, START + hour * HOUR + 59 * MINUTE)
    assert [r.scheduled_for for r in runs(client)] == [START + h * HOUR for h in range(1, 25)]


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [("all", list(range(1, 6))), ("latest", [5]), ("skip", [])],
)
def test_missed_occurrences_after_downtime_follow_the_policy(
    client: Client, catchup: str, expected: list[int]
) -> None:
    schedule = hourly(client, catchup)
    enqueue_due(client.tracking.store, START + 5 * HOUR + 10 * MINUTE)  # down for 5 hours
    assert [r.scheduled_for for r in runs(client)] == [START + h * HOUR for h in expected]
    assert cursor(client, schedule) == START + 5 * HOUR  # missed ones are not looked at again


def test_skip_still_runs_an_occurrence_a_tick_late(client: Client) -> None:
    hourly(client, "skip")
    enqueue_due(client.tracking.store, START + HOUR + 30_000, grace_ms=60_000)
    assert [r.scheduled_for for r in runs(client)] == [START + HOUR]


def test_catching_up_all_is_capped(client: Client) -> None:
    add_schedule(client, cron="* * * * *", catchup="all", cursor=START)
    enqueue_due(client.tracking.store, START + 10 * HOUR)
    found = [r.scheduled_for for r in runs(client)]
    assert found == [START + 10 * HOUR - m * MINUTE for m in range(99, -1, -1)]


def test_a_paused_schedule_enqueues_nothing_and_catches_up_on_resume(client: Client) -> None:
    schedule = add_schedule(client, cron="0 * * * *", catchup="latest", cursor=START, paused=True)
    assert enqueue_due(client.tracking.store, START + 3 * HOUR + 1) == []
    assert cursor(client, schedule) == START
    with client.tracking.store.write() as conn:
        conn.execute(update(pipeline_schedules).values(paused=False))
    enqueue_due(client.tracking.store, START + 3 * HOUR + 2)
    assert [r.scheduled_for for r in runs(client)] == [START + 3 * HOUR]


def test_a_new_schedule_starts_from_now_without_firing_history(client: Client) -> None:
    schedule = add_schedule(client, cron="0 * * * *", catchup="all")
    assert enqueue_due(client.tracking.store, START + 30 * MINUTE) == []
    assert cursor(client, schedule) == START + 30 * MINUTE


def test_a_bad_stored_schedule_does_not_stop_the_others(client: Client) -> None:
    add_schedule(client, cron="61 * * * *", cursor=START)
    hourly(client, "latest")
    assert len(enqueue_due(client.tracking.store, START + HOUR)) == 1


def test_two_schedulers_racing_never_enqueue_twice(client: Client) -> None:
    hourly(client, "all")
    store = client.tracking.store
    # the second looks with the cursor the first had (it read it before the first moved it)
    first = enqueue_due(store, START + 3 * HOUR)
    with store.write() as conn:
        conn.execute(update(pipeline_schedules).values(cursor=START))
    second = enqueue_due(store, START + 3 * HOUR)
    assert len(first) == 3 and second == []
    assert len(runs(client)) == 3


# -- events --------------------------------------------------------------------------------


def add_alert(client: Client, monitor: str) -> int:
    with client.tracking.store.write() as conn:
        made = conn.execute(
            insert(alerts).values(
                monitor=monitor,
                evaluation_id=1,
                at=NOW,
                severity="warning",
                message="drift",
                dedup_key=monitor,
                status="open",
                delivery="none",
            )
        ).inserted_primary_key
    assert made is not None
    return int(made[0])


def test_each_new_alert_of_the_monitor_enqueues_a_run_linked_to_it(client: Client) -> None:
    with client.tracking.store.write() as conn:
        for name in ("drift", "other"):
            conn.execute(
                insert(monitors).values(
                    name=name,
                    kind="feature_drift",
                    target="customers",
                    owner="local",
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
    old = add_alert(client, "drift")
    schedule = add_schedule(client, kind="alert", target="drift")
    enqueue_due(client.tracking.store, NOW)  # the cursor starts at the newest alert
    assert runs(client) == [] and cursor(client, schedule) == old
    first, _, second = (
        add_alert(client, "drift"),
        add_alert(client, "other"),
        add_alert(client, "drift"),
    )
    done = enqueue_due(client.tracking.store, NOW)
    assert [d.trigger_key for d in done] == [f"alert:{first}", f"alert:{second}"]
    assert [(r.trigger, r.alert_id) for r in runs(client)] == [("alert", first), ("alert", second)]
    assert enqueue_due(client.tracking.store, NOW) == []


def add_job(client: Client, model: str, status: str) -> int:
    with client.tracking.store.write() as conn:
        made = conn.execute(
            insert(score_jobs).values(
                job_key=f"k{np.random.default_rng().integers(1 << 40)}",
                model_name=model,
                model_version=1,
                input="in",
                output="out",
                status=status,
                started_at=NOW,
            )
        ).inserted_primary_key
    assert made is not None
    return int(made[0])


def test_delivered_score_jobs_trigger_and_a_running_one_is_waited_for(client: Client) -> None:
    schedule = add_schedule(client, kind="score_job", target="churn", cursor=0)
    running = add_job(client, "churn", "RUNNING")
    blocked = add_job(client, "churn", "BLOCKED")
    delivered = add_job(client, "churn", "DELIVERED")
    add_job(client, "other", "DELIVERED")
    assert [d.trigger_key for d in enqueue_due(client.tracking.store, NOW)] == [f"job:{delivered}"]
    assert cursor(client, schedule) == running - 1  # held back by the running job
    with client.tracking.store.write() as conn:
        conn.execute(
            update(score_jobs).where(score_jobs.c.id == running).values(status="DELIVERED")
        )
    assert [d.trigger_key for d in enqueue_due(client.tracking.store, NOW)] == [f"job:{running}"]
    assert cursor(client, schedule) == delivered
    assert [r.trigger_key for r in runs(client)] == [f"job:{delivered}", f"job:{running}"]
    assert f"job:{blocked}" not in {r.trigger_key for r in runs(client)}


def test_commits_of_the_feature_group_trigger(client: Client) -> None:
    schedule = add_schedule(client, kind="commit", target="customers", cursor=0)
    with client.tracking.store.write() as conn:
        for group in ("customers", "other", "customers"):
            conn.execute(
                insert(feature_commits).values(
                    group_name=group,
                    group_version=1,
                    commit_version=1,
                    rows=1,
                    operation="insert",
                    at=NOW,
                    validation_passed=True,
                )
            )
    assert [d.trigger_key for d in enqueue_due(client.tracking.store, NOW)] == [
        "commit:1",
        "commit:3",
    ]
    assert cursor(client, schedule) == 3


def test_a_real_feature_insert_triggers_its_pipeline(tmp_path: Path) -> None:
    from plinth.client import connect

    client = connect(
        store_uri=f"sqlite:///{tmp_path / 'plinth.db'}",
        artifact_uri=str(tmp_path / "artifacts"),
        online_uri=f"sqlite:///{tmp_path / 'online.db'}",
    )
    add_pipeline(client)
    fs = client.feature_store()
    fs.create_entity("customer", join_keys=["customer_id"])
    fs.create_feature_group(
        "customers", entity="customer", event_time="ts", schema={"spend": "float64"}
    )
    schedule = add_schedule(client, kind="commit", target="customers")
    enqueue_due(client.tracking.store, NOW)  # starts at the newest commit: none
    frame = pd.DataFrame(
        {"customer_id": [1, 2], "ts": pd.Timestamp("2026-01-01", tz="UTC"), "spend": [1.0, 2.0]}
    )
    fs.insert("customers", frame)
    (done,) = enqueue_due(client.tracking.store, NOW)
    assert done.schedule_id == schedule and done.trigger_key.startswith("commit:")
    (run,) = runs(client)
    assert (run.trigger, run.trigger_key) == ("commit", done.trigger_key)


@pytest.mark.slow
def test_a_day_of_minutely_runs_in_accelerated_time_drifts_and_misses_nothing(
    client: Client,
) -> None:
    add_schedule(client, cron="* * * * *", catchup="latest", cursor=START)
    rng = np.random.default_rng(15)
    at = START
    while at < START + 24 * HOUR:
        at += int(rng.integers(1_000, 59_000))  # ticks at uneven times, under a minute apart
        enqueue_due(client.tracking.store, at)
    found = [r.scheduled_for for r in runs(client)]
    assert found == [START + m * MINUTE for m in range(1, len(found) + 1)]
    assert len(found) == 24 * 60 + (at - START - 24 * HOUR) // MINUTE
