"""MLflow half of the dashboard benchmark (a worker; run with the MLflow venv's python).

MLflow's UI draws in the browser from JSON; the server's share of a page is the AJAX calls
the UI makes. ``runs_page``: ``mlflow server`` over the tracking benchmark's populated
store, the runs table's search (100 runs, as the UI asks) at p50/p95, first page, a later
page and with a filter and a metric sort. ``chart``: one run with an ``n``-point metric;
the chart's sampled history (``get-history-bulk-interval``, 2,000 points like Plinth's).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import _mlflow_tracking as T

DEFAULT_N = {"runs_page": 10_000, "chart": 200_000}
REPS = 40
SEARCH = "/ajax-api/2.0/mlflow/runs/search"


def _server(db: Path, tmp: Path):
    port = C.free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{db}",
        "--artifacts-destination", str(tmp / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    proc = C.start_server(cmd, env, tmp / "server.log")
    C.wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=90, proc=proc)
    C.wait_tree_idle(proc.pid, max_wait=30)
    return proc, f"http://127.0.0.1:{port}"


def _timed(call, reps: int = REPS) -> list[float]:
    call()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def w_runs_page(n: int, tmp: Path, args) -> dict:
    import requests  # MLflow's own HTTP client (its venv has no httpx)

    tmp.mkdir(parents=True, exist_ok=True)
    cache, meta, _ = T.search_store(Path(args.cache), n)
    shutil.copy2(cache / "mlflow.db", tmp / "mlflow.db")
    proc, url = _server(tmp / "mlflow.db", tmp)
    figures: dict[str, float] = {}
    try:
        with requests.Session() as client:
            base = {
                "experiment_ids": [meta["exp_id"]],
                "max_results": 100,
                "order_by": ["attributes.start_time DESC"],
                "run_view_type": "ACTIVE_ONLY",
            }

            def search(body: dict) -> dict:
                answer = client.post(url + SEARCH, json=body, timeout=60)
                answer.raise_for_status()
                return answer.json()

            # MLflow pages by token: the later page is reached by following tokens
            token = None
            for _ in range(49):  # runs 4,901-5,000: Plinth's page 100 of 50
                token = search({**base, "page_token": token} if token else base)["next_page_token"]
            bodies = {
                "first": base,
                "later": {**base, "page_token": token},
                "filtered": {
                    **base,
                    "filter": "metrics.m0 > 0.5",
                    "order_by": ["metrics.m0 DESC"],
                },
            }
            every: list[float] = []
            for name, body in bodies.items():
                times = _timed(lambda body=body: search(body))
                every += times
                figures[f"{name}_p50_ms"] = statistics.median(times)
                figures[f"{name}_p95_ms"] = C.p95(times)
            figures["p50_ms"] = statistics.median(every)
            figures["p95_ms"] = C.p95(every)
            rows = len(search(base)["runs"])
    finally:
        C.stop_server(proc)
    return {"figures": figures, "verified": rows == 100, "runs": meta["runs"]}


def w_chart(n: int, tmp: Path, args) -> dict:
    import mlflow
    import requests
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    tmp.mkdir(parents=True, exist_ok=True)
    proc, url = _server(tmp / "mlflow.db", tmp)
    figures: dict[str, float] = {}
    try:
        mlflow.set_tracking_uri(url)
        client = MlflowClient()
        exp = client.create_experiment("bench")
        run = client.create_run(exp, run_name="long").info.run_id
        ts = int(time.time() * 1000)
        value, batch = 1.0, []
        for step in range(n):
            value = value * 0.99999 + (step % 97) * 1e-6
            batch.append(Metric("loss", value, ts, step))
            if len(batch) == 1000:  # MLflow's log_batch limit
                client.log_batch(run, metrics=batch)
                batch = []
        if batch:
            client.log_batch(run, metrics=batch)
        client.set_terminated(run)
        query = {"run_ids": run, "metric_key": "loss", "max_results": 2000}
        with requests.Session() as http:

            def history() -> dict:
                answer = http.get(
                    url + "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                    params=query,
                    timeout=60,
                )
                answer.raise_for_status()
                return answer.json()

            times = _timed(history, reps=20)
            points = len(history().get("metrics", []))
        figures["json_p50_ms"] = statistics.median(times)
        figures["json_p95_ms"] = C.p95(times)
    finally:
        C.stop_server(proc)
    return {"figures": figures, "verified": 0 < points <= 2500, "points_drawn": points}


def main() -> None:
    args = C.worker_args()
    n = args.n or DEFAULT_N[args.workload]
    result = globals()[f"w_{args.workload}"](n, Path(args.tmp), args)
    import mlflow

    result["version"] = mlflow.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
