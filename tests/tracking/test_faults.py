"""Runs when things go wrong: a killed process, an exception, Ctrl-C, a slow or absent store."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import plinth
from plinth.client import Client, connect
from plinth.tracking.types import MetricPoint, RunStatus
from tests.backends import running_server
from tests.tracking.workers.log_points import value
from tests.tracking.workers.procs import WORKER, Finished, finish, spawn

FLUSHED = 3_000  # points the "kill" worker flushes before it says so
UNFLUSHED = 20_000  # points it logs after that before it is killed (at least)
STALE_AFTER = 1.0  # seconds without a heartbeat before close_stale_runs takes a run


@pytest.fixture
def artifacts(tmp_path: Path) -> str:
    return str(tmp_path / "artifacts")


def store_env(sqlite_uri: str, artifacts: str, flush_interval: float) -> dict[str, str]:
    """Settings for a worker's default client, the way a user's script gets them."""
    return {
        "PLINTH_STORE_URI": sqlite_uri,
        "PLINTH_ARTIFACT_URI": artifacts,
        "PLINTH_FLUSH_INTERVAL": str(flush_interval),
        "PLINTH_HEARTBEAT_INTERVAL": "0.1",
    }


def run_script(tmp_path: Path, mode: str, env: dict[str, str], steps: int) -> Finished:
    args = ["--experiment", "faults", "--steps", str(steps)]
    worker = spawn(tmp_path / "workers", mode, mode, *args, env=env)
    return finish([worker], timeout=60)[0]


def expected(n: int) -> list[tuple[int, float]]:
    return [(i, value(0, 0, i)) for i in range(n)]


def points(history: list[MetricPoint]) -> list[tuple[int, float]]:
    return [(p.step, p.value) for p in history]


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    # a selector, not select.select: that refuses descriptors past 1023
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
    return proc.stdout.readline() if ready else ""


def wait_until_stale(client: Client, run_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.time() - client.get_run(run_id).heartbeat_at.timestamp() <= STALE_AFTER + 0.05:
        assert time.monotonic() < deadline, "the run's heartbeat never got old"
        time.sleep(0.05)


def wait_until_heartbeat(client: Client, run_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    run = client.get_run(run_id)
    while run.heartbeat_at <= run.start_time:
        assert time.monotonic() < deadline, "the run never sent a heartbeat"
        time.sleep(0.02)
        run = client.get_run(run_id)


# -- a process that dies without warning -----------------------------------------------


@pytest.fixture(params=["sqlite", "remote"])
def target(request: pytest.FixtureRequest, tmp_path: Path, sqlite_uri: str) -> Iterator[str]:
    """Where the killed worker logs: a SQLite store, or a server (its spool stays local)."""
    if request.param == "sqlite":
        yield sqlite_uri
    else:
        with running_server(tmp_path / "server-home", store_uri=sqlite_uri) as url:
            yield url


def test_sigkilled_run_loses_no_acknowledged_point(
    tmp_path: Path, sqlite_uri: str, artifacts: str, target: str, request: pytest.FixtureRequest
) -> None:
    remote = target.startswith("http")
    env = {**store_env(sqlite_uri, artifacts, 3600), "PLINTH_HEARTBEAT_INTERVAL": "0.1"}
    if remote:
        env["PLINTH_URI"] = target
    client = connect(target) if remote else connect(store_uri=sqlite_uri, artifact_uri=artifacts)
    request.addfinalizer(client.close)
    command = [sys.executable, str(WORKER), "kill", "--experiment", "faults"]
    with open(tmp_path / "kill.err", "wb") as stderr:
        proc = subprocess.Popen(
            [*command, "--steps", str(FLUSHED)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=tmp_path,
            env={**os.environ, **env},
        )
    acknowledged = 0
    try:
        line = read_line(proc, timeout=60)
        assert line.startswith("flushed "), (tmp_path / "kill.err").read_text()
        run_id = line.split()[1]
        wait_until_heartbeat(client, run_id)  # it was alive and beating when it died
        # Its flush interval is an hour: all it logs from now on is only acknowledged.
        while acknowledged < FLUSHED + UNFLUSHED:
            line = read_line(proc, timeout=60)
            assert line.startswith("logged "), (tmp_path / "kill.err").read_text()
            acknowledged = int(line.split()[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    run = client.get_run(run_id)
    assert run.status is RunStatus.RUNNING
    assert points(client.get_metric_history(run_id, "loss")) == expected(FLUSHED)

    # The next process using the same home replays the spool; a second replay adds nothing.
    replayed = client.recover_runs()
    assert replayed[run_id] >= acknowledged - FLUSHED
    assert client.recover_runs() == {}
    history = client.get_metric_history(run_id, "loss")
    assert len(history) >= acknowledged
    assert points(history) == expected(len(history))
    assert client.get_run(run_id).metrics["loss"].count == len(history)
    assert not (Path(os.environ["PLINTH_HOME"]) / "spool" / run_id).exists()

    assert client.close_stale_runs(timeout_seconds=60) == []  # its heartbeat is recent
    wait_until_stale(client, run_id)
    assert client.close_stale_runs(timeout_seconds=STALE_AFTER) == [run_id]
    killed = client.get_run(run_id)
    assert killed.status is RunStatus.KILLED
    assert killed.end_time == killed.heartbeat_at
    assert client.close_stale_runs(timeout_seconds=STALE_AFTER) == []
    assert points(client.get_metric_history(run_id, "loss")) == points(history)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def age_heartbeat(client: Client, run_id: str, seconds: float) -> None:
    """Make the run's last heartbeat ``seconds`` old, as if its process had been silent."""
    from sqlalchemy import update

    from plinth.store.schema import runs

    with client.tracking.store.write() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(heartbeat_at=int((time.time() - seconds) * 1000))
        )


