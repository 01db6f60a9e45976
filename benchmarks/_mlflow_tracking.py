"""MLflow half of the tracking benchmark (a worker; run with the MLflow venv's python).

    benchmarks/.venvs/mlflow/bin/python benchmarks/_mlflow_tracking.py \
        --workload log_metric --n 2000 --tmp /tmp/x

Prints one JSON object on its last stdout line: ``{"workload", "tool", "version", "n",
"figures": {name: value}, "verified", "notes"}``. Every workload uses a fresh SQLite store
(``sqlite:///<tmp>/mlflow.db``) with artifacts under ``<tmp>``; stores are warmed up
(schema created, experiment made, lazy imports done) before the clock starts.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

# No telemetry or other traffic leaves this machine.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_TRACKING_INSECURE_TLS", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

DEFAULT_N = {
    "log_metric": 2_000,
    "log_metric_async": 20_000,
    "log_metric_async_default": 2_000,
    "log_batch": 100_000,
    "create_runs": 100,
    "search": 10_000,
    "server": 2_000,
    "import": 3,
    "rss_1m": 1_000_000,
}
NOTES: list[str] = []


# --------------------------------------------------------------------------- set-up


def _store(tmp: Path) -> str:
    import mlflow

    tmp.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri


def _experiment(name: str, tmp: Path) -> str:
    """Create (or get) an experiment whose artifacts live under ``tmp``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=(tmp / "artifacts" / name).as_uri())


def _warm_up(tmp: Path) -> None:
    """Create the schema and run the code paths once, outside the clock."""
    import mlflow

    exp_id = _experiment("warmup", tmp)
    with mlflow.start_run(experiment_id=exp_id, run_name="warmup"):
        mlflow.log_param("p", 1)
        mlflow.log_metric("m", 0.0, step=0)
        mlflow.log_metrics({"a": 1.0, "b": 2.0}, step=0)


def _count_points(db: Path, run_id: str, key: str | None = None) -> int:
    con = sqlite3.connect(db)
    try:
        if key is None:
            (n,) = con.execute(
                "SELECT COUNT(*) FROM metrics WHERE run_uuid = ?", (run_id,)
            ).fetchone()
        else:
            (n,) = con.execute(
                "SELECT COUNT(*) FROM metrics WHERE run_uuid = ? AND key = ?", (run_id, key)
            ).fetchone()
        return int(n)
    finally:
        con.close()


def _version() -> str:
    import mlflow

    return mlflow.__version__


# --------------------------------------------------------------------------- workloads


def w_log_metric(n: int, tmp: Path, args) -> dict:
    """One run, ``n`` synchronous ``mlflow.log_metric`` calls, one at a time."""
    import mlflow

    _store(tmp)
    _warm_up(tmp)
    exp_id = _experiment("bench", tmp)
    t0 = time.perf_counter()
    with mlflow.start_run(experiment_id=exp_id, run_name="r1") as run:
        for i in range(n):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
    dt = time.perf_counter() - t0
    got = _count_points(tmp / "mlflow.db", run.info.run_id, "loss")
    return {
        "figures": {"points_per_s": n / dt, "seconds": dt},
        "verified": got == n,
        "persisted": got,
    }


def w_log_metric_async(n: int, tmp: Path, args, buffering: bool = True) -> dict:
    """Same as log_metric with async logging on; the clock stops after end_run's flush.

    With ``buffering`` the queue merges what arrived in 1 s into one ``log_batch`` (up to
    1,000 items; MLflow's MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS knob). Without it (MLflow's
    default) every queued point is written by its own call to the store.
    """
    import mlflow

    if buffering:
        os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
        NOTES.append("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1")
    else:
        os.environ.pop("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", None)
        NOTES.append("async logging with MLflow's default settings (no buffering)")

    _store(tmp)
    _warm_up(tmp)
    exp_id = _experiment("bench", tmp)
    mlflow.config.enable_async_logging(True)
    t0 = time.perf_counter()
    with mlflow.start_run(experiment_id=exp_id, run_name="r1") as run:
        for i in range(n):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
        t_calls = time.perf_counter() - t0
    # end_run -> set_terminated shuts the async queue down after logging what it holds;
    # flush once more so the figure is "everything is in the DB".
    mlflow.flush_async_logging()
    dt = time.perf_counter() - t0
    mlflow.config.enable_async_logging(False)
    got = _count_points(tmp / "mlflow.db", run.info.run_id, "loss")
    return {
        "figures": {"points_per_s": n / dt, "seconds": dt, "call_points_per_s": n / t_calls},
        "verified": got == n,
        "persisted": got,
    }


