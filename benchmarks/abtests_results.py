"""A/B results from the logs: 10,000,000 exposures and 10,000,000 events in Delta tables.

Writes the two tables once (under ``--root``, default /tmp/plinth-abtests-results; kept
for the next run), then times ``compute_results`` end to end: first exposure per unit,
re-sent event ids, events by request id, the per-unit KPIs with their pre-exposure
values (CUPED), and every statistic. 1 % of the events are re-sent copies and 1 % name
only their request, so every path of the query runs. Each run prints its wall time and
the process's CPU time (user + system over DuckDB's threads: on a shared machine the
wall time grows with the others' load, the CPU time much less), and the load average.
``--timeline`` also times ``compute_timeline`` (60 points) once.
Run: ``.venv/bin/python benchmarks/abtests_results.py [--rows N] [--timeline]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from plinth.abtests.buckets import Allocation
from plinth.abtests.events import events_uri
from plinth.abtests.results import compute_results
from plinth.abtests.traffic import exposures_uri
from plinth.abtests.types import Arm, Experiment, Guardrail, Kpi, KpiKind, Mode, Status, Unit


def _experiment() -> Experiment:
    at = datetime.now(UTC)
    return Experiment(
        name="bench",
        hypothesis="b converts more",
        owner="bench",
        status=Status.RUNNING,
        mode=Mode.AB,
        unit=Unit.USER,
        primary=Kpi("conversion", KpiKind.PROPORTION, "buy"),
        arms=[Arm("a", 0.5, url="http://a", control=True), Arm("b", 0.5, url="http://b")],
        mde=0.01,
        alpha=0.05,
        power=0.8,
        salt="s",
        allocation=Allocation(),
        version=1,
        created_at=at,
        updated_at=at,
        guardrails=[Guardrail("revenue", max_drop=0.05)],
    )


def _strings(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pa.array(np.char.add(prefix, numbers.astype(str)))


def _write(root: str, rows: int) -> None:
    rng = np.random.default_rng(1)
    units = rng.integers(0, rows // 2, rows)  # about two exposures per unit
    write_deltalake(
        exposures_uri(root, "bench"),
        pa.table(
            {
                "at_ms": rng.integers(0, 10**9, rows),
                "unit": _strings("u", units),
                "arm": np.where(units % 2 == 0, "a", "b"),
                "request_id": _strings("r", np.arange(rows)),
                "model_version": pa.nulls(rows, pa.string()),
            }
        ),
    )
    resent = rows // 100
    ids = np.concatenate([np.arange(rows - resent), rng.integers(0, rows - resent, resent)])
    by_request = rng.random(rows) < 0.01
    write_deltalake(
        events_uri(root, "bench"),
        pa.table(
            {
                "at_ms": rng.integers(0, 2 * 10**9, rows),
                "name": np.where(rng.random(rows) < 0.5, "buy", "revenue"),
                "value": rng.exponential(10.0, rows),
                "unit": pa.array(
                    np.char.add("u", rng.integers(0, rows // 2, rows).astype(str)),
                    mask=by_request,
                ),
                "request_id": _strings("r", rng.integers(0, rows, rows)),
                "event_id": _strings("e", ids),
            }
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000, help="exposures (and events)")
    parser.add_argument("--root", default="/tmp/plinth-abtests-results")
    parser.add_argument("--timeline", action="store_true", help="time the timeline too")
    args = parser.parse_args()
    root = f"{args.root}/{args.rows}"
    if not Path(exposures_uri(root, "bench")).exists():
        start = time.perf_counter()
        _write(root, args.rows)
        print(f"wrote the logs in {time.perf_counter() - start:.1f} s")
    for attempt in (1, 2, 3):
        start, cpu = time.perf_counter(), _cpu()
        results = compute_results(_experiment(), root)
        print(
            f"run {attempt}: {time.perf_counter() - start:.2f} s, CPU {_cpu() - cpu:.2f} s, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    print(results.units_by_arm, f"p = {results.primary['b'].p_value:.3g}", results.notes)
    print(
        f"CUPED p = {results.cuped['b'].p_value:.3g}, "
        f"sequential interval {results.sequential['b'].ci}"
    )
    if args.timeline:
        from plinth.abtests.timeline import compute_timeline

        start, cpu = time.perf_counter(), _cpu()
        timeline = compute_timeline(_experiment(), root, 60)
        print(
            f"timeline ({len(timeline.points)} points): {time.perf_counter() - start:.2f} s, "
            f"CPU {_cpu() - cpu:.2f} s, load average {os.getloadavg()[0]:.1f}"
        )


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


if __name__ == "__main__":
    main()
