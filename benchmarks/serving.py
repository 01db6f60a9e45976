"""Serving benchmark: ``plinth serve`` against ``mlflow models serve``, same model, same
machine, one run; and ``plinth score`` over a million rows against the bare model.

    .venv/bin/python benchmarks/serving.py            # full (about 35 minutes)
    .venv/bin/python benchmarks/serving.py --quick    # smoke run (about 5-8 minutes)

The model is trained once, here: a scikit-learn ``RandomForestClassifier`` (100 trees,
depth 8) on 5,000 rows x 20 float features ``f0..f19`` (seed 42, 4 decimals), the usual
shape of a tabular production model (``--model logistic`` takes a ``LogisticRegression``
instead, where the server's own overhead is nearly all there is). It is pickled once;
``_plinth_serving.py`` registers it in a fresh Plinth home (``plinth.register_model``,
alias ``live``), ``_mlflow_serving.py`` logs it from the MLflow venv
(``mlflow.sklearn.log_model`` into a SQLite store, registered as ``bench`` with alias
``live``). Then, each in a worker process:

- ``serve_w1`` / ``serve_w2``: ``plinth serve models:/bench@live`` (defaults: adaptive
  micro-batching, the prediction log on) and ``mlflow models serve -m models:/bench@live
  --env-manager local``, with one and two worker processes. Before any timing, both must
  answer the same predictions as the model itself for a 1-row and a 100-row request.
  Then for 1 and 100 rows a request at 1 and 32 connections: a warm-up, then a fixed
  number of requests. The body is the same bytes for both servers: MLflow's
  ``{"dataframe_split": {"columns": [...], "data": [[...]]}}``.
- ``floor``: read the Parquet file and ``model.predict`` on all of it, in one process (the
  physical limit of batch scoring).
- ``score``: ``plinth score models:/bench@live --input <Parquet> --output <folder>`` as a
  subprocess, timed end to end, its output checked against the model's predictions.

Load generator: ``h2load`` (Debian package ``nghttp2-client``), over HTTP/1.1 keep-alive.
It sends a fixed number of requests (``-n``) over a fixed number of connections (``-c``),
is written in C on an event loop (one thread drives all connections, so it takes little
CPU from the servers on a 2-core machine) and logs every request's latency
(``--log-file``), from which p50 and p99 are computed exactly. wrk counts by duration and
hey (Go) costs several times the CPU per request, which the servers would feel here.

The table is printed and also written, as plain text, to ``benchmarks/.work/last-serving.txt``.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from _common import Row

MLFLOW_VENV = C.VENVS_DIR / "mlflow"
MLFLOW_REQUIREMENTS = (
    ("mlflow==3.18.*", "psutil"),
    ("mlflow>=3,<4", "psutil"),
)
MLFLOW_EXTRA = ("scikit-learn", "pandas")
PLINTH_WORKER = C.BENCH_DIR / "_plinth_serving.py"
MLFLOW_WORKER = C.BENCH_DIR / "_mlflow_serving.py"
SHARED = C.WORK_DIR / "serving"  # the model, bodies, Parquet input and both stores
PLAN = SHARED / "plan.json"

SEED = 42
FEATURES = 20
TRAIN_ROWS = 5_000
MODEL_NAME = "bench"
ALIAS = "live"
URI = f"models:/{MODEL_NAME}@{ALIAS}"
LOADGEN = "h2load"
LOADGEN_HINT = "h2load is needed for the serving part: apt-get install -y nghttp2-client"


@dataclass(frozen=True)
class Sizes:
    requests: int  # per case (rows a request x connections), the same for both servers
    warmup: int
    score_rows: int


FULL = Sizes(requests=3_000, warmup=300, score_rows=1_000_000)
QUICK = Sizes(requests=500, warmup=100, score_rows=100_000)
ROWS = (1, 100)  # rows a request
CONNECTIONS = (1, 32)
TIMEOUTS = {"setup": 300, "serve_w1": 1500, "serve_w2": 1500, "score": 900, "score_t1": 900,
            "floor": 600}  # fmt: skip


# --------------------------------------------------------------------------- the model


def make_data(rows: int, seed: int):
    """``(X, y)``: X a DataFrame of float64 columns ``f0..f19`` rounded to 4 decimals, y
    0/1 labels from a noisy non-linear rule."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=(rows, FEATURES)), 4)
    weights = np.random.default_rng(SEED).normal(size=FEATURES)  # one rule for all sets
    logit = values @ weights + 2 * np.sin(2 * values[:, 0]) + values[:, 1] * values[:, 2]
    y = (logit + rng.normal(scale=0.5, size=rows) > 0).astype("int64")
    return pd.DataFrame(values, columns=[f"f{i}" for i in range(FEATURES)]), y


