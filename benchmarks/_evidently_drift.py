"""Evidently worker of the monitoring benchmark (runs in benchmarks/.venvs/evidently).

    benchmarks/.venvs/evidently/bin/python benchmarks/_evidently_drift.py \\
        --reference R.parquet --current C.parquet

Reads both Parquet files into pandas frames, then runs Evidently 0.7's data drift preset,
``Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur)``, and prints on
its last stdout line a JSON object: wall times (reading, the report, both), this process's
peak RSS (``ru_maxrss``) and, per column, Evidently's test name, threshold, statistic and
verdict, read from the snapshot's ``ValueDrift`` results (the verdict by the rule of the
test: a distance at or above its threshold, a p-value below it), and the preset's own
``DriftedColumnsCount`` to check them against.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


#: Evidently's display name of a test -> (Plinth's test name, distance?) : a distance
#: flags drift when the statistic >= threshold, a p-value when it is < threshold (as in
#: evidently.legacy.calculations.stattests).
TESTS = {
    "Wasserstein distance (normed)": ("wasserstein", True),
    "Jensen-Shannon distance": ("jensenshannon", True),
    "PSI": ("psi", True),
    "K-S p_value": ("ks", False),
    "chi-square p_value": ("chisquare", False),
    "Z-test p_value": ("ztest", False),
    "Anderson-Darling": ("anderson", False),
}


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _columns(snapshot) -> tuple[dict[str, dict], dict]:
    """Per column: test, threshold, statistic, drifted (from the snapshot's ValueDrift
    results); and the preset's own DriftedColumnsCount."""
    out: dict[str, dict] = {}
    count: dict = {}
    for metric in snapshot.dict().get("metrics", []):
        cfg = metric.get("config", {})
        kind = str(cfg.get("type", ""))
        if kind.endswith("DriftedColumnsCount"):
            count = dict(metric.get("value") or {})
        if not kind.endswith("ValueDrift"):
            continue
        display = str(cfg.get("method"))
        test, distance = TESTS.get(display, (display, True))
        score, threshold = float(metric["value"]), float(cfg["threshold"])
        out[cfg["column"]] = {
            "test": test,
            "evidently_test": display,
            "threshold": threshold,
            "statistic": score,
            "drifted": score >= threshold if distance else score < threshold,
        }
    return out, count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--current", required=True)
    opts = ap.parse_args(argv)

    t0 = time.perf_counter()
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    import_s = time.perf_counter() - t0
    rss_after_import = _rss_mb()

    t0, c0 = time.perf_counter(), _cpu_s()
    ref = pd.read_parquet(opts.reference)
    cur = pd.read_parquet(opts.current)
    read_s, read_cpu = time.perf_counter() - t0, _cpu_s() - c0
    rss_after_read = _rss_mb()

    t0, c0 = time.perf_counter(), _cpu_s()
    snapshot = Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur)
    report_s, report_cpu = time.perf_counter() - t0, _cpu_s() - c0

    t0 = time.perf_counter()
    columns, drifted_count = _columns(snapshot)
    extract_s = time.perf_counter() - t0

    import evidently

    result = {
        "tool": "evidently",
        "version": evidently.__version__,
        "libs": f"pandas {pd.__version__}, python {platform.python_version()}",
        "rows": [len(ref), len(cur)],
        "figures": {
            "import_s": import_s,
            "read_s": read_s,
            "report_s": report_s,
            "total_s": read_s + report_s,
            "extract_s": extract_s,
            "read_cpu_s": read_cpu,
            "report_cpu_s": report_cpu,
            "cpu_s": read_cpu + report_cpu,
            "peak_rss_mb": _rss_mb(),
            "rss_after_import_mb": rss_after_import,
            "rss_after_read_mb": rss_after_read,
            "frames_mb": (ref.memory_usage(deep=True).sum() + cur.memory_usage(deep=True).sum())
            / 2**20,
        },
        "columns": columns,
        "drifted_columns": drifted_count,
    }
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
