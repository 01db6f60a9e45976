from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy import inspect as sa_inspect

from plinth.client import Client
from plinth.errors import Unavailable
from plinth.pipelines import records, triggers
from plinth.pipelines.scheduler import (
    LEASE,
    Scheduler,
    is_worker,
    kill_group,
    orphaned_group,
    process_started_ms,
    worker_environment,
)
from plinth.store import lease
from plinth.store.schema import pipeline_runs, pipeline_steps
from plinth.store.sql import now_ms
from plinth.tracking.types import RunStatus
from tests.pipelines.scheduled import HOUR, NOW, add_pipeline, add_schedule, runs, store_client

ELSEWHERE = "another-host:4242"


class Recording(Scheduler):
    """Starts no process: claims the run for a worker on another host, as a worker would."""

    def __init__(self, client: Client, **options: Any) -> None:
        super().__init__(client, warm=False, **options)
        self.started: list[int] = []

    def _start(self, run_id: int) -> int:
        self.started.append(run_id)
        assert records.claim(self.store, run_id, f"{ELSEWHERE}-{run_id}")
        return 0


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return store_client(tmp_path)


def queue(client: Client, pipeline: str = "nightly", **values: Any) -> int:
    with client.tracking.store.write() as conn:
        made = records.insert_run(
            conn, pipeline=pipeline, trigger="manual", created_by="local", **values
        )
    assert made is not None
    return made


def running(client: Client, worker: str, *, at: int, **values: Any) -> int:
    run_id = queue(client, **values)
    assert records.claim(client.tracking.store, run_id, worker, now=at)
    return run_id


def row(client: Client, run_id: int) -> Any:
    (found,) = runs(client, id=run_id)
    return found


def test_two_schedulers_ticking_one_store_never_enqueue_twice(client: Client) -> None:
    add_pipeline(client, concurrency=100)
    add_schedule(client, cron="*/5 * * * *", catchup="all", cursor=NOW - NOW % HOUR)
    first, second = Recording(client, max_workers=100), Recording(client, max_workers=100)
    start = NOW - NOW % HOUR
    for minute in range(0, 120, 3):
        at = start + minute * 60_000
        first.tick(at)
        second.tick(at + 1)
    keys = [r.trigger_key for r in runs(client)]
    assert len(keys) == len(set(keys)) == 23  # every 5 minutes up to 01:57
    assert sorted(first.started + second.started) == sorted(r.id for r in runs(client))


def test_concurrency_per_pipeline_and_workers_in_all(client: Client) -> None:
    add_pipeline(client, "one", concurrency=1)
    add_pipeline(client, "many", concurrency=5)
    ones = [queue(client, "one", now=NOW) for _ in range(3)]
    manys = [queue(client, "many", now=NOW) for _ in range(5)]
    scheduler = Recording(client, max_workers=3)
    scheduler.tick(NOW)
    assert scheduler.started == [ones[0], manys[0], manys[1]]
    scheduler.tick(NOW + 1)  # all three busy: nothing more
    assert len(scheduler.started) == 3
    assert records.finish(
        client.tracking.store, manys[0], "succeeded", worker=f"{ELSEWHERE}-{manys[0]}"
    )
    scheduler.tick(NOW + 2)
    assert scheduler.started[3:] == [manys[2]]  # "one" still runs its one
    assert records.finish(
        client.tracking.store, ones[0], "succeeded", worker=f"{ELSEWHERE}-{ones[0]}"
    )
    scheduler.tick(NOW + 3)
    assert scheduler.started[4:] == [ones[1]]


def test_a_run_waits_for_its_not_before(client: Client) -> None:
    add_pipeline(client)
    later = queue(client, not_before=NOW + 10_000, now=NOW)
    scheduler = Recording(client)
    scheduler.tick(NOW + 9_999)
    assert scheduler.started == []
    scheduler.tick(NOW + 10_000)
    assert scheduler.started == [later]


