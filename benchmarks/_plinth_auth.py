"""Worker of the authentication benchmark (run with the project's python).

    .venv/bin/python benchmarks/_plinth_auth.py --workload tracking_on --n 300 --tmp /tmp/x
    .venv/bin/python benchmarks/_plinth_auth.py --workload serve_on_logistic --n 3000 --tmp /tmp/y

Workloads (``_off`` / ``_on``: authentication off or on; a trailing ``_rN`` is a repetition
and is ignored here):

- ``tracking_{off,on}``: ``python -m plinth server`` on loopback on a fresh home (with
  ``PLINTH_AUTH=true`` for ``on``). Both homes get the same user ``bench`` (role editor) and
  API token first, written directly to the SQLite store; the ``on`` client sends the token
  (``plinth.connect(url, token=...)``), so every request is authenticated and every
  operation's grant check runs for a non-admin. Then, through the remote client:
  (a) ``n`` runs of create_run, log_params, set_tags, end_run, get_run (calls/s);
  (b) buffered ``run.log_metric`` of ``--points`` points (as in ``_plinth_tracking.py``);
  (c) ``search_runs`` over 200 runs (calls/s). Everything is counted back afterwards.
- ``serve_{off,on}_{logistic,forest}``: ``python -m plinth serve models:/bench@live``
  (``--auth`` for ``on``) on the home ``auth.py`` prepared; h2load, 1 row a request, at 1
  and 32 connections, every request with ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import serving as S

USER = "bench"
SEARCH_RUNS = 200
SEARCH_QUERY = {
    "filter": "metrics.m0 > 0.5",
    "order_by": ["metrics.m0 DESC"],
    "experiments": ["search"],
    "max_results": 50,
}
CONNECTIONS = (1, 32)
NOTES: list[str] = []


def bootstrap(home: Path) -> str:
    """Create the editor ``bench`` and an API token in ``home``'s store; return the secret.
    Local calls run as the local admin, so no server is needed."""
    from plinth.auth.service import AuthService
    from plinth.auth.types import Role
    from plinth.store.engine import open_store

    home.mkdir(parents=True, exist_ok=True)
    store = open_store(f"sqlite:///{home}/plinth.db")
    auth = AuthService(store)
    auth.create_user(USER, role=Role.EDITOR)
    secret = auth.create_token("bench", user=USER).secret
    store.engine.dispose()
    return secret


def _get_status(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --------------------------------------------------------------------------- tracking


def w_tracking(n: int, tmp: Path, auth: bool, points: int, searches: int) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    server_home = tmp / "server-home"
    secret = bootstrap(server_home)
    port = C.free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "plinth", "server", "--host", "127.0.0.1", "--port", str(port)]
    env = {"PLINTH_HOME": str(server_home), "PLINTH_URI": "", "PLINTH_TOKEN": ""}
    env["PLINTH_AUTH"] = "true" if auth else "false"
    proc = C.start_server(cmd, env, tmp / "server.log")
    figures: dict[str, float] = {}
    checks: dict[str, bool] = {}
    try:
        try:
            C.wait_http_ok(f"{base}/health", timeout=60, proc=proc)
        except Exception as exc:
            log = (tmp / "server.log").read_text(errors="replace")
            raise RuntimeError(f"{exc}\n{C._tail(log, 10)}") from exc
        C.wait_tree_idle(proc.pid, max_wait=30)
        for name in ("PLINTH_URI", "PLINTH_TOKEN", "PLINTH_STORE_URI", "PLINTH_ARTIFACT_URI"):
            os.environ.pop(name, None)
        os.environ["PLINTH_HOME"] = str(tmp / "client-home")
        import plinth

        client = plinth.connect(base, token=secret if auth else None)
        t = client.tracking
        # Authentication really is on (or off), and the caller is the non-admin editor.
        anonymous = _get_status(f"{base}/api/v1/experiments")
        if auth:
            who = client.auth.whoami()
            checks["caller is the editor 'bench' (not an admin)"] = (
                who.name == USER and str(who.role) == "editor"
            )
            checks["a request without a token is refused (401)"] = anonymous == 401
        else:
            checks["a request without a token is not refused"] = anonymous != 401

        # Warm-up: every call once, so imports and first-call paths are not timed.
        run = t.create_run("warmup", "w")
        t.log_params(run.id, {"p": 1}, "hyper")
        t.set_tags(run.id, {"t": "x"})
        t.end_run(run.id)
        t.get_run(run.id)
        client.search_runs(experiments=["warmup"])

        # (a) request-bound calls: five requests a run.
        answers = []
        cpu0 = C._tree_cpu_ticks(proc.pid)
        t0 = time.perf_counter()
        for r in range(n):
            run = t.create_run("bench", f"r{r}")
            t.log_params(run.id, {f"p{j}": r * 10 + j for j in range(5)}, "hyper")
            t.set_tags(run.id, {"team": "bench", "round": str(r)})
            t.end_run(run.id)
            got = t.get_run(run.id)
            answers.append(got)
        dt = time.perf_counter() - t0
        figures["calls_per_s"] = 5 * n / dt
        figures["runs_per_s"] = n / dt
        figures["call_ms"] = dt / (5 * n) * 1000
        figures["server_cpu_ms_per_call"] = _cpu_ms(proc.pid, cpu0) / (5 * n)
        checks[f"{n} runs read back FINISHED with their params and tags"] = all(
            str(g.status) == "FINISHED"
            and len(g.params.get("hyper", {})) == 5
            and g.tags.get("team") == "bench"
            for g in answers
        )
        checks[f"{n} runs in the experiment"] = _count(client, "bench") == n

        # (b) buffered log_metric: the background sender posts batches.
        cpu0 = C._tree_cpu_ticks(proc.pid)
        t0 = time.perf_counter()
        with client.start_run(experiment="metrics", name="log_metric") as active:
            for i in range(points):
                active.log_metric("loss", 1.0 / (i + 1), step=i)
        dt = time.perf_counter() - t0
        figures["points_per_s"] = points / dt
        figures["server_cpu_us_per_point"] = _cpu_ms(proc.pid, cpu0) * 1000 / points
        history = client.get_metric_history(active.id, "loss")
        checks[f"{points} points persisted"] = len(history) == points

        # (c) search over 200 runs (populated through the same client, untimed).
        expected = 0
        for r in range(SEARCH_RUNS):
            value = ((r * 7919) % 1000) / 1000
            expected += value > 0.5
            with client.start_run(
                experiment="search", name=f"s{r}", capture_environment=False
            ) as active:
                active.log_params({f"p{j}": r + j for j in range(10)}, group="hyper")
                active.log_metrics({"m0": value, "m1": 1 - value}, step=0)
        first = client.search_runs(**SEARCH_QUERY)
        cpu0 = C._tree_cpu_ticks(proc.pid)
        t0 = time.perf_counter()
        for _ in range(searches):
            page = client.search_runs(**SEARCH_QUERY)
        dt = time.perf_counter() - t0
        figures["searches_per_s"] = searches / dt
        figures["search_ms"] = dt / searches * 1000
        figures["server_cpu_ms_per_search"] = _cpu_ms(proc.pid, cpu0) / searches
        values = [p.metrics["m0"].last for p in page]
        checks["search answers the same 50 runs, ordered"] = (
            len(page) == min(50, expected)
            and [r.id for r in page] == [r.id for r in first]
            and values == sorted(values, reverse=True)
            and all(v > 0.5 for v in values)
        )
        checks[f"{SEARCH_RUNS} runs to search"] = _count(client, "search") == SEARCH_RUNS
        client.close()
        figures["rss_after_mb"] = C.tree_rss_bytes(proc.pid) / 2**20
    finally:
        C.stop_server(proc)
    return {"figures": figures, "checks": checks, "verified": all(checks.values())}


def _cpu_ms(pid: int, since_ticks: int) -> float:
    """CPU time (user + system, ms) the process tree used since ``since_ticks``: less
    sensitive than wall time to other work on a shared machine."""
    return (C._tree_cpu_ticks(pid) - since_ticks) * 1000 / os.sysconf("SC_CLK_TCK")


def _count(client: Any, experiment: str) -> int:
    total, token = 0, None
    while True:
        page = client.search_runs(experiments=[experiment], max_results=1000, page_token=token)
        total += len(page)
        token = page.next_page_token
        if not token:
            return total


# --------------------------------------------------------------------------- in-process


def w_checks(n: int, tmp: Path) -> dict:
    """The checks alone, in this process on a fresh SQLite store: one token check
    (``Authenticator.authenticate``: the token and groups SELECTs), and what the grant check
    adds to a guarded operation (``set_tags`` as the editor minus ``set_tags`` as the local
    admin, whose calls skip the checks). The best of 5 rounds of ``n`` calls each."""
    from plinth.auth.access import access_for, by_run
    from plinth.auth.context import acting_as
    from plinth.auth.identity import Authenticator
    from plinth.auth.types import Action, Kind
    from plinth.store.artifacts import ArtifactStore
    from plinth.store.engine import open_store
    from plinth.tracking.service import TrackingService

    home = tmp / "home"
    secret = bootstrap(home)
    store = open_store(f"sqlite:///{home}/plinth.db")
    tracking = TrackingService(store, ArtifactStore(str(home / "artifacts")))
    access = access_for(store)
    authenticator = Authenticator(access)
    editor = authenticator.authenticate(secret)
    with acting_as(editor):
        run = tracking.create_run("bench", "r")

    def best_us(call: Any) -> float:
        rounds = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            rounds.append((time.perf_counter() - t0) / n * 1e6)
        return min(rounds)

    def as_editor(call: Any) -> Any:
        def wrapped() -> None:
            with acting_as(editor):
                call()

        return wrapped

    tags = {"k": "v"}
    figures = {
        "authenticate_us": best_us(lambda: authenticator.authenticate(secret)),
        "resolve_run_us": best_us(lambda: by_run(access, run.id)),
        "grant_level_us": best_us(lambda: access.level(editor, Kind.EXPERIMENT, run.experiment_id)),
        "require_write_us": best_us(
            as_editor(lambda: access.require(Action.WRITE, Kind.EXPERIMENT, run.experiment_id))
        ),
        "set_tags_admin_us": best_us(lambda: tracking.set_tags(run.id, tags)),
        "set_tags_editor_us": best_us(as_editor(lambda: tracking.set_tags(run.id, tags))),
        "get_run_admin_us": best_us(lambda: tracking.get_run(run.id)),
        "get_run_editor_us": best_us(as_editor(lambda: tracking.get_run(run.id))),
    }
    with acting_as(editor):
        ok = tracking.get_run(run.id).tags.get("k") == "v"
    return {"figures": figures, "checks": {"the editor's calls went through": ok},
            "verified": ok}  # fmt: skip


# --------------------------------------------------------------------------- serving


def plan_path() -> Path:
    return C.WORK_DIR / "auth" / "plan.json"


def w_setup(tmp: Path, model_kind: str) -> dict:
    """Train and register the model (alias live) in a fresh home with the editor's token;
    write the request body, its expected answer and the secret to the plan."""
    import pickle
    import shutil

    shared = C.WORK_DIR / "auth"
    home = shared / f"home-{model_kind}"
    shutil.rmtree(home, ignore_errors=True)
    secret = bootstrap(home)
    for name in ("PLINTH_URI", "PLINTH_TOKEN", "PLINTH_STORE_URI", "PLINTH_ARTIFACT_URI"):
        os.environ.pop(name, None)
    os.environ["PLINTH_HOME"] = str(home)
    import plinth

    X, y = S.make_data(S.TRAIN_ROWS, S.SEED)
    model = S.make_model(model_kind, X, y)
    version = plinth.register_model(model, S.MODEL_NAME, input_example=X.head(5))
    plinth.set_alias(S.MODEL_NAME, S.ALIAS, version.version)
    # The model is private to its reader: the check finds a grant to the user, not one to
    # everyone.
    from plinth.auth.service import AuthService
    from plinth.auth.types import Kind

    auth = AuthService(plinth.default_client().tracking.store)
    auth.revoke_grant(Kind.MODEL, S.MODEL_NAME, "everyone", "*")
    auth.grant(Kind.MODEL, S.MODEL_NAME, "user", USER, "viewer")
    NOTES.append(f"model {S.MODEL_NAME!r} private; {USER!r} granted viewer on it")
    requests, _ = S.make_data(1, S.SEED + 1)
    body = shared / "body-1.json"
    split = {"columns": list(requests.columns), "data": requests.to_numpy().tolist()}
    body.write_text(json.dumps({"dataframe_split": split}))
    (shared / f"model-{model_kind}.pkl").write_bytes(pickle.dumps(model))
    plan = json.loads(plan_path().read_text()) if plan_path().exists() else {}
    plan[model_kind] = {
        "home": str(home),
        "secret": secret,
        "body": str(body),
        "expected": model.predict(requests).tolist(),
    }
    plan_path().write_text(json.dumps(plan))
    return {"figures": {"version": float(version.version)}, "verified": True}


def w_serve(n: int, tmp: Path, auth: bool, model_kind: str, warmup: int, n32: int) -> dict:
    """``n`` requests at 1 connection, ``n32`` at 32 (enough to span several of the
    service's 1 s token-decision periods)."""
    plan = json.loads(plan_path().read_text())[model_kind]
    tmp.mkdir(parents=True, exist_ok=True)
    port = C.free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "plinth", "serve", S.URI, "--port", str(port)]
    cmd += ["--auth"] if auth else []
    env = {"PLINTH_HOME": plan["home"], "PLINTH_URI": "", "PLINTH_TOKEN": ""}
    header = f"authorization: Bearer {plan['secret']}"
    proc = C.start_server(cmd, env, tmp / "server.log")
    figures: dict[str, float] = {}
    checks: dict[str, bool] = {}
    try:
        figures["ready_s"] = C.wait_http_ok(base + "/ready", timeout=180, proc=proc)
        C.wait_tree_idle(proc.pid)
        body = Path(plan["body"]).read_bytes()
        checks["answers the model's own prediction"] = (
            _post(base + "/predict", body, plan["secret"]) == plan["expected"]
        )
        refused = _post_status(base + "/predict", body, None)
        if auth:
            checks["a request without a token is refused (401)"] = refused == 401
        else:
            checks["a request without a token is answered"] = refused == 200
        for conns in CONNECTIONS:
            events0 = _token_used(plan["home"])
            run_load(base + "/predict", Path(plan["body"]), max(warmup, conns), conns,
                     tmp / "warmup.log", header)  # fmt: skip
            count = n if conns == 1 else n32
            cpu0 = C._tree_cpu_ticks(proc.pid)
            res = run_load(
                base + "/predict", Path(plan["body"]), count, conns, tmp / f"c{conns}.log", header
            )
            res["server_cpu_ms"] = _cpu_ms(proc.pid, cpu0) / count
            # Each token decision the service took writes this event (the warm-up's too).
            res["token_used_events"] = _token_used(plan["home"]) - events0
            for k, v in res.items():
                figures[f"{k}_c{conns}"] = v
            checks[f"all {count} answered 2xx at c={conns}"] = res["failed"] == 0
        figures["rss_after_mb"] = C.tree_rss_bytes(proc.pid) / 2**20
    finally:
        C.stop_server(proc)
    return {"figures": figures, "checks": checks, "verified": all(checks.values())}


