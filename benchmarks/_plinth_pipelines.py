"""Worker for ``pipelines.py``: one workload on a fresh SQLite store in ``--tmp``; prints its
figures as JSON on the last stdout line.

    python benchmarks/_plinth_pipelines.py --workload overhead --n 20 --tmp /tmp/x
    python benchmarks/_plinth_pipelines.py --workload day --tmp /tmp/x [--tick-sim 10]
    python benchmarks/_plinth_pipelines.py --workload floor --n 20 --tmp /tmp/x

- ``overhead``: a real ``plinth scheduler`` process (``--tick 0.5 --workers 2``, its warm
  worker on) on the store, triggers ``--gap`` seconds apart; a trivial pipeline whose first step writes ``time.time()`` to a file. Triggered
  ``--n`` times by a queued manual run (``client.pipelines.queue_run``) and ``--n`` times
  by a new alert row of a monitor the pipeline is scheduled on; each time: trigger time ->
  the step's first line in its worker subprocess. One trigger at a time (the previous run
  finished first).
- ``floor``: the part of that which is a new Python process: spawn ``python -c`` importing
  what a worker imports and printing ``time.time()``, ``--n`` times.
- ``day``: cron schedules summing to 1,000 runs a day; ``Scheduler.tick(now=...)`` driven
  over one simulated day every ``--tick-sim`` simulated seconds, each enqueued run executed
  in this process (``runner.execute``) before the next tick; then every expected
  occurrence (computed independently with croniter) is checked to have exactly one run,
  scheduled for exactly that time, and executed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PIPELINE_FILE = """
import time
from pathlib import Path

import plinth

OUT = Path({out!r})


@plinth.step
def started(context) -> None:
    at = time.time()  # first thing the step does
    (OUT / f"{{context.pipeline_run}}.t").write_text(repr(at))


@plinth.step
def done(context, started) -> int:
    return context.pipeline_run


