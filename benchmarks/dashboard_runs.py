"""Server time of the dashboard's runs page over 10,000 runs (issue 12: p95 under 150 ms).

    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/dashboard_runs.py [--postgres] [--runs N]

Seeds one experiment (10 params, 5 metrics a run; rows written in bulk, the experiment
through the service; PostgreSQL then analysed, as autovacuum would), then asks each page below 40 times through the app in-process
(Starlette's test client: the figures include its small overhead) and prints p50/p95 in ms.

Measured 2026-12-04 on 2 cores shared with other jobs (load average ~5), p95 in ms,
SQLite / PostgreSQL: newest first 34 / 46; page 100 34 / 43; by a metric 37 / 52; by a
param 56 / 122; by duration 28 / 52; metric and param filter 54 / 62; htmx refresh 25 / 34.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAGES = {
    "default (newest first)": "/ui/experiments/bench",
    "page 100": "/ui/experiments/bench?page=100",
    "sort by a metric": "/ui/experiments/bench?sort=metrics.m0&order=desc",
    "sort by a param": "/ui/experiments/bench?sort=params.hyper.p1&order=asc",
    "sort by duration": "/ui/experiments/bench?sort=duration&order=desc",
    "filter metric and param": (
        "/ui/experiments/bench?filter=metrics.m0+>+0.5+and+params.hyper.p1+<+50"
        "&sort=metrics.m1&order=desc"
    ),
    "table refresh (htmx)": "/ui/experiments/bench?sort=name&order=asc",
}
REPEATS = 40


def seed(store_uri: str, home: Path, count: int) -> None:
    from plinth.config import load_settings
    from plinth.store.artifacts import ArtifactStore
    from plinth.store.engine import open_store
    from plinth.store.schema import metric_summaries, params, runs
    from plinth.tracking.checks import param_row
    from plinth.tracking.service import TrackingService

    settings = load_settings(home=home, store_uri=store_uri)
    store = open_store(settings.resolved_store_uri)
    tracking = TrackingService(store, ArtifactStore(settings.resolved_artifact_uri))
    experiment = tracking.create_experiment("bench")
    rng = random.Random(42)
    start = int(time.time() * 1000) - count * 60_000
    for first in range(0, count, 1000):
        run_rows, param_rows, metric_rows = [], [], []
        for n in range(first, min(first + 1000, count)):
            run_id = uuid.uuid4().hex
            begin = start + n * 60_000
            run_rows.append(
                {
                    "id": run_id,
                    "experiment_id": experiment.id,
                    "number": n + 1,
                    "name": f"run-{n}",
                    "description": "",
                    "status": "FINISHED" if n % 50 else "FAILED",
                    "owner": "root",
                    "start_time": begin,
                    "end_time": begin + rng.randint(1_000, 600_000),
                    "heartbeat_at": begin,
                }
            )
            param_rows += [
                param_row(run_id, "hyper", f"p{j}", rng.randint(0, 100)) for j in range(10)
            ]
            for j in range(5):
                value = rng.random()
                metric_rows.append(
                    {
                        "run_id": run_id,
                        "key": f"m{j}",
                        "goal": "max",
                        "count": 100,
                        "last": value,
                        "last_step": 99,
                        "last_timestamp": begin,
                        "min": value / 2,
                        "max": value,
                        "best": value,
                        "best_step": 99,
                    }
                )
        with store.write() as conn:
            conn.execute(runs.insert(), run_rows)
            conn.execute(params.insert(), param_rows)
            conn.execute(metric_summaries.insert(), metric_rows)
    if not store.is_sqlite:  # what autovacuum does after bulk inserts (SQLite's: on search)
        with store.write() as conn:
            conn.exec_driver_sql("ANALYZE")


def measure(home: Path, store_uri: str) -> dict[str, tuple[float, float]]:
    from fastapi.testclient import TestClient

    from plinth.config import load_settings
    from plinth.server.app import create_app

    app = create_app(load_settings(home=home, store_uri=store_uri))
    figures = {}
    with TestClient(app) as http:
        for label, url in PAGES.items():
            headers: dict[str, Any] = {}
            if "htmx" in label:
                headers = {"hx-request": "true", "hx-target": "runs-table"}
            answer = http.get(url, headers=headers)  # warm: statistics, caches
            assert answer.status_code == 200 and "run-" in answer.text, (url, answer.text[:500])
            times = []
            for _ in range(REPEATS):
                began = time.perf_counter()
                http.get(url, headers=headers)
                times.append((time.perf_counter() - began) * 1000)
            times.sort()
            figures[label] = (statistics.median(times), times[int(len(times) * 0.95) - 1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "home"
        if args.postgres:
            from tests.backends import postgres_database

            store_uri = stack.enter_context(postgres_database())
        else:
            store_uri = f"sqlite:///{home.parent / 'plinth.db'}"
        began = time.perf_counter()
        seed(store_uri, home, args.runs)
        print(f"seeded {args.runs} runs in {time.perf_counter() - began:.1f} s")
        for label, (p50, p95) in measure(home, store_uri).items():
            print(f"{label:28} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms")


if __name__ == "__main__":
    main()
