"""Pipeline run records: queueing, claiming, heartbeats and finishing are compare-and-set."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from plinth.errors import InvalidArgument, NotFound
from plinth.pipelines import records
from plinth.store.engine import Store, open_store
from plinth.store.schema import pipeline_runs, pipeline_steps
from tests.backends import empty_tables

NOW = 1_780_000_000_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "postgres":
        found = open_store(request.getfixturevalue("postgres_uri"))
        empty_tables(found)
        return found
    return open_store(f"sqlite:///{tmp_path / 'plinth.db'}")


def queue(store: Store, **kwargs: object) -> int | None:
    fields: dict[str, object] = {"pipeline": "p", "trigger": "manual", "created_by": "ann"}
    with store.write() as conn:
        return records.insert_run(conn, **{**fields, **kwargs, "now": NOW})  # type: ignore[arg-type]


def status_of(store: Store, run: int) -> tuple[str, str | None]:
    with store.read() as conn:
        row = conn.execute(
            select(pipeline_runs.c.status, pipeline_runs.c.worker).where(pipeline_runs.c.id == run)
        ).one()
    return row[0], row[1]


def test_a_queued_run_is_read_back_with_its_fields(store: Store) -> None:
    run = queue(store, params={"since": "2026-01-01"}, schedule_id=3, trigger_key="cron:1",
                scheduled_for=NOW - 5, alert_id=9, attempt=2, max_attempts=3, retry_of=1,
                resumed_from=1, from_step="train", not_before=NOW + 1000)  # fmt: skip
    assert run is not None
    found = records.get_run(store, run)
    assert (found.status, found.pipeline, found.trigger, found.created_by) == (
        "queued", "p", "manual", "ann"
    )  # fmt: skip
    assert found.params == {"since": "2026-01-01"}
    assert (found.schedule_id, found.trigger_key, found.alert_id) == (3, "cron:1", 9)
    assert (found.attempt, found.max_attempts, found.retry_of) == (2, 3, 1)
    assert (found.resumed_from, found.from_step) == (1, "train")
    assert found.queued_at is not None and found.not_before is not None
    assert int(found.not_before.timestamp() * 1000) == NOW + 1000
    assert found.steps == []


def test_a_trigger_key_queues_one_run_per_schedule(store: Store) -> None:
    first = queue(store, schedule_id=1, trigger_key="alert:7")
    assert first is not None
    assert queue(store, schedule_id=1, trigger_key="alert:7") is None
    assert queue(store, schedule_id=2, trigger_key="alert:7") not in (None, first)
    # runs without a schedule never collide
    assert queue(store) != queue(store)


def test_params_must_be_json(store: Store) -> None:
    with pytest.raises(InvalidArgument, match="params"):
        queue(store, params={"when": object()})


def test_a_run_is_claimed_once(store: Store) -> None:
    run = queue(store)
    assert run is not None
    assert records.claim(store, run, "host:1", now=NOW)
    assert not records.claim(store, run, "host:2", now=NOW)
    found = records.get_run(store, run)
    assert (found.status, found.worker) == ("running", "host:1")
    assert found.started_at is not None and found.heartbeat_at is not None


def test_heartbeat_only_while_running_under_the_worker(store: Store) -> None:
    run = queue(store)
    assert run is not None
    assert not records.heartbeat(store, run, "host:1")  # still queued
    records.claim(store, run, "host:1", now=NOW)
    assert records.heartbeat(store, run, "host:1", now=NOW + 5000)
    assert records.get_run(store, run).heartbeat_at is not None
    assert int(records.get_run(store, run).heartbeat_at.timestamp() * 1000) == NOW + 5000  # type: ignore[union-attr]
    assert not records.heartbeat(store, run, "host:2")
    with store.write() as conn:  # cancelled by hand
        conn.execute(
            update(pipeline_runs).where(pipeline_runs.c.id == run).values(status="cancelled")
        )
    assert not records.heartbeat(store, run, "host:1")


def test_finish_is_compare_and_set(store: Store) -> None:
    run = queue(store)
    assert run is not None
    assert not records.finish(store, run, "succeeded")  # not running yet
    records.claim(store, run, "host:1", now=NOW)
    assert not records.finish(store, run, "succeeded", worker="host:2")
    assert records.finish(store, run, "failed", "boom", worker="host:1", now=NOW + 10)
    assert not records.finish(store, run, "succeeded", worker="host:1")
    found = records.get_run(store, run)
    assert (found.status, found.error) == ("failed", "boom")
    assert found.finished_at is not None


def test_finish_wants_a_final_status(store: Store) -> None:
    run = queue(store)
    assert run is not None
    with pytest.raises(InvalidArgument, match="'succeeded' or 'failed'"):
        records.finish(store, run, "cancelled")


def test_finishing_closes_the_steps_left_open(store: Store) -> None:
    run = queue(store)
    assert run is not None
    records.add_steps(store, run, ["a", "b", "c"])
    records.claim(store, run, "w", now=NOW)
    assert records.write_step(store, run, "a", "w", status="succeeded")
    assert records.write_step(store, run, "b", "w", status="running", started_at=NOW)
    records.finish(store, run, "failed", "worker killed", worker="w")
    steps = {s.name: s for s in records.get_run(store, run).steps}
    assert [s.name for s in records.get_run(store, run).steps] == ["a", "b", "c"]
    assert (steps["a"].status, steps["a"].error) == ("succeeded", None)
    assert (steps["b"].status, steps["b"].error) == ("failed", "worker killed")
    assert (steps["c"].status, steps["c"].error) == ("skipped", "worker killed")


def test_steps_are_written_only_while_the_worker_holds_the_run(store: Store) -> None:
    run = queue(store)
    assert run is not None
    records.add_steps(store, run, ["a"])
    assert not records.write_step(store, run, "a", "w", status="running")  # not claimed
    records.claim(store, run, "w", now=NOW)
    assert not records.write_step(store, run, "a", "other", status="running")
    assert records.write_step(
        store, run, "a", "w", status="succeeded", started_at=NOW, finished_at=NOW + 1500,
        inputs={"x": {"sha256": "1"}}, output={"kind": "none"},
    )  # fmt: skip
    step = records.get_run(store, run).steps[0]
    assert (step.status, step.duration_seconds) == ("succeeded", 1.5)
    assert (step.inputs, step.output) == ({"x": {"sha256": "1"}}, {"kind": "none"})
    records.finish(store, run, "succeeded", worker="w")
    assert not records.write_step(store, run, "a", "w", status="failed")
    assert records.get_run(store, run).steps[0].status == "succeeded"


def test_adding_steps_again_keeps_them(store: Store) -> None:
    run = queue(store)
    assert run is not None
    records.add_steps(store, run, ["a"])
    records.claim(store, run, "w", now=NOW)
    records.write_step(store, run, "a", "w", status="succeeded")
    records.add_steps(store, run, ["a"])
    assert records.get_run(store, run).steps[0].status == "succeeded"


def test_the_newest_done_step_with_a_cache_key_is_found(store: Store) -> None:
    runs = [queue(store) for _ in range(3)]
    other = queue(store, pipeline="q")
    bobs = queue(store, created_by="bob")
    for run, status in zip(
        [*runs, other, bobs],
        ["succeeded", "cached", "failed", "succeeded", "succeeded"],
        strict=True,
    ):
        assert run is not None
        records.add_steps(store, run, ["a"])
        records.claim(store, run, "w", now=NOW)
        records.write_step(store, run, "a", "w", status=status, cache_key="k", output={"n": run})
    newest = queue(store)
    assert newest is not None
    assert records.find_cached(store, "p", "k", newest, "ann") == (runs[1], {"n": runs[1]})
    assert records.find_cached(store, "p", "k", runs[1], "ann") == (runs[0], {"n": runs[0]})
    assert records.find_cached(store, "p", "other", newest, "ann") is None
    assert records.find_cached(store, "q", "k", other, "ann") is None  # not in an older run
    # only the creator's own runs: bob's newer entry is not ann's, ann's are not bob's
    assert records.find_cached(store, "p", "k", newest, "bob") == (bobs, {"n": bobs})
    assert records.find_cached(store, "p", "k", bobs, "bob") is None


def test_previous_attempt_of_a_retry(store: Store) -> None:
    first = queue(store)
    assert first is not None
    queue(store)  # another run
    second = queue(store, retry_of=first, attempt=2)
    third = queue(store, retry_of=first, attempt=3)
    assert third is not None and second is not None
    assert records.previous_attempt(store, third, first) == second
    assert records.previous_attempt(store, second, first) == first
    assert records.previous_attempt(store, first, first) is None


def test_a_missing_run_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="pipeline run 404"):
        records.get_run(store, 404)


def test_a_tracking_run_is_recorded_for_the_worker_only(store: Store) -> None:
    run = queue(store)
    assert run is not None
    records.claim(store, run, "w", now=NOW)
    assert not records.set_tracking_run(store, run, "abc", "other")
    assert records.set_tracking_run(store, run, "abc", "w")
    assert records.get_run(store, run).run_id == "abc"
    with store.read() as conn:
        assert conn.execute(select(pipeline_steps)).all() == []
