from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, insert, update

from plinth.auth.types import Kind, Level
from plinth.client import Client
from plinth.config import local_user
from plinth.pipelines.triggers import LOOKBACK, enqueue_due
from plinth.store.schema import (
    alerts,
    feature_commits,
    grants,
    monitors,
    pipeline_runs,
    pipeline_schedules,
    score_jobs,
    users,
)
from tests.backends import empty_tables, local_client
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


def trigger(client: Client, **columns: Any) -> int:
    """An event trigger made by the store's local user (who may read everything)."""
    return add_schedule(client, created_by=local_user(), **columns)


def finish_queued(client: Client) -> None:
    """The worker's part: every queued run has run."""
    with client.tracking.store.write() as conn:
        conn.execute(
            update(pipeline_runs)
            .where(pipeline_runs.c.status == "queued")
            .values(status="succeeded", started_at=NOW, finished_at=NOW)
        )


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
        finish_queued(client)
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


def add_alert(client: Client, monitor: str, at: int = NOW) -> int:
    with client.tracking.store.write() as conn:
        made = conn.execute(
            insert(alerts).values(
                monitor=monitor,
                evaluation_id=1,
                at=at,
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
    old = add_alert(client, "drift", at=NOW - MINUTE)  # before the trigger was made
    schedule = trigger(client, kind="alert", target="drift")
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
    schedule = trigger(client, kind="score_job", target="churn", cursor=0)
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
    schedule = trigger(client, kind="commit", target="customers", cursor=0)
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
    schedule = trigger(client, kind="commit", target="customers")
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
        finish_queued(client)
    found = [r.scheduled_for for r in runs(client)]
    assert found == [START + m * MINUTE for m in range(1, len(found) + 1)]
    assert len(found) == 24 * 60 + (at - START - 24 * HOUR) // MINUTE


# -- runs do not pile up behind one that does not end -------------------------------------


@pytest.mark.parametrize(("catchup", "expected"), [("skip", 1), ("latest", 1), ("all", 10)])
def test_an_occurrence_is_passed_over_while_the_schedule_has_a_run_queued(
    client: Client, catchup: str, expected: int
) -> None:
    schedule = add_schedule(client, cron="* * * * *", catchup=catchup, cursor=START)
    for minute in range(1, 11):  # ten occurrences, a tick a second after each: none starts
        enqueue_due(client.tracking.store, START + minute * MINUTE + 1000)
    assert [r.status for r in runs(client)] == ["queued"] * expected
    assert cursor(client, schedule) == START + 10 * MINUTE  # moved on all the same
    finish_queued(client)  # the queue moves: the next occurrence is enqueued again
    (done,) = enqueue_due(client.tracking.store, START + 11 * MINUTE + 1000)
    assert done.trigger_key == f"cron:{START + 11 * MINUTE}"


# -- events committed out of id order -------------------------------------------------------


def add_commit(client: Client, group: str, at: int = NOW, **columns: Any) -> int:
    with client.tracking.store.write() as conn:
        made = conn.execute(
            insert(feature_commits).values(
                group_name=group,
                group_version=1,
                commit_version=1,
                rows=1,
                operation="insert",
                at=at,
                validation_passed=True,
                **columns,
            )
        ).inserted_primary_key
    assert made is not None
    return int(made[0])


def test_an_event_committed_after_a_newer_one_still_triggers(client: Client) -> None:
    # ids taken in one order, committed in another: written here with explicit ids
    schedule = trigger(client, kind="commit", target="customers", cursor=LOOKBACK + 10)
    newer = add_commit(client, "customers", id=LOOKBACK + 20)
    assert [d.trigger_key for d in enqueue_due(client.tracking.store, NOW)] == [f"commit:{newer}"]
    assert cursor(client, schedule) == newer
    late = add_commit(client, "customers", id=LOOKBACK + 15)  # below the cursor, seen late
    add_commit(client, "other", id=LOOKBACK + 16)
    add_commit(client, "customers", at=NOW - 1, id=LOOKBACK + 17)  # before the schedule
    add_commit(client, "customers", id=20)  # further back than the look-back
    assert [d.trigger_key for d in enqueue_due(client.tracking.store, NOW)] == [f"commit:{late}"]
    assert cursor(client, schedule) == newer
    assert enqueue_due(client.tracking.store, NOW) == []  # each once
    assert [r.trigger_key for r in runs(client)] == [f"commit:{newer}", f"commit:{late}"]


def test_a_late_alert_is_linked_and_a_late_running_score_job_waits(client: Client) -> None:
    with client.tracking.store.write() as conn:
        conn.execute(
            insert(monitors).values(
                name="drift",
                kind="feature_drift",
                target="customers",
                owner="local",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    alerting = trigger(client, kind="alert", target="drift", cursor=50)
    scoring = trigger(client, kind="score_job", target="churn", cursor=50)
    with client.tracking.store.write() as conn:
        base = {"evaluation_id": 1, "at": NOW, "severity": "warning", "message": "drift"}
        for id_ in (40, 60):
            conn.execute(
                insert(alerts).values(
                    id=id_,
                    monitor="drift",
                    dedup_key=f"d{id_}",
                    status="open",
                    delivery="none",
                    **base,
                )
            )
        for id_, status in ((45, "RUNNING"), (46, "BLOCKED"), (47, "DELIVERED")):
            conn.execute(
                insert(score_jobs).values(
                    id=id_,
                    job_key=f"k{id_}",
                    model_name="churn",
                    model_version=1,
                    input="in",
                    output="out",
                    status=status,
                    started_at=NOW,
                )
            )
    done = enqueue_due(client.tracking.store, NOW)
    assert {(d.schedule_id, d.trigger_key) for d in done} == {
        (alerting, "alert:40"),
        (alerting, "alert:60"),
        (scoring, "job:47"),
    }
    assert {r.trigger_key: r.alert_id for r in runs(client, schedule_id=alerting)} == {
        "alert:40": 40,
        "alert:60": 60,
    }
    with client.tracking.store.write() as conn:
        conn.execute(update(score_jobs).where(score_jobs.c.id == 45).values(status="DELIVERED"))
    assert [d.trigger_key for d in enqueue_due(client.tracking.store, NOW)] == ["job:45"]
    assert enqueue_due(client.tracking.store, NOW) == []


def test_events_from_before_a_resume_do_not_fire(client: Client) -> None:
    # resumed at NOW + HOUR (its cursor then the newest event): what came while it was
    # paused, even committed late, does not run
    trigger(client, kind="commit", target="customers", cursor=30, updated_at=NOW + HOUR)
    add_commit(client, "customers", id=25, at=NOW + HOUR - 1)
    assert enqueue_due(client.tracking.store, NOW + 2 * HOUR) == []
    late = add_commit(client, "customers", id=26, at=NOW + HOUR)
    assert [d.trigger_key for d in enqueue_due(client.tracking.store, NOW + 2 * HOUR)] == [
        f"commit:{late}"
    ]


@pytest.mark.integration
def test_an_event_committed_late_on_postgresql_still_triggers(
    postgres_uri: str, tmp_path: Path
) -> None:
    client = local_client(postgres_uri, str(tmp_path / "artifacts"))
    empty_tables(client.tracking.store)
    add_pipeline(client)
    trigger(client, kind="commit", target="customers", cursor=0)
    row = {
        "group_name": "customers",
        "group_version": 1,
        "commit_version": 1,
        "rows": 1,
        "operation": "insert",
        "at": NOW,
        "validation_passed": True,
    }
    engine = create_engine(postgres_uri)
    try:
        with engine.connect() as slow:
            slow_tx = slow.begin()
            slow_id = slow.execute(
                insert(feature_commits).values(**row).returning(feature_commits.c.id)
            ).scalar()
            with engine.begin() as fast:  # a second writer takes a newer id, commits first
                fast_id = fast.execute(
                    insert(feature_commits).values(**row).returning(feature_commits.c.id)
                ).scalar()
            assert slow_id is not None and fast_id is not None and slow_id < fast_id
            assert [d.trigger_key for d in enqueue_due(client.tracking.store, NOW)] == [
                f"commit:{fast_id}"
            ]
            slow_tx.commit()
        assert [d.trigger_key for d in enqueue_due(client.tracking.store, NOW)] == [
            f"commit:{slow_id}"
        ]
        assert enqueue_due(client.tracking.store, NOW) == []
    finally:
        engine.dispose()


# -- a trigger fires for its creator ---------------------------------------------------------


def test_a_trigger_whose_creator_may_no_longer_read_its_target_enqueues_nothing(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with client.tracking.store.write() as conn:
        conn.execute(insert(users).values(name="bob", kind="user", role="editor", created_at=NOW))
    schedule = add_schedule(client, kind="commit", target="customers", cursor=0, created_by="bob")
    first = add_commit(client, "customers")
    with caplog.at_level(logging.WARNING, logger="plinth.pipelines.scheduler"):
        assert enqueue_due(client.tracking.store, NOW) == []
        assert enqueue_due(client.tracking.store, NOW) == []
    refused = [r.getMessage() for r in caplog.records]
    assert (
        refused
        == [
            f"pipeline schedule {schedule}: nothing enqueued: its creator bob may no longer "
            "read feature_group 'customers'"
        ]
        * 2
    )  # once a tick
    assert runs(client) == [] and cursor(client, schedule) == 0
    with client.tracking.store.write() as conn:  # bob may read it again: the events wait
        conn.execute(
            insert(grants).values(
                kind=Kind.FEATURE_GROUP.value,
                resource="customers",
                grantee_type="user",
                grantee="bob",
                level=int(Level.VIEWER),
                granted_at=NOW,
            )
        )
    assert [d.trigger_key for d in enqueue_due(client.tracking.store, NOW)] == [f"commit:{first}"]
    with client.tracking.store.write() as conn:  # disabled: nothing more
        conn.execute(update(users).where(users.c.name == "bob").values(disabled=True))
    add_commit(client, "customers")
    assert enqueue_due(client.tracking.store, NOW) == []
    assert len(runs(client)) == 1
