"""Pipelines benchmark: the scheduler's overhead from a trigger to a step starting, and a
simulated day of 1,000 scheduled runs.

    .venv/bin/python benchmarks/pipelines.py            # 20 triggers of each kind; a day at 10 s ticks
    .venv/bin/python benchmarks/pipelines.py --quick    # 5 triggers; a day at 60 s ticks

Workloads (``_plinth_pipelines.py``, each in a fresh process on a fresh SQLite store):

- overhead: a real ``plinth scheduler --tick 0.5 --workers 2`` process; a trivial pipeline
  whose first step writes ``time.time()`` first thing. Time from the trigger (a manual run
  queued through ``client.pipelines.queue_run``; an alert row inserted for a monitor the
  pipeline is scheduled on) to that line running in the run's worker subprocess; median
  and p95. One trigger at a time, 6 s apart (the scheduler keeps one warm worker, imports
  done, and refills it within 5 s of handing it a run), then again back to back (each
  trigger as soon as the previous run finished: the warm worker is gone, a new process
  starts). The comparison column ("worker alone") queues the same
  manual runs with no scheduler and starts ``python -m plinth.pipelines.worker RUN`` at
  once: the part of the overhead that is the worker's (process start, imports, connecting,
  loading the entrypoint, the tracking run), not the scheduler's. The footer gives the
  floor under both: spawning ``python`` that imports the worker's modules.
- day: five cron schedules summing to 1,000 runs a day (one in America/New_York time),
  ``Scheduler.tick(now=...)`` driven through one simulated day every ``--tick-sim``
  simulated seconds; the runs are executed in the benchmark's process
  (``runner.execute``: a thousand worker processes would measure process start-up, which
  the overhead workload does), each before the next tick. Checked: every occurrence
  (computed with croniter directly) got exactly one run, with ``scheduled_for`` exactly the
  occurrence, and it succeeded; how late in simulated time each run was enqueued (at most
  one tick); the wall time of the day.

No reference tool runs the same workloads: Dagster's and Airflow's schedulers read the wall
clock in their daemons (a simulated day needs their internal test clocks), and their
trigger-to-op latency depends on a daemon, a run launcher and a code server set up as in
production, which would measure our set-up more than theirs. The README section says so.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from _common import Row

WORKER = C.BENCH_DIR / "_plinth_pipelines.py"
GAP = 6.0  # seconds between spaced triggers: the scheduler refills its warm worker within 5 s
HEADERS = ["workload", "scheduler", "worker alone", "ratio", "unit", "target", "note"]


def _run(args: list[str], errors: list[str], name: str, timeout: float) -> dict | None:
    src = str(C.REPO_DIR / "src")
    C.log(f"{name} ...")
    t0 = time.perf_counter()
    try:
        res = C.run_worker(sys.executable, WORKER, args, env={"PYTHONPATH": src}, timeout=timeout)
    except C.WorkerError as exc:
        line = C.key_error_line(str(exc))
        C.log(f"{name} FAILED: {line}")
        errors.append(f"{name}: {line}")
        return None
    C.log(f"{name} done in {time.perf_counter() - t0:.1f} s")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "reference")
    ap.add_argument("--n", type=int, default=None, help="triggers of each kind (default 20)")
    ap.add_argument("--tick-sim", type=float, default=None, help="simulated seconds a tick")
    ap.add_argument("--only", choices=["overhead", "day"], default=None, help="one workload")
    opts = C.parse_runner_options(ap, argv, "pipelines")
    n = opts.n or (5 if opts.quick else 20)
    tick_sim = opts.tick_sim or (60.0 if opts.quick else 10.0)
    started = time.perf_counter()
    errors: list[str] = []
    busy: list[float] = []
    scratch = Path(tempfile.mkdtemp(prefix="pipelines-", dir=C.WORK_DIR))

    def quiet() -> None:
        q = opts.wait_quiet
        busy.append(C.wait_system_quiet(q) if q > 0 else C.system_busy(0.5))

    fl = di = ov = b2b = dy = None
    if opts.only != "day":
        quiet()
        args = ["--workload", "floor", "--n", str(n), "--tmp", str(scratch / "floor")]
        fl = _run(args, errors, "floor", 300)
        quiet()
        args = ["--workload", "direct", "--n", str(n), "--tmp", str(scratch / "direct")]
        di = _run(args, errors, "direct", 600)
        quiet()
        args = ["--workload", "overhead", "--n", str(n), "--tmp", str(scratch / "overhead")]
        ov = _run([*args, "--gap", str(GAP)], errors, "overhead, spaced", 1800)
        quiet()
        args[-1] = str(scratch / "overhead-b2b")
        b2b = _run(args, errors, "overhead, back to back", 900)
    if opts.only != "overhead":
        quiet()
        args = ["--workload", "day", "--tick-sim", str(tick_sim), "--tmp", str(scratch / "day")]
        dy = _run(args, errors, "day", 3600)

    def f(res: dict | None, key: str) -> float | None:
        return None if res is None else float(res["figures"][key])

    ms = "{:,.0f}"
    rows = [
        Row(
            f"queued manual run -> step starts, median ({GAP:g} s apart)",
            _ms(f(ov, "manual_median_s")),
            _ms(f(di, "median_s")),
            "ms",
            False,
            "< 1,000 ms",
            f"n={n}, scheduler tick 0.5 s",
            fmt=ms,
        ),
        Row(
            "queued manual run -> step starts, p95",
            _ms(f(ov, "manual_p95_s")),
            _ms(f(di, "p95_s")),
            "ms",
            False,
            "< 1,000 ms",
            "",
            fmt=ms,
        ),
        Row(
            f"alert row -> step starts, median ({GAP:g} s apart)",
            _ms(f(ov, "alert_median_s")),
            _ms(f(di, "median_s")),
            "ms",
            False,
            "< 1,000 ms",
            f"n={n}",
            fmt=ms,
        ),
        Row(
            "alert row -> step starts, p95",
            _ms(f(ov, "alert_p95_s")),
            _ms(f(di, "p95_s")),
            "ms",
            False,
            "< 1,000 ms",
            "",
            fmt=ms,
        ),
        Row(
            "queued manual run -> step starts, median (back to back)",
            _ms(f(b2b, "manual_median_s")),
            _ms(f(di, "median_s")),
            "ms",
            False,
            "",
            "each trigger as soon as the previous run finished",
            fmt=ms,
        ),
        Row(
            "alert row -> step starts, median (back to back)",
            _ms(f(b2b, "alert_median_s")),
            _ms(f(di, "median_s")),
            "ms",
            False,
            "",
            "",
            fmt=ms,
        ),
    ]
    footer: list[str] = []
    if ov and di and b2b:
        phases = [
            *((f"{k}, spaced", v) for k, v in ov["phases"].items()),
            *((f"{k}, back to back", v) for k, v in b2b["phases"].items()),
            ("worker alone", di["phases"]),
        ]
        for kind, ph in phases:
            footer.append(
                f"{kind} -> step, medians: to queued {ph['to_queued_s'] * 1000:.0f} ms, queued -> "
                f"claimed by its worker {ph['queued_to_claimed_s'] * 1000:.0f} ms, claimed -> "
                f"step's first line {ph['claimed_to_step_s'] * 1000:.0f} ms"
            )
    if dy:
        d = dy["figures"]
        exact = d["runs"] - d["unexpected"] - d["duplicates"]
        rows += [
            Row(
                "a day: runs at their exact time / expected",
                exact,
                None,
                "runs",
                True,
                "1,000 / 1,000",
                f"of {d['expected']:,} expected",
                fmt="{:,.0f}",
            ),
            Row(
                "a day: missed, duplicated, unexpected",
                d["missed"] + d["duplicates"] + d["unexpected"],
                None,
                "runs",
                False,
                "0",
                f"missed {d['missed']}, duplicates {d['duplicates']}, unexpected {d['unexpected']}",
                fmt="{:,.0f}",
            ),
            Row(
                "a day: latest enqueue after its time",
                d["max_enqueue_lag_s"],
                None,
                "s (simulated)",
                False,
                f"<= {tick_sim:g} s",
                "one tick at most",
                fmt="{:,.0f}",
            ),
            Row(
                "a day: wall time",
                d["wall_s"],
                None,
                "s",
                False,
                "",
                f"{d['ticks']:,} ticks; those without a run {d['ticks_without_runs_s']:.1f} s; {d['executed']:,} runs in-process, ~{d['per_run_ms']:.0f} ms each with its tick",
                fmt="{:,.1f}",
            ),
        ]
        footer.append(
            f"day: schedules {dy['check']['per_schedule']} runs each; not succeeded: {dy['check']['not_succeeded']}"
        )
    info = C.machine_info()
    footer.append(
        f"machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']}; load average "
        f"{C.load_average():.1f} at the end; CPUs busy before the workloads: "
        + ", ".join(f"{b:.0%}" for b in busy)
    )
    footer.append(
        "worker alone: the manual run queued, then `python -m plinth.pipelines.worker RUN` "
        "started at once by the benchmark (no scheduler: no tick to wait for)"
    )
    if fl:
        footer.append(
            f"floor: spawning python importing plinth.pipelines.worker and .runner: median "
            f"{fl['figures']['median_s'] * 1000:.0f} ms, p95 {fl['figures']['p95_s'] * 1000:.0f} ms"
        )
    if not opts.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        footer.append(f"scratch kept in {scratch}")
    return C.finish_report(
        rows,
        "Pipelines: scheduler overhead and a simulated day",
        footer,
        opts,
        errors,
        started,
        headers=HEADERS,
    )


def _ms(s: float | None) -> float | None:
    return None if s is None else s * 1000


if __name__ == "__main__":
    sys.exit(main())