def _token_used(home: str) -> int:
    """``token_used`` events in the home's security log (read-only; the server writes)."""
    import sqlite3

    with sqlite3.connect(f"file:{home}/plinth.db?mode=ro", uri=True, timeout=30) as conn:
        query = "SELECT count(*) FROM security_events WHERE event = 'token_used'"
        return int(conn.execute(query).fetchone()[0])


def run_load(
    url: str, body: Path, requests: int, connections: int, log_file: Path, header: str
) -> dict[str, float]:
    """``serving.run_load`` with the Authorization header on every request."""
    import subprocess

    cmd = [S.LOADGEN, "--h1", "-n", str(requests), "-c", str(connections), "-t", "1"]
    cmd += ["-d", str(body), "-H", "Content-Type: application/json", "-H", header]
    cmd += [f"--log-file={log_file}", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{S.LOADGEN} failed ({proc.returncode}): {proc.stderr[-500:]}")
    per_s = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", proc.stdout)
    ok = re.search(r"status codes: (\d+) 2xx", proc.stdout)
    latencies = sorted(
        int(line.split("\t")[2]) / 1000 for line in log_file.read_text().splitlines() if line
    )
    return {
        "per_s": float(per_s.group(1)) if per_s else 0.0,
        "p50_ms": S.percentile(latencies, 50),
        "p99_ms": S.percentile(latencies, 99),
        "failed": requests - (int(ok.group(1)) if ok else 0),
    }


def _post(url: str, body: bytes, secret: str) -> Any:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
    req = urllib.request.Request(url, body, headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read()).get("predictions")


def _post_status(url: str, body: bytes, secret: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    req = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --------------------------------------------------------------------------- main


def main() -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True)
    p.add_argument("--n", type=int, default=0)
    p.add_argument("--tmp", required=True)
    p.add_argument("--points", type=int, default=100_000, help="log_metric points (tracking)")
    p.add_argument("--searches", type=int, default=200, help="search_runs calls (tracking)")
    p.add_argument("--warmup", type=int, default=300, help="warm-up requests (serving)")
    p.add_argument("--n32", type=int, default=10_000, help="requests at 32 connections")
    args = p.parse_args()
    tmp = Path(args.tmp).resolve()
    w = re.sub(r"_r\d+$", "", args.workload)
    parts = w.split("_")
    if parts[0] == "checks":
        result = w_checks(args.n or 500, tmp)
    elif parts[0] == "setup":
        result = w_setup(tmp, parts[1])
    elif parts[0] == "tracking":
        result = w_tracking(args.n or 300, tmp, parts[1] == "on", args.points, args.searches)
    elif parts[0] == "serve":
        result = w_serve(args.n or 3000, tmp, parts[1] == "on", parts[2], args.warmup, args.n32)
    else:
        raise SystemExit(f"unknown workload {args.workload!r}")
    import plinth

    result.update(workload=args.workload, tool="plinth", n=args.n, notes=NOTES)
    result["version"] = plinth.__version__
    C.emit(result)


if __name__ == "__main__":
    main()
