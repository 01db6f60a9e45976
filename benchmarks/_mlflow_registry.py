"""MLflow half of the registry benchmark (a worker; run with the MLflow venv's python).

    benchmarks/.venvs/mlflow/bin/python benchmarks/_mlflow_registry.py \
        --workload register --n 200 --tmp /tmp/x [--max-seconds 60]

Prints one JSON object on its last stdout line: ``{"workload", "tool", "version", "n",
"figures": {name: value}, "verified", "checks", "data_sha", "libs", "notes"}``. Every workload
uses a fresh SQLite tracking and registry store (``sqlite:///<tmp>/mlflow.db``) with artifacts
under ``<tmp>``; the store is warmed up (schema created, one model logged, registered,
resolved and loaded) before the clock starts. The model and data come from ``registry.py``
(``make_data`` / ``make_model``), the same as on the Plinth side.

Workloads: ``register`` (N versions), ``resolve_alias`` (N resolutions), ``load`` (cold load
in a fresh process, then N warm loads).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

# No telemetry or other traffic leaves this machine.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_TRACKING_INSECURE_TLS", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from registry import ALIAS, MODEL_NAME, data_fingerprint, make_data, make_model

DEFAULT_N = {"register": 200, "resolve_alias": 1_000, "load": 20, "load_child": 20}
NOTES: list[str] = []
# MLflow warns on every log_model that the output schema has an integer column; the
# warnings say nothing about speed and would flood the log.
warnings.simplefilter("ignore")


# --------------------------------------------------------------------------- set-up


def _store(tmp: Path) -> str:
    import mlflow

    tmp.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _experiment(name: str, tmp: Path) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=(tmp / "artifacts" / name).as_uri())


def _pinned_requirements() -> list[str]:
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}"]


def _log(model, X, exp_id: str, registered: str, pinned: bool = False):
    """One training run that logs ``model`` and registers it as a new version of
    ``registered``; returns the ModelInfo."""
    import mlflow

    kwargs = {"pip_requirements": _pinned_requirements()} if pinned else {}
    with mlflow.start_run(experiment_id=exp_id):
        return mlflow.sklearn.log_model(
            model, name="model", registered_model_name=registered, input_example=X[:5], **kwargs
        )


def _warm_up(tmp: Path, model, X) -> None:
    """Schema, lazy imports, requirement inference, alias and load paths, off the clock."""
    import mlflow
    from mlflow.tracking import MlflowClient

    exp_id = _experiment("warmup", tmp)
    info = _log(model, X, exp_id, "warmup")
    _log(model, X, exp_id, "warmup", pinned=True)
    mlflow.register_model(info.model_uri, "warmup")
    client = MlflowClient()
    client.set_registered_model_alias("warmup", "a", 1)
    client.get_model_version_by_alias("warmup", "a")
    mlflow.pyfunc.load_model("models:/warmup@a").predict(X[:5])


def _count_versions(tmp: Path, name: str) -> int:
    con = sqlite3.connect(tmp / "mlflow.db")
    try:
        (n,) = con.execute("SELECT COUNT(*) FROM model_versions WHERE name = ?", (name,)).fetchone()
        return int(n)
    finally:
        con.close()


def _setup(tmp: Path):
    import mlflow.sklearn  # noqa: F401  (imported off the clock)

    _store(tmp)
    X, y = make_data()
    model = make_model(X, y)
    _warm_up(tmp, model, X)
    return X, model


def _version() -> str:
    import mlflow

    return mlflow.__version__


def _libs() -> str:
    import numpy
    import pandas
    import sklearn

    return f"scikit-learn {sklearn.__version__}, numpy {numpy.__version__}, pandas {pandas.__version__}"


def _stats(times_s: list[float]) -> dict[str, float]:
    xs = sorted(times_s)
    total = sum(xs)
    return {
        "mean_ms": total / len(xs) * 1000,
        "median_ms": C.median(xs) * 1000,
        "p99_ms": xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))] * 1000,
        "per_s": len(xs) / total,
        "total_s": total,
    }


# --------------------------------------------------------------------------- workloads


def w_register(n: int, tmp: Path, args) -> dict:
    """Three ways to make versions of one small model:

    1. ``log_model(..., registered_model_name=...)`` in a training run, MLflow's defaults
       (pip requirements inferred in a subprocess each call): bounded by ``--max-seconds``;
    2. the same with ``pip_requirements`` given (no inference): ``n`` versions;
    3. ``mlflow.register_model(model_uri, ...)`` of an already-logged model: ``n`` versions.
    """
    import mlflow

    X, model = _setup(tmp)
    exp_id = _experiment("bench", tmp)
    figures: dict[str, float] = {}
    checks: dict[str, list[int]] = {}

    # 1) MLflow's defaults, time-bounded.
    name = f"{MODEL_NAME}_default"
    t0 = time.perf_counter()
    done = 0
    while done < n:
        _log(model, X, exp_id, name)
        done += 1
        if time.perf_counter() - t0 > args.max_seconds:
            break
    dt = time.perf_counter() - t0
    figures.update(
        log_model_default_n=done,
        log_model_default_s=dt,
        log_model_default_ms=dt / done * 1000,
        log_model_default_per_s=done / dt,
        log_model_default_projected_s=dt / done * n,
    )
    checks["log_model_default"] = [done, _count_versions(tmp, name)]
    if done < n:
        NOTES.append(
            f"log_model with MLflow's defaults stopped after {done} versions "
            f"({dt:.0f} s > --max-seconds {args.max_seconds:.0f})"
        )

    # 2) pip requirements given: no inference subprocess.
    name = MODEL_NAME
    t0 = time.perf_counter()
    for _ in range(n):
        info = _log(model, X, exp_id, name, pinned=True)
    dt = time.perf_counter() - t0
    figures.update(
        log_model_pinned_s=dt,
        log_model_pinned_ms=dt / n * 1000,
        log_model_pinned_per_s=n / dt,
    )
    checks["log_model_pinned"] = [n, _count_versions(tmp, name)]

    # 3) register an already-logged model: a new version pointing at the same artifacts.
    name = f"{MODEL_NAME}_register"
    t0 = time.perf_counter()
    for _ in range(n):
        mlflow.register_model(info.model_uri, name)
    dt = time.perf_counter() - t0
    figures.update(
        register_model_s=dt,
        register_model_ms=dt / n * 1000,
        register_model_per_s=n / dt,
    )
    checks["register_model"] = [n, _count_versions(tmp, name)]
    return {
        "figures": figures,
        "checks": checks,
        "verified": all(a == b for a, b in checks.values()),
    }


def w_resolve_alias(n: int, tmp: Path, args) -> dict:
    """Alias ``champion`` set once on version 2 of 3, then ``n`` x
    ``MlflowClient().get_model_version_by_alias``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    X, model = _setup(tmp)
    exp_id = _experiment("bench", tmp)
    info = _log(model, X, exp_id, MODEL_NAME, pinned=True)
    for _ in range(2):
        mlflow.register_model(info.model_uri, MODEL_NAME)
    client = MlflowClient()
    client.set_registered_model_alias(MODEL_NAME, ALIAS, "2")
    t0 = time.perf_counter()
    mv = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    first_ms = (time.perf_counter() - t0) * 1000
    ok = str(mv.version) == "2"
    times: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        mv = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
        times.append(time.perf_counter() - t0)
        ok = ok and str(mv.version) == "2"
    return {
        "figures": {**_stats(times), "first_ms": first_ms},
        "checks": {"all resolved to version 2": ok},
        "verified": ok,
    }


