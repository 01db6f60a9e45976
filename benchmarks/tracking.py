"""Tracking benchmark: Plinth against MLflow, same workloads, same machine, one run.

    .venv/bin/python benchmarks/tracking.py            # full (about 5-10 minutes)
    .venv/bin/python benchmarks/tracking.py --quick    # smoke run (about 2 minutes)

MLflow runs in its own virtualenv (``benchmarks/.venvs/mlflow``, made on first use with pip);
Plinth runs with this interpreter. Each workload runs in a fresh subprocess on a fresh SQLite
store (``_plinth_tracking.py`` / ``_mlflow_tracking.py``), which prints its figures as JSON.
The table is printed and also written, as plain text, to ``benchmarks/.work/last-tracking.txt``.

The search workload needs 10,000 populated runs; the populated stores are cached under
``benchmarks/.work/cache`` (keyed by size, MLflow version and Plinth schema), so only the
first full run pays for populating MLflow's (several minutes).
"""

from __future__ import annotations

import platform
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from _common import Row

MLFLOW_VENV = C.VENVS_DIR / "mlflow"
MLFLOW_REQUIREMENTS = (
    ("mlflow==3.18.*", "psutil"),
    # A registry mirror may not have every package of the newest release yet.
    ("mlflow>=3,<4", "psutil"),
)
PLINTH_WORKER = C.BENCH_DIR / "_plinth_tracking.py"
MLFLOW_WORKER = C.BENCH_DIR / "_mlflow_tracking.py"


@dataclass(frozen=True)
class Sizes:
    log_metric: int
    async_default: int
    async_buffered: int
    plinth_log_metric: int
    log_batch: int
    create_runs: int
    search_runs: int
    server: int
    plinth_server: int
    server_seconds: float
    imports: int
    rss_points: int