@pytest.mark.parametrize("logging", [False, True], ids=["idle", "logging"])
def test_live_run_is_kept_alive_by_its_heartbeat(
    sqlite_uri: str, artifacts: str, logging: bool
) -> None:
    # The flusher thread sleeps for an hour: the test drives its rounds and its clock.
    client = connect(
        store_uri=sqlite_uri, artifact_uri=artifacts, flush_interval=3600, heartbeat_interval=10
    )
    with client.start_run(experiment="faults", capture_environment=False) as run:
        buffer = run._buffer
        clock = buffer.clock = FakeClock()
        buffer._last_beat = clock.now
        age_heartbeat(client, run.id, 60)
        if logging:  # the flusher always has points to write
            for i in range(1_000):
                run.log_metric("loss", 1.0, step=i)
        else:
            buffer.tick()  # no beat due yet, nothing to write: the heartbeat stays old
            assert time.time() - client.get_run(run.id).heartbeat_at.timestamp() >= 59
            clock.now += 10
        buffer.tick()
        assert time.time() - client.get_run(run.id).heartbeat_at.timestamp() < 30
        assert client.close_stale_runs(timeout_seconds=30) == []
        if logging:
            # A busy loop still lets the beats out: each round writes what it found, then beats.
            beats: list[int] = []
            buffer._heartbeat = lambda: beats.append(len(buffer.points))
            for i in range(1_000, 2_000):
                run.log_metric("loss", 1.0, step=i)
            clock.now += 10
            buffer.tick()
            assert beats == [0]
    got = client.get_run(run.id)
    assert got.status is RunStatus.FINISHED
    assert got.metrics["loss"].count == 2_000 if logging else got.metrics == {}


# -- a script that ends on its own -----------------------------------------------------


def test_script_without_with_block_is_flushed_and_finished_at_exit(
    tmp_path: Path, sqlite_uri: str, artifacts: str
) -> None:
    # A flush interval this long means only the exit hook can write the points.
    done = run_script(tmp_path, "atexit", store_env(sqlite_uri, artifacts, 3600), steps=5_000)
    assert done.returncode == 0, done.stderr
    assert "could not close" not in done.stderr

    client = connect(store_uri=sqlite_uri, artifact_uri=artifacts)
    run = client.get_run(done.result["run_id"])
    assert run.status is RunStatus.FINISHED
    assert run.end_time is not None
    assert points(client.get_metric_history(run.id, "loss")) == expected(5_000)
    assert run.metrics["loss"].count == 5_000


