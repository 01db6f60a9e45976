"""Workers as real subprocesses, started by a scheduler ticking on the real clock."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from plinth.auth.access import access_for
from plinth.auth.context import acting_as
from plinth.auth.types import Role
from plinth.client import Client
from plinth.config import local_user
from plinth.pipelines import records
from plinth.pipelines.scheduler import Scheduler
from plinth.pipelines.worker import Watchdog, act_as_owner, owner_principal
from plinth.store.schema import group_members, pipeline_runs, pipeline_steps, user_groups, users
from plinth.store.sql import now_ms
from tests.pipelines.scheduled import add_pipeline, add_schedule, runs, store_client

PIPELINES = """
import os
import subprocess
import sys
import time
from pathlib import Path

from plinth.pipelines.pipeline import Pipeline
from plinth.pipelines.step import step

MARKS = Path(os.environ["SCHED_TEST_MARKS"])


@step
def prepare(context, base: int = 1):
    return {"n": base}


@step
def add(context, prepare):
    print("printed by the step add")
    return prepare["n"] + 1


@step(timeout_seconds=1.0)
def hang(context, prepare):
    (MARKS / f"hang-{context.attempt}").write_text(str(os.getpid()))
    time.sleep(3600)


@step
def sleepy(context, prepare):
    if context.attempt == 1:
        (MARKS / "sleepy").write_text(str(os.getpid()))
        time.sleep(3600)
    return "woke"


@step
def forever(context, prepare):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    (MARKS / f"forever-{context.pipeline_run}").write_text(f"{os.getpid()} {child.pid}")
    time.sleep(3600)


@step(timeout_seconds=1.0)
def stuck(context):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    (MARKS / f"stuck-{context.pipeline_run}").write_text(f"{os.getpid()} {child.pid}")
    time.sleep(3600)


@step
def who(context):
    import threading

    from plinth.auth.access import access_for

    access = access_for(context.client.tracking.store)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(access.principal().name))
    thread.start()
    thread.join()
    secret = os.environ.get("SCHED_TEST_SECRET", "-")
    (MARKS / "who").write_text(f"{access.principal().name} {seen[0]} {secret}")


