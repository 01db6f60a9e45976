"""A/B router benchmark: what ``plinth router`` adds to a prediction on loopback, against
calling the arm's ``plinth serve`` directly (issue 13, "Benchmarks").

    .venv/bin/python benchmarks/abtests.py            # full (about 3 minutes)
    .venv/bin/python benchmarks/abtests.py --quick    # smoke run (about 1 minute)

On a fresh Plinth home (``benchmarks/.work/abtests/home``) a scikit-learn model (the
serving benchmark's data: 20 float features; ``LogisticRegression`` by default, where the
servers' own work is nearly all there is) is registered and served by one ``plinth serve``
on 127.0.0.1. An experiment ``bench`` (``plinth ab create`` + ``plinth ab start``) has two
arms, 50/50, both with ``Arm.url`` pointing at that one server, so the direct and routed
figures load the same arm process. ``plinth router`` reads the experiment at start.

- latency, 1 connection: ``h2load --h1 -c 1`` (sequential requests on one keep-alive
  connection, every request's latency logged) direct to ``{arm}/predict`` and through
  ``{router}/bench/predict`` with an ``X-Plinth-Unit`` header, router at 1 worker; p50 and
  p99 of each and the difference (the router's overhead).
- throughput, 32 connections: ``h2load --h1 -c 32`` with a fixed request count, direct
  against the router at 2 workers.

Direct and routed runs alternate (``--reps`` each; the median is shown). Before timing,
the router's answers must equal the arm's predictions with ``experiment`` and ``arm``
added, and both arms must be assigned; every timed request must answer 2xx. Every server
runs in its own process group and is stopped with it. The table is also written to
``benchmarks/.work/last-abtests.txt``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from _common import Row

import serving as S

WORK = C.WORK_DIR / "abtests"
HOME = WORK / "home"
EXPERIMENT = "bench"
MODEL = "bench"
HEADERS = ["workload", "router", "direct", "ratio", "unit", "target", "note"]


@dataclass(frozen=True)
class Sizes:
    latency_requests: int  # per run at 1 connection
    throughput_requests: int  # per run at 32 connections
    warmup: int
    reps: int


FULL = Sizes(latency_requests=5_000, throughput_requests=10_000, warmup=500, reps=2)
QUICK = Sizes(latency_requests=1_000, throughput_requests=3_000, warmup=200, reps=1)


def _env() -> dict[str, str]:
    """This process and its children on the benchmark's fresh Plinth home."""
    for name in ("PLINTH_URI", "PLINTH_STORE_URI", "PLINTH_ARTIFACT_URI"):
        os.environ.pop(name, None)
    os.environ["PLINTH_HOME"] = str(HOME)
    return {"PLINTH_HOME": str(HOME)}


def prepare(model_kind: str) -> tuple[Path, list[int]]:
    """Register the model on a fresh home; the request body and the model's answer."""
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    _env()
    import plinth

    X, y = S.make_data(S.TRAIN_ROWS, S.SEED)
    model = S.make_model(model_kind, X, y)
    plinth.register_model(model, MODEL, input_example=X.iloc[:5])
    frame = S.make_data(1, S.SEED + 1)[0]
    split = {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
    body = WORK / "body.json"
    body.write_text(json.dumps({"dataframe_split": split}))
    return body, model.predict(frame).tolist()


def plinth_cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "plinth", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **_env()})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stderr[-800:]}")


def make_experiment(arm_url: str) -> None:
    spec = {
        "name": EXPERIMENT,
        "hypothesis": "the router adds under a millisecond",
        "primary": {"name": "conversion", "kind": "proportion", "event": "buy"},
        "arms": [
            {"name": "a", "share": 0.5, "url": arm_url, "control": True},
            {"name": "b", "share": 0.5, "url": arm_url},
        ],
        "mde": 0.01,
    }
    path = WORK / "experiment.json"
    path.write_text(json.dumps(spec))
    plinth_cli("ab", "create", str(path))
    plinth_cli("ab", "start", EXPERIMENT)


def start(cmd: list[str], name: str, ready: str) -> subprocess.Popen:
    proc = C.start_server(cmd, _env(), WORK / f"{name}.log")
    C.wait_http_ok(ready, timeout=120, proc=proc)
    C.wait_tree_idle(proc.pid)
    return proc