def w_log_metric_async_default(n: int, tmp: Path, args) -> dict:
    return w_log_metric_async(n, tmp, args, buffering=False)


def _batches(n: int, keys: int = 10, batch: int = 1_000):
    """Yield lists of (key, value, step): ``keys`` metrics per step, ``batch`` per list."""
    steps_per_batch = batch // keys
    steps = n // keys
    for s0 in range(0, steps, steps_per_batch):
        yield [
            (f"m{k}", 1.0 / (s + 1) + k, s)
            for s in range(s0, min(s0 + steps_per_batch, steps))
            for k in range(keys)
        ]


def w_log_batch(n: int, tmp: Path, args) -> dict:
    """``MlflowClient().log_batch`` with 1,000 metrics per call (10 keys x 100 steps)."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    _store(tmp)
    _warm_up(tmp)
    exp_id = _experiment("bench", tmp)
    client = MlflowClient()
    n = (n // 1_000) * 1_000
    t0 = time.perf_counter()
    with mlflow.start_run(experiment_id=exp_id, run_name="r1") as run:
        run_id = run.info.run_id
        for batch in _batches(n):
            ts = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, ts, s) for k, v, s in batch])
    dt = time.perf_counter() - t0
    got = _count_points(tmp / "mlflow.db", run_id)
    return {
        "figures": {"points_per_s": n / dt, "seconds": dt},
        "verified": got == n,
        "persisted": got,
    }


def w_create_runs(n: int, tmp: Path, args) -> dict:
    """``n`` runs, each with 5 params and 3 metrics via the fluent API."""
    import mlflow

    _store(tmp)
    _warm_up(tmp)
    exp_id = _experiment("bench", tmp)
    t0 = time.perf_counter()
    for r in range(n):
        with mlflow.start_run(experiment_id=exp_id, run_name=f"r{r}"):
            mlflow.log_params({f"p{j}": r * 10 + j for j in range(5)})
            mlflow.log_metrics({f"m{j}": (r + j) / (n + 5) for j in range(3)}, step=0)
    dt = time.perf_counter() - t0
    con = sqlite3.connect(tmp / "mlflow.db")
    (got,) = con.execute(
        "SELECT COUNT(*) FROM runs WHERE experiment_id = ?", (int(exp_id),)
    ).fetchone()
    con.close()
    return {
        "figures": {"runs_per_s": n / dt, "seconds": dt},
        "verified": got == n,
        "persisted": got,
    }


def _populate_search(db_dir: Path, n_runs: int) -> dict:
    """10 params + 5 metrics per run, as fast as the public client goes."""
    import random

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    _store(db_dir)
    exp_id = _experiment("bench", db_dir)
    client = MlflowClient()
    rng = random.Random(42)
    t0 = time.perf_counter()
    for r in range(n_runs):
        run = client.create_run(exp_id, run_name=f"r{r}")
        ts = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(f"m{j}", rng.random(), ts, 0) for j in range(5)],
            params=[Param(f"p{j}", str(rng.randint(0, 100))) for j in range(10)],
        )
        client.set_terminated(run.info.run_id)
    dt = time.perf_counter() - t0
    return {"runs": n_runs, "seconds": dt, "runs_per_s": n_runs / dt, "exp_id": exp_id}


def search_store(cache_root: Path, n: int) -> tuple[Path, dict, bool]:
    """The folder of an MLflow store with ``n`` populated runs (made once, then cached),
    its populate figures, and whether it was cached already."""
    cache = cache_root / f"mlflow-{_version()}-search-{n}"
    meta_path = cache / "meta.json"
    cached = meta_path.exists()
    if not cached:
        print(
            f"populating {n} MLflow runs into {cache} (cached for later runs)",
            file=sys.stderr,
            flush=True,
        )
        build = cache.with_name(cache.name + ".building")
        shutil.rmtree(build, ignore_errors=True)
        meta = _populate_search(build, n)
        (build / "meta.json").write_text(json.dumps(meta))
        # Reset the tracking URI before moving the db under it.
        shutil.rmtree(cache, ignore_errors=True)
        build.rename(cache)
    return cache, json.loads(meta_path.read_text()), cached


def w_search(n: int, tmp: Path, args) -> dict:
    """Median of 20 ``MlflowClient().search_runs`` (entities, no pandas) over ``n`` runs."""
    from mlflow.tracking import MlflowClient

    cache, meta, cached = search_store(Path(args.cache), n)
    # Search a copy, so the cached store is never touched.
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy2(cache / "mlflow.db", tmp / "mlflow.db")
    _store(tmp)
    client = MlflowClient()
    exp_id = meta["exp_id"]
    kwargs = dict(
        experiment_ids=[exp_id],
        filter_string="metrics.m0 > 0.5",
        order_by=["metrics.m0 DESC"],
        max_results=100,
    )
    t0 = time.perf_counter()
    first = client.search_runs(**kwargs)
    first_ms = (time.perf_counter() - t0) * 1000
    times: list[float] = []
    t_all = time.perf_counter()
    # 20 repetitions, fewer (at least 3) when that would take more than the time bound.
    while len(times) < 20 and (
        len(times) < 3 or time.perf_counter() - t_all < args.max_seconds / 2
    ):
        t0 = time.perf_counter()
        res = client.search_runs(**kwargs)
        times.append((time.perf_counter() - t0) * 1000)
    # The same filter without the ORDER BY, to show where the time goes.
    unordered = {k: v for k, v in kwargs.items() if k != "order_by"}
    unordered_times = []
    for _ in range(10):
        t0 = time.perf_counter()
        client.search_runs(**unordered)
        unordered_times.append((time.perf_counter() - t0) * 1000)
    # Ordered by another metric, with and without a param predicate (issue 10, item 18).
    other = dict(kwargs, filter_string="metrics.m0 > 0.9", order_by=["metrics.m1 DESC"])
    with_param = dict(other, filter_string="metrics.m0 > 0.9 and params.p1 = '3'")
    other_times, param_times = [], []
    for _ in range(10):
        t0 = time.perf_counter()
        client.search_runs(**other)
        other_times.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        param_res = client.search_runs(**with_param)
        param_times.append((time.perf_counter() - t0) * 1000)
    vals = [r.data.metrics["m0"] for r in res]
    ok = (
        all(r.data.params["p1"] == "3" for r in param_res)
        and len(res) == 100
        and len(first) == 100
        and all(v > 0.5 for v in vals)
        and vals == sorted(vals, reverse=True)
    )
    NOTES.append("search via MlflowClient().search_runs (entities, no pandas)")
    return {
        "figures": {
            "median_ms": C.median(times),
            "first_ms": first_ms,
            "unordered_median_ms": C.median(unordered_times),
            "other_median_ms": C.median(other_times),
            "param_median_ms": C.median(param_times),
            "param_rows": len(param_res),
            "populate_runs_per_s": meta["runs_per_s"],
            "populate_s": meta["seconds"],
        },
        "verified": ok,
        "cached_store": cached,
        "runs": meta["runs"],
        "reps": len(times),
    }


def w_server(n: int, tmp: Path, args) -> dict:
    """``mlflow server`` on loopback: time to ready, RSS, then logging over HTTP."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    tmp.mkdir(parents=True, exist_ok=True)
    port = C.free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp / 'mlflow.db'}",
        "--artifacts-destination",
        str(tmp / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    t_start = time.perf_counter()
    proc = C.start_server(cmd, env, tmp / "server.log")
    figures: dict[str, float] = {}
    out: dict = {"figures": figures}
    try:
        try:
            C.wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=90, proc=proc)
        except Exception as exc:
            log = (tmp / "server.log").read_text(errors="replace")
            raise RuntimeError(f"{exc}\n{C._tail(log, 10)}") from exc
        figures["ready_s"] = time.perf_counter() - t_start
        # Helper processes may still be booting after /health answers: wait until the
        # process tree is idle before measuring memory and throughput.
        figures["settle_s"] = C.wait_tree_idle(proc.pid, max_wait=30)
        figures["rss_ready_mb"] = C.tree_rss_bytes(proc.pid) / 2**20
        figures["pss_ready_mb"] = C.tree_pss_bytes(proc.pid) / 2**20
        figures["processes"] = len(C.tree_pids(proc.pid))

        mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
        client = MlflowClient()
        exp_id = client.create_experiment("bench")
        budget = args.max_seconds / 3  # three phases

        # 1) one HTTP call per point.
        run = client.create_run(exp_id, run_name="one-at-a-time")
        t0 = time.perf_counter()
        done = 0
        for i in range(n):
            client.log_metric(run.info.run_id, "loss", 1.0 / (i + 1), step=i)
            done += 1
            if time.perf_counter() - t0 > budget:
                break
        client.set_terminated(run.info.run_id)
        dt = time.perf_counter() - t0
        figures["log_metric_points_per_s"] = done / dt
        figures["log_metric_points"] = done
        counts = {"log_metric": (done, _count_points(tmp / "mlflow.db", run.info.run_id))}

        # 2) async logging (the client batches in the background), flushed at the end.
        os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
        NOTES.append("async phase with MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1")
        n_async = 10 * n
        run = client.create_run(exp_id, run_name="async")
        t0 = time.perf_counter()
        for i in range(n_async):
            client.log_metric(run.info.run_id, "loss", 1.0 / (i + 1), step=i, synchronous=False)
        client.set_terminated(run.info.run_id)  # waits for the queue to drain
        mlflow.flush_async_logging()
        dt = time.perf_counter() - t0
        figures["log_metric_async_points_per_s"] = n_async / dt
        figures["log_metric_async_points"] = n_async
        counts["log_metric_async"] = (n_async, _count_points(tmp / "mlflow.db", run.info.run_id))

        # 3) log_batch, 1,000 metrics a call.
        n_batch = 50 * n
        run = client.create_run(exp_id, run_name="batch")
        t0 = time.perf_counter()
        done = 0
        for batch in _batches(n_batch):
            ts = int(time.time() * 1000)
            client.log_batch(run.info.run_id, metrics=[Metric(k, v, ts, s) for k, v, s in batch])
            done += len(batch)
            if time.perf_counter() - t0 > budget:
                break
        client.set_terminated(run.info.run_id)
        dt = time.perf_counter() - t0
        figures["log_batch_points_per_s"] = done / dt
        figures["log_batch_points"] = done
        counts["log_batch"] = (done, _count_points(tmp / "mlflow.db", run.info.run_id))
        figures["rss_after_mb"] = C.tree_rss_bytes(proc.pid) / 2**20
        figures["pss_after_mb"] = C.tree_pss_bytes(proc.pid) / 2**20
        out["counts"] = counts
        out["verified"] = all(a == b for a, b in counts.values())
        out["workers"] = (
            "mlflow server defaults: uvicorn with 4 workers, plus the job runner "
            "and its huey consumers (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true)"
        )
    finally:
        C.stop_server(proc)
    return out