FULL = Sizes(
    log_metric=2_000,
    async_default=2_000,
    async_buffered=20_000,
    plinth_log_metric=100_000,
    log_batch=100_000,
    create_runs=100,
    search_runs=10_000,
    server=2_000,
    plinth_server=100_000,
    server_seconds=60,
    imports=3,
    rss_points=1_000_000,
)
QUICK = Sizes(
    log_metric=300,
    async_default=300,
    async_buffered=3_000,
    plinth_log_metric=20_000,
    log_batch=10_000,
    create_runs=20,
    search_runs=1_000,
    server=300,
    plinth_server=20_000,
    server_seconds=15,
    imports=1,
    rss_points=200_000,
)
# Worker time limits (seconds); populating the MLflow search store the first time is slow.
TIMEOUTS = {"search": 1800, "server": 300}
# MLflow's 1M-point RSS run is only attempted when its projected duration is below this.
RSS_MLFLOW_BUDGET_S = 60.0


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "mlflow")
    opts = C.parse_runner_options(ap, argv, "tracking")
    sizes = QUICK if opts.quick else FULL
    started = time.perf_counter()

    mlflow_py = None
    if not opts.no_mlflow:
        try:
            mlflow_py = C.ensure_venv(MLFLOW_VENV, MLFLOW_REQUIREMENTS, check_import="mlflow")
        except Exception as exc:  # the table still shows Plinth
            C.log(f"MLflow venv unavailable: {C.key_error_line(str(exc))}")

    b = C.Bench(
        "tracking",
        {"plinth": PLINTH_WORKER, "mlflow": MLFLOW_WORKER},
        TIMEOUTS,
        mlflow_py,
        opts.keep,
    )
    b.wait_quiet = opts.wait_quiet
    s = sizes
    P, M = "plinth", "mlflow"
    notes: list[str] = []

    # In-process logging ------------------------------------------------------------
    p_lm_small = b.run(P, "log_metric", s.log_metric)
    m_lm = b.run(M, "log_metric", s.log_metric)
    m_async_def = b.run(M, "log_metric_async_default", s.async_default)
    p_lm_mid = b.run(P, "log_metric", s.async_buffered)
    m_async = b.run(M, "log_metric_async", s.async_buffered)
    p_lm_big = b.run(P, "log_metric", s.plinth_log_metric)
    p_batch = b.run(P, "log_batch", s.log_batch)
    m_batch = b.run(M, "log_batch", s.log_batch)
    p_runs = b.run(P, "create_runs", s.create_runs)
    m_runs = b.run(M, "create_runs", s.create_runs)

    # Search over populated stores (cached between runs) ------------------------------
    p_search = b.run(P, "search", s.search_runs)
    m_search = b.run(M, "search", s.search_runs)

    # Servers ---------------------------------------------------------------------------
    secs = str(s.server_seconds)
    p_srv = b.run(P, "server", s.plinth_server, max_seconds=secs)
    m_srv = b.run(M, "server", s.server, max_seconds=secs)

    # Imports and memory ------------------------------------------------------------------
    p_imp = b.run(P, "import", s.imports)
    m_imp = b.run(M, "import", s.imports)
    p_rss = b.run(P, "rss_1m", s.rss_points)
    m_rss = None
    m_async_rate = C.fig(m_async, "points_per_s")
    if mlflow_py is not None and m_async_rate:
        projected = s.rss_points / m_async_rate
        if projected <= RSS_MLFLOW_BUDGET_S:
            m_rss = b.run(M, "rss_1m", s.rss_points)
        else:
            notes.append(
                f"MLflow's {s.rss_points:,}-point RSS run skipped: at its measured "
                f"async rate ({m_async_rate:,.0f} points/s) it would take "
                f"~{projected:,.0f} s (budget {RSS_MLFLOW_BUDGET_S:.0f} s)."
            )

    # The table ------------------------------------------------------------------------------
    def n_note(pn: int, mn: int | None = None) -> str:
        return f"n={pn:,}" if mn is None or mn == pn else f"n: Plinth {pn:,}, MLflow {mn:,}"

    lat = "{:,.1f}"
    sec = "{:,.2f}"
    rows = [
        Row(
            "log_metric in-process vs MLflow sync",
            C.fig(p_lm_small, "points_per_s"),
            C.fig(m_lm, "points_per_s"),
            "points/s",
            note=n_note(s.log_metric),
        ),
        Row(
            "log_metric vs MLflow async (defaults)",
            C.fig(p_lm_small, "points_per_s"),
            C.fig(m_async_def, "points_per_s"),
            "points/s",
            note=n_note(s.async_default),
        ),
        Row(
            "log_metric vs MLflow async (1 s buffering)",
            C.fig(p_lm_mid, "points_per_s"),
            C.fig(m_async, "points_per_s"),
            "points/s",
            note=n_note(s.async_buffered),
        ),
        Row(
            "log_metric in-process, large run",
            C.fig(p_lm_big, "points_per_s"),
            None,
            "points/s",
            target="≥ 100,000",
            note=n_note(s.plinth_log_metric),
        ),
        Row(
            "batch: log_metrics 10/step vs log_batch 1,000",
            C.fig(p_batch, "points_per_s"),
            C.fig(m_batch, "points_per_s"),
            "points/s",
            note=n_note(s.log_batch),
        ),
        Row(
            "create runs (5 params, 3 metrics)",
            C.fig(p_runs, "runs_per_s"),
            C.fig(m_runs, "runs_per_s"),
            "runs/s",
            target=f"≥ 10{C.TIMES} MLflow",
            fmt=lat,
            note=n_note(s.create_runs),
        ),
        Row(
            f"search {s.search_runs:,} runs, median",
            C.fig(p_search, "median_ms"),
            C.fig(m_search, "median_ms"),
            "ms",
            higher_is_better=False,
            target="< 50 ms",
            fmt=lat,
            note="metrics.m0 > 0.5, order by m0 DESC, 100 rows; " + _reps(p_search, m_search),
        ),
        Row(
            "search, same filter without ORDER BY",
            C.fig(p_search, "unordered_median_ms"),
            C.fig(m_search, "unordered_median_ms"),
            "ms",
            higher_is_better=False,
            fmt=lat,
            note="median of 10",
        ),
        Row(
            "search, ordered by another metric",
            C.fig(p_search, "other_median_ms"),
            C.fig(m_search, "other_median_ms"),
            "ms",
            higher_is_better=False,
            target="< 25 ms",
            fmt=lat,
            note="metrics.m0 > 0.9, order by m1 DESC; median of 10",
        ),
        Row(
            "search, the same with a param predicate",
            C.fig(p_search, "param_median_ms"),
            C.fig(m_search, "param_median_ms"),
            "ms",
            higher_is_better=False,
            target="< 25 ms",
            fmt=lat,
            note="metrics.m0 > 0.9 and params.hyper.p1 = 3 (MLflow: params.p1 = '3'); median of 10",
        ),
        Row(
            "search, first call",
            C.fig(p_search, "first_ms"),
            C.fig(m_search, "first_ms"),
            "ms",
            higher_is_better=False,
            fmt=lat,
        ),
        Row(
            "populate search store (10 params, 5 metrics)",
            C.fig(p_search, "populate_runs_per_s"),
            C.fig(m_search, "populate_runs_per_s"),
            "runs/s",
            fmt=lat,
            note="measured when the cached store was built",
        ),
        Row(
            "server: start to ready",
            C.fig(p_srv, "ready_s"),
            C.fig(m_srv, "ready_s"),
            "s",
            higher_is_better=False,
            target="< 3 s",
            fmt=sec,
        ),
        Row(
            "server: settling after ready",
            C.fig(p_srv, "settle_s"),
            C.fig(m_srv, "settle_s"),
            "s",
            higher_is_better=False,
            fmt=sec,
            note="until the process tree is idle (helper processes booted)",
        ),
        Row(
            "server: RSS of process tree, idle",
            C.fig(p_srv, "rss_ready_mb"),
            C.fig(m_srv, "rss_ready_mb"),
            "MB",
            higher_is_better=False,
            target="< 300 MB",
            note=_procs(p_srv, m_srv),
        ),
        Row(
            "server: PSS of process tree, idle",
            C.fig(p_srv, "pss_ready_mb"),
            C.fig(m_srv, "pss_ready_mb"),
            "MB",
            higher_is_better=False,
            note="shared pages split between processes",
        ),
        Row(
            "server: RSS after the logging load",
            C.fig(p_srv, "rss_after_mb"),
            C.fig(m_srv, "rss_after_mb"),
            "MB",
            higher_is_better=False,
        ),
        Row(
            "remote log_metric vs MLflow sync (1 call/point)",
            C.fig(p_srv, "log_metric_points_per_s"),
            C.fig(m_srv, "log_metric_points_per_s"),
            "points/s",
            target="≥ 50,000",
            note=_done(p_srv, m_srv, "log_metric_points", "log_metric_points", s.server_seconds),
        ),
        Row(
            "remote log_metric vs MLflow async (1 s buf.)",
            C.fig(p_srv, "log_metric_points_per_s"),
            C.fig(m_srv, "log_metric_async_points_per_s"),
            "points/s",
            note=_done(p_srv, m_srv, "log_metric_points", "log_metric_async_points"),
        ),
        Row(
            "remote batch: log_metrics 10/step vs log_batch",
            C.fig(p_srv, "log_batch_points_per_s"),
            C.fig(m_srv, "log_batch_points_per_s"),
            "points/s",
            note=_done(p_srv, m_srv, "log_batch_points", "log_batch_points", s.server_seconds),
        ),
        Row(
            f"peak RSS, process logging {s.rss_points:,} points",
            C.fig(p_rss, "peak_rss_mb"),
            C.fig(m_rss, "peak_rss_mb"),
            "MB",
            higher_is_better=False,
            fmt=lat,
            target="report",
            note="MLflow: async, 1 s buffering" if m_rss else "MLflow skipped (see below)",
        ),
        Row(
            "import",
            C.fig(p_imp, "import_s"),
            C.fig(m_imp, "import_s"),
            "s",
            higher_is_better=False,
            target="< 0.3 s",
            fmt="{:,.3f}",
            note=f"median of {s.imports}, after one warm-up",
        ),
    ]

    versions = _versions(b)
    machine = C.machine_info()
    mode = "quick" if opts.quick else "full"
    title = (
        f"Plinth vs MLflow — tracking ({mode}; speed-up = how many times Plinth is "
        f"faster/leaner, > 1{C.TIMES} favours Plinth)"
    )
    footer = [
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"machine: {machine['nproc']} CPUs, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        "stores: a fresh SQLite file per workload (search: a copy of a cached populated store)"
        "; times include the end of the run (everything flushed), checked afterwards by "
        "counting what was persisted.",
        "MLflow: fluent API (mlflow.log_metric ...), MlflowClient for log_batch and search "
        "(MlflowClient().search_runs returns entities: no pandas); server = `mlflow server` "
        "with its defaults.",
        "Plinth: log_metric is always buffered (a background thread writes batches), so its "
        "figure stands against both MLflow's sync and async modes.",
        C.busy_line(b.busy),
        *notes,
    ]
    for tool, res in (("Plinth", p_search), ("MLflow", m_search)):
        if res and not res.get("cached_store", True):
            footer.append(
                f"{tool}'s search store was populated in this run "
                f"({C.fig(res, 'populate_s'):,.0f} s)."
            )
    return C.finish_report(rows, title, footer, opts, b.errors, started)