PIPELINE = plinth.Pipeline("bench", [started, done])
"""

#: 720 + 240 + 24 + 8 + 8 = 1,000 runs a day; the last in New York time (8 a day too)
DAY_SCHEDULES: tuple[tuple[str, str], ...] = (
    ("*/2 * * * *", "UTC"),
    ("1-59/6 * * * *", "UTC"),
    ("30 * * * *", "UTC"),
    ("15 */3 * * *", "UTC"),
    ("45 1-22/3 * * *", "America/New_York"),
)
DAY_START = int(datetime(2026, 12, 7, tzinfo=UTC).timestamp() * 1000)  # a Monday, no DST change
DAY_MS = 86_400_000


def _client(tmp: Path) -> Any:
    from plinth.client import connect

    return connect(store_uri=_store_uri(tmp), artifact_uri=str(tmp / "artifacts"))


def _store_uri(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'plinth.db'}"


def _write_pipeline(tmp: Path) -> str:
    out = tmp / "started"
    out.mkdir(parents=True, exist_ok=True)
    path = tmp / "bench_pipeline.py"
    path.write_text(PIPELINE_FILE.format(out=str(out)))
    return f"{path}:PIPELINE"


def _register(client: Any, entrypoint: str) -> None:
    from plinth.pipelines.types import PipelineSpec

    client.pipelines.register_pipeline(
        PipelineSpec(name="bench", entrypoint=entrypoint, steps=["started", "done"], concurrency=2)
    )


def _wait(what: str, check: Any, timeout: float = 60.0, every: float = 0.002) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(f"{what}: not seen within {timeout} s")


# --------------------------------------------------------------------------- overhead


def overhead(n: int, tmp: Path, tick: float, gap: float = 0.0) -> dict[str, Any]:
    from sqlalchemy import insert, select

    from plinth.pipelines.types import ScheduleSpec
    from plinth.store.schema import alerts, monitors, pipeline_runs, pipeline_schedules
    from plinth.store.sql import now_ms

    tmp.mkdir(parents=True, exist_ok=True)
    entrypoint = _write_pipeline(tmp)
    client = _client(tmp)
    store = client.tracking.store
    _register(client, entrypoint)
    with store.write() as conn:  # a monitor to raise alerts on (its checks never run here)
        conn.execute(
            insert(monitors).values(
                name="bench-monitor",
                kind="drift",
                target="bench",
                owner="local",
                created_at=now_ms(),
                updated_at=now_ms(),
            )
        )
    schedule = client.pipelines.create_schedule(
        "bench", ScheduleSpec(kind="alert", target="bench-monitor")
    )
    env = {
        **os.environ,
        "PLINTH_STORE_URI": _store_uri(tmp),
        "PLINTH_ARTIFACT_URI": str(tmp / "artifacts"),
    }
    log = (tmp / "scheduler.log").open("wb")
    cmd = [sys.executable, "-c", "import sys; from plinth.cli import main; sys.exit(main())"]
    proc = subprocess.Popen(
        [*cmd, "scheduler", "--tick", str(tick), "--workers", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started_dir = tmp / "started"

    def started_at(pipeline_run: int) -> float | None:
        f = started_dir / f"{pipeline_run}.t"
        try:
            return float(f.read_text()) if f.exists() else None
        except ValueError:  # caught half-written
            return None

    def finished(pipeline_run: int) -> bool:
        with store.read() as conn:
            status = conn.execute(
                select(pipeline_runs.c.status).where(pipeline_runs.c.id == pipeline_run)
            ).scalar()
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"benchmark run {pipeline_run} {status}: see {tmp}")
        return status == "succeeded"

    def run_of_alert(alert_id: int) -> int | None:
        with store.read() as conn:
            return conn.execute(
                select(pipeline_runs.c.id).where(pipeline_runs.c.alert_id == alert_id)
            ).scalar()

    try:
        # the scheduler's first look at the alert schedule sets its cursor: wait for it
        def looked() -> bool:
            with store.read() as conn:
                cur = conn.execute(
                    select(pipeline_schedules.c.cursor).where(
                        pipeline_schedules.c.id == schedule.id
                    )
                ).scalar()
            return cur is not None

        _wait("the scheduler's first tick", looked, timeout=60)
        manual: list[float] = []
        alert: list[float] = []
        phases: dict[str, list[dict[str, float]]] = {"manual": [], "alert": []}
        for i in range(n + 1):  # the first of each is a warm-up, not counted
            time.sleep(gap)  # a pause between triggers (the scheduler's warm worker refills)
            t0 = time.time()
            queued = client.pipelines.queue_run("bench")
            at = _wait(f"manual run {queued.id} starting", lambda q=queued: started_at(q.id))
            _wait(f"manual run {queued.id} finishing", lambda q=queued: finished(q.id))
            if i:
                manual.append(at - t0)
                phases["manual"].append(_phases(store, queued.id, t0, at))

            time.sleep(gap)
            t0 = time.time()
            with store.write() as conn:
                made = conn.execute(
                    insert(alerts).values(
                        monitor="bench-monitor",
                        evaluation_id=0,
                        at=now_ms(),
                        severity="warning",
                        message=f"bench alert {i}",
                        dedup_key=f"bench-{i}",
                        status="open",
                        delivery="none",
                    )
                ).inserted_primary_key
            assert made is not None
            alert_id = int(made[0])
            run_id = _wait(f"alert {alert_id}'s run", lambda a=alert_id: run_of_alert(a))
            at = _wait(f"alert run {run_id} starting", lambda r=run_id: started_at(r))
            _wait(f"alert run {run_id} finishing", lambda r=run_id: finished(r))
            if i:
                alert.append(at - t0)
                phases["alert"].append(_phases(store, run_id, t0, at))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        client.close()
    return {
        "workload": "overhead",
        "n": n,
        "tick_seconds": tick,
        "gap_seconds": gap,
        "manual_s": manual,
        "alert_s": alert,
        "phases": {k: _median_phases(v) for k, v in phases.items()},
        "figures": {
            "manual_median_s": statistics.median(manual),
            "manual_p95_s": _p95(manual),
            "alert_median_s": statistics.median(alert),
            "alert_p95_s": _p95(alert),
        },
    }


def direct(n: int, tmp: Path) -> dict[str, Any]:
    """The same manual runs with no scheduler: queued, then ``python -m
    plinth.pipelines.worker RUN`` started here at once (what the scheduler's dispatch
    does): the worker's own share of the overhead."""
    tmp.mkdir(parents=True, exist_ok=True)
    entrypoint = _write_pipeline(tmp)
    client = _client(tmp)
    store = client.tracking.store
    _register(client, entrypoint)
    env = {
        **os.environ,
        "PLINTH_STORE_URI": _store_uri(tmp),
        "PLINTH_ARTIFACT_URI": str(tmp / "artifacts"),
    }
    env.pop("PLINTH_URI", None)
    times: list[float] = []
    phases: list[dict[str, float]] = []
    for i in range(n + 1):
        t0 = time.time()
        queued = client.pipelines.queue_run("bench")
        with (tmp / f"worker-{queued.id}.log").open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "plinth.pipelines.worker", str(queued.id)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            f = tmp / "started" / f"{queued.id}.t"
            at = _wait(f"run {queued.id} starting", lambda f=f: f.exists() and f.read_text())
            if proc.wait(120) != 0:
                raise RuntimeError(f"worker of run {queued.id} exited with {proc.returncode}")
        if i:
            times.append(float(at) - t0)
            phases.append(_phases(store, queued.id, t0, float(at)))
    client.close()
    return {
        "workload": "direct",
        "n": n,
        "times_s": times,
        "phases": _median_phases(phases),
        "figures": {"median_s": statistics.median(times), "p95_s": _p95(times)},
    }