tiny = Pipeline("tiny", [prepare, add], params={"base": 1})
stuckp = Pipeline("stuckp", [stuck])
whop = Pipeline("whop", [who])
hanging = Pipeline("hanging", [prepare, hang])
killed = Pipeline("killed", [prepare, sleepy])
endless = Pipeline("endless", [prepare, forever])
"""


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Client:
    (tmp_path / "marks").mkdir()
    monkeypatch.setenv("SCHED_TEST_MARKS", str(tmp_path / "marks"))
    (tmp_path / "pipes.py").write_text(PIPELINES)
    return store_client(tmp_path)


@pytest.fixture
def scheduler(client: Client) -> Iterator[Scheduler]:
    made = Scheduler(client, max_workers=2, pass_env=["SCHED_TEST_MARKS"])
    yield made
    made.close()
    for child in made.children.values():  # a failed test leaves no process behind
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def entry(tmp_path: Path, attr: str) -> str:
    return f"{tmp_path / 'pipes.py'}:{attr}"


def tick_until(scheduler: Scheduler, done: Callable[[], Any], seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        scheduler.tick()
        found = done()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(
        f"not done after {seconds} s: {[dict(r._mapping) for r in runs(scheduler.client)]}"
    )


def finished(client: Client, **where: Any) -> list[Any]:
    return [r for r in runs(client, **where) if r.status in ("succeeded", "failed")]


@pytest.mark.slow
def test_a_cron_schedule_runs_a_pipeline_in_a_worker_end_to_end(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    add_pipeline(client, "tiny", entrypoint=entry(tmp_path, "tiny"), params="{}")
    add_schedule(client, "tiny", cron="* * * * *", params='{"base": 41}', cursor=now_ms() - 61_000)
    (run,) = tick_until(scheduler, lambda: finished(client))
    assert (run.status, run.trigger, run.error) == ("succeeded", "cron", None)
    pid = run.worker.rsplit(":", 1)[1]
    assert pid != str(os.getpid())  # in a process of its own
    done = records.get_run(client.tracking.store, run.id)
    assert [(s.name, s.status) for s in done.steps] == [
        ("prepare", "succeeded"),
        ("add", "succeeded"),
    ]
    from plinth.pipelines.runner import load_output

    assert load_output(client, run.id, "add") == 42
    tick_until(scheduler, lambda: not scheduler.children)  # reaped, nothing failed
    assert runs(client)[0].status == "succeeded"
    # its output kept (read once it has ended: it logs the outcome after recording it)
    assert "pipeline run 1: succeeded" in (scheduler.log_dir / f"worker-{pid}.log").read_text()


@pytest.mark.parametrize(
    ("attr", "says"),
    [
        ("no_such_pipeline", "pipes.py has no 'no_such_pipeline'"),
        ("BROKEN", "ZeroDivisionError: division by zero"),
    ],
)
def test_an_entrypoint_that_cannot_be_loaded_fails_the_run(
    client: Client, scheduler: Scheduler, tmp_path: Path, attr: str, says: str
) -> None:
    (tmp_path / "broken.py").write_text("1 / 0\n")
    where = entry(tmp_path, attr) if attr != "BROKEN" else f"{tmp_path / 'broken.py'}:pipeline"
    add_pipeline(client, "broken", entrypoint=where)
    with client.tracking.store.write() as conn:
        records.insert_run(conn, pipeline="broken", trigger="manual", created_by="local")
    (run,) = tick_until(scheduler, lambda: finished(client))
    assert run.status == "failed"
    assert run.error.startswith(f"pipeline entrypoint {where!r}") and says in run.error


@pytest.mark.slow
def test_a_step_that_never_returns_is_timed_out_killed_retried_then_failed(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    add_pipeline(
        client,
        "hanging",
        entrypoint=entry(tmp_path, "hanging"),
        retries=1,
        retry_backoff_seconds=0.5,
    )
    with client.tracking.store.write() as conn:
        records.insert_run(
            conn, pipeline="hanging", trigger="manual", created_by="local", max_attempts=2
        )
    first, second = tick_until(scheduler, lambda: len(finished(client)) == 2 and finished(client))
    for attempt in (first, second):
        assert (attempt.status, attempt.error) == ("failed", "step hang timed out after 1 s")
    assert (second.trigger, second.attempt, second.retry_of) == ("retry", 2, first.id)
    assert second.not_before >= first.finished_at + 500  # its back-off
    tick_until(scheduler, lambda: not scheduler.children)
    for attempt in (1, 2):  # each worker killed itself with its stuck step
        pid = int((tmp_path / "marks" / f"hang-{attempt}").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    scheduler.tick()
    assert len(runs(client)) == 2  # no third attempt


@pytest.mark.slow
def test_a_worker_killed_mid_step_fails_its_run_and_the_retry_resumes(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    add_pipeline(
        client, "killed", entrypoint=entry(tmp_path, "killed"), retries=1, retry_backoff_seconds=0.1
    )
    with client.tracking.store.write() as conn:
        records.insert_run(
            conn, pipeline="killed", trigger="manual", created_by="local", max_attempts=2
        )
    mark = tmp_path / "marks" / "sleepy"
    tick_until(scheduler, mark.exists)
    os.kill(int(mark.read_text()), signal.SIGKILL)
    first, second = tick_until(scheduler, lambda: len(finished(client)) == 2 and finished(client))
    assert (first.status, first.error) == (
        "failed",
        "worker exited with signal 9 during step sleepy",
    )
    assert (second.status, second.attempt, second.retry_of) == ("succeeded", 2, first.id)
    steps = records.get_run(client.tracking.store, second.id).steps
    assert [(s.name, s.status) for s in steps] == [("prepare", "reused"), ("sleepy", "succeeded")]


def gone(pid: int) -> bool:
    """No such process, or only its zombie (this test's container may not reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def pids_of(tmp_path: Path, run_id: int) -> list[int]:
    mark = tmp_path / "marks" / f"forever-{run_id}"
    return [int(p) for p in mark.read_text().split()] if mark.exists() else []


def queue_endless(client: Client, tmp_path: Path, **columns: Any) -> int:
    add_pipeline(client, "endless", entrypoint=entry(tmp_path, "endless"), **columns)
    with client.tracking.store.write() as conn:
        made = records.insert_run(conn, pipeline="endless", trigger="manual", created_by="local")
    assert made is not None
    return made


@pytest.mark.slow
def test_a_run_over_its_pipelines_timeout_is_killed_with_its_process_group(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    run_id = queue_endless(client, tmp_path, timeout_seconds=1.0)
    (run,) = tick_until(scheduler, lambda: finished(client))
    assert (run.status, run.error) == ("failed", "timed out after 1 s")
    worker, grandchild = tick_until(scheduler, lambda: pids_of(tmp_path, run_id))
    tick_until(scheduler, lambda: gone(worker) and gone(grandchild))


@pytest.mark.slow
def test_a_cancelled_running_run_is_killed(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    run_id = queue_endless(client, tmp_path)
    worker, grandchild = tick_until(scheduler, lambda: pids_of(tmp_path, run_id))
    with client.tracking.store.write() as conn:  # as the service's cancel_run does
        conn.execute(update(pipeline_runs).values(status="cancelled", finished_at=now_ms()))
    tick_until(scheduler, lambda: gone(worker) and gone(grandchild))
    assert [r.status for r in runs(client)] == ["cancelled"]


@pytest.mark.slow
def test_a_standby_adopts_the_running_runs_of_a_scheduler_that_died(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    add_pipeline(
        client, "killed", entrypoint=entry(tmp_path, "killed"), retries=1, retry_backoff_seconds=0.1
    )
    with client.tracking.store.write() as conn:
        records.insert_run(
            conn, pipeline="killed", trigger="manual", created_by="local", max_attempts=2
        )
    mark = tmp_path / "marks" / "sleepy"
    tick_until(scheduler, mark.exists)  # the first scheduler started it, then "died"
    standby = Scheduler(client, warm=False, pass_env=["SCHED_TEST_MARKS"])
    assert [d for d in standby.tick() if d.action != "started"] == []
    assert runs(client)[0].status == "running"  # alive on this host: left to run
    os.kill(int(mark.read_text()), signal.SIGKILL)
    first, second = tick_until(standby, lambda: len(finished(client)) == 2 and finished(client))
    assert first.error == f"worker lost ({first.worker}: gone)"
    assert (second.status, second.attempt) == ("succeeded", 2)
    tick_until(standby, lambda: not standby.children)


# -- in-process ----------------------------------------------------------------------------


def test_the_watchdog_fails_a_step_over_its_limit(client: Client) -> None:
    add_pipeline(client)
    store = client.tracking.store
    with store.write() as conn:
        run_id = records.insert_run(conn, pipeline="nightly", trigger="manual", created_by="local")
    assert run_id is not None and records.claim(store, run_id, "h:1", now=1_000)
    with store.write() as conn:
        conn.execute(
            insert(pipeline_steps).values(
                pipeline_run=run_id, name="train", position=0, status="running", started_at=1_000
            )
        )
    exits: list[int] = []
    watchdog = Watchdog(store, run_id, "h:1", {"train": 2.0, "other": 0.1}, exit=exits.append)
    assert watchdog.check(3_000) is None  # exactly at its limit
    assert watchdog.check(3_001) == "step train timed out after 2 s"
    (run,) = runs(client)
    assert (run.status, run.error) == ("failed", "step train timed out after 2 s")


def test_the_worker_acts_as_the_owner_as_the_owner_is_now(client: Client) -> None:
    store = client.tracking.store
    with store.write() as conn:
        conn.execute(insert(users).values(name="ann", kind="user", role="editor", created_at=0))
        conn.execute(insert(user_groups).values(name="ml", created_at=0))
        conn.execute(insert(group_members).values(group_name="ml", user_name="ann"))
    ann = owner_principal(store, "ann")
    assert ann is not None and (ann.role, ann.groups) == (Role.EDITOR, ("ml",))
    assert owner_principal(store, "gone") is None
    local = owner_principal(store, local_user())
    assert local is not None and local.is_admin
    with store.write() as conn:
        conn.execute(update(users).values(disabled=True))
    assert owner_principal(store, "ann") is None


@pytest.mark.slow
def test_runs_queued_and_cancelled_through_the_service(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    from plinth.pipelines.types import PipelineSpec

    service = client.pipelines
    service.register_pipeline(PipelineSpec(name="tiny", entrypoint=entry(tmp_path, "tiny")))
    service.register_pipeline(PipelineSpec(name="endless", entrypoint=entry(tmp_path, "endless")))
    done = service.queue_run("tiny", {"base": 9})
    tick_until(scheduler, lambda: service.get_run(done.id).status == "succeeded")
    from plinth.pipelines.runner import load_output

    assert load_output(client, done.id, "add") == 10
    endless = service.queue_run("endless")
    worker, grandchild = tick_until(scheduler, lambda: pids_of(tmp_path, endless.id))
    service.cancel_run(endless.id)
    tick_until(scheduler, lambda: gone(worker) and gone(grandchild))
    assert service.get_run(endless.id).status == "cancelled"


# -- the review's findings (issue 15) ------------------------------------------------------


def test_acting_as_the_owner_holds_in_every_thread_of_the_worker(client: Client) -> None:
    store = client.tracking.store
    with store.write() as conn:
        conn.execute(insert(users).values(name="ann", kind="user", role="editor", created_at=0))
    ann = owner_principal(store, "ann")
    assert ann is not None
    act_as_owner(store, ann)
    seen: list[str] = []
    with acting_as(ann):
        thread = threading.Thread(target=lambda: seen.append(access_for(store).principal().name))
        thread.start()
        thread.join()
    assert seen == ["ann"]


@pytest.mark.slow
def test_a_step_acts_as_the_owner_in_its_threads_without_the_schedulers_secrets(
    client: Client, scheduler: Scheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHED_TEST_SECRET", "hush")  # the scheduler's, not passed on
    with client.tracking.store.write() as conn:
        conn.execute(insert(users).values(name="vera", kind="user", role="editor", created_at=0))
    add_pipeline(client, "whop", entrypoint=entry(tmp_path, "whop"), owner="vera")
    with client.tracking.store.write() as conn:
        records.insert_run(conn, pipeline="whop", trigger="manual", created_by="vera")
    mark = tmp_path / "marks" / "who"
    tick_until(scheduler, mark.exists)
    assert mark.read_text() == "vera vera -"


@pytest.mark.slow
def test_a_worker_killed_takes_the_processes_its_step_started_with_it(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    run_id = queue_endless(client, tmp_path)
    worker, grandchild = tick_until(scheduler, lambda: pids_of(tmp_path, run_id))
    os.kill(worker, signal.SIGKILL)
    tick_until(scheduler, lambda: finished(client) and gone(grandchild))


@pytest.mark.slow
def test_a_step_over_its_timeout_ends_with_the_processes_it_started(
    client: Client, tmp_path: Path
) -> None:
    add_pipeline(client, "stuckp", entrypoint=entry(tmp_path, "stuckp"))
    with client.tracking.store.write() as conn:
        run_id = records.insert_run(conn, pipeline="stuckp", trigger="manual", created_by="local")
    environ = dict(
        os.environ,
        PLINTH_HOME=str(client.settings.home.resolve()),
        PLINTH_STORE_URI=client.tracking.store.uri,
        PLINTH_ARTIFACT_URI=client.settings.resolved_artifact_uri,
    )
    # no scheduler: the worker itself ends its group
    worker = subprocess.Popen(
        [sys.executable, "-m", "plinth.pipelines.worker", str(run_id)],
        env=environ,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        worker.wait(60)
        (run,) = runs(client)
        assert (run.status, run.error) == ("failed", "step stuck timed out after 1 s")
        _, grandchild = (
            int(p) for p in (tmp_path / "marks" / f"stuck-{run_id}").read_text().split()
        )
        deadline = time.monotonic() + 10
        while not gone(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(grandchild)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)


@pytest.mark.slow
def test_what_a_step_prints_is_in_its_log_not_in_the_workers_log_file(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    scheduler.log_dir = tmp_path / "worker-logs"
    add_pipeline(client, "tiny", entrypoint=entry(tmp_path, "tiny"))
    with client.tracking.store.write() as conn:
        run_id = records.insert_run(conn, pipeline="tiny", trigger="manual", created_by="local")
    assert run_id is not None
    (run,) = tick_until(scheduler, lambda: finished(client))
    assert run.status == "succeeded"
    tick_until(scheduler, lambda: not scheduler.children)
    assert "printed by the step add" in client.pipelines.run_logs(run_id, "add")
    logged = "".join(p.read_text() for p in scheduler.log_dir.glob("worker-*.log"))
    assert f"pipeline run {run_id}: succeeded" in logged  # the worker's own lines are there
    assert "printed by the step add" not in logged
