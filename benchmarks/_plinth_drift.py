"""Plinth worker of the monitoring benchmark: one workload per process, so that its peak RSS
is its own.

    .venv/bin/python benchmarks/_plinth_drift.py --workload drift --preset evidently \\
        --reference R.parquet --current C.parquet
    .venv/bin/python benchmarks/_plinth_drift.py --workload breakdown --preset evidently \\
        --reference R.parquet --current C.parquet [--cprofile FILE]
    .venv/bin/python benchmarks/_plinth_drift.py --workload profile_delta --uri DELTA_DIR

- ``drift``: ``drift_report(reference_path, current_path, preset=...)`` straight from the
  Parquet files (Plinth profiles them chunk by chunk); wall and CPU time, peak RSS and, per
  column, the test, statistic, p-value, threshold, verdict and what it ran on.
- ``breakdown``: where the time goes: ``profile()`` of each file, then ``drift_report`` on
  the two profiles, timed apart; then the direct call again under cProfile, its top
  functions (by own time and by cumulative time) in the result.
- ``profile_delta``: ``profile_delta(uri)`` of a Delta table; wall and CPU time, peak RSS,
  rows and columns profiled.

The result is a JSON object on the last stdout line (see ``_common.run_worker``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import resource
import sys
import time
from typing import Any


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _columns(report: Any) -> dict[str, dict]:
    return {
        c.column: {
            "kind": c.kind,
            "test": c.test,
            "statistic": _num(c.statistic),
            "p_value": _num(c.p_value),
            "threshold": _num(c.threshold),
            "drifted": bool(c.drifted),
            "method": c.method,
            "sample_size": c.sample_size,
            "error": c.error,
        }
        for c in report.columns
    }


def _timed(fn, *args, **kwargs) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), _cpu_s()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, _cpu_s() - c0


def _libs() -> str:
    import numpy
    import pyarrow
    import scipy

    return (
        f"numpy {numpy.__version__}, pyarrow {pyarrow.__version__}, scipy {scipy.__version__}, "
        f"python {platform.python_version()}"
    )


def drift(opts: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    from plinth.stats.drift import drift_report

    import_s = time.perf_counter() - t0
    rss_import = _rss_mb()
    report, wall, cpu = _timed(drift_report, opts.reference, opts.current, preset=opts.preset)
    return {
        "figures": {
            "import_s": import_s,
            "total_s": wall,
            "cpu_s": cpu,
            "peak_rss_mb": _rss_mb(),
            "rss_after_import_mb": rss_import,
            "drifted_columns": int(report.drifted_columns),
            "tested_columns": int(report.tested_columns),
        },
        "rows": [report.reference_rows, report.current_rows],
        "summary": report.summary(),
        "dataset_drifted": report.dataset_drifted,
        "correction": report.correction,
        "columns": _columns(report),
    }


def _top(prof: cProfile.Profile, sort: str, n: int) -> list[str]:
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats(sort).print_stats(n)
    lines = buf.getvalue().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return [ln.rstrip() for ln in lines[start : start + n + 1] if ln.strip()]


def breakdown(opts: argparse.Namespace) -> dict:
    from plinth.stats.drift import drift_report
    from plinth.stats.profile import profile

    ref, ref_s, ref_cpu = _timed(profile, opts.reference, sample_size=opts.sample_size)
    cur, cur_s, cur_cpu = _timed(profile, opts.current, sample_size=opts.sample_size)
    report, tests_s, tests_cpu = _timed(drift_report, ref, cur, preset=opts.preset)
    # Per column test times (drift on the two profiles, one column at a time).
    per_column: dict[str, float] = {}
    for name in ref.columns:
        _r, s, _c = _timed(drift_report, ref, cur, preset=opts.preset, columns=[name])
        per_column[name] = s
    slowest = sorted(per_column.items(), key=lambda kv: -kv[1])[:8]
    prof = cProfile.Profile()
    w0 = time.perf_counter()
    prof.enable()
    drift_report(opts.reference, opts.current, preset=opts.preset)
    prof.disable()
    profiled_s = time.perf_counter() - w0
    if opts.cprofile:
        prof.dump_stats(opts.cprofile)
    kinds: dict[str, float] = {}
    for name, s in per_column.items():
        kind = ref.columns[name].kind
        kinds[kind] = kinds.get(kind, 0.0) + s
    return {
        "figures": {
            "profile_reference_s": ref_s,
            "profile_reference_cpu_s": ref_cpu,
            "profile_current_s": cur_s,
            "profile_current_cpu_s": cur_cpu,
            "tests_on_profiles_s": tests_s,
            "tests_on_profiles_cpu_s": tests_cpu,
            "under_cprofile_s": profiled_s,
            "peak_rss_mb": _rss_mb(),
        },
        "tests_by_kind_s": kinds,
        "slowest_columns_s": slowest,
        "drifted_columns": int(report.drifted_columns),
        "top_tottime": _top(prof, "tottime", 20),
        "top_cumtime": _top(prof, "cumulative", 25),
    }


def profile_delta(opts: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    from plinth.stats.profile import profile_delta as run

    import_s = time.perf_counter() - t0
    rss_import = _rss_mb()
    prof, wall, cpu = _timed(run, opts.uri)
    cols = {
        name: {
            "kind": c.kind,
            "count": c.count,
            "nulls": c.nulls,
            "mean": c.mean,
            "distinct": c.distinct,
        }
        for name, c in prof.columns.items()
    }
    return {
        "figures": {
            "import_s": import_s,
            "total_s": wall,
            "cpu_s": cpu,
            "peak_rss_mb": _rss_mb(),
            "rss_after_import_mb": rss_import,
            "rows": prof.rows,
        },
        "columns": cols,
    }


WORKLOADS = {"drift": drift, "breakdown": breakdown, "profile_delta": profile_delta}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--preset", default="evidently")
    ap.add_argument("--reference")
    ap.add_argument("--current")
    ap.add_argument("--uri")
    ap.add_argument("--sample-size", type=int, default=5000)
    ap.add_argument("--cprofile", default=None, help="also dump the cProfile stats here")
    opts = ap.parse_args(argv)
    result = WORKLOADS[opts.workload](opts)
    import plinth

    result.update(
        {
            "tool": "plinth",
            "workload": opts.workload,
            "version": getattr(plinth, "__version__", "?"),
            "libs": _libs(),
        }
    )
    sys.stdout.flush()
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
