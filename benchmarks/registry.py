"""Registry benchmark: Plinth against MLflow's model registry, same models, same machine, one run.

    .venv/bin/python benchmarks/registry.py            # full (about 3-4 minutes)
    .venv/bin/python benchmarks/registry.py --quick    # smoke run (about 1-2 minutes)

Both tools use a SQLite store with local artifacts in a fresh scratch folder per workload.
The model is the same on both sides: a scikit-learn ``LogisticRegression`` fitted on
synthetic data (``make_data``: 200 rows x 5 float features ``f0..f4`` drawn with numpy from
the same seed, held in a pandas DataFrame so that both signatures are column-based), with
``input_example=X[:5]``.

Workloads (each a fresh subprocess: ``_plinth_registry.py`` with this interpreter,
``_mlflow_registry.py`` with the MLflow venv's python, as in ``tracking.py``):

- ``register``: N versions, one training run each, through ``log_model`` with a registered
  model name (how users register), then N versions through ``register_model``.
- ``resolve_alias``: alias ``champion`` set once, then N resolutions of it.
- ``load``: ``load_model("models:/bench@champion")`` in a fresh process (cold), then N more
  loads in that process (warm, median), with a ``predict`` on a DataFrame checked against
  the fitted model's own predictions.

The table is printed and also written, as plain text, to ``benchmarks/.work/last-registry.txt``.
"""

from __future__ import annotations

import platform
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from _common import Row

MLFLOW_VENV = C.VENVS_DIR / "mlflow"
# Same venv and requirement sets as tracking.py; the registry also needs scikit-learn there.
MLFLOW_REQUIREMENTS = (
    ("mlflow==3.18.*", "psutil"),
    ("mlflow>=3,<4", "psutil"),
)
MLFLOW_EXTRA = ("scikit-learn", "pandas")
PLINTH_WORKER = C.BENCH_DIR / "_plinth_registry.py"
MLFLOW_WORKER = C.BENCH_DIR / "_mlflow_registry.py"

# --------------------------------------------------------------------------- the shared model

SEED = 42
ROWS = 200
FEATURES = 5
MODEL_NAME = "bench"
ALIAS = "champion"


