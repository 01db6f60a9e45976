"""Plinth half of the tracking benchmark (a worker; run with the project's python).

    .venv/bin/python benchmarks/_plinth_tracking.py --workload log_metric --n 2000 --tmp /tmp/x

Same CLI and JSON output as ``_mlflow_tracking.py``. Every workload gets a fresh Plinth home
(``PLINTH_HOME=<tmp>``: SQLite store and artifacts there), set before plinth is imported;
the store is warmed up (schema created, code paths run once) before the clock starts. Only
the public API is used (module functions on the default client).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

DEFAULT_N = {
    "log_metric": 100_000,
    "log_batch": 100_000,
    "create_runs": 100,
    "search": 10_000,
    "server": 100_000,
    "import": 3,
    "rss_1m": 1_000_000,
}
# Plinth's log_metric is always buffered: MLflow's sync and async variants compare with it.
ALIASES = {"log_metric_async": "log_metric", "log_metric_async_default": "log_metric"}
NOTES: list[str] = []


def _home(tmp: Path) -> None:
    """Point Plinth at a fresh home (settings are read when the default client is made)."""
    if "plinth.client" in sys.modules:
        sys.modules["plinth.client"].set_default_client(None)
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["PLINTH_HOME"] = str(tmp)
    os.environ.pop("PLINTH_URI", None)
    os.environ.pop("PLINTH_STORE_URI", None)
    os.environ.pop("PLINTH_ARTIFACT_URI", None)


def _warm_up() -> None:
    import plinth

    with plinth.start_run(experiment="warmup", name="warmup") as run:
        run.log_params({"p": 1}, group="hyper")
        run.log_metric("m", 0.0, step=0)
        run.log_metrics({"a": 1.0, "b": 2.0}, step=0)


def _version() -> str:
    import plinth

    return plinth.__version__


def _count_runs(experiment: str) -> int:
    import plinth

    total, token = 0, None
    while True:
        page = plinth.search_runs(experiments=[experiment], max_results=1000, page_token=token)
        total += len(page)
        token = page.next_page_token
        if not token:
            return total


# --------------------------------------------------------------------------- workloads


def w_log_metric(n: int, tmp: Path, args) -> dict:
    """One run, ``n`` calls of ``run.log_metric``; the clock includes the end of the block."""
    _home(tmp)
    import plinth

    _warm_up()
    t0 = time.perf_counter()
    with plinth.start_run(experiment="bench", name="r1") as run:
        for i in range(n):
            run.log_metric("loss", 1.0 / (i + 1), step=i)
        t_calls = time.perf_counter() - t0
    dt = time.perf_counter() - t0
    got = len(plinth.get_metric_history(run.id, "loss"))
    return {
        "figures": {"points_per_s": n / dt, "seconds": dt, "call_points_per_s": n / t_calls},
        "verified": got == n,
        "persisted": got,
    }


def _steps(n: int, keys: int = 10):
    for s in range(n // keys):
        yield s, {f"m{k}": 1.0 / (s + 1) + k for k in range(keys)}


def w_log_batch(n: int, tmp: Path, args) -> dict:
    """``run.log_metrics`` with 10 metrics a step (Plinth's batch call), ``n`` points."""
    _home(tmp)
    import plinth

    _warm_up()
    n = (n // 10) * 10
    t0 = time.perf_counter()
    with plinth.start_run(experiment="bench", name="r1") as run:
        for s, metrics in _steps(n):
            run.log_metrics(metrics, step=s)
    dt = time.perf_counter() - t0
    summary = plinth.get_run(run.id).metrics
    got = sum(summary[f"m{k}"].count for k in range(10) if f"m{k}" in summary)
    NOTES.append("Plinth: run.log_metrics({m0..m9}, step) per step (buffered)")
    return {
        "figures": {"points_per_s": n / dt, "seconds": dt},
        "verified": got == n,
        "persisted": got,
    }


def w_create_runs(n: int, tmp: Path, args) -> dict:
    """``n`` runs, each with 5 params and 3 metrics, default lineage capture."""
    _home(tmp)
    import plinth

    _warm_up()
    t0 = time.perf_counter()
    for r in range(n):
        with plinth.start_run(experiment="bench", name=f"r{r}") as run:
            run.log_params({f"p{j}": r * 10 + j for j in range(5)}, group="hyper")
            run.log_metrics({f"m{j}": (r + j) / (n + 5) for j in range(3)}, step=0)
    dt = time.perf_counter() - t0
    got = _count_runs("bench")
    return {
        "figures": {"runs_per_s": n / dt, "seconds": dt},
        "verified": got == n,
        "persisted": got,
    }


def _schema_fingerprint() -> str:
    """Changes when Plinth's schema does, so a cached store is never read by newer code."""
    import plinth

    root = Path(plinth.__file__).resolve().parent / "store"
    h = hashlib.sha1(plinth.__version__.encode())
    for p in sorted(root.rglob("*.py")):
        if "migrations" in p.parts or p.name == "schema.py":
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


def _populate_search(n_runs: int) -> dict:
    import random

    import plinth

    rng = random.Random(42)
    t0 = time.perf_counter()
    for r in range(n_runs):
        with plinth.start_run(experiment="bench", name=f"r{r}", capture_environment=False) as run:
            run.log_params({f"p{j}": rng.randint(0, 100) for j in range(10)}, group="hyper")
            run.log_metrics({f"m{j}": rng.random() for j in range(5)}, step=0)
    dt = time.perf_counter() - t0
    return {"runs": n_runs, "seconds": dt, "runs_per_s": n_runs / dt}


def search_store(cache_root: Path, n: int) -> tuple[Path, dict, bool]:
    """The folder of a store with ``n`` populated runs (made once, then cached), its
    populate figures, and whether it was cached already."""
    import plinth

    cache = cache_root / f"plinth-{_schema_fingerprint()}-search-{n}"
    meta_path = cache / "meta.json"
    cached = meta_path.exists()
    if not cached:
        print(
            f"populating {n} Plinth runs into {cache} (cached for later runs)",
            file=sys.stderr,
            flush=True,
        )
        build = cache.with_name(cache.name + ".building")
        shutil.rmtree(build, ignore_errors=True)
        _home(build)
        meta = _populate_search(n)
        # Release the store before moving it.
        plinth.set_default_client(None)
        (build / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(cache, ignore_errors=True)
        build.rename(cache)
    return cache, json.loads(meta_path.read_text()), cached


def w_search(n: int, tmp: Path, args) -> dict:
    """Median of 20 ``plinth.search_runs`` over ``n`` runs (populated once, then cached)."""
    tmp.mkdir(parents=True, exist_ok=True)
    # The fingerprint needs plinth's files, not its settings: import the package only.
    import plinth

    cache, meta, cached = search_store(Path(args.cache), n)
    # Search a copy of the metadata db, so the cached store is never touched.
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    for p in cache.iterdir():
        if p.name.startswith("plinth.db"):
            shutil.copy2(p, home / p.name)
    os.environ["PLINTH_HOME"] = str(home)
    os.environ.pop("PLINTH_URI", None)
    plinth.set_default_client(None)
    kwargs = dict(
        filter="metrics.m0 > 0.5",
        order_by=["metrics.m0 DESC"],
        experiments=["bench"],
        max_results=100,
    )
    t0 = time.perf_counter()
    first = plinth.search_runs(**kwargs)
    first_ms = (time.perf_counter() - t0) * 1000
    times: list[float] = []
    t_all = time.perf_counter()
    # 20 repetitions, fewer (at least 3) when that would take more than the time bound.
    while len(times) < 20 and (
        len(times) < 3 or time.perf_counter() - t_all < args.max_seconds / 2
    ):
        t0 = time.perf_counter()
        res = plinth.search_runs(**kwargs)
        times.append((time.perf_counter() - t0) * 1000)
    # The same filter without the ORDER BY, to show where the time goes.
    unordered = {k: v for k, v in kwargs.items() if k != "order_by"}
    unordered_times = []
    for _ in range(10):
        t0 = time.perf_counter()
        plinth.search_runs(**unordered)
        unordered_times.append((time.perf_counter() - t0) * 1000)
    # Ordered by another metric, with and without a param predicate (issue 10, item 18).
    other = dict(kwargs, filter="metrics.m0 > 0.9", order_by=["metrics.m1 DESC"])
    with_param = dict(other, filter="metrics.m0 > 0.9 and params.hyper.p1 = 3")
    other_times, param_times = [], []
    for _ in range(10):
        t0 = time.perf_counter()
        plinth.search_runs(**other)
        other_times.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        param_res = plinth.search_runs(**with_param)
        param_times.append((time.perf_counter() - t0) * 1000)
    param_ok = all(r.params["hyper"]["p1"] == 3 and r.metrics["m0"].last > 0.9 for r in param_res)
    vals = [r.metrics["m0"].last for r in res]
    ok = (
        param_ok
        and len(res) == 100
        and len(first) == 100
        and all(v > 0.5 for v in vals)
        and vals == sorted(vals, reverse=True)
    )
    NOTES.append("populated with capture_environment=False")
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
    """``plinth server`` on loopback: time to ready, RSS, then logging through it."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = C.free_port()
    cmd = [sys.executable, "-m", "plinth", "server", "--host", "127.0.0.1", "--port", str(port)]
    server_home = tmp / "server-home"
    server_home.mkdir()
    env = {"PLINTH_HOME": str(server_home), "PLINTH_URI": ""}
    t_start = time.perf_counter()
    proc = C.start_server(cmd, env, tmp / "server.log")
    figures: dict[str, float] = {}
    out: dict = {"figures": figures}
    try:
        try:
            C.wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=60, proc=proc)
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

        # The client side: module functions go remote once PLINTH_URI is set.
        os.environ["PLINTH_URI"] = f"http://127.0.0.1:{port}"
        os.environ["PLINTH_HOME"] = str(tmp / "client-home")
        import plinth

        with plinth.start_run(experiment="warmup", name="warmup") as run:
            run.log_metric("m", 0.0, step=0)
        counts = {}

        # 1) log_metric (buffered; batches go over HTTP in the background and at the end).
        t0 = time.perf_counter()
        with plinth.start_run(experiment="bench", name="log_metric") as run:
            for i in range(n):
                run.log_metric("loss", 1.0 / (i + 1), step=i)
        dt = time.perf_counter() - t0
        figures["log_metric_points_per_s"] = n / dt
        figures["log_metric_points"] = n
        counts["log_metric"] = (n, len(plinth.get_metric_history(run.id, "loss")))

        # 2) log_metrics, 10 metrics a step.
        nb = (n // 10) * 10
        t0 = time.perf_counter()
        with plinth.start_run(experiment="bench", name="log_metrics") as run:
            for s, metrics in _steps(nb):
                run.log_metrics(metrics, step=s)
        dt = time.perf_counter() - t0
        figures["log_batch_points_per_s"] = nb / dt
        figures["log_batch_points"] = nb
        summary = plinth.get_run(run.id).metrics
        counts["log_batch"] = (nb, sum(m.count for m in summary.values()))
        figures["rss_after_mb"] = C.tree_rss_bytes(proc.pid) / 2**20
        figures["pss_after_mb"] = C.tree_pss_bytes(proc.pid) / 2**20
        out["counts"] = counts
        out["verified"] = all(a == b for a, b in counts.values())
    finally:
        C.stop_server(proc)
    return out


def w_import(n: int, tmp: Path, args) -> dict:
    """``import plinth`` in a fresh interpreter: 1 warm-up, then the median of ``n``."""
    code = "import time; t = time.perf_counter(); import plinth; print(time.perf_counter() - t)"
    imports, walls = [], []
    for i in range(n + 1):
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        wall = time.perf_counter() - t0
        if i:
            imports.append(float(res.stdout.strip().splitlines()[-1]))
            walls.append(wall)
    return {
        "figures": {"import_s": C.median(imports), "process_s": C.median(walls)},
        "verified": True,
    }


def w_rss_1m(n: int, tmp: Path, args) -> dict:
    """Peak RSS of this process while logging ``n`` points into one run."""
    _home(tmp)
    import plinth

    _warm_up()
    base = C.peak_rss_bytes()
    t0 = time.perf_counter()
    with plinth.start_run(experiment="bench", name="r1") as run:
        for i in range(n):
            run.log_metric("loss", 1.0 / (i + 1), step=i)
    dt = time.perf_counter() - t0
    peak = C.peak_rss_bytes()
    got = plinth.get_run(run.id).metrics["loss"].count
    return {
        "figures": {
            "peak_rss_mb": peak / 2**20,
            "rss_before_mb": base / 2**20,
            "seconds": dt,
            "points_per_s": n / dt,
        },
        "verified": got == n,
        "persisted": got,
    }


WORKLOADS = {
    "log_metric": w_log_metric,
    "log_batch": w_log_batch,
    "create_runs": w_create_runs,
    "search": w_search,
    "server": w_server,
    "import": w_import,
    "rss_1m": w_rss_1m,
}


def main() -> None:
    args = C.worker_args()
    name = ALIASES.get(args.workload, args.workload)
    if name not in WORKLOADS:
        raise SystemExit(f"unknown workload {args.workload!r}; one of {sorted(WORKLOADS)}")
    n = args.n or DEFAULT_N[name]
    tmp = Path(args.tmp).resolve()
    result = WORKLOADS[name](n, tmp, args)
    import sqlite3

    result.update(
        workload=args.workload,
        tool="plinth",
        n=n,
        notes=NOTES,
        version=_version(),
        sqlite=sqlite3.sqlite_version,
    )
    C.emit(result)


if __name__ == "__main__":
    main()