def w_load(n: int, tmp: Path, args) -> dict:
    """Register the model the way users do (defaults), alias it, then load it by URI in a
    fresh process (``load_child``): the first load is cold, ``n`` more are warm."""
    from mlflow.tracking import MlflowClient

    X, model = _setup(tmp)
    exp_id = _experiment("bench", tmp)
    _log(model, X, exp_id, MODEL_NAME)
    MlflowClient().set_registered_model_alias(MODEL_NAME, ALIAS, "1")
    expected = [int(v) for v in model.predict(X)]
    (tmp / "expected.json").write_text(json.dumps(expected))
    cmd = [sys.executable, __file__, "--workload", "load_child", "--n", str(n), "--tmp", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"load_child failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    child = json.loads(lines[-1])
    child["figures"]["sklearn_import_ms"] = _sklearn_import_ms()
    return child


def _sklearn_import_ms() -> float:
    """``import sklearn.linear_model`` alone in a fresh process (pandas already imported):
    the part of a cold load that is the library's, not the registry's."""
    code = (
        "import time, pandas; t = time.perf_counter(); import sklearn.linear_model; "
        "print((time.perf_counter() - t) * 1000)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def w_load_child(n: int, tmp: Path, args) -> dict:
    """In a fresh process: import mlflow, load ``models:/bench@champion`` (cold), predict,
    then ``n`` more loads (warm) and predictions."""
    t_start = time.perf_counter()
    X, _ = make_data()  # the caller's data; pandas is imported by then
    expected = json.loads((tmp / "expected.json").read_text())
    t0 = time.perf_counter()
    import mlflow
    import mlflow.pyfunc

    import_s = time.perf_counter() - t0
    _store(tmp)
    uri = f"models:/{MODEL_NAME}@{ALIAS}"
    t1 = time.perf_counter()
    loaded = mlflow.pyfunc.load_model(uri)
    cold_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    pred = loaded.predict(X)
    first_predict_s = time.perf_counter() - t2
    ok = [int(v) for v in pred] == expected
    warm, predict = [], []
    same = False
    for _ in range(n):
        t0 = time.perf_counter()
        again = mlflow.pyfunc.load_model(uri)
        warm.append(time.perf_counter() - t0)
        same = same or again is loaded
        t0 = time.perf_counter()
        pred = again.predict(X)
        predict.append(time.perf_counter() - t0)
        ok = ok and [int(v) for v in pred] == expected
    return {
        "figures": {
            "import_ms": import_s * 1000,
            "cold_load_ms": cold_s * 1000,
            "first_predict_ms": first_predict_s * 1000,
            "first_prediction_ms": (import_s + cold_s + first_predict_s) * 1000,
            "warm_load_ms": C.median(warm) * 1000,
            "predict_ms": C.median(predict) * 1000,
            "child_s": time.perf_counter() - t_start,
        },
        "checks": {"predictions match the fitted model": ok},
        "verified": ok,
        "same_object": same,
    }


WORKLOADS = {
    "register": w_register,
    "resolve_alias": w_resolve_alias,
    "load": w_load,
    "load_child": w_load_child,
}


def main() -> None:
    args = C.worker_args()
    if args.workload not in WORKLOADS:
        raise SystemExit(f"unknown workload {args.workload!r}; one of {sorted(WORKLOADS)}")
    n = args.n or DEFAULT_N[args.workload]
    tmp = Path(args.tmp).resolve()
    result = WORKLOADS[args.workload](n, tmp, args)
    X, y = make_data()
    result.update(
        workload=args.workload,
        tool="mlflow",
        n=n,
        notes=NOTES,
        version=_version(),
        sqlite=sqlite3.sqlite_version,
        libs=_libs(),
        data_sha=data_fingerprint(X, y),
    )
    C.emit(result)


if __name__ == "__main__":
    main()