def serve_arm(workers: int) -> tuple[subprocess.Popen, str]:
    port = C.free_port()
    cmd = [sys.executable, "-m", "plinth", "serve", f"models:/{MODEL}/1", "--port", str(port)]
    cmd += ["--workers", str(workers)] if workers > 1 else []
    base = f"http://127.0.0.1:{port}"
    return start(cmd, "arm", base + "/ready"), base


def serve_router(workers: int) -> tuple[subprocess.Popen, str]:
    port = C.free_port()
    cmd = [sys.executable, "-m", "plinth", "router", "--port", str(port)]
    cmd += ["--workers", str(workers)]
    base = f"http://127.0.0.1:{port}"
    return start(cmd, f"router-w{workers}", base + "/health"), base


def post(url: str, body: bytes, unit: str | None) -> dict:
    headers = {"Content-Type": "application/json"}
    if unit is not None:
        headers["X-Plinth-Unit"] = unit
    req = urllib.request.Request(url, body, headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def check_answers(arm: str, router: str, body: Path, expected: list[int]) -> dict[str, bool]:
    """The arm answers the model's predictions; the router the same, decorated, and both
    arms get units."""
    data = body.read_bytes()
    direct = post(arm + "/predict", data, None)
    routed = [post(router + f"/{EXPERIMENT}/predict", data, f"u{i}") for i in range(40)]
    return {
        "arm answers model.predict": direct.get("predictions") == expected,
        "router answers model.predict": all(r.get("predictions") == expected for r in routed),
        "router names the experiment": all(r.get("experiment") == EXPERIMENT for r in routed),
        "both arms assigned": {r.get("arm") for r in routed} == {"a", "b"},
    }


def load(url: str, body: Path, n: int, conns: int, unit: bool, pids: list[int]) -> dict:
    """h2load run (S.run_load's options, plus the unit header); server CPU of ``pids``'
    process trees over it."""
    log_file = WORK / "h2load.log"
    cmd = [S.LOADGEN, "--h1", "-n", str(n), "-c", str(conns), "-t", "1", "-d", str(body)]
    cmd += ["-H", "Content-Type: application/json", f"--log-file={log_file}"]
    cmd += ["-H", "X-Plinth-Unit: unit-42"] if unit else []
    ticks = [C._tree_cpu_ticks(p) for p in pids]
    proc = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=900)
    used = [C._tree_cpu_ticks(p) - t for p, t in zip(pids, ticks, strict=True)]
    hz = os.sysconf("SC_CLK_TCK")
    cpu_s = sum(used) / hz
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {proc.stderr[-500:]}")

    per_s = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", proc.stdout)
    ok = re.search(r"status codes: (\d+) 2xx", proc.stdout)
    lat = sorted(int(ln.split("\t")[2]) / 1000 for ln in log_file.read_text().splitlines() if ln)
    return {
        "per_s": float(per_s.group(1)) if per_s else 0.0,
        "p50_ms": S.percentile(lat, 50),
        "p99_ms": S.percentile(lat, 99),
        "ok": int(ok.group(1)) if ok else 0,
        "cpu_ms": cpu_s * 1000 / n,
        "first_cpu_ms": used[0] / hz * 1000 / n,  # the router's own, in routed runs
    }


def measure(
    arm: str, router: str, pids: dict[str, list[int]], body: Path, n: int, conns: int, sz: Sizes
) -> dict[str, list[dict]]:
    """Direct and routed runs, alternating, after a warm-up of each."""
    targets = {
        "direct": (arm + "/predict", False, pids["direct"]),
        "router": (router + f"/{EXPERIMENT}/predict", True, pids["router"]),
    }
    runs: dict[str, list[dict]] = {"direct": [], "router": []}
    for url, unit, procs in targets.values():
        load(url, body, max(sz.warmup, conns), conns, unit, procs)
    for rep in range(sz.reps):
        for what, (url, unit, procs) in targets.items():
            busy = C.system_busy(0.5)
            res = load(url, body, n, conns, unit, procs)
            res["busy"] = busy
            runs[what].append(res)
            C.log(
                f"c={conns} {what} rep {rep + 1}: {res['per_s']:,.0f} req/s, p50 "
                f"{res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, {res['ok']:,}/{n:,} 2xx "
                f"(CPUs {busy:.0%} busy before)"
            )
    return runs