def test_a_failed_run_is_retried_once_per_attempt_with_back_off(client: Client) -> None:
    add_pipeline(client, retries=2, retry_backoff_seconds=10.0)
    store = client.tracking.store
    first = running(client, ELSEWHERE, at=NOW, max_attempts=3, alert_id=7)
    assert records.finish(store, first, "failed", "step x failed: boom", now=NOW)
    one, other = Recording(client), Recording(client)
    done = one.tick(NOW + 1_000) + other.tick(NOW + 1_000) + one.tick(NOW + 2_000)
    retried = [d for d in done if d.action == "retried"]
    assert len(retried) == 1
    second = row(client, retried[0].pipeline_run)
    assert (second.trigger, second.attempt, second.retry_of, second.alert_id) == (
        "retry",
        2,
        first,
        7,
    )
    assert (second.status, second.not_before) == ("queued", NOW + 1_000 + 10_000)
    # the second attempt fails too: the third waits twice as long
    with store.write() as conn:
        conn.execute(
            update(pipeline_runs)
            .where(pipeline_runs.c.id == second.id)
            .values(status="failed", finished_at=NOW + 20_000)
        )
    one.tick(NOW + 30_000)
    third = runs(client, attempt=3)
    assert [(r.retry_of, r.not_before) for r in third] == [(first, NOW + 30_000 + 20_000)]
    with store.write() as conn:
        conn.execute(
            update(pipeline_runs).where(pipeline_runs.c.id == third[0].id).values(status="failed")
        )
    assert [d for d in one.tick(NOW + 60_000) if d.action == "retried"] == []  # no attempts left
    assert len(runs(client)) == 3


def test_a_cancelled_run_is_not_retried(client: Client) -> None:
    add_pipeline(client, retries=2)
    with client.tracking.store.write() as conn:
        conn.execute(update(pipeline_runs).values(status="cancelled"))
    cancelled = queue(client, max_attempts=3)
    with client.tracking.store.write() as conn:
        conn.execute(
            update(pipeline_runs).where(pipeline_runs.c.id == cancelled).values(status="cancelled")
        )
    Scheduler(client).tick(NOW)
    assert len(runs(client)) == 1


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_orphans_are_reclaimed_by_pid_on_this_host_or_by_heartbeat(client: Client) -> None:
    add_pipeline(client)
    scheduler = Scheduler(client, stale_seconds=120)
    at = NOW + 1_000_000
    vanished = running(client, f"{scheduler.host}:{dead_pid()}", at=at)
    silent = running(client, ELSEWHERE, at=at - 121_000)
    fresh = running(client, "third-host:1", at=at - 60_000)
    # this test's process, claiming a run long before it started: a pid since reused
    here = f"{scheduler.host}:{os.getpid()}"
    reused = running(client, here, at=at)
    # ... and a run it claimed itself, running in-process (``plinth pipelines run``)
    in_process = running(client, here, at=now_ms())
    with client.tracking.store.write() as conn:  # not heard of for long: the store was away
        conn.execute(
            update(pipeline_runs).where(pipeline_runs.c.id == in_process).values(heartbeat_at=0)
        )
    done = {d.pipeline_run: d.detail for d in scheduler.tick(at) if d.action == "failed"}
    assert set(done) == {vanished, silent, reused}
    lost = row(client, vanished).worker
    assert row(client, vanished).error == f"worker lost ({lost}: gone)"
    assert row(client, reused).error == f"worker lost ({here}: gone)"
    assert row(client, in_process).status == "running"
    assert row(client, silent).error == f"worker lost ({ELSEWHERE}: no heartbeat)"
    assert row(client, fresh).status == "running"