def _done(p: dict | None, m: dict | None, pkey: str, mkey: str, bound: float | None = None) -> str:
    """The points actually sent (loops against the MLflow server stop at a time bound)."""
    pn, mn = C.fig(p, pkey), C.fig(m, mkey)
    text = f"n: Plinth {pn or 0:,.0f}, MLflow {mn or 0:,.0f}"
    if bound:
        text += f" (MLflow loop bounded to {bound / 3:.0f} s)"
    return text


def _procs(p: dict | None, m: dict | None) -> str:
    pp, mp = C.fig(p, "processes"), C.fig(m, "processes")
    return (
        f"processes: Plinth {pp or 0:.0f}, MLflow {mp or 0:.0f} (MLflow defaults: "
        "4 uvicorn workers + job runner + huey consumers)"
    )


def _reps(p: dict | None, m: dict | None) -> str:
    pr, mr = (p or {}).get("reps"), (m or {}).get("reps")
    if pr == mr:
        return f"{pr} calls each" if pr else ""
    return f"calls: Plinth {pr or '—'}, MLflow {mr or '—'}"


def _versions(b: C.Bench) -> dict[str, str]:
    out = {"Python": platform.python_version()}
    for res in b.results.values():
        if res.get("tool") == "plinth" and "version" in res:
            out["Plinth"] = res["version"]
            break
    else:
        try:
            import plinth

            out["Plinth"] = plinth.__version__
        except Exception:
            out["Plinth"] = "not importable"
    for res in b.results.values():
        if res.get("tool") == "mlflow" and "version" in res:
            out["MLflow"] = res["version"]
            break
    else:
        out["MLflow"] = "not run"
    out["SQLite"] = sqlite3.sqlite_version
    return out


if __name__ == "__main__":
    sys.exit(main())
