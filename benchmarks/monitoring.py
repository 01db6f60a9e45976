"""Monitoring benchmark: Plinth's drift report against Evidently 0.7's data drift preset,
same data, same machine, one run; and the profile of a 10,000,000-row Delta table.

    .venv/bin/python benchmarks/monitoring.py            # full (about 10-15 minutes)
    .venv/bin/python benchmarks/monitoring.py --quick    # 100,000 rows only (about 2 minutes)

Data (``_monitoring_data.py``; seeded, written once under ``benchmarks/.work/monitoring/``):
a reference and a current Parquet file of N rows x 50 columns, N = 100,000 and 1,000,000:
40 numeric (normal, lognormal, integer-valued, a few with at most 5 distinct values, a 0/1
column, two with 2 % nulls) and 10 categorical (9 string columns of 3-50 categories, one
boolean). The current has drift of known size in 11 columns (8 numeric mean shifts of
0.05-0.5 reference std, 3 categorical share changes); the other 39 are drawn again from the
reference's distribution. And a 10,000,000-row x 10-column Delta table.

Workloads, each in its own process (so peak RSS is the workload's own):
- Evidently (``_evidently_drift.py`` in ``benchmarks/.venvs/evidently``, evidently 0.7.23):
  ``pd.read_parquet`` both files, then ``Report([DataDriftPreset()]).run(...)``; times with
  and without the reading, peak RSS, per column test, statistic and verdict.
- Plinth (``_plinth_drift.py`` with this interpreter and this checkout's ``src``):
  ``drift_report(reference_path, current_path, preset="evidently")`` and
  ``preset="plinth"``, straight from the files; a breakdown of where the time goes
  (profiling each file, the tests, cProfile's top functions); ``profile_delta`` of the
  Delta table.

The per-column verdicts of the ``evidently`` preset are compared with Evidently's (same test,
same verdict; each difference listed with both statistics). The table is printed and written
as plain text to ``benchmarks/.work/last-monitoring.txt``; every worker's JSON to
``benchmarks/.work/monitoring/results-*.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import _monitoring_data as D
from _common import Row

EVIDENTLY_VENV = C.VENVS_DIR / "evidently"
# evidently 0.7.23 imports pandas internals that pandas 3 removed: pin pandas 2 beside it.
EVIDENTLY_REQUIREMENTS = (
    ("evidently==0.7.23", "pandas>=2.2,<3", "pyarrow"),
    ("/tmp/dl/evidently-0.7.23-py3-none-any.whl", "pandas>=2.2,<3", "pyarrow"),
)
PLINTH_WORKER = C.BENCH_DIR / "_plinth_drift.py"
EVIDENTLY_WORKER = C.BENCH_DIR / "_evidently_drift.py"
DATA_DIR = C.WORK_DIR / "monitoring"
HEADERS = ["workload", "Plinth", "Evidently", "speed-up", "unit", "target", "note"]

FULL_SIZES = (100_000, 1_000_000)
QUICK_SIZES = (100_000,)
DELTA_ROWS = 10_000_000
QUICK_DELTA_ROWS = 1_000_000
EVIDENTLY_TIMEOUT = {100_000: 300, 1_000_000: 900}  # 15 minutes at 1M, then stopped
PLINTH_TIMEOUT = 600


# --------------------------------------------------------------------------- running workers


class Runner:
    def __init__(self, opts) -> None:
        self.opts = opts
        self.errors: list[str] = []
        self.busy: list[float] = []
        self.stopped: dict[int, float] = {}  # size -> seconds Evidently ran before stopped
        self.evidently_py: Path | None = None

    def _busy(self) -> float:
        q = self.opts.wait_quiet
        busy = C.wait_system_quiet(q) if q > 0 else C.system_busy(0.5)
        self.busy.append(busy)
        return busy

    def _save(self, name: str, res: dict) -> None:
        (DATA_DIR / f"results-{name}.json").write_text(json.dumps(res, indent=1, default=str))

    def plinth(self, name: str, args: list[str]) -> dict | None:
        busy = self._busy()
        C.log(f"plinth    {name} ... (CPUs {busy:.0%} busy before it)")
        src = str(C.REPO_DIR / "src")
        env = {"PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
        t0 = time.perf_counter()
        try:
            res = C.run_worker(sys.executable, PLINTH_WORKER, args, env=env, timeout=PLINTH_TIMEOUT)
        except C.WorkerError as exc:
            line = C.key_error_line(str(exc))
            C.log(f"plinth    {name} FAILED: {line}")
            self.errors.append(f"plinth {name}: {line}")
            return None
        res["busy_before"] = busy
        C.log(f"plinth    {name} done in {time.perf_counter() - t0:.1f} s: {_figs(res)}")
        self._save(f"plinth-{name}", res)
        return res

    def plinth_median(self, name: str, args: list[str], repeat: int) -> dict | None:
        """The run with the median wall time of ``repeat`` fresh processes (the machine may
        be shared); its figures gain the range of the wall and CPU times and the highest
        peak RSS of all runs."""
        runs = [r for r in (self.plinth(f"{name}-{i + 1}", args) for i in range(repeat)) if r]
        if not runs:
            return None
        runs.sort(key=lambda r: r["figures"]["total_s"])
        mid = dict(runs[len(runs) // 2])
        figs = dict(mid["figures"])
        for key in ("total_s", "cpu_s"):
            values = [r["figures"][key] for r in runs]
            figs[f"{key}_min"], figs[f"{key}_max"] = min(values), max(values)
        figs["peak_rss_mb"] = max(r["figures"]["peak_rss_mb"] for r in runs)
        mid["figures"], mid["runs"] = figs, len(runs)
        return mid

    def evidently(self, rows: int, ref: Path, cur: Path) -> dict | None:
        if self.evidently_py is None:
            return None
        cache = DATA_DIR / f"results-evidently-{rows}.json"
        if self.opts.reuse_evidently and cache.exists():
            res = json.loads(cache.read_text())
            if res.get("spec") == D.spec_hash(rows):
                C.log(f"evidently {rows:,} rows: reusing {cache} (measured {res.get('at')})")
                res["reused"] = True
                return res
        busy = self._busy()
        timeout = EVIDENTLY_TIMEOUT.get(rows, 900)
        C.log(f"evidently {rows:,} rows ... (CPUs {busy:.0%} busy; stopped after {timeout} s)")
        t0 = time.perf_counter()
        try:
            res = C.run_worker(
                self.evidently_py,
                EVIDENTLY_WORKER,
                ["--reference", str(ref), "--current", str(cur)],
                timeout=timeout,
            )
        except C.WorkerError as exc:
            line = C.key_error_line(str(exc))
            if "timed out" in str(exc):
                self.stopped[rows] = time.perf_counter() - t0
            C.log(f"evidently {rows:,} rows FAILED: {line}")
            self.errors.append(f"evidently {rows:,} rows: {line}")
            return None
        res.update(busy_before=busy, spec=D.spec_hash(rows), at=time.strftime("%Y-%m-%d %H:%M"))
        C.log(f"evidently {rows:,} rows done in {time.perf_counter() - t0:.1f} s: {_figs(res)}")
        self._save(f"evidently-{rows}", res)
        return res


def _figs(res: dict) -> str:
    return ", ".join(
        f"{k}={v:,.4g}" for k, v in res.get("figures", {}).items() if isinstance(v, int | float)
    )


def _evidently_python(opts) -> Path | None:
    if opts.no_evidently:
        return None
    try:
        return C.ensure_venv(EVIDENTLY_VENV, EVIDENTLY_REQUIREMENTS, check_import="evidently")
    except Exception as exc:  # the table still shows Plinth
        C.log(f"Evidently venv unavailable: {C.key_error_line(str(exc))}")
        return None


# --------------------------------------------------------------------------- comparing


def compare(ev: dict | None, pl: dict | None) -> dict:
    """Per column: same test? same verdict? Differences listed with both statistics."""
    out: dict = {"columns": 0, "same_test": 0, "same_verdict": 0, "diffs": []}
    if not ev or not pl:
        return out
    ecols, pcols = ev.get("columns", {}), pl.get("columns", {})
    for name, e in ecols.items():
        out["columns"] += 1
        p = pcols.get(name)
        if p is None:
            out["diffs"].append(f"{name}: not tested by Plinth (Evidently: {e['test']})")
            continue
        same_test = p["test"] == e["test"]
        same_verdict = p["drifted"] == e["drifted"]
        out["same_test"] += same_test
        out["same_verdict"] += same_verdict
        if not (same_test and same_verdict):
            out["diffs"].append(
                f"{name}: Evidently {e['test']} {e['statistic']:.4g} "
                f"{'drift' if e['drifted'] else 'no drift'} (threshold {e['threshold']:g}); "
                f"Plinth {p['test']} {_stat(p)} {'drift' if p['drifted'] else 'no drift'} "
                f"(threshold {_g(p.get('threshold'))}, on {p.get('method')}"
                + (f" n={p['sample_size']}" if p.get("sample_size") else "")
                + ")"
                + (f" error: {p['error']}" if p.get("error") else "")
            )
    extra = sorted(set(pcols) - set(ecols))
    if extra:
        out["diffs"].append(f"tested by Plinth only: {', '.join(extra)}")
    return out


def _g(v) -> str:
    return "—" if v is None else f"{v:g}"


def _stat(p: dict) -> str:
    s = "—" if p.get("statistic") is None else f"{p['statistic']:.4g}"
    if p.get("p_value") is not None and p.get("p_value") != p.get("statistic"):
        s += f" (p {p['p_value']:.3g})"
    return s


def planted(res: dict | None) -> str:
    """How the verdicts meet the planted drift: planted columns flagged, others flagged."""
    if not res or not res.get("columns"):
        return "—"
    cols = res["columns"]
    flagged = {n for n, c in cols.items() if c.get("drifted")}
    hit = sorted(flagged & set(D.DRIFTED))
    false = sorted(flagged - set(D.DRIFTED))
    missed = sorted(set(D.DRIFTED) - flagged)
    return (
        f"{len(hit)}/{len(D.DRIFTED)} planted flagged"
        + (f" (not: {', '.join(missed)})" if missed else "")
        + f"; {len(false)}/{len(cols) - len(D.DRIFTED)} undrifted flagged"
        + (f" ({', '.join(false)})" if false else "")
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "evidently")
    ap.add_argument(
        "--reuse-evidently",
        action="store_true",
        help="reuse Evidently's results of an earlier run on the same data (it takes minutes)",
    )
    ap.add_argument("--no-delta", action="store_true", help="skip the Delta profile")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each Plinth workload (fresh processes); the median is reported",
    )
    ap.add_argument("--no-breakdown", action="store_true", help="skip the time breakdown")
    opts = C.parse_runner_options(ap, argv, "monitoring")
    started = time.perf_counter()
    sizes = QUICK_SIZES if opts.quick else FULL_SIZES
    delta_rows = QUICK_DELTA_ROWS if opts.quick else DELTA_ROWS

    run = Runner(opts)
    run.evidently_py = _evidently_python(opts)
    files = {n: D.ensure_parquet(DATA_DIR, n, log=C.log) for n in sizes}

    rows: list[Row] = []
    notes: list[str] = []
    breakdowns: list[str] = []
    s3 = "{:,.2f}"
    for n in sizes:
        ref, cur = files[n]
        io = ["--reference", str(ref), "--current", str(cur)]
        ev = run.evidently(n, ref, cur)
        p_ev = run.plinth_median(
            f"drift-evidently-{n}",
            ["--workload", "drift", "--preset", "evidently", *io],
            opts.repeat,
        )
        p_pl = run.plinth_median(
            f"drift-plinth-{n}", ["--workload", "drift", "--preset", "plinth", *io], opts.repeat
        )
        bd = None
        if not opts.no_breakdown:
            bd = run.plinth(
                f"breakdown-{n}",
                [
                    "--workload",
                    "breakdown",
                    "--preset",
                    "evidently",
                    *io,
                    "--cprofile",
                    str(DATA_DIR / f"cprofile-{n}.prof"),
                ],
            )
        big = n >= 1_000_000
        ev_note = ""
        if ev is None and n in run.stopped:
            ev_note = f"Evidently stopped after {run.stopped[n]:,.0f} s"
        elif ev and ev.get("reused"):
            ev_note = f"Evidently reused from {ev.get('at')}"
        cmp_ = compare(ev, p_ev)
        rows += [
            Row(
                f"{n:,} rows: drift report, preset evidently, from Parquet",
                C.fig(p_ev, "total_s"),
                C.fig(ev, "total_s"),
                "s",
                higher_is_better=False,
                target=f"≥ 50{C.TIMES}, < 6 s" if big else "",
                fmt=s3,
                note=f"Plinth {_range(p_ev, 'total_s')}; Evidently: read_parquet + Report.run"
                + (f"; {ev_note}" if ev_note else ""),
            ),
            Row(
                f"{n:,} rows: the same, Evidently without reading",
                C.fig(p_ev, "total_s"),
                C.fig(ev, "report_s"),
                "s",
                higher_is_better=False,
                fmt=s3,
                note="Evidently: Report.run on frames in memory; Plinth still reads the files",
            ),
            Row(
                f"{n:,} rows: CPU time (user + system), preset evidently",
                C.fig(p_ev, "cpu_s"),
                C.fig(ev, "cpu_s"),
                "s",
                higher_is_better=False,
                fmt=s3,
                note=f"Plinth {_range(p_ev, 'cpu_s')}; both including reading the files",
            ),
            Row(
                f"{n:,} rows: peak RSS, preset evidently",
                C.fig(p_ev, "peak_rss_mb"),
                C.fig(ev, "peak_rss_mb"),
                "MB",
                higher_is_better=False,
                target="< 1,000 MB" if big else "",
                note=_rss_note(p_ev, ev),
            ),
            Row(
                f"{n:,} rows: drift report, preset plinth",
                C.fig(p_pl, "total_s"),
                C.fig(ev, "total_s"),
                "s",
                higher_is_better=False,
                fmt=s3,
                note=f"{_range(p_pl, 'total_s')}; peak RSS {_mb(p_pl)}; "
                f"{p_pl.get('summary') if p_pl else '—'}",
            ),
            Row(
                f"{n:,} rows: same test / same verdict as Evidently",
                float(cmp_["same_test"]) if ev and p_ev else None,
                float(cmp_["same_verdict"]) if ev and p_ev else None,
                f"of {cmp_['columns']}",
                target="all",
                note="Plinth column: same test; Evidently column: same verdict",
                fmt="{:,.0f}",
            ),
        ]
        rows[-1].ratio = lambda: None  # type: ignore[method-assign]  # counts, not a ratio
        notes.append(
            f"{n:,} rows, planted drift in {len(D.DRIFTED)} columns ({', '.join(D.DRIFTED)}): "
            f"Evidently {planted(ev)}; Plinth evidently preset {planted(p_ev)}; "
            f"Plinth plinth preset {planted(p_pl)}"
        )
        if ev and p_ev:
            ec, pc = ev.get("drifted_columns", {}).get("count"), p_ev["figures"]["drifted_columns"]
            notes.append(f"{n:,} rows: drifted columns: Evidently {_g(ec)}, Plinth {pc}")
        for d in cmp_["diffs"]:
            notes.append(f"{n:,} rows, verdict difference: {d}")
        for d in compare(ev, p_pl)["diffs"]:
            notes.append(f"{n:,} rows, plinth preset vs Evidently (by design): {d}")
        if bd:
            breakdowns += _breakdown_lines(n, bd, p_ev)

    if not opts.no_delta:
        uri = DATA_DIR / f"delta_{delta_rows}"
        info = D.ensure_delta(uri, delta_rows, log=C.log)
        pd_ = run.plinth_median(
            f"profile-delta-{delta_rows}",
            ["--workload", "profile_delta", "--uri", str(uri)],
            opts.repeat,
        )
        arrow_mb = info["arrow_bytes"] / 2**20
        rows += [
            Row(
                f"profile_delta of {delta_rows:,} rows x 10 columns",
                C.fig(pd_, "total_s"),
                None,
                "s",
                higher_is_better=False,
                target="< 10 s" if delta_rows >= DELTA_ROWS else "",
                fmt=s3,
                note=f"{_range(pd_, 'total_s')}; CPU {_f(C.fig(pd_, 'cpu_s'))} s; rows profiled "
                f"{_f(C.fig(pd_, 'rows'), '{:,.0f}')}",
            ),
            Row(
                "profile_delta: peak RSS",
                C.fig(pd_, "peak_rss_mb"),
                None,
                "MB",
                higher_is_better=False,
                target="bounded",
                note=f"the table in memory (Arrow): {arrow_mb:,.0f} MB; on disk "
                f"{info['disk_bytes'] / 2**20:,.0f} MB; RSS after imports "
                f"{_f(C.fig(pd_, 'rss_after_import_mb'), '{:,.0f}')} MB",
            ),
        ]
        if pd_ and pd_.get("figures", {}).get("rows") != delta_rows:
            run.errors.append(
                f"profile_delta counted {pd_['figures'].get('rows')} rows, not {delta_rows}"
            )

    machine = C.machine_info()
    versions = [f"Python {sys.version.split()[0]}"]
    for res_name in sorted(DATA_DIR.glob("results-evidently-*.json"))[:1]:
        ev_any = json.loads(res_name.read_text())
        versions.append(f"Evidently {ev_any.get('version')} ({ev_any.get('libs')})")
    title = (
        f"Plinth vs Evidently — monitoring ({'quick' if opts.quick else 'full'}; speed-up = how "
        f"many times Plinth is faster/leaner, > 1{C.TIMES} favours Plinth)"
    )
    footer = [
        "versions: " + ", ".join(versions),
        f"machine: {machine['nproc']} CPUs, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        "data: reference and current Parquet files (zstd, row groups of 131,072) of N rows x 50 "
        "columns (40 numeric, 10 categorical), seed 14; Evidently reads them with "
        "pandas.read_parquet, Plinth is given the paths.",
        "planted drift (Wasserstein distance in reference std / Jensen-Shannon distance, "
        "Evidently's tests at these sizes, threshold 0.1): "
        + ", ".join(
            f"{c.name} {D.expected_statistic(c):.3g}" for c in D.COLUMNS if c.name in D.DRIFTED
        )
        + "; so the 8 at or above 0.1 should be flagged. At these sizes (references over "
        "1,000 rows) the plinth preset runs the same distance tests; it differs in its column "
        "typing (an integer column with 6-10 distinct values is numeric: Wasserstein) and "
        "uses Benjamini-Hochberg only across p-value tests.",
        "times: wall time of the call in its process (imports excluded); CPU time = user + "
        "system of the whole process over that time (all threads). Plinth: the median of "
        f"{opts.repeat} fresh processes (peak RSS: the highest); Evidently: one run.",
        *notes,
        *breakdowns,
        C.busy_line(run.busy),
    ]
    return C.finish_report(rows, title, footer, opts, run.errors, started, headers=HEADERS)


def _f(v: float | None, fmt: str = "{:,.2f}") -> str:
    return "—" if v is None else fmt.format(v)


def _range(res: dict | None, key: str) -> str:
    """'median of 3 runs (1.9-2.4 s)' for a result of Runner.plinth_median."""
    if not res or "runs" not in res:
        return "one run"
    f = res["figures"]
    lo, hi = f.get(f"{key}_min"), f.get(f"{key}_max")
    if res["runs"] < 2 or lo is None or hi is None:
        return "one run"
    return f"median of {res['runs']} runs ({lo:,.2f}-{hi:,.2f} s)"


def _mb(res: dict | None) -> str:
    v = C.fig(res, "peak_rss_mb")
    return "—" if v is None else f"{v:,.0f} MB"


def _rss_note(p: dict | None, e: dict | None) -> str:
    parts = []
    if p:
        parts.append(f"Plinth after imports {_f(C.fig(p, 'rss_after_import_mb'), '{:,.0f}')} MB")
    if e:
        parts.append(
            f"Evidently after imports {_f(C.fig(e, 'rss_after_import_mb'), '{:,.0f}')} MB, "
            f"frames {_f(C.fig(e, 'frames_mb'), '{:,.0f}')} MB"
        )
    return "; ".join(parts)


def _breakdown_lines(n: int, bd: dict, p_ev: dict | None) -> list[str]:
    f = bd.get("figures", {})
    return [
        f"{n:,} rows, where Plinth's time goes (preset evidently; a separate process): "
        f"profile(reference) {_f(f.get('profile_reference_s'))} s "
        f"(CPU {_f(f.get('profile_reference_cpu_s'))}), profile(current) "
        f"{_f(f.get('profile_current_s'))} s (CPU {_f(f.get('profile_current_cpu_s'))}), "
        f"the tests on the two profiles {_f(f.get('tests_on_profiles_s'), '{:,.3f}')} s; "
        f"the direct call {_f(C.fig(p_ev, 'total_s'))} s (CPU {_f(C.fig(p_ev, 'cpu_s'))})",
        f"  reading the reference's batches alone {_f(f.get('read_reference_only_s'))} s "
        f"(CPU {_f(f.get('read_reference_only_cpu_s'))}); its column scanners alone, one "
        f"thread, {_f(f.get('scan_reference_serial_s'))} s: "
        + ", ".join(f"{k} {v:.2f}" for k, v in bd.get("scan_by_kind_s", {}).items()),
        "  cProfile of the direct call with one worker thread "
        f"({_f(f.get('one_thread_under_cprofile_s'))} s), top by own time:",
        *[f"    {ln}" for ln in bd.get("top_tottime", [])[:14]],
    ]


if __name__ == "__main__":
    sys.exit(main())