def test_a_run_past_its_pipelines_timeout_fails(client: Client) -> None:
    add_pipeline(client, timeout_seconds=60.0)
    add_pipeline(client, "forever")
    slow = running(client, ELSEWHERE, at=NOW - 61_000)
    in_time = running(client, ELSEWHERE, at=NOW - 59_000)
    unlimited = running(client, ELSEWHERE, at=NOW - 61_000, pipeline="forever")
    with client.tracking.store.write() as conn:  # their heartbeats are fresh
        conn.execute(update(pipeline_runs).values(heartbeat_at=NOW))
    done = Scheduler(client).tick(NOW)
    assert [(d.action, d.pipeline_run, d.detail) for d in done] == [
        ("failed", slow, "timed out after 60 s")  # on another host: not killed from here
    ]
    assert (row(client, slow).status, row(client, slow).error) == ("failed", "timed out after 60 s")
    assert row(client, in_time).status == row(client, unlimited).status == "running"


def test_a_worker_that_exits_with_its_run_running_fails_it(client: Client) -> None:
    add_pipeline(client)
    scheduler = Scheduler(client)
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    run_id = running(client, f"{scheduler.host}:{child.pid}", at=NOW)
    with client.tracking.store.write() as conn:
        conn.execute(
            insert(pipeline_steps).values(
                pipeline_run=run_id, name="train", position=0, status="running"
            )
        )
    scheduler.children[run_id] = child
    child.wait()
    done = scheduler.tick(NOW)
    assert [(d.action, d.detail) for d in done] == [
        ("failed", "worker exited with code 7 during step train")
    ]
    with client.tracking.store.read() as conn:
        step = conn.execute(select(pipeline_steps.c.status)).scalar()
    assert step == "failed" and scheduler.children == {}


def test_only_the_lease_holder_schedules_and_a_standby_takes_over(client: Client) -> None:
    add_pipeline(client)
    queue(client)
    changes: list[tuple[str, bool]] = []
    first = Recording(client, lease_seconds=30, on_change=lambda h: changes.append(("first", h)))
    second = Recording(client, lease_seconds=30, on_change=lambda h: changes.append(("second", h)))
    assert first.run_pass() and not second.run_pass()
    assert len(first.started) == 1 and second.started == []
    # the first dies without giving the lease up: it expires
    store = client.tracking.store
    with store.write() as conn:
        from plinth.store.schema import leases

        conn.execute(update(leases).values(expires_at_ms=0))
    assert second.run_pass()
    assert lease.current(store, LEASE).holder == second.holder  # type: ignore[union-attr]
    first._renewed_at = 0.0  # due to renew: finds it lost
    assert not first.run_pass()
    assert changes == [("first", True), ("second", True), ("first", False)]