def run_part(
    arm: str, arm_pid: int, router_workers: int, body: Path, expected: list[int], n: int,
    conns: int, sz: Sizes, checks: dict[str, bool],
) -> dict[str, list[dict]]:  # fmt: skip
    """Start the router with ``router_workers``, check its answers, load it and the arm."""
    router_proc, router = serve_router(router_workers)
    try:
        for k, ok in check_answers(arm, router, body, expected).items():
            checks[f"{k} (router, {router_workers} worker(s))"] = ok
        pids = {"direct": [arm_pid], "router": [router_proc.pid, arm_pid]}
        runs = measure(arm, router, pids, body, n, conns, sz)
        for what, rs in runs.items():
            checks[f"every {what} request 2xx at c={conns}"] = all(r["ok"] == n for r in rs)
        return runs
    finally:
        C.stop_server(router_proc)


def _med(runs: list[dict], key: str) -> float:
    return C.median(r[key] for r in runs)


def _reps(runs: dict[str, list[dict]], key: str, fmt: str) -> str:
    if len(runs["direct"]) < 2:
        return ""
    show = {w: "/".join(fmt.format(r[key]) for r in rs) for w, rs in runs.items()}
    return f"reps: router {show['router']}, direct {show['direct']}"


def latency_rows(runs: dict[str, list[dict]], n: int) -> list[Row]:
    r, d = runs["router"], runs["direct"]
    rows = []
    for q, bar in (("p50", "< 1 ms"), ("p99", "< 3 ms")):
        key = f"{q}_ms"
        added = C.median(a[key] - b[key] for a, b in zip(r, d, strict=True))
        rows += [
            Row(f"1 conn., router 1 worker: {q} latency", _med(r, key), _med(d, key), "ms",
                fmt="{:,.3f}", note=_reps(runs, key, "{:.2f}")),
            Row(f"1 conn.: {q} added by the router", added, None, "ms", target=bar,
                fmt="{:,.3f}", note="router - direct, median of the paired reps"),
        ]  # fmt: skip
    rows += [
        Row("1 conn.: throughput", _med(r, "per_s"), _med(d, "per_s"), "req/s",
            note=f"n={n:,} a run; " + _reps(runs, "per_s", "{:,.0f}")),
        Row("1 conn.: server CPU per request", _med(r, "cpu_ms"), _med(d, "cpu_ms"), "ms",
            fmt="{:,.2f}", note="router + arm vs arm alone (user + system of the trees)"),
        Row("1 conn.: the router's own CPU per request", _med(r, "first_cpu_ms"), None, "ms",
            fmt="{:,.3f}", note="the router process alone"),
    ]  # fmt: skip
    return rows


