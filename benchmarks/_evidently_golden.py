"""Golden values from Evidently 0.7's DataDriftPreset for Plinth's `evidently` preset.

Run in Evidently's own environment (it cannot live in Plinth's venv):

    python3 -m venv /work/venvs/evidently
    /work/venvs/evidently/bin/pip install "evidently==0.7.23" "pandas<3"
    /work/venvs/evidently/bin/python benchmarks/_evidently_golden.py > tests/stats/evidently_golden.json

`make_data(n)` builds the seeded reference and current frames (numpy's PCG64 streams
are stable across versions); tests/stats/test_drift_evidently.py imports it, runs Plinth
on the same frames and compares with the JSON this script printed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pandas as pd

SIZES = (500, 1100, 5000, 100_000)
SEED = 20261205
CATS = list("abcdefgh")
MANY = [f"k{i:02d}" for i in range(60)]


def make_data(n: int, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames of `n` rows each: columns with and without drift."""
    r = np.random.default_rng([seed, n])
    return _frame(r, n, drift=False), _frame(r, n, drift=True)


def _frame(r: np.random.Generator, n: int, *, drift: bool) -> pd.DataFrame:
    few = np.array([0.0, 1.5, 3.0, 4.5])
    zipf = 1.0 / np.arange(1, len(MANY) + 1)
    nulls = r.normal(0, 1, n)
    nulls[r.random(n) < 0.1] = np.nan
    cat_new = list(CATS[:4]) + (["z"] if drift else [])
    new_p = [0.24, 0.24, 0.24, 0.24, 0.04] if drift else [0.25] * 4
    return pd.DataFrame(
        {
            "num_same": r.normal(0, 1, n),
            "num_shift": r.normal(0.3 if drift else 0.0, 1, n),
            "num_small_shift": r.normal(0.03 if drift else 0.0, 1, n),
            "num_scale": r.lognormal(0, 0.5, n) * (1.3 if drift else 1.0),
            "num_nulls": nulls,
            "num_few": r.choice(few, n, p=[0.25, 0.25, 0.25, 0.25]),
            "num_few_drift": r.choice(few, n, p=[0.4, 0.3, 0.2, 0.1] if drift else [0.25] * 4),
            "num_binary": (r.random(n) < (0.4 if drift else 0.3)).astype(np.float64),
            "int_few": r.integers(0, 8, n).astype(np.int64),
            "int_many": (r.integers(0, 100, n) + (8 if drift else 0)).astype(np.int64),
            "cat_same": r.choice(CATS, n),
            "cat_drift": r.choice(CATS, n, p=_tilted(len(CATS), 0.5 if drift else 0.0)),
            "cat_many": r.choice(MANY, n, p=zipf / zipf.sum()),
            "cat_binary": r.choice(["no", "yes"], n, p=[0.7, 0.3]),
            "bool_drift": r.random(n) < (0.6 if drift else 0.5),
            "cat_new": r.choice(cat_new, n, p=new_p),
        }
    )


def _tilted(k: int, tilt: float) -> list[float]:
    w = np.exp(tilt * np.linspace(-1, 1, k))
    return list(w / w.sum())


# Evidently's display names (StatTest.display_name) -> Plinth's test names.
TEST_NAMES = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "ztest",
    "Jensen-Shannon distance": "jensenshannon",
    "Wasserstein distance (normed)": "wasserstein",
    "PSI": "psi",
    "Anderson-Darling": "anderson",
    # a method asked for by name keeps that name
    **{name: name for name in ("ks", "chisquare", "jensenshannon", "wasserstein", "psi")},
    "anderson": "anderson",
    "z": "ztest",
}


# Non-default tests asked per column (DataDriftPreset(per_column_method=...)), Evidently's
# names: they check the binning, zero filling and thresholds of the other tests.
OVERRIDES = {
    "num_shift": "psi",
    "num_small_shift": "psi",
    "num_same": "jensenshannon",
    "num_scale": "anderson",
    "num_nulls": "ks",
    "int_many": "wasserstein",
    "num_few_drift": "psi",
    "cat_drift": "psi",
    "cat_many": "psi",
    "cat_same": "chisquare",
    "bool_drift": "z",
}


def run_evidently(
    reference: pd.DataFrame, current: pd.DataFrame, methods: dict[str, str] | None = None
) -> dict[str, Any]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    preset = DataDriftPreset(per_column_method=methods)
    snapshot = Report([preset], include_tests=True).run(current, reference)
    d = snapshot.dict()
    columns: dict[str, Any] = {}
    by_metric: dict[str, str] = {}
    share = None
    for m in d["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            columns[cfg["column"]] = {
                "test": TEST_NAMES[cfg["method"]],
                "score": _num(m["value"]),
                "threshold": cfg["threshold"],
            }
            by_metric[m["id"]] = cfg["column"]
        elif cfg["type"].endswith("DriftedColumnsCount"):
            share = m["value"]["share"]
    dataset_drifted = None
    for t in d["tests"]:
        metric = t["metric_config"]["metric_id"]
        if metric in by_metric:
            columns[by_metric[metric]]["drifted"] = t["status"] == "FAIL"
        else:
            dataset_drifted = t["status"] == "FAIL"
    return {"columns": columns, "drifted_share": share, "dataset_drifted": dataset_drifted}


def _num(value: Any) -> float | None:
    v = float(value)
    return v if np.isfinite(v) else None


def main() -> None:
    import evidently

    out: dict[str, Any] = {"evidently": evidently.__version__, "seed": SEED, "sizes": {}}
    for n in SIZES:
        reference, current = make_data(n)
        out["sizes"][str(n)] = run_evidently(reference, current)
        out["sizes"][str(n)]["overrides"] = run_evidently(reference, current, OVERRIDES)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