def test_a_pass_with_the_store_away_is_logged_and_the_next_one_goes_on(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_pipeline(client)
    scheduler = Recording(client)
    real = triggers.enqueue_due

    def away(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("the store at sqlite:///x is unreachable")

    monkeypatch.setattr(triggers, "enqueue_due", away)
    assert scheduler.run_pass()  # no crash
    assert scheduler.failure is not None and "unreachable" in scheduler.failure
    monkeypatch.setattr(triggers, "enqueue_due", real)
    queue(client)
    scheduler.run_pass()
    assert scheduler.failure is None and len(scheduler.started) == 1


# -- plinth scheduler, as real processes ----------------------------------------------------


def wait_for(check: Any, what: str, seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not {what} after {seconds} s")


def holder_pid(client: Client) -> int | None:
    held = lease.current(client.tracking.store, LEASE)
    return None if held is None else int(held.holder.split(":")[1])


@pytest.mark.slow
def test_a_killed_scheduler_is_taken_over_by_its_standby(client: Client, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PLINTH_STORE_URI": client.tracking.store.uri,
        "PLINTH_ARTIFACT_URI": client.settings.resolved_artifact_uri,
        "PLINTH_SCHEDULER_LEASE_SECONDS": "1",
    }
    started: list[subprocess.Popen[bytes]] = []

    def scheduler(name: str) -> tuple[subprocess.Popen[bytes], Path]:
        output = tmp_path / f"{name}.out"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "plinth", "scheduler", "--tick", "0.1"],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process, output

    try:
        first, _ = scheduler("first")
        wait_for(lambda: holder_pid(client) == first.pid, "holding the lease")
        second, said = scheduler("second")
        wait_for(
            lambda: "standby; the lease pipeline-scheduler is held by" in said.read_text(),
            "standby",
        )
        first.kill()  # SIGKILL: the lease is not given up, it expires
        first.wait()
        wait_for(lambda: holder_pid(client) == second.pid, "taken over")
        wait_for(
            lambda: "holds the lease pipeline-scheduler; scheduling" in said.read_text(), "said so"
        )
        # it schedules: a queued run is started (its worker fails: no such entrypoint)
        add_pipeline(client, entrypoint="nowhere:pipeline")
        queue(client)
        wait_for(lambda: runs(client)[0].status == "failed", "run")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        assert lease.current(client.tracking.store, LEASE) is None  # given up
        assert "stopped; lease released" in said.read_text()
        assert "lost the lease" not in said.read_text()  # given up on the way out, not lost
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_worker_that_lost_the_race_to_claim_leaves_the_winners_run_alone(
    client: Client,
) -> None:
    add_pipeline(client)
    scheduler = Scheduler(client, warm=False)
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    run_id = running(client, ELSEWHERE, at=now_ms())  # claimed by the other one's worker
    scheduler.children[run_id] = child
    child.wait()
    assert scheduler.tick() == []
    assert row(client, run_id).status == "running" and scheduler.children == {}


def test_a_run_in_a_users_own_process_past_its_timeout_fails_but_is_not_killed(
    client: Client,
) -> None:
    add_pipeline(client, timeout_seconds=1.0)
    scheduler = Scheduler(client, warm=False)
    here = running(client, f"{scheduler.host}:{os.getpid()}", at=now_ms() - 2_000)
    done = scheduler.tick()
    assert [(d.action, d.pipeline_run) for d in done] == [("failed", here)]
    assert not is_worker(os.getpid())  # and this test's process is still here to say so


# -- the review's findings (issue 15) ------------------------------------------------------


def test_a_retry_of_a_rerun_from_a_step_resumes_as_its_first_attempt(client: Client) -> None:
    add_pipeline(client, retries=1, retry_backoff_seconds=0.0)
    first = running(client, ELSEWHERE, at=NOW)
    assert records.finish(client.tracking.store, first, "succeeded", now=NOW)
    rerun = running(
        client, ELSEWHERE, at=NOW, resumed_from=first, from_step="train", max_attempts=2
    )
    # its worker died before recording a step
    assert records.finish(client.tracking.store, rerun, "failed", "worker lost", now=NOW)
    (retried,) = [d for d in Recording(client).tick(NOW) if d.action == "retried"]
    retry = row(client, retried.pipeline_run)
    assert (retry.retry_of, retry.resumed_from, retry.from_step) == (rerun, first, "train")


def test_a_failure_older_than_a_day_is_not_looked_at_for_a_retry(client: Client) -> None:
    add_pipeline(client, retries=1, retry_backoff_seconds=0.0)
    old = running(client, ELSEWHERE, at=NOW - 2 * 24 * HOUR, max_attempts=2)
    recent = running(client, ELSEWHERE, at=NOW - HOUR, max_attempts=2)
    assert records.finish(client.tracking.store, old, "failed", "boom", now=NOW - 25 * HOUR)
    assert records.finish(client.tracking.store, recent, "failed", "boom", now=NOW - HOUR)
    done = [d for d in Recording(client).tick(NOW) if d.action == "retried"]
    assert [d.detail for d in done] == [f"attempt 2 of run {recent}"]


def test_the_look_for_a_runs_next_attempt_uses_an_index(client: Client) -> None:
    store = client.tracking.store
    with store.read() as conn:
        indexes = sa_inspect(conn).get_indexes("pipeline_runs")
    assert ["retry_of", "attempt"] in [i["column_names"] for i in indexes]


def test_a_run_the_scheduler_fails_ends_its_tracking_run(client: Client) -> None:
    add_pipeline(client)
    scheduler = Scheduler(client, stale_seconds=120, warm=False)
    lost = running(client, ELSEWHERE, at=NOW - 121_000)
    tracked = client.tracking.create_run("nightly")
    with client.tracking.store.write() as conn:
        conn.execute(
            update(pipeline_runs).where(pipeline_runs.c.id == lost).values(run_id=tracked.id)
        )
    assert [d.action for d in scheduler.tick(NOW)] == ["failed"]
    assert client.tracking.get_run(tracked.id).status == RunStatus.FAILED


def test_a_dead_workers_left_over_processes_are_killed_when_it_is_reclaimed(
    client: Client,
) -> None:
    add_pipeline(client)
    scheduler = Scheduler(client, warm=False)
    # a "worker": leads a session of its own, starts a process, dies
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            "print(c.pid, flush=True)",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    assert leader.stdout is not None
    left = int(leader.stdout.readline())
    leader.stdout.close()
    leader.wait()
    try:
        assert orphaned_group(leader.pid) and process_started_ms(left) is not None
        run_id = running(client, f"{scheduler.host}:{leader.pid}", at=now_ms())
        done = scheduler.tick()
        assert [(d.action, d.pipeline_run) for d in done] == [("failed", run_id)]
        deadline = time.monotonic() + 10
        while process_started_ms(left) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_started_ms(left) is None
    finally:
        kill_group(leader.pid)


def test_a_process_group_whose_leader_lives_is_not_an_orphan() -> None:
    assert not orphaned_group(os.getpid())  # alive: perhaps a pid reused since
    assert not orphaned_group(dead_pid())  # nothing left of it


def test_a_worker_inherits_the_basics_the_store_settings_and_what_is_passed() -> None:
    environ = {
        "PATH": "/bin",
        "HOME": "/home/u",
        "PLINTH_STORE_URI": "sqlite:///x.db",
        "PLINTH_SPARK_MASTER": "local[2]",
        "PLINTH_TOKEN": "secret",  # a client's: a worker uses the store itself
        "PLINTH_URI": "http://server",
        "AWS_SECRET_ACCESS_KEY": "secret",  # the artifacts' object store
        "HTTPS_PROXY": "http://proxy:3128",
        "GITHUB_TOKEN": "secret",
        "MY_MARKS": "/tmp/m",
    }
    assert worker_environment(environ, ["MY_MARKS"]) == {
        "PATH": "/bin",
        "HOME": "/home/u",
        "PLINTH_STORE_URI": "sqlite:///x.db",
        "PLINTH_SPARK_MASTER": "local[2]",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "HTTPS_PROXY": "http://proxy:3128",
        "MY_MARKS": "/tmp/m",
    }


def test_worker_logs_not_written_to_for_a_week_are_removed(client: Client, tmp_path: Path) -> None:
    scheduler = Scheduler(client, warm=False, log_dir=tmp_path / "logs")
    (tmp_path / "logs").mkdir()
    old, new, other = (tmp_path / "logs" / n for n in ("worker-1.log", "worker-2.log", "x.txt"))
    for path in (old, new, other):
        path.write_text("output")
    week = 7 * 24 * 3600
    os.utime(old, (time.time() - week - 60, time.time() - week - 60))
    os.utime(other, (time.time() - week - 60, time.time() - week - 60))
    scheduler.run_pass()  # when it starts
    assert not old.exists() and new.exists() and other.exists()


def test_the_scheduler_command_waits_for_a_store_that_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    from plinth.cli.scheduler import connect_when_up

    answers: list[Any] = [Unavailable("store away"), Unavailable("store away"), "client"]

    def connect() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with caplog.at_level("WARNING"):
        assert connect_when_up(threading.Event(), 0.01, connect) == "client"
    assert caplog.text.count("store unavailable, retrying") == 2
    stopping = threading.Event()
    stopping.set()
    assert connect_when_up(stopping, 0.01, lambda: connect_fails()) is None


def connect_fails() -> Any:
    raise Unavailable("store away")