def _phases(store: Any, pipeline_run: int, t0: float, step_at: float) -> dict[str, float]:
    """Where the time went: trigger -> queued (the tick, for an alert) -> claimed by its
    worker (the dispatch, the process start, imports, loading the entrypoint) -> the
    step's first line (the tracking run started, the steps recorded)."""
    from sqlalchemy import select

    from plinth.store.schema import pipeline_runs

    r = pipeline_runs.c
    with store.read() as conn:
        row = conn.execute(select(r.queued_at, r.started_at).where(r.id == pipeline_run)).one()
    queued, claimed = row.queued_at / 1000, row.started_at / 1000
    return {
        "to_queued_s": queued - t0,
        "queued_to_claimed_s": claimed - queued,
        "claimed_to_step_s": step_at - claimed,
    }


def _median_phases(found: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(p[k] for p in found) for k in found[0]} if found else {}


def floor(n: int, tmp: Path) -> dict[str, Any]:
    code = textwrap.dedent(
        """
        import time
        import plinth.pipelines.worker, plinth.pipelines.runner
        print(repr(time.time()))
        """
    )
    times = []
    for i in range(n + 1):
        t0 = time.time()
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        if i:
            times.append(float(out.stdout.strip().splitlines()[-1]) - t0)
    return {
        "workload": "floor",
        "n": n,
        "times_s": times,
        "figures": {"median_s": statistics.median(times), "p95_s": _p95(times)},
    }


# --------------------------------------------------------------------------- a day


