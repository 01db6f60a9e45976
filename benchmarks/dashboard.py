"""Dashboard benchmark: Plinth's pages against MLflow's UI calls, same data, one run.

    .venv/bin/python benchmarks/dashboard.py            # full (about 3 minutes, more the
                                                        # first time: see tracking.py)
    .venv/bin/python benchmarks/dashboard.py --quick    # smoke run

Plinth renders its pages on the server; MLflow's UI renders in the browser from JSON. The
server's share of showing a page is what is compared: Plinth's whole HTML page against the
AJAX call MLflow's UI makes for the same view. Every time is the wall time of the request
over loopback, measured by the client.

- ``runs_page``: the runs table of an experiment of 10,000 runs (10 params, 5 metrics each;
  the tracking benchmark's cached store): its first page, page 100, and filtered by
  ``metrics.m0 > 0.5`` and sorted by it. Plinth shows 50 runs a page, MLflow's UI asks 100.
  Target (issue 12): p95 under 150 ms.
- ``chart``: one run with a 200,000-point metric. The chart's data (Plinth: the run page's
  chart JSON, downsampled on the server to 2,000 points; MLflow: the UI's
  ``get-history-bulk-interval`` with max_results=2,000), and, for Plinth, the time from
  navigation to the chart drawn in headless Chromium (target: under 1 s).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from _common import Row

import tracking as T

PLINTH_WORKER = C.BENCH_DIR / "_plinth_dashboard.py"
MLFLOW_WORKER = C.BENCH_DIR / "_mlflow_dashboard.py"


@dataclass(frozen=True)
class Sizes:
    runs: int
    points: int


FULL = Sizes(runs=10_000, points=200_000)
QUICK = Sizes(runs=1_000, points=20_000)
TIMEOUTS = {"runs_page": 1800, "chart": 900}


def _mlflow_python(opts) -> Path | None:
    if opts.no_mlflow:
        return None
    try:
        return C.ensure_venv(T.MLFLOW_VENV, T.MLFLOW_REQUIREMENTS, check_import="mlflow")
    except Exception as exc:  # the table still shows Plinth
        C.log(f"MLflow venv unavailable: {C.key_error_line(str(exc))}")
        return None


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "mlflow")
    opts = C.parse_runner_options(ap, argv, "dashboard")
    s = QUICK if opts.quick else FULL
    started = time.perf_counter()
    b = C.Bench(
        "dashboard",
        {"plinth": PLINTH_WORKER, "mlflow": MLFLOW_WORKER},
        TIMEOUTS,
        _mlflow_python(opts),
        opts.keep,
    )
    b.wait_quiet = opts.wait_quiet
    P, M = "plinth", "mlflow"
    p_runs = b.run(P, "runs_page", s.runs)
    m_runs = b.run(M, "runs_page", s.runs)
    p_chart = b.run(P, "chart", s.points)
    m_chart = b.run(M, "chart", s.points)

    ms = "{:,.1f}"
    n_runs = f"{s.runs:,} runs"
    rows = [
        Row(
            f"runs page, all views, p95 ({n_runs})",
            C.fig(p_runs, "p95_ms"),
            C.fig(m_runs, "p95_ms"),
            "ms",
            higher_is_better=False,
            target="< 150 ms",
            fmt=ms,
            note=f"p50 Plinth {_f(p_runs, 'p50_ms')}, MLflow {_f(m_runs, 'p50_ms')} ms",
        ),
    ]
    for view, label in (
        ("first", "first page"),
        ("later", "page 100 (runs 4,951-5,000)"),
        ("filtered", "filter metrics.m0 > 0.5, sort by it"),
    ):
        rows.append(
            Row(
                f"runs page: {label}, p95",
                C.fig(p_runs, f"{view}_p95_ms"),
                C.fig(m_runs, f"{view}_p95_ms"),
                "ms",
                higher_is_better=False,
                fmt=ms,
                note=f"p50 Plinth {_f(p_runs, f'{view}_p50_ms')}, "
                f"MLflow {_f(m_runs, f'{view}_p50_ms')} ms",
            )
        )
    rows += [
        Row(
            f"chart data of a {s.points:,}-point metric, p95",
            C.fig(p_chart, "json_p95_ms"),
            C.fig(m_chart, "json_p95_ms"),
            "ms",
            higher_is_better=False,
            fmt=ms,
            note=f"points sent: Plinth {_n(p_chart)}, MLflow {_n(m_chart)}",
        ),
        Row(
            "run page: navigation to chart drawn (Chromium), p50",
            C.fig(p_chart, "browser_p50_ms"),
            None,
            "ms",
            higher_is_better=False,
            target="< 1,000 ms",
            fmt=ms,
            note=f"max of 5: {_f(p_chart, 'browser_max_ms')} ms",
        ),
    ]
    machine = C.machine_info()
    versions = {
        "Plinth": (p_runs or p_chart or {}).get("version", "?"),
        "MLflow": (m_runs or m_chart or {}).get("version", "not run"),
    }
    title = (
        f"Plinth vs MLflow — dashboard ({'quick' if opts.quick else 'full'}; speed-up = how "
        f"many times Plinth is faster, > 1{C.TIMES} favours Plinth)"
    )
    footer = [
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"machine: {machine['nproc']} CPUs, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        "Plinth: the whole HTML page rendered by plinth server (SQLite); MLflow: the JSON its "
        "UI fetches for the same view from mlflow server (SQLite), rendered in the browser "
        "afterwards. 40 requests per view after one warm-up.",
        C.busy_line(b.busy),
    ]
    return C.finish_report(rows, title, footer, opts, b.errors, started)


def _f(res: dict | None, name: str) -> str:
    value = C.fig(res, name)
    return "—" if value is None else f"{value:,.1f}"


def _n(res: dict | None) -> str:
    return "—" if not res else f"{res.get('points_drawn', 0):,}"


if __name__ == "__main__":
    raise SystemExit(main())