def throughput_rows(runs: dict[str, list[dict]], n: int) -> list[Row]:
    r, d = runs["router"], runs["direct"]
    return [
        Row("32 conn., router 2 workers: throughput", _med(r, "per_s"), _med(d, "per_s"),
            "req/s", target=f"≥ 0.8{C.TIMES}", note=f"n={n:,} a run; "
            + _reps(runs, "per_s", "{:,.0f}")),
        Row("32 conn.: p50 latency", _med(r, "p50_ms"), _med(d, "p50_ms"), "ms",
            fmt="{:,.2f}", note=_reps(runs, "p50_ms", "{:.2f}")),
        Row("32 conn.: p99 latency", _med(r, "p99_ms"), _med(d, "p99_ms"), "ms",
            fmt="{:,.2f}", note=_reps(runs, "p99_ms", "{:.2f}")),
        Row("32 conn.: server CPU per request", _med(r, "cpu_ms"), _med(d, "cpu_ms"), "ms",
            fmt="{:,.2f}", note="router + arm vs arm alone"),
        Row("32 conn.: the router's own CPU per request", _med(r, "first_cpu_ms"), None, "ms",
            fmt="{:,.3f}", note="the router's 2 worker processes alone"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "reference")
    ap.add_argument("--model", choices=sorted(S.MODEL_TEXT), default="logistic")
    ap.add_argument("--arm-workers", type=int, default=1, help="plinth serve's workers")
    ap.add_argument("--reps", type=int, default=None, help="runs of each (default 2, quick 1)")
    opts = C.parse_runner_options(ap, argv, "abtests")
    sz = QUICK if opts.quick else FULL
    if opts.reps:
        sz = Sizes(sz.latency_requests, sz.throughput_requests, sz.warmup, opts.reps)
    if shutil.which(S.LOADGEN) is None:
        C.log(S.LOADGEN_HINT)
        return 2
    started = time.perf_counter()
    load_before = C.load_average()
    C.log(f"registering the {opts.model} model on a fresh home {HOME}")
    body, expected = prepare(opts.model)
    checks: dict[str, bool] = {}
    errors: list[str] = []
    latency: dict[str, list[dict]] = {}
    throughput: dict[str, list[dict]] = {}
    arm_proc, arm = serve_arm(opts.arm_workers)
    try:
        make_experiment(arm)
        C.log("latency: 1 connection, router 1 worker")
        latency = run_part(arm, arm_proc.pid, 1, body, expected, sz.latency_requests, 1, sz,
                           checks)  # fmt: skip
        C.log("throughput: 32 connections, router 2 workers")
        throughput = run_part(arm, arm_proc.pid, 2, body, expected, sz.throughput_requests, 32,
                              sz, checks)  # fmt: skip
    except Exception as exc:  # the table shows what was measured, the footer why not more
        errors.append(f"{type(exc).__name__}: {C.key_error_line(str(exc)) or exc}")
    finally:
        C.stop_server(arm_proc)
    errors += [f"check failed: {k}" for k, ok in checks.items() if not ok]
    rows = latency_rows(latency, sz.latency_requests) if latency else []
    rows += throughput_rows(throughput, sz.throughput_requests) if throughput else []
    busy = [r["busy"] for part in (latency, throughput) for rs in part.values() for r in rs]
    footer = _footer(opts, sz, busy, load_before, checks)
    mode = "quick" if opts.quick else "full"
    title = (
        f"Plinth A/B router vs calling the arm directly ({mode}; ratio = router / direct: "
        "throughput kept, latency multiplied)"
    )
    return C.finish_report(rows, title, footer, opts, errors, started, headers=HEADERS)


def _footer(
    opts, sz: Sizes, busy: list[float], load_before: float, checks: dict[str, bool]
) -> list[str]:
    import sklearn
    import uvicorn

    import plinth

    m = C.machine_info()
    passed = sum(checks.values())
    return [
        f"versions: Python {platform.python_version()}, Plinth {plinth.__version__}, "
        f"scikit-learn {sklearn.__version__}, uvicorn {uvicorn.__version__} "
        f"{S.uvicorn_extras()}, h2load {S._loadgen_version()}",
        f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory']}, {m['os']}",
        f"model: scikit-learn {S.MODEL_TEXT[opts.model]} on {S.TRAIN_ROWS:,} x {S.FEATURES} "
        "floats, registered on a fresh PLINTH_HOME; one 1-row dataframe_split body.",
        f"arm: plinth serve models:/{MODEL}/1 --workers {opts.arm_workers} (defaults: "
        "micro-batching, prediction log); experiment: 2 arms 50/50 by user, both Arm.url = that "
        "server; router: plinth router --workers 1 (latency) / 2 (throughput), all on 127.0.0.1.",
        f"load: h2load --h1 -t 1, -c 1 -n {sz.latency_requests:,} and -c 32 -n "
        f"{sz.throughput_requests:,}, after a warm-up of {sz.warmup:,} each; direct and router "
        f"runs alternate, {sz.reps} of each, medians shown; router requests carry "
        "X-Plinth-Unit (the unit is exposed and logged).",
        f"checks: {passed}/{len(checks)} passed (answers equal model.predict through both "
        "paths, both arms assigned, every timed request 2xx)",
        f"load average before the run: {load_before:.2f}, after: {C.load_average():.2f}",
        C.busy_line(busy),
    ]


if __name__ == "__main__":
    sys.exit(main())