def expected_occurrences() -> dict[int, list[int]]:
    """Per schedule (its index), the occurrences in the simulated day, from croniter
    directly (not through Plinth's cron module)."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    found: dict[int, list[int]] = {}
    for i, (expr, tz) in enumerate(DAY_SCHEDULES):
        start = datetime.fromtimestamp((DAY_START - 1) / 1000, ZoneInfo(tz))  # midnight counts
        it = croniter(expr, start)
        times = []
        while True:
            at = int(it.get_next(datetime).timestamp() * 1000)
            if at >= DAY_START + DAY_MS:
                break
            times.append(at)
        found[i] = times
    return found


def day(tmp: Path, tick_sim: float) -> dict[str, Any]:
    from sqlalchemy import select, update

    from plinth.pipelines import entrypoints, runner
    from plinth.pipelines.scheduler import Scheduler
    from plinth.pipelines.types import ScheduleSpec
    from plinth.store.schema import pipeline_runs, pipeline_schedules

    tmp.mkdir(parents=True, exist_ok=True)
    entrypoint = _write_pipeline(tmp)
    client = _client(tmp)
    store = client.tracking.store
    _register(client, entrypoint)
    pipeline = entrypoints.load_pipeline(entrypoint)
    ids = []
    for expr, tz in DAY_SCHEDULES:
        made = client.pipelines.create_schedule("bench", ScheduleSpec(cron=expr, timezone=tz))
        ids.append(made.id)
    with store.write() as conn:  # the simulated day starts now, whenever this runs
        conn.execute(
            update(pipeline_schedules)
            .where(pipeline_schedules.c.id.in_(ids))
            .values(cursor=DAY_START - 1)
        )
    executed: list[int] = []
    lags: list[int] = []

    class InProcess(Scheduler):
        """The real tick (enqueue, reap, timeouts, reclaim, retries), except that the due
        queued runs are executed here, one after the other, instead of in workers."""

        def _dispatch(self, at: int) -> list[Any]:
            with store.read() as conn:
                due = conn.execute(
                    select(pipeline_runs.c.id, pipeline_runs.c.scheduled_for)
                    .where(pipeline_runs.c.status == "queued", pipeline_runs.c.not_before <= at)
                    .order_by(pipeline_runs.c.not_before, pipeline_runs.c.id)
                ).all()
            for row in due:
                lags.append(at - int(row.scheduled_for))
                run = runner.execute(client, pipeline, row.id)
                if run.status != "succeeded":
                    raise RuntimeError(f"run {row.id} {run.status}: {run.error}")
                executed.append(row.id)
            return []

    scheduler = InProcess(client, tick_seconds=tick_sim, max_workers=1, warm=False)
    step = int(tick_sim * 1000)
    ticks = 0
    t0 = time.perf_counter()
    run_s = 0.0
    for now in range(DAY_START, DAY_START + DAY_MS, step):  # the day, its end excluded
        before = len(executed)
        t = time.perf_counter()
        scheduler.tick(now=now)
        if len(executed) > before:
            run_s += time.perf_counter() - t
        ticks += 1
    wall = time.perf_counter() - t0
    with store.read() as conn:
        rows = conn.execute(
            select(
                pipeline_runs.c.schedule_id,
                pipeline_runs.c.scheduled_for,
                pipeline_runs.c.status,
            )
        ).all()
    expected = expected_occurrences()
    check = _check_day(rows, {ids[i]: times for i, times in expected.items()})
    client.close()
    return {
        "workload": "day",
        "tick_sim_s": tick_sim,
        "check": check,
        "figures": {
            "expected": sum(len(v) for v in expected.values()),
            "runs": len(rows),
            "executed": len(executed),
            "missed": check["missed"],
            "duplicates": check["duplicates"],
            "unexpected": check["unexpected"],
            "max_enqueue_lag_s": max(lags, default=0) / 1000,
            "ticks": ticks,
            "wall_s": wall,
            "ticks_with_runs_s": run_s,
            "ticks_without_runs_s": wall - run_s,
            "per_run_ms": run_s / max(len(executed), 1) * 1000,
        },
    }


def _check_day(rows: Any, expected: dict[int, list[int]]) -> dict[str, Any]:
    seen: dict[tuple[int, int], int] = {}
    not_succeeded = 0
    for r in rows:
        key = (int(r.schedule_id), int(r.scheduled_for))
        seen[key] = seen.get(key, 0) + 1
        not_succeeded += r.status != "succeeded"
    want = {(sid, at) for sid, times in expected.items() for at in times}
    return {
        "missed": len(want - set(seen)),
        "duplicates": sum(c - 1 for c in seen.values() if c > 1),
        "unexpected": len(set(seen) - want),
        "not_succeeded": not_succeeded,
        "per_schedule": {str(sid): len(times) for sid, times in expected.items()},
    }


def _p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True, choices=["overhead", "direct", "floor", "day"])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--tick", type=float, default=0.5)
    ap.add_argument("--tick-sim", type=float, default=10.0)
    ap.add_argument("--gap", type=float, default=0.0, help="seconds between triggers")
    o = ap.parse_args()
    tmp = Path(o.tmp)
    if o.workload == "overhead":
        res = overhead(o.n, tmp, o.tick, o.gap)
    elif o.workload == "direct":
        res = direct(o.n, tmp)
    elif o.workload == "floor":
        res = floor(o.n, tmp)
    else:
        res = day(tmp, o.tick_sim)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
