"""Plinth half of the registry benchmark (a worker; run with the project's python).

    .venv/bin/python benchmarks/_plinth_registry.py --workload register --n 200 --tmp /tmp/x

Same CLI and JSON output as ``_mlflow_registry.py``. Every workload gets a fresh Plinth home
(``PLINTH_HOME=<tmp>``: SQLite store and artifacts there), set before plinth is imported; the
store is warmed up (schema created, one model logged, registered, resolved and loaded) before
the clock starts. Only the public API is used (module functions on the default client). The
model and data come from ``registry.py`` (``make_data`` / ``make_model``), the same as on the
MLflow side.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from registry import ALIAS, MODEL_NAME, data_fingerprint, make_data, make_model

DEFAULT_N = {"register": 200, "resolve_alias": 1_000, "load": 20, "load_child": 20}
NOTES: list[str] = []


# --------------------------------------------------------------------------- set-up


def _home(tmp: Path) -> None:
    """Point Plinth at a fresh home (settings are read when the default client is made)."""
    if "plinth.client" in sys.modules:
        sys.modules["plinth.client"].set_default_client(None)
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["PLINTH_HOME"] = str(tmp)
    os.environ.pop("PLINTH_URI", None)
    os.environ.pop("PLINTH_STORE_URI", None)
    os.environ.pop("PLINTH_ARTIFACT_URI", None)


def _log(model, X, registered: str):
    """One training run that logs ``model`` and registers it; returns the ModelVersion."""
    import plinth

    with plinth.start_run(experiment="bench") as run:
        return run.log_model(model, name="model", input_example=X[:5], registered_model=registered)


def _warm_up(model, X) -> None:
    """Schema, lazy imports, alias and load paths, off the clock."""
    import plinth

    with plinth.start_run(experiment="warmup") as run:
        mv = run.log_model(model, name="model", input_example=X[:5], registered_model="warmup")
    plinth.register_model(model, name="warmup", input_example=X[:5])
    plinth.set_alias("warmup", "a", version=mv.version)
    plinth.get_model_version("models:/warmup@a")
    plinth.load_model("models:/warmup@a").predict(X[:5])


def _setup(tmp: Path):
    _home(tmp / "home")
    import plinth  # noqa: F401  (imported off the clock)

    X, y = make_data()
    model = make_model(X, y)
    _warm_up(model, X)
    return X, model


def _latest(name: str) -> int | None:
    """The highest version number of ``name`` (``models:/name@latest``), None if that
    URI form is not supported."""
    import plinth

    try:
        return int(plinth.get_model_version(f"models:/{name}@latest").version)
    except Exception as exc:
        NOTES.append(f"models:/{name}@latest not resolvable: {type(exc).__name__}: {exc}")
        return None


def _version() -> str:
    import plinth

    return plinth.__version__


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


def _as_ints(pred) -> list[int]:
    import numpy as np

    return [int(v) for v in np.asarray(pred).ravel()]


# --------------------------------------------------------------------------- workloads


def w_register(n: int, tmp: Path, args) -> dict:
    """``n`` versions through ``run.log_model(..., registered_model=...)`` (one training run
    each), then ``n`` through ``plinth.register_model(object, ...)``."""
    import plinth

    X, model = _setup(tmp)
    figures: dict[str, float] = {}
    checks: dict[str, list] = {}

    name = MODEL_NAME
    versions = []
    t0 = time.perf_counter()
    for _ in range(n):
        versions.append(_log(model, X, name).version)
    dt = time.perf_counter() - t0
    figures.update(
        log_model_n=n, log_model_s=dt, log_model_ms=dt / n * 1000, log_model_per_s=n / dt
    )
    checks["log_model versions 1..n"] = [versions == list(range(1, n + 1)), _latest(name) == n]

    name = f"{MODEL_NAME}_register"
    versions = []
    t0 = time.perf_counter()
    for _ in range(n):
        versions.append(plinth.register_model(model, name=name, input_example=X[:5]).version)
    dt = time.perf_counter() - t0
    figures.update(
        register_model_s=dt, register_model_ms=dt / n * 1000, register_model_per_s=n / dt
    )
    checks["register_model versions 1..n"] = [
        versions == list(range(1, n + 1)),
        _latest(name) == n,
    ]
    return {
        "figures": figures,
        "checks": checks,
        "verified": all(all(v) for v in checks.values()),
    }


def w_resolve_alias(n: int, tmp: Path, args) -> dict:
    """Alias ``champion`` set once on version 2 of 3, then ``n`` x
    ``plinth.get_model_version("models:/bench@champion")``."""
    import plinth

    X, model = _setup(tmp)
    for _ in range(3):
        plinth.register_model(model, name=MODEL_NAME, input_example=X[:5])
    plinth.set_alias(MODEL_NAME, ALIAS, version=2)
    uri = f"models:/{MODEL_NAME}@{ALIAS}"
    t0 = time.perf_counter()
    mv = plinth.get_model_version(uri)
    first_ms = (time.perf_counter() - t0) * 1000
    ok = int(mv.version) == 2
    times: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        mv = plinth.get_model_version(uri)
        times.append(time.perf_counter() - t0)
        ok = ok and int(mv.version) == 2
    return {
        "figures": {**_stats(times), "first_ms": first_ms},
        "checks": {"all resolved to version 2": ok},
        "verified": ok,
    }


def w_load(n: int, tmp: Path, args) -> dict:
    """Register the model from a training run, alias it, then load it by URI in a fresh
    process (``load_child``): the first load is cold, ``n`` more are warm."""
    import plinth

    X, model = _setup(tmp)
    mv = _log(model, X, MODEL_NAME)
    plinth.set_alias(MODEL_NAME, ALIAS, version=mv.version)
    (tmp / "expected.json").write_text(json.dumps(_as_ints(model.predict(X))))
    cmd = [sys.executable, __file__, "--workload", "load_child", "--n", str(n), "--tmp", str(tmp)]
    env = {**os.environ, "PLINTH_HOME": str(tmp / "home")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
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
    """In a fresh process: import plinth, load ``models:/bench@champion`` (cold), predict,
    then ``n`` more loads (warm) and predictions."""
    t_start = time.perf_counter()
    X, _ = make_data()  # the caller's data; pandas is imported by then
    expected = json.loads((tmp / "expected.json").read_text())
    os.environ["PLINTH_HOME"] = str(tmp / "home")
    t0 = time.perf_counter()
    import plinth

    import_s = time.perf_counter() - t0
    uri = f"models:/{MODEL_NAME}@{ALIAS}"
    t1 = time.perf_counter()
    loaded = plinth.load_model(uri)
    cold_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    pred = loaded.predict(X)
    first_predict_s = time.perf_counter() - t2
    ok = _as_ints(pred) == expected
    warm, predict = [], []
    same = False
    for _ in range(n):
        t0 = time.perf_counter()
        again = plinth.load_model(uri)
        warm.append(time.perf_counter() - t0)
        same = same or again is loaded
        t0 = time.perf_counter()
        pred = again.predict(X)
        predict.append(time.perf_counter() - t0)
        ok = ok and _as_ints(pred) == expected
    if same:
        NOTES.append("load_model returned the same object on a warm load (cached)")
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
        "notes": NOTES,
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
        tool="plinth",
        n=n,
        notes=[*result.get("notes", []), *(x for x in NOTES if x not in result.get("notes", []))],
        version=_version(),
        sqlite=sqlite3.sqlite_version,
        libs=_libs(),
        data_sha=data_fingerprint(X, y),
    )
    C.emit(result)


if __name__ == "__main__":
    main()