def make_data(rows: int = ROWS, features: int = FEATURES, seed: int = SEED):
    """The synthetic data set both workers use: ``(X, y)``, X a DataFrame of float64
    columns ``f0..f{features-1}``, y an int64 numpy array of 0/1 labels.

    Imports numpy and pandas only (not scikit-learn, so that a cold model load still pays
    for importing it)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, features))
    weights = rng.normal(size=features)
    noise = rng.normal(scale=0.5, size=rows)
    y = (values @ weights + noise > 0).astype("int64")
    X = pd.DataFrame(values, columns=[f"f{i}" for i in range(features)])
    return X, y


def make_model(X, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=200).fit(X, y)


def data_fingerprint(X, y) -> str:
    """sha256 (first 12 hex digits) of the data, so the harness can check both sides match."""
    import hashlib

    h = hashlib.sha256()
    h.update(",".join(map(str, X.columns)).encode())
    h.update(X.to_numpy(dtype="float64").tobytes())
    h.update(y.astype("int64").tobytes())
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    register: int
    #: bound for MLflow's default ``log_model`` loop (it infers pip requirements in a
    #: subprocess on every call: several seconds a version)
    mlflow_default_seconds: float
    resolve: int
    warm_loads: int


FULL = Sizes(register=200, mlflow_default_seconds=60, resolve=1_000, warm_loads=20)
QUICK = Sizes(register=20, mlflow_default_seconds=15, resolve=200, warm_loads=5)
TIMEOUTS = {"register": 600, "resolve_alias": 300, "load": 300}


def _mlflow_python(opts) -> Path | None:
    if opts.no_mlflow:
        return None
    try:
        py = C.ensure_venv(MLFLOW_VENV, MLFLOW_REQUIREMENTS, check_import="mlflow")
    except Exception as exc:  # the table still shows Plinth
        C.log(f"MLflow venv unavailable: {C.key_error_line(str(exc))}")
        return None
    if not C._can_import(py, "sklearn, pandas"):
        import subprocess

        C.log(f"pip install {' '.join(MLFLOW_EXTRA)} into {MLFLOW_VENV} (first run only)")
        proc = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *MLFLOW_EXTRA],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not C._can_import(py, "sklearn, pandas"):
            C.log("could not install scikit-learn into the MLflow venv:\n" + proc.stderr[-500:])
            return None
    return py


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "mlflow")
    opts = C.parse_runner_options(ap, argv, "registry")
    s = QUICK if opts.quick else FULL
    started = time.perf_counter()

    b = C.Bench(
        "registry",
        {"plinth": PLINTH_WORKER, "mlflow": MLFLOW_WORKER},
        TIMEOUTS,
        _mlflow_python(opts),
        opts.keep,
    )
    b.wait_quiet = opts.wait_quiet
    P, M = "plinth", "mlflow"
    notes: list[str] = []

    p_reg = b.run(P, "register", s.register)
    m_reg = b.run(M, "register", s.register, max_seconds=str(s.mlflow_default_seconds))
    p_res = b.run(P, "resolve_alias", s.resolve)
    m_res = b.run(M, "resolve_alias", s.resolve)
    p_load = b.run(P, "load", s.warm_loads)
    m_load = b.run(M, "load", s.warm_loads)

    # The table ------------------------------------------------------------------------------
    ms = "{:,.1f}"
    ms2 = "{:,.2f}"
    target = f"≥ 5{C.TIMES} MLflow"
    m_default_n = int(C.fig(m_reg, "log_model_default_n") or 0)
    bounded = m_reg is not None and bool(m_reg) and m_default_n < s.register
    rows = [
        Row(
            "register: log_model in a run (MLflow defaults)",
            C.fig(p_reg, "log_model_ms"),
            C.fig(m_reg, "log_model_default_ms"),
            "ms/version",
            higher_is_better=False,
            target=target,
            fmt=ms,
            note=_rates(p_reg, m_reg, "log_model_per_s", "log_model_default_per_s")
            + "; "
            + _n_note(s.register, m_default_n if m_reg else None, s.mlflow_default_seconds),
        ),
        Row(
            "register: log_model, MLflow w/o requirement inference",
            C.fig(p_reg, "log_model_ms"),
            C.fig(m_reg, "log_model_pinned_ms"),
            "ms/version",
            higher_is_better=False,
            target=target,
            fmt=ms,
            note=_rates(p_reg, m_reg, "log_model_per_s", "log_model_pinned_per_s")
            + f"; n={s.register:,}; MLflow given pip_requirements",
        ),
        Row(
            f"register {s.register:,} versions via log_model, total",
            C.fig(p_reg, "log_model_s"),
            C.fig(m_reg, "log_model_default_projected_s"),
            "s",
            higher_is_better=False,
            fmt=ms2,
            note=(
                f"MLflow defaults, projected from {m_default_n:,} versions"
                if bounded
                else "MLflow defaults"
            ),
        ),
        Row(
            "register_model: Plinth from the object, MLflow of a logged model",
            C.fig(p_reg, "register_model_ms"),
            C.fig(m_reg, "register_model_ms"),
            "ms/version",
            higher_is_better=False,
            target=target,
            fmt=ms2,
            note=_rates(p_reg, m_reg, "register_model_per_s", "register_model_per_s")
            + f"; n={s.register:,}; Plinth also packages the model, MLflow only points at it",
        ),
        Row(
            f"resolve models:/{MODEL_NAME}@{ALIAS}, per call",
            C.fig(p_res, "mean_ms"),
            C.fig(m_res, "mean_ms"),
            "ms",
            higher_is_better=False,
            target=target,
            fmt="{:,.3f}",
            note=_rates(p_res, m_res, "per_s", "per_s") + f"; mean of {s.resolve:,} calls",
        ),
        Row(
            "resolve, p99",
            C.fig(p_res, "p99_ms"),
            C.fig(m_res, "p99_ms"),
            "ms",
            higher_is_better=False,
            fmt="{:,.3f}",
        ),
        Row(
            "resolve, first call",
            C.fig(p_res, "first_ms"),
            C.fig(m_res, "first_ms"),
            "ms",
            higher_is_better=False,
            fmt=ms2,
        ),
        Row(
            "load by URI, cold (first load in a fresh process)",
            C.fig(p_load, "cold_load_ms"),
            C.fig(m_load, "cold_load_ms"),
            "ms",
            higher_is_better=False,
            fmt=ms,
            note="the load_model call, after importing the tool; " + _sklearn_note(p_load, m_load),
        ),
        Row(
            "fresh process: import + load + first predict",
            C.fig(p_load, "first_prediction_ms"),
            C.fig(m_load, "first_prediction_ms"),
            "ms",
            higher_is_better=False,
            fmt=ms,
            note=_imports(p_load, m_load),
        ),
        Row(
            "load by URI, warm",
            C.fig(p_load, "warm_load_ms"),
            C.fig(m_load, "warm_load_ms"),
            "ms",
            higher_is_better=False,
            fmt=ms2,
            note=f"median of {s.warm_loads} more loads in the same process" + _cached_note(p_load),
        ),
        Row(
            f"predict {ROWS} rows (DataFrame), warm",
            C.fig(p_load, "predict_ms"),
            C.fig(m_load, "predict_ms"),
            "ms",
            higher_is_better=False,
            fmt=ms2,
            note="median; input checked against the signature",
        ),
    ]

    # Same data on both sides?
    prints = {r.get("data_sha") for r in (p_reg, m_reg, p_res, m_res, p_load, m_load) if r}
    prints.discard(None)
    if len(prints) > 1:
        b.errors.append(f"the workers did not use the same data: fingerprints {sorted(prints)}")

    versions = _versions(b)
    machine = C.machine_info()
    mode = "quick" if opts.quick else "full"
    title = (
        f"Plinth vs MLflow — model registry ({mode}; speed-up = how many times Plinth is "
        f"faster, > 1{C.TIMES} favours Plinth)"
    )
    footer = [
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"machine: {machine['nproc']} CPUs, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        "stores: a fresh SQLite store with local artifacts per workload; model: scikit-learn "
        f"LogisticRegression on {ROWS} x {FEATURES} synthetic floats (seed {SEED}, "
        "data fingerprint "
        + (", ".join(sorted(prints)) or "—")
        + "), input_example = the first 5 rows (a DataFrame).",
        "register: one training run per version (start_run + log_model with a registered "
        "model name), then register_model; the versions are counted afterwards.",
        "MLflow: mlflow.sklearn.log_model(..., registered_model_name=...); by default it infers "
        "the pip requirements in a subprocess on every call (several seconds), so that loop "
        f"stops after {s.mlflow_default_seconds:.0f} s; the 'w/o requirement inference' row "
        "passes pip_requirements=[scikit-learn==<installed>] (MLflow's fast path). "
        "register_model registers the already-logged model's URI (no new artifacts); "
        "resolution is MlflowClient().get_model_version_by_alias; loading is "
        "mlflow.pyfunc.load_model.",
        "Plinth: run.log_model(..., registered_model=...), plinth.register_model(object), "
        "plinth.get_model_version('models:/bench@champion'), plinth.load_model(URI).",
        "load: MLflow 3 saves scikit-learn models with skops by default; importing skops.io "
        "(which imports much of scikit-learn) is most of its cold load.",
        C.busy_line(b.busy),
        *notes,
    ]
    seen: set[str] = set()
    for (tool, _w, _n), res in b.results.items():
        for note in res.get("notes", []) if res else []:
            if note not in seen:
                seen.add(note)
                footer.append(f"{'Plinth' if tool == 'plinth' else 'MLflow'}: {note}")
    return C.finish_report(rows, title, footer, opts, b.errors, started)


def _per_s(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}/s" if v >= 10 else f"{v:,.2f}/s"


def _rates(p: dict | None, m: dict | None, pkey: str, mkey: str) -> str:
    return f"Plinth {_per_s(C.fig(p, pkey))}, MLflow {_per_s(C.fig(m, mkey))}"


def _n_note(pn: int, mn: int | None, bound: float) -> str:
    if mn is None:
        return f"n={pn:,}"
    if mn >= pn:
        return f"n={pn:,}"
    return f"n: Plinth {pn:,}, MLflow {mn:,} (loop bounded to {bound:.0f} s)"


def _imports(p: dict | None, m: dict | None) -> str:
    pi, mi = C.fig(p, "import_ms"), C.fig(m, "import_ms")
    f = lambda v: "—" if v is None else f"{v:,.0f} ms"  # noqa: E731
    return f"of which import: Plinth {f(pi)}, MLflow {f(mi)}"


def _sklearn_note(p: dict | None, m: dict | None) -> str:
    pi, mi = C.fig(p, "sklearn_import_ms"), C.fig(m, "sklearn_import_ms")
    f = lambda v: "—" if v is None else f"{v:,.0f} ms"  # noqa: E731
    return f"import sklearn.linear_model alone: {f(pi)} / {f(mi)}"


def _cached_note(p: dict | None) -> str:
    if p and p.get("same_object"):
        return " (Plinth returned the same object: cached)"
    return ""


def _versions(b: C.Bench) -> dict[str, str]:
    out = {"Python": platform.python_version()}

    def first(tool: str, key: str) -> str | None:
        for res in b.results.values():
            if res.get("tool") == tool and res.get(key):
                return str(res[key])
        return None

    out["Plinth"] = first("plinth", "version") or _plinth_version()
    out["MLflow"] = first("mlflow", "version") or "not run"
    for tool, label in (("plinth", "Plinth side"), ("mlflow", "MLflow side")):
        libs = first(tool, "libs")
        if libs:
            out[label] = libs
    out["SQLite"] = sqlite3.sqlite_version
    return out


def _plinth_version() -> str:
    try:
        import plinth

        return plinth.__version__
    except Exception:
        return "not importable"


if __name__ == "__main__":
    sys.exit(main())
