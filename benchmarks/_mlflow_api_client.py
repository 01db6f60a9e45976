"""The mlflow-client workload of ``mlflow_api.py`` (a worker; run with the MLflow venv's
python against one server, Plinth's or MLflow's: the same calls and data for both).

    benchmarks/.venvs/mlflow/bin/python benchmarks/_mlflow_api_client.py \
        --tracking-uri http://127.0.0.1:5000 --n 100 --tmp /tmp/x

Phases (each timed on its own): create an experiment; N runs, each with 10 params, 3
metrics x 100 steps and a tag in one ``log_batch``; 200 ``log_metric`` calls; artifacts
(20 small files and one of 20 MB) up, listed and down; ``search_runs`` with a metric and a
param predicate, ordered; ``get_metric_history``; ``sklearn.log_model``; ``register_model``
and an alias; ``pyfunc.load_model("models:/bench@champion")`` and ``predict``. Prints one
JSON object on its last stdout line: ``{"version", "figures": {...}, "verified", "checks"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# No telemetry or other traffic leaves this machine; a failing call fails at once.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

STEPS = 100
PARAMS = 10
LOG_METRIC_CALLS = 200
SMALL_FILES = 20
BIG_FILE_MB = 20
SEARCH_REPS = 20
HISTORY_REPS = 20
LOAD_REPS = 3
figures: dict[str, float] = {}
checks: dict[str, bool] = {}


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    figures[f"{name}_s"] = time.perf_counter() - t0


def acc_of(i: int) -> float:
    return (i % 10) / 10 + 0.05


def p1_of(i: int) -> str:
    return str((i + 1) % 7)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--n", type=int, default=100, help="runs")
    ap.add_argument("--tmp", required=True)
    args = ap.parse_args()
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)

    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(args.tracking_uri)
    client = MlflowClient()
    n = args.n
    started = time.perf_counter()

    with timed("experiment"):
        exp_id = client.create_experiment(f"bench-mlflow-api-{os.getpid()}")
        mlflow.set_experiment(experiment_id=exp_id)

    run_ids = []
    with timed("runs"):
        for i in range(n):
            run_id = client.create_run(exp_id, run_name=f"run-{i}").info.run_id
            ts = int(time.time() * 1000)
            metrics = [
                Metric(key, (acc_of(i) if key == "acc" else 1.0) * (s + 1) / STEPS, ts + s, s)
                for key in ("loss", "acc", "f1")
                for s in range(STEPS)
            ]
            params = [Param("p1", p1_of(i))] + [
                Param(f"p{j}", str(j)) for j in range(2, PARAMS + 1)
            ]
            client.log_batch(run_id, metrics=metrics, params=params, tags=[RunTag("team", "b")])
            client.set_terminated(run_id)
            run_ids.append(run_id)
    figures["runs_per_s"] = n / figures["runs_s"]

    run_id = client.create_run(exp_id, run_name="one-at-a-time").info.run_id
    with timed("log_metric"):
        for s in range(LOG_METRIC_CALLS):
            client.log_metric(run_id, "loss", 1.0 / (s + 1), step=s)
    figures["log_metric_calls_per_s"] = LOG_METRIC_CALLS / figures["log_metric_s"]

    src = tmp / "upload"
    (src / "small").mkdir(parents=True)
    for k in range(SMALL_FILES):
        (src / "small" / f"f{k}.txt").write_bytes(os.urandom(1024 * (k % 10 + 1)))
    (src / "big.bin").write_bytes(os.urandom(BIG_FILE_MB * 2**20))
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    with timed("artifacts_up"):
        client.log_artifacts(run_id, str(src), "files")
    figures["artifacts_up_mb_per_s"] = total / 2**20 / figures["artifacts_up_s"]
    with timed("artifacts_list"):
        listed = [client.list_artifacts(run_id, "files/small") for _ in range(20)]
    checks["list"] = all(len(x) == SMALL_FILES for x in listed)
    with timed("artifacts_down"):
        dest = Path(client.download_artifacts(run_id, "files", str(tmp / "down")))
    figures["artifacts_down_mb_per_s"] = total / 2**20 / figures["artifacts_down_s"]
    checks["download"] = filecmp.cmp(dest / "big.bin", src / "big.bin", shallow=False) and all(
        filecmp.cmp(dest / "small" / f.name, f, shallow=False) for f in (src / "small").iterdir()
    )
    client.set_terminated(run_id)

    expected = [run_ids[i] for i in range(n) if acc_of(i) > 0.5 and p1_of(i) == "3"]
    expected.sort(key=lambda r: -acc_of(run_ids.index(r)))
    times, found = [], []
    for _ in range(SEARCH_REPS):
        t0 = time.perf_counter()
        found = client.search_runs(
            [exp_id], "metrics.acc > 0.5 and params.p1 = '3'", order_by=["metrics.acc DESC"]
        )
        times.append(time.perf_counter() - t0)
    figures["search_median_ms"] = statistics.median(times) * 1000
    checks["search"] = sorted(r.info.run_id for r in found) == sorted(expected) and [
        acc_of(run_ids.index(r.info.run_id)) for r in found
    ] == sorted((acc_of(run_ids.index(r)) for r in expected), reverse=True)

    times = []
    for k in range(HISTORY_REPS):
        t0 = time.perf_counter()
        history = client.get_metric_history(run_ids[k % n], "acc")
        times.append(time.perf_counter() - t0)
        checks["history"] = len(history) == STEPS
    figures["history_median_ms"] = statistics.median(times) * 1000

    rng = np.random.default_rng(42)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    with timed("log_model"), mlflow.start_run():
        # explicit requirements: inferring them runs the model in a local subprocess, the
        # same seconds on both sides, which would only blur the servers' share
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=X[:5], pip_requirements=["scikit-learn", "numpy"]
        )
    with timed("register"):
        version = mlflow.register_model(info.model_uri, "bench").version
        client.set_registered_model_alias("bench", "champion", version)
    times = []
    for k in range(LOAD_REPS):
        (tmp / f"model-{k}").mkdir()
        t0 = time.perf_counter()
        loaded = mlflow.pyfunc.load_model(
            "models:/bench@champion", dst_path=str(tmp / f"model-{k}")
        )
        predicted = loaded.predict(X)
        times.append(time.perf_counter() - t0)
        checks["predict"] = predicted.tolist() == model.predict(X).tolist()
    figures["load_median_s"] = statistics.median(times)
    figures["total_s"] = time.perf_counter() - started

    sys.stdout.flush()
    print(
        json.dumps(
            {
                "version": mlflow.__version__,
                "figures": figures,
                "verified": all(checks.values()),
                "checks": checks,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