def test_script_whose_with_block_raises_fails_the_run_and_keeps_its_points(
    tmp_path: Path, sqlite_uri: str, artifacts: str
) -> None:
    done = run_script(tmp_path, "raise", store_env(sqlite_uri, artifacts, 3600), steps=5_000)
    assert done.returncode == 1
    assert "RuntimeError: boom from the training loop" in done.stderr

    client = connect(store_uri=sqlite_uri, artifact_uri=artifacts)
    run = client.get_run(done.result["run_id"])
    assert run.status is RunStatus.FAILED
    assert run.end_time is not None
    assert points(client.get_metric_history(run.id, "loss")) == expected(5_000)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (None, RunStatus.FINISHED),
        (RuntimeError, RunStatus.FAILED),
        (KeyboardInterrupt, RunStatus.KILLED),
    ],
)
def test_with_block_ends_the_run_by_how_it_was_left(
    sqlite_uri: str, artifacts: str, error: type[BaseException] | None, status: RunStatus
) -> None:
    client = connect(store_uri=sqlite_uri, artifact_uri=artifacts, flush_interval=3600)

    def train() -> str:
        with client.start_run(experiment="faults", capture_environment=False) as run:
            for i in range(1_000):
                run.log_metric("loss", value(0, 0, i))
            if error is not None:
                raise error("stop")
        return run.id

    if error is None:
        run_id = train()
    else:
        with pytest.raises(error):
            train()
        [found] = client.search_runs(experiments=["faults"]).items
        run_id = found.id
    run = client.get_run(run_id)
    assert run.status is status
    assert points(client.get_metric_history(run_id, "loss")) == expected(1_000)


# -- a store slower than the training loop ---------------------------------------------


def test_full_buffer_makes_the_logger_wait_instead_of_growing(
    sqlite_uri: str, artifacts: str
) -> None:
    bound, total = 1_000, 20_000
    # Only a full buffer wakes the flusher: its interval is far longer than the test.
    client = connect(
        store_uri=sqlite_uri, artifact_uri=artifacts, flush_interval=3600, flush_max_points=bound
    )
    run = client.start_run(experiment="faults", capture_environment=False)
    peak = 0
    for i in range(total):
        run.log_metric("loss", value(0, 0, i), step=i)
        peak = max(peak, len(run._points))
    assert peak <= bound
    # Up to one more batch may be taken from the buffer but not yet committed.
    assert client.get_run(run.id).metrics["loss"].count >= total - 2 * bound
    run.end()
    assert points(client.get_metric_history(run.id, "loss")) == expected(total)
    assert client.get_run(run.id).metrics["loss"].count == total


# -- a store that is not there ---------------------------------------------------------


def test_unreachable_postgres_store_is_unavailable(artifacts: str) -> None:
    uri = "postgresql+psycopg://plinth:hunter2@127.0.0.1:1/plinth"  # nothing listens on port 1
    with pytest.raises(plinth.Unavailable) as caught:
        connect(store_uri=uri, artifact_uri=artifacts)
    assert "127.0.0.1:1" in caught.value.message
    assert "hunter2" not in caught.value.message


def test_unreachable_server_is_unavailable() -> None:
    client = connect("http://127.0.0.1:1")
    with pytest.raises(plinth.Unavailable, match=r"127\.0\.0\.1:1"):
        client.get_run("0" * 32)


def test_a_fluent_script_that_crashes_leaves_its_run_failed(
    tmp_path: Path, sqlite_uri: str
) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        "import plinth\n"
        "run = plinth.start_run(experiment='crash')\n"
        "print(run.id, flush=True)\n"
        "plinth.log_metric('loss', 0.5)\n"
        "raise SystemError('the training blew up')\n"
    )
    env = {**os.environ, "PLINTH_STORE_URI": sqlite_uri, "PLINTH_ARTIFACT_URI": str(tmp_path / "a")}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "the training blew up" in done.stderr
    client = plinth.connect(store_uri=sqlite_uri, artifact_uri=str(tmp_path / "a"))
    got = client.get_run(done.stdout.split()[0])
    assert got.status.value == "FAILED" and got.metrics["loss"].count == 1
