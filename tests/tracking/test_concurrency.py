"""Many processes on one store at once: one SQLite file, or one PostgreSQL database.

Each test starts 8 worker processes (``workers/log_points.py``) that wait at a start line
and are released together, so first use of the store, run numbering and metric writes
really race.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from plinth.client import Client, connect
from plinth.store.engine import SCHEMA_REVISION, open_store
from plinth.tracking.types import MetricPoint, RunStatus, infer_goal
from tests.tracking.workers.log_points import KEYS, params, value
from tests.tracking.workers.procs import Finished, finish, release, spawn

WORKERS = 8
OWN_STEPS = 7_000  # per metric: 21,000 points per worker
SHARED_STEPS = 1_000  # per metric and worker: 24,000 points in the shared run
RUNS_PER_WORKER = 5


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file nobody has opened yet, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'plinth.db'}"
    return str(request.getfixturevalue("postgres_uri"))


@pytest.fixture
def experiment() -> str:
    # PostgreSQL tables are shared by the whole session: never reuse a name.
    return f"concurrency-{uuid.uuid4().hex[:8]}"


def run_together(tmp_path: Path, mode: str, store_uri: str, *args: str) -> list[Finished]:
    go = tmp_path / "go"
    common = ["--store", store_uri, "--artifacts", str(tmp_path / "artifacts"), *args]
    workers = [
        spawn(tmp_path / "workers", f"{mode}-{i}", mode, "--worker", str(i), *common, go=go)
        for i in range(WORKERS)
    ]
    try:
        release(workers, go)
    finally:
        finished = finish(workers, timeout=120)
    for i, done in enumerate(finished):
        assert "locked" not in done.stderr.lower(), f"worker {i}:\n{done.stderr}"
        assert done.returncode == 0, f"worker {i} exited {done.returncode}:\n{done.stderr}"
    return finished


def reader(store_uri: str, tmp_path: Path) -> Client:
    return connect(store_uri=store_uri, artifact_uri=str(tmp_path / "artifacts"))


def expected_flags(values: list[float], goal: str) -> list[bool]:
    """``is_best`` as ``log_metric`` infers it: strictly better than every earlier value."""
    flags, best = [], None
    for v in values:
        better = best is None or (v > best if goal == "max" else v < best)
        flags.append(better)
        best = v if better else best
    return flags


def commit_order(store_uri: str, run_id: str, key: str) -> list[tuple[float, bool]]:
    """A metric's (value, is_best) in the order the store took them."""
    from sqlalchemy import select

    from plinth.store.schema import metrics

    m = metrics.c
    with open_store(store_uri).read() as conn:
        rows = conn.execute(
            select(m.value, m.is_best).where(m.run_id == run_id, m.key == key).order_by(m.id)
        )
        return [(value, bool(flag)) for value, flag in rows]


def points(history: list[MetricPoint]) -> list[tuple[int, float]]:
    return [(p.step, p.value) for p in history]


def test_processes_logging_their_own_runs_into_a_fresh_store(
    store_uri: str, experiment: str, tmp_path: Path
) -> None:
    if store_uri.startswith("sqlite"):
        # Nobody has opened it: the workers create and migrate it, all at the same moment.
        assert not Path(store_uri.removeprefix("sqlite:///")).exists()

    finished = run_together(
        tmp_path, "own", store_uri, "--experiment", experiment, "--steps", str(OWN_STEPS)
    )

    client = reader(store_uri, tmp_path)
    assert open_store(store_uri).current_revision() == SCHEMA_REVISION
    run_ids = [done.result["run_id"] for done in finished]
    found = client.search_runs(experiments=[experiment], max_results=100).items
    assert sorted(r.id for r in found) == sorted(run_ids)
    assert sorted(r.number for r in found) == list(range(1, WORKERS + 1))
    for w, run_id in enumerate(run_ids):
        run = client.get_run(run_id)
        assert run.status is RunStatus.FINISHED
        assert (run.name, run.experiment_name) == (f"worker-{w}", experiment)
        assert run.params == {"default": params(w)}
        assert run.tags["worker"] == str(w)
        assert run.tags["phase"] == "train"
        assert sorted(run.metrics) == sorted(KEYS)
        for k, key in enumerate(KEYS):
            values = [value(w, k, i) for i in range(OWN_STEPS)]
            goal = infer_goal(key)
            history = client.get_metric_history(run_id, key)
            assert points(history) == list(enumerate(values)), f"worker {w}, {key}"
            flags = expected_flags(values, goal)
            assert [p.is_best for p in history] == flags
            best = min(values) if goal == "min" else max(values)
            last_best_step = max(i for i, flag in enumerate(flags) if flag)
            summary = run.metrics[key]
            assert (summary.goal, summary.count) == (goal, OWN_STEPS)
            assert (summary.last, summary.last_step) == (values[-1], OWN_STEPS - 1)
            assert (summary.min, summary.max) == (min(values), max(values))
            assert (summary.best, summary.best_step) == (best, last_best_step)


def test_processes_logging_into_one_run(store_uri: str, experiment: str, tmp_path: Path) -> None:
    client = connect(
        store_uri=store_uri, artifact_uri=str(tmp_path / "artifacts"), flush_interval=0.05
    )
    run = client.start_run(experiment=experiment, name="shared", capture_environment=False)

    run_together(tmp_path, "shared", store_uri, "--run-id", run.id, "--steps", str(SHARED_STEPS))

    assert client.get_run(run.id).status is RunStatus.RUNNING  # only its owner ends it
    run.end()
    assert client.get_run(run.id).status is RunStatus.FINISHED
    summaries = client.get_run(run.id).metrics
    for k, key in enumerate(KEYS):
        # Worker w logged steps w * SHARED_STEPS onwards, so the steps never collide.
        expected = [
            (w * SHARED_STEPS + i, value(w, k, i))
            for w in range(WORKERS)
            for i in range(SHARED_STEPS)
        ]
        assert points(client.get_metric_history(run.id, key)) == expected, key
        values = [v for _, v in expected]
        summary = summaries[key]
        assert summary.count == WORKERS * SHARED_STEPS
        assert (summary.last, summary.last_step) == expected[-1][::-1]
        assert (summary.min, summary.max) == (min(values), max(values))
        # Is-best is judged against the run's stored best, whoever wrote it: in the order the
        # store took the points, a point is marked exactly when it improves on all before it.
        goal = infer_goal(key)
        committed = commit_order(store_uri, run.id, key)
        assert [flag for _, flag in committed] == expected_flags([v for v, _ in committed], goal)
        best = min(values) if goal == "min" else max(values)
        assert summary.best == best


def test_processes_starting_runs_in_one_experiment(
    store_uri: str, experiment: str, tmp_path: Path
) -> None:
    finished = run_together(
        tmp_path, "create", store_uri, "--experiment", experiment, "--runs", str(RUNS_PER_WORKER)
    )

    client = reader(store_uri, tmp_path)
    created = [run_id for done in finished for run_id in done.result["run_ids"]]
    total = WORKERS * RUNS_PER_WORKER
    assert len(set(created)) == total
    found = client.search_runs(experiments=[experiment], max_results=1000).items
    assert sorted(r.id for r in found) == sorted(created)
    assert sorted(r.number for r in found) == list(range(1, total + 1))
    assert {r.name for r in found} == {f"run-{n}" for n in range(1, total + 1)}
    assert {r.name for r in found} == {f"run-{r.number}" for r in found}
    assert all(r.status is RunStatus.FINISHED for r in found)
    assert [e.name for e in client.list_experiments(name_like=experiment).items] == [experiment]