def w_import(n: int, tmp: Path, args) -> dict:
    """``import mlflow`` in a fresh interpreter: 1 warm-up, then the median of ``n``."""
    code = "import time; t = time.perf_counter(); import mlflow; print(time.perf_counter() - t)"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    imports, walls = [], []
    for i in range(n + 1):
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        wall = time.perf_counter() - t0
        if i:  # the first one compiles .pyc files and fills the page cache
            imports.append(float(res.stdout.strip().splitlines()[-1]))
            walls.append(wall)
    return {
        "figures": {"import_s": C.median(imports), "process_s": C.median(walls)},
        "verified": True,
    }


def w_rss_1m(n: int, tmp: Path, args) -> dict:
    """Peak RSS of this process while logging ``n`` points with async logging."""
    import mlflow

    _store(tmp)
    _warm_up(tmp)
    exp_id = _experiment("bench", tmp)
    os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
    NOTES.append("async logging, MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1")
    mlflow.config.enable_async_logging(True)
    base = C.peak_rss_bytes()
    t0 = time.perf_counter()
    with mlflow.start_run(experiment_id=exp_id, run_name="r1") as run:
        for i in range(n):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
    mlflow.flush_async_logging()
    dt = time.perf_counter() - t0
    got = _count_points(tmp / "mlflow.db", run.info.run_id, "loss")
    return {
        "figures": {
            "peak_rss_mb": C.peak_rss_bytes() / 2**20,
            "rss_before_mb": base / 2**20,
            "seconds": dt,
            "points_per_s": n / dt,
        },
        "verified": got == n,
        "persisted": got,
    }


WORKLOADS = {
    "log_metric": w_log_metric,
    "log_metric_async": w_log_metric_async,
    "log_metric_async_default": w_log_metric_async_default,
    "log_batch": w_log_batch,
    "create_runs": w_create_runs,
    "search": w_search,
    "server": w_server,
    "import": w_import,
    "rss_1m": w_rss_1m,
}


def main() -> None:
    args = C.worker_args()
    if args.workload not in WORKLOADS:
        raise SystemExit(f"unknown workload {args.workload!r}; one of {sorted(WORKLOADS)}")
    n = args.n or DEFAULT_N[args.workload]
    tmp = Path(args.tmp).resolve()
    result = WORKLOADS[args.workload](n, tmp, args)
    result.update(workload=args.workload, tool="mlflow", n=n, notes=NOTES)
    import sqlite3

    result["version"] = _version()
    result["sqlite"] = sqlite3.sqlite_version
    C.emit(result)


if __name__ == "__main__":
    main()
