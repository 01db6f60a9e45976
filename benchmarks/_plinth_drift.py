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
  the two profiles, timed apart; reading the reference's batches alone; the column
  scanners alone (one thread) per kind of column; then the direct call again under
  cProfile with one worker thread (cProfile sees only its own thread), its top functions.
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


def _read_only(path: str) -> tuple[float, float]:
    """Wall and CPU seconds to read the file's batches the way profile() does, no scan."""
    import pyarrow.dataset as ds

    w0, c0 = time.perf_counter(), _cpu_s()
    for _batch in ds.dataset(path, format="parquet").to_batches(batch_size=131_072):
        pass
    return time.perf_counter() - w0, _cpu_s() - c0


def _scan_by_kind(path: str, sample_size: int) -> dict[str, float]:
    """Seconds of the column scanners alone (one thread, batches read beforehand), summed
    per kind of column in this benchmark's data (first letter of the name)."""
    import pyarrow.dataset as ds

    from plinth.stats._scan import Scanner

    dataset = ds.dataset(path, format="parquet")
    kinds = {
        "n": "normal",
        "f": "normal+nulls",
        "l": "lognormal",
        "i": "integer",
        "d": "few floats",
        "c": "string",
        "b": "bool",
    }
    out: dict[str, float] = {}
    scanners = {
        n: Scanner(n, dataset.schema.field(n).type, sample_size, 0) for n in dataset.schema.names
    }
    for batch in dataset.to_batches(batch_size=131_072, batch_readahead=1, fragment_readahead=1):
        for name, scanner in scanners.items():
            t0 = time.perf_counter()
            scanner.add(batch.column(name))
            kind = kinds.get(name[0], "other")
            out[kind] = out.get(kind, 0.0) + time.perf_counter() - t0
    return out


def breakdown(opts: argparse.Namespace) -> dict:
    import plinth.stats.profile as profile_module
    from plinth.stats.drift import drift_report
    from plinth.stats.profile import profile

    ref, ref_s, ref_cpu = _timed(profile, opts.reference, sample_size=opts.sample_size)
    cur, cur_s, cur_cpu = _timed(profile, opts.current, sample_size=opts.sample_size, seed=1)
    report, tests_s, tests_cpu = _timed(drift_report, ref, cur, preset=opts.preset)
    read_s, read_cpu = _read_only(opts.reference)
    scan = _scan_by_kind(opts.reference, opts.sample_size)
    # cProfile sees only the thread it runs in: profile with one worker thread.
    cpu_count = profile_module.os.cpu_count
    profile_module.os.cpu_count = lambda: 1  # type: ignore[assignment]
    prof = cProfile.Profile()
    w0 = time.perf_counter()
    prof.enable()
    drift_report(opts.reference, opts.current, preset=opts.preset)
    prof.disable()
    profiled_s = time.perf_counter() - w0
    profile_module.os.cpu_count = cpu_count  # type: ignore[assignment]
    if opts.cprofile:
        prof.dump_stats(opts.cprofile)
    return {
        "figures": {
            "profile_reference_s": ref_s,
            "profile_reference_cpu_s": ref_cpu,
            "profile_current_s": cur_s,
            "profile_current_cpu_s": cur_cpu,
            "tests_on_profiles_s": tests_s,
            "tests_on_profiles_cpu_s": tests_cpu,
            "read_reference_only_s": read_s,
            "read_reference_only_cpu_s": read_cpu,
            "scan_reference_serial_s": sum(scan.values()),
            "one_thread_under_cprofile_s": profiled_s,
            "peak_rss_mb": _rss_mb(),
        },
        "scan_by_kind_s": scan,
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