def make_model(kind: str, X, y):
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=500).fit(X, y)
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, max_depth=8, random_state=SEED).fit(X, y)


MODEL_TEXT = {
    "forest": "RandomForestClassifier(n_estimators=100, max_depth=8)",
    "logistic": "LogisticRegression",
}


def uvicorn_extras() -> str:
    """Whether uvicorn finds its fast event loop and HTTP parser in this interpreter."""
    import importlib.util

    found = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m)]
    return f"with {' and '.join(found)}" if found else "without uvloop and httptools"


def plan() -> dict:
    return json.loads(PLAN.read_text())


def load_model(path: str):
    import pickle

    with open(path, "rb") as fh:
        return pickle.load(fh)


# --------------------------------------------------------------------------- load generation


def run_load(url: str, body: Path, requests: int, connections: int, log_file: Path) -> dict:
    """``requests`` POSTs of ``body`` over ``connections`` keep-alive connections; returns
    req/s, latency percentiles (ms) and the count of requests that did not answer 2xx."""
    cmd = [
        LOADGEN,
        "--h1",
        "-n",
        str(requests),
        "-c",
        str(connections),
        "-t",
        "1",
        "-d",
        str(body),
        "-H",
        "Content-Type: application/json",
        f"--log-file={log_file}",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    out = proc.stdout
    if proc.returncode != 0:
        raise RuntimeError(f"{LOADGEN} failed ({proc.returncode}): {proc.stderr[-500:]}")
    per_s = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    latencies = sorted(
        int(line.split("\t")[2]) / 1000 for line in log_file.read_text().splitlines() if line
    )
    good = int(ok.group(1)) if ok else 0
    return {
        "per_s": float(per_s.group(1)) if per_s else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": sum(latencies) / max(1, len(latencies)),
        "failed": requests - good,
    }


def percentile(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_xs:
        return float("nan")
    rank = max(1, -(-len(sorted_xs) * q // 100))
    return sorted_xs[int(rank) - 1]


def post_json(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def measure_server(
    command: Callable[[int], list[str]], env: dict[str, str], tmp: Path, ready_path: str, path: str
) -> dict:
    """Start a server, check its predictions, load it case by case, stop it; the worker's
    result dict."""
    p = plan()
    tmp.mkdir(parents=True, exist_ok=True)
    port = C.free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = C.start_server(command(port), env, tmp / "server.log")
    figures: dict[str, float] = {}
    checks: dict[str, object] = {}
    try:
        figures["ready_s"] = C.wait_http_ok(base + ready_path, timeout=180, proc=proc)
        C.wait_tree_idle(proc.pid)
        figures["startup_s"] = time.perf_counter() - t0
        figures["rss_idle_mb"] = C.tree_rss_bytes(proc.pid) / 1e6
        figures["processes"] = len(C.tree_pids(proc.pid))
        for rows in ROWS:
            body = Path(p["bodies"][str(rows)]).read_bytes()
            got = post_json(base + path, body).get("predictions")
            checks[f"{rows} rows"] = got == p["expected"][str(rows)]
        for rows in ROWS:
            for conns in CONNECTIONS:
                body = Path(p["bodies"][str(rows)])
                run_load(base + path, body, max(p["warmup"], conns), conns, tmp / "warmup.log")
                res = run_load(
                    base + path, body, p["requests"], conns, tmp / f"r{rows}c{conns}.log"
                )
                for k, v in res.items():
                    figures[f"{k}_r{rows}_c{conns}"] = v
                checks[f"all 2xx r{rows} c{conns}"] = res["failed"] == 0
        figures["rss_after_mb"] = C.tree_rss_bytes(proc.pid) / 1e6
    finally:
        C.stop_server(proc)
    return {"figures": figures, "checks": checks, "verified": all(checks.values())}


# --------------------------------------------------------------------------- the harness


def _mlflow_python(opts) -> Path | None:
    if opts.no_mlflow:
        return None
    try:
        py = C.ensure_venv(MLFLOW_VENV, MLFLOW_REQUIREMENTS, check_import="mlflow")
    except Exception as exc:  # the table still shows Plinth
        C.log(f"MLflow venv unavailable: {C.key_error_line(str(exc))}")
        return None
    if not C._can_import(py, "sklearn, pandas"):
        C.log(f"pip install {' '.join(MLFLOW_EXTRA)} into {MLFLOW_VENV} (first run only)")
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *MLFLOW_EXTRA],
            capture_output=True,
        )
        if not C._can_import(py, "sklearn, pandas"):
            C.log("could not install scikit-learn into the MLflow venv")
            return None
    return py


def prepare(opts, sizes: Sizes) -> dict:
    """Train and pickle the model, write the request bodies, the answers they should get
    and the Parquet input; return the plan the workers read."""
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq
    import sklearn

    shutil.rmtree(SHARED / "plinth-home", ignore_errors=True)
    shutil.rmtree(SHARED / "mlflow-home", ignore_errors=True)
    SHARED.mkdir(parents=True, exist_ok=True)
    X, y = make_data(TRAIN_ROWS, SEED)
    model = make_model(opts.model, X, y)
    model_path = SHARED / f"model-{opts.model}.pkl"
    model_path.write_bytes(pickle.dumps(model))
    requests, _ = make_data(max(ROWS), SEED + 1)
    bodies, expected = {}, {}
    for rows in ROWS:
        frame = requests.iloc[:rows]
        split = {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
        path = SHARED / f"body-{rows}.json"
        path.write_text(json.dumps({"dataframe_split": split}))
        bodies[str(rows)] = str(path)
        expected[str(rows)] = model.predict(frame).tolist()
    score_input = SHARED / f"input-{sizes.score_rows}.parquet"
    if not score_input.exists():
        C.log(f"writing {sizes.score_rows:,} rows to {score_input}")
        frame, _ = make_data(sizes.score_rows, SEED + 2)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), score_input)
    result = {
        "model": opts.model,
        "model_pickle": str(model_path),
        "train_rows": TRAIN_ROWS,
        "sklearn": sklearn.__version__,
        "bodies": bodies,
        "expected": expected,
        "requests": sizes.requests,
        "warmup": sizes.warmup,
        "score_input": str(score_input),
        "score_rows": sizes.score_rows,
        "plinth_home": str(SHARED / "plinth-home"),
        "mlflow_home": str(SHARED / "mlflow-home"),
    }
    PLAN.write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "mlflow")
    ap.add_argument("--no-batch", action="store_true", help="skip the batch scoring part")
    ap.add_argument("--no-serve", action="store_true", help="skip the model servers")
    ap.add_argument("--model", choices=sorted(MODEL_TEXT), default="forest")
    opts = C.parse_runner_options(ap, argv, "serving")
    s = QUICK if opts.quick else FULL
    started = time.perf_counter()
    notes: list[str] = []
    serve = not opts.no_serve
    if serve and shutil.which(LOADGEN) is None:
        C.log(LOADGEN_HINT)
        notes.append(f"servers not measured: {LOADGEN_HINT}")
        serve = False

    the_plan = prepare(opts, s)
    b = C.Bench(
        "serving",
        {"plinth": PLINTH_WORKER, "mlflow": MLFLOW_WORKER},
        TIMEOUTS,
        _mlflow_python(opts) if serve else None,
        opts.keep,
    )
    b.wait_quiet = opts.wait_quiet
    P, M = "plinth", "mlflow"
    res: dict[str, dict | None] = {}
    if serve:
        res["p_setup"] = b.run(P, "setup", 0)
        res["m_setup"] = b.run(M, "setup", 0)
        for w in ("w1", "w2"):
            if res["p_setup"]:
                res[f"p_{w}"] = b.run(P, f"serve_{w}", s.requests)
            if res["m_setup"]:
                res[f"m_{w}"] = b.run(M, f"serve_{w}", s.requests)
    batch_skipped = None
    if not opts.no_batch:
        batch_skipped = _score_missing()
        if batch_skipped:
            C.log(batch_skipped)
            notes.append(batch_skipped)
        else:
            if not serve:
                res["p_setup"] = b.run(P, "setup", 0)
            res["floor"] = b.run(P, "floor", s.score_rows)
            if res.get("p_setup"):
                res["score_t1"] = b.run(P, "score_t1", s.score_rows)
                res["score"] = b.run(P, "score", s.score_rows)

    rows = _serve_rows(res, s) if serve else []
    rows += _batch_rows(res, s) if not opts.no_batch and not batch_skipped else []
    footer = _footer(b, opts, the_plan, res, notes)
    mode = "quick" if opts.quick else "full"
    title = (
        f"Plinth vs MLflow — model serving and batch scoring ({mode}; speed-up = how many "
        f"times Plinth is faster, > 1{C.TIMES} favours Plinth)"
    )
    return C.finish_report(rows, title, footer, opts, b.errors, started)


def _score_missing() -> str | None:
    proc = subprocess.run(
        [sys.executable, "-m", "plinth", "score", "--help"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return "batch scoring skipped: this Plinth has no `plinth score` command yet"
    return None


def _serve_rows(res: dict, s: Sizes) -> list[Row]:
    out = []
    for w in ("w1", "w2"):
        p, m = res.get(f"p_{w}"), res.get(f"m_{w}")
        workers = "1 worker" if w == "w1" else "2 workers"
        for rows in ROWS:
            for conns in CONNECTIONS:
                case = f"r{rows}_c{conns}"
                what = f"{rows} row{'s' if rows > 1 else ''}/request, {conns} conn., {workers}"
                out.append(
                    Row(
                        f"{what}: throughput",
                        C.fig(p, f"per_s_{case}"),
                        C.fig(m, f"per_s_{case}"),
                        "req/s",
                        target=f"≥ 2{C.TIMES} MLflow",
                        note=f"n={s.requests:,}; p50 {_ms(p, case, 'p50')} vs {_ms(m, case, 'p50')}",
                    )
                )
                out.append(
                    Row(
                        f"{what}: p99 latency",
                        C.fig(p, f"p99_ms_{case}"),
                        C.fig(m, f"p99_ms_{case}"),
                        "ms",
                        higher_is_better=False,
                        target="≤ MLflow",
                        fmt="{:,.2f}",
                    )
                )
        out.append(
            Row(
                f"server start to ready, {workers}",
                C.fig(p, "ready_s"),
                C.fig(m, "ready_s"),
                "s",
                higher_is_better=False,
                fmt="{:,.2f}",
            )
        )
        out.append(
            Row(
                f"server RSS after the load, {workers}",
                C.fig(p, "rss_after_mb"),
                C.fig(m, "rss_after_mb"),
                "MB",
                higher_is_better=False,
                note=f"processes: Plinth {_n(p, 'processes')}, MLflow {_n(m, 'processes')}",
            )
        )
    return out


def _batch_rows(res: dict, s: Sizes) -> list[Row]:
    floor = res.get("floor")
    floor_s, process_s = C.fig(floor, "floor_s"), C.fig(floor, "process_s")
    n = s.score_rows
    rows = [
        Row(
            "batch floor: read the Parquet + model.predict",
            n / floor_s if floor_s else None,
            None,
            "rows/s",
            note=f"{_s(floor_s)} s (read {_s(C.fig(floor, 'read_s'))} s, predict "
            f"{_s(C.fig(floor, 'predict_s'))} s); with imports and unpickling "
            f"{_s(C.fig(floor, 'process_s'))} s",
        )
    ]
    for key, how in (("score_t1", "--threads 1"), ("score", "default: a thread per CPU")):
        score_s = C.fig(res.get(key), "score_s")
        rows += [
            Row(
                f"batch: plinth score {n:,} rows ({how})",
                n / score_s if score_s else None,
                None,
                "rows/s",
                note=f"{_s(score_s)} s from launch to exit",
            ),
            Row(
                f"batch: plinth score ({how}) over the floor",
                None if not floor_s or not score_s else (score_s / floor_s - 1) * 100,
                None,
                "% slower",
                higher_is_better=False,
                target="< 25%",
                fmt="{:,.0f}",
                note="< 0: faster than the floor",
            ),
            Row(
                f"batch: plinth score ({how}) over the floor with its imports and unpickling",
                None if not process_s or not score_s else (score_s / process_s - 1) * 100,
                None,
                "% slower",
                higher_is_better=False,
                fmt="{:,.0f}",
                note="both then pay for importing scikit-learn and loading the model once",
            ),
        ]
    return rows


def _ms(res: dict | None, case: str, q: str) -> str:
    v = C.fig(res, f"{q}_ms_{case}")
    return "—" if v is None else f"{v:,.2f} ms"


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:,.2f}"


def _n(res: dict | None, key: str) -> str:
    v = C.fig(res, key)
    return "—" if v is None else f"{v:.0f}"


def _footer(b: C.Bench, opts, the_plan: dict, res: dict, notes: list[str]) -> list[str]:
    machine = C.machine_info()
    versions = {"Python": platform.python_version(), "Plinth": _plinth_version()}
    for key, label in (("p_setup", "Plinth side"), ("m_setup", "MLflow")):
        r = res.get(key)
        if r:
            versions[label] = r.get("versions", "")
    versions[LOADGEN] = _loadgen_version()
    footer = [
        "versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()),
        f"machine: {machine['nproc']} CPUs, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        f"model: scikit-learn {MODEL_TEXT[opts.model]} on {the_plan['train_rows']:,} x "
        f"{FEATURES} floats (seed {SEED}), trained once and pickled; registered in Plinth "
        "(plinth.register_model, alias live) and logged in MLflow (mlflow.sklearn.log_model, "
        "registered, alias live); both servers serve models:/bench@live.",
        "servers: `plinth serve models:/bench@live` (defaults: micro-batching on, prediction "
        "log on) and `mlflow models serve -m models:/bench@live --env-manager local`, "
        "--workers 1 and 2; both uvicorn on 127.0.0.1.",
        f"load: {LOADGEN} --h1 -n N -c C -t 1 (keep-alive, a fixed count after a warm-up of "
        f"{the_plan['warmup']:,}); the same dataframe_split body for both; latency = request "
        "sent to response read, per request.",
        "batch: the floor reads the Parquet file (pyarrow, to pandas) and calls model.predict "
        "in one process (one thread), timed from the read; plinth score is timed as a "
        "subprocess from launch to exit (interpreter start, imports, model load, checks, the "
        "Delta commit), once with --threads 1 (the floor's resources) and once by default "
        "(chunks predicted on every CPU, as a user gets it).",
        C.busy_line(b.busy),
        *notes,
    ]
    ran = {w for (_t, w, _n) in b.results}
    skip = ("servers:", "load:") if not ran & {"serve_w1", "serve_w2"} else ()
    skip += ("batch:",) if not ran & {"floor", "score"} else ()
    footer = [line for line in footer if not line.startswith(skip)]
    for (tool, workload, _n), r in b.results.items():
        for check, ok in (r or {}).get("checks", {}).items():
            if workload.startswith("serve") and not ok:
                footer.append(f"{tool} {workload}: check failed: {check}")
        for note in (r or {}).get("notes", []):
            footer.append(f"{'Plinth' if tool == 'plinth' else 'MLflow'} {workload}: {note}")
    served = [k for k in ("p_w1", "m_w1", "p_w2", "m_w2") if res.get(k)]
    if served:
        same = all(res[k].get("verified") for k in served)
        footer.append(
            "correctness: "
            + (
                "both servers answered the model's own predictions for 1 and 100 rows"
                if same
                else "a server did NOT answer the model's predictions (see problems)"
            )
        )
    return footer


def _loadgen_version() -> str:
    try:
        out = subprocess.run([LOADGEN, "--version"], capture_output=True, text=True).stdout
        return out.split()[-1] if out.strip() else "?"
    except OSError:
        return "not installed"


def _plinth_version() -> str:
    try:
        import plinth

        return plinth.__version__
    except Exception:
        return "not importable"


if __name__ == "__main__":
    sys.exit(main())
