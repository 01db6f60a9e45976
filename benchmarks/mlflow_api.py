"""MLflow-API benchmark: the official ``mlflow`` client against ``plinth server`` and against
``mlflow server``, the same calls and the same data, one run.

    .venv/bin/python benchmarks/mlflow_api.py            # full (about 3 minutes)
    .venv/bin/python benchmarks/mlflow_api.py --quick    # smoke run (about 1-2 minutes)

The client and MLflow's server come from the MLflow venv (``benchmarks/.venvs/mlflow``, the
one ``tracking.py`` makes, plus scikit-learn and skops); Plinth's server runs with this
interpreter (``python -m plinth server``), so a worktree's ``src/`` on PYTHONPATH is what is
measured. Each server starts on a fresh SQLite store with local artifacts, on loopback, and
is left to settle before the workload (``_mlflow_api_client.py``, one process) runs
against it. The table is printed and also written, as plain text, to
``benchmarks/.work/last-mlflow_api.txt``.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from _common import Row

import tracking as T

MLFLOW_EXTRA = ("scikit-learn", "pandas", "skops")
WORKER = C.BENCH_DIR / "_mlflow_api_client.py"
FULL_RUNS = 100
QUICK_RUNS = 20
WORKER_TIMEOUT = 900


def _mlflow_python() -> Path:
    py = C.ensure_venv(T.MLFLOW_VENV, T.MLFLOW_REQUIREMENTS, check_import="mlflow")
    if not C._can_import(py, "sklearn, pandas, skops"):
        C.log(f"pip install {' '.join(MLFLOW_EXTRA)} into {T.MLFLOW_VENV} (first run only)")
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *MLFLOW_EXTRA],
            check=True,
            capture_output=True,
        )
    return py


def _server_command(tool: str, mlflow_py: Path, port: int, tmp: Path) -> list[str]:
    if tool == "plinth":
        return [
            sys.executable,
            "-m",
            "plinth",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    return [
        str(mlflow_py.with_name("mlflow")),
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


def run_against(tool: str, mlflow_py: Path, n: int, keep: bool) -> dict:
    """Starts ``tool``'s server on a fresh store, runs the client workload against it."""
    import shutil

    tmp = C.WORK_DIR / "tmp" / f"mlflow_api-{tool}-{n}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "server-home").mkdir(parents=True)
    port = C.free_port()
    env = {
        "PLINTH_HOME": str(tmp / "server-home"),
        "PLINTH_URI": "",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    t0 = time.perf_counter()
    proc = C.start_server(_server_command(tool, mlflow_py, port, tmp), env, tmp / "server.log")
    try:
        try:
            C.wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=90, proc=proc)
        except Exception as exc:
            log = (tmp / "server.log").read_text(errors="replace")
            raise RuntimeError(f"{exc}\n{C._tail(log, 10)}") from exc
        ready = time.perf_counter() - t0
        C.wait_tree_idle(proc.pid, max_wait=30)
        processes = len(C.tree_pids(proc.pid))
        C.log(f"{tool} server ready in {ready:.1f} s ({processes} processes); running the client")
        result = C.run_worker(
            mlflow_py,
            WORKER,
            ["--tracking-uri", f"http://127.0.0.1:{port}", "--n", str(n), "--tmp", str(tmp / "c")],
            timeout=WORKER_TIMEOUT,
        )
        result["figures"]["ready_s"] = ready
        result["figures"]["processes"] = processes
        result["figures"]["rss_after_mb"] = C.tree_rss_bytes(proc.pid) / 2**20
        return result
    finally:
        C.stop_server(proc)
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "mlflow")
    opts = C.parse_runner_options(ap, argv, "mlflow_api")
    n = QUICK_RUNS if opts.quick else FULL_RUNS
    started = time.perf_counter()
    errors: list[str] = []
    mlflow_py = _mlflow_python()  # the client runs from it on both sides

    results: dict[str, dict | None] = {}
    busy: list[float] = []
    for tool in ("plinth", "mlflow"):
        if tool == "mlflow" and opts.no_mlflow:
            results[tool] = None
            continue
        busy.append(
            C.wait_system_quiet(opts.wait_quiet) if opts.wait_quiet > 0 else C.system_busy(0.5)
        )
        try:
            results[tool] = run_against(tool, mlflow_py, n, opts.keep)
        except Exception as exc:
            line = C.key_error_line(str(exc))
            C.log(f"{tool} FAILED: {line}")
            errors.append(f"{tool}: {line}")
            results[tool] = None
            continue
        res = results[tool] or {}
        if not res.get("verified"):
            errors.append(f"{tool}: NOT verified: {res.get('checks')}")
        C.log(f"{tool} done in {res['figures']['total_s']:.1f} s")

    p, m = results["plinth"], results["mlflow"]

    def row(label: str, key: str, unit: str, higher: bool, fmt: str, note: str = "") -> Row:
        return Row(label, C.fig(p, key), C.fig(m, key), unit, higher, note=note, fmt=fmt)

    one, two = "{:,.1f}", "{:,.2f}"
    rows = [
        row(f"{n} runs: create, log_batch, terminate", "runs_per_s", "runs/s", True, one,
            "10 params + 3 metrics x 100 steps + 1 tag in one log_batch per run"),
        row("log_metric, one call per point", "log_metric_calls_per_s", "calls/s", True, one,
            "200 calls, synchronous"),
        row("log_artifacts (21 files, 20.1 MB)", "artifacts_up_mb_per_s", "MB/s", True, one),
        row("list_artifacts x 20", "artifacts_list_s", "s", False, two),
        row("download_artifacts (the same folder)", "artifacts_down_mb_per_s", "MB/s", True, one),
        row("search_runs, metric + param filter, ordered", "search_median_ms", "ms", False, one,
            "median of 20"),
        row("get_metric_history (100 points)", "history_median_ms", "ms", False, one,
            "median of 20"),
        row("mlflow.sklearn.log_model", "log_model_s", "s", False, two,
            "pip_requirements given (no local inference)"),
        row("register_model + set alias", "register_s", "s", False, two),
        row('pyfunc.load_model("models:/bench@champion") + predict', "load_median_s", "s",
            False, two, "median of 3, fresh folder each"),
        row("the whole workload", "total_s", "s", False, one),
        row("server: start to ready", "ready_s", "s", False, two),
        row("server: RSS of process tree after the workload", "rss_after_mb", "MB", False,
            "{:,.0f}", _procs(p, m)),
    ]  # fmt: skip
    mlflow_version = (p or m or {}).get("version", "?")
    machine = C.machine_info()
    title = (
        f"Plinth vs MLflow — the mlflow client against each server ({'quick' if opts.quick else 'full'};"
        f" speed-up > 1{C.TIMES} favours Plinth)"
    )
    footer = [
        f"versions: Python {platform.python_version()}, mlflow client and server "
        f"{mlflow_version}, plinth {version('plinth')}",
        f"machine: {machine['nproc']} CPUs, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        "servers: `plinth server` (its defaults) and `mlflow server` (its defaults: uvicorn "
        "with 4 workers), each on a fresh SQLite store with local artifacts, loopback only; "
        "the same client process workload against each, results checked (search hits, "
        "downloaded bytes, predictions).",
        C.busy_line(busy),
    ]
    return C.finish_report(rows, title, footer, opts, errors, started)


def _procs(p: dict | None, m: dict | None) -> str:
    pp, mp = C.fig(p, "processes"), C.fig(m, "processes")
    return f"processes: Plinth {pp or 0:.0f}, MLflow {mp or 0:.0f}"


if __name__ == "__main__":
    sys.exit(main())
