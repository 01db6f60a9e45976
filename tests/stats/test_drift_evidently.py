"""Plinth's `evidently` preset gives Evidently 0.7's per-column tests and verdicts.

tests/stats/evidently_golden.json is the reference tool's own output, not ours: it was
produced by benchmarks/_evidently_golden.py run with evidently==0.7.23 (and pandas<3,
scipy 1.17.1) in a separate venv, on the seeded frames of that script's `make_data`
(sizes 500, 1,100, 5,000 and 100,000 rows; numeric and categorical columns with and without
drift, numeric columns with at most 5 distinct values, binary, boolean and small-int
columns, a 10% null column and a category new in the current data). Here Plinth runs on
the same frames and must choose the same test per column, reach the same verdict, and
compute the same score (p-value or distance): to 1e-9 relative when every value is
available (raw data no larger than the sample size), within 2% relative when the test
ran on the profiles' histograms.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from plinth.stats.drift import DriftReport, drift_report

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((Path(__file__).parent / "evidently_golden.json").read_text())


def _golden_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "_evidently_golden", ROOT / "benchmarks" / "_evidently_golden.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _golden_script()


def _score(report: DriftReport, column: str) -> float:
    c = report.column(column)
    value = c.p_value if c.p_value is not None else c.statistic
    assert value is not None, column
    return value


def _run(n: int, sample_size: int) -> tuple[DriftReport, dict[str, Any]]:
    reference, current = SCRIPT.make_data(n)
    report = drift_report(reference, current, preset="evidently", sample_size=sample_size)
    return report, GOLDEN["sizes"][str(n)]


def _run_overrides(n: int, sample_size: int) -> tuple[DriftReport, dict[str, Any]]:
    reference, current = SCRIPT.make_data(n)
    tests = {c: "ztest" if m == "z" else m for c, m in SCRIPT.OVERRIDES.items()}
    report = drift_report(
        reference, current, preset="evidently", sample_size=sample_size, tests=tests
    )
    return report, GOLDEN["sizes"][str(n)]["overrides"]


def _assert_same(report: DriftReport, expected: dict[str, Any]) -> None:
    assert {c.column for c in report.columns} == set(expected["columns"])
    for column, exp in expected["columns"].items():
        got = report.column(column)
        assert got.error is None, got.error
        assert got.method == "exact", column
        assert got.test == exp["test"], column
        assert got.threshold == exp["threshold"], column
        assert got.drifted == exp["drifted"], column
        assert _score(report, column) == pytest.approx(exp["score"], rel=1e-9, abs=1e-300)
    assert report.drifted_share == pytest.approx(expected["drifted_share"])
    assert report.dataset_drifted == expected["dataset_drifted"]


def test_golden_file_is_evidentlys_output_for_all_sizes() -> None:
    assert GOLDEN["evidently"] == "0.7.23"
    assert sorted(GOLDEN["sizes"], key=int) == [str(n) for n in SCRIPT.SIZES]


@pytest.mark.parametrize("n", [500, 1100, 5000])
def test_exact_data_same_test_verdict_and_score(n: int) -> None:
    report, expected = _run(n, sample_size=5000)
    _assert_same(report, expected)
    assert report.correction is None


@pytest.mark.parametrize("n", [500, 1100, 5000])
def test_asked_for_tests_exact_data_same_verdict_and_score(n: int) -> None:
    """PSI (Sturges bins, zero filling), binned Jensen-Shannon, Anderson-Darling, K-S and
    Wasserstein outside their default sizes, chi-square and z asked for by name."""
    report, expected = _run_overrides(n, sample_size=5000)
    _assert_same(report, expected)
    assert {report.column(c).test for c in SCRIPT.OVERRIDES} == {
        "psi", "jensenshannon", "anderson", "ks", "wasserstein", "chisquare", "ztest",
    }  # fmt: skip


@pytest.mark.parametrize(("n", "sample_size"), [(1100, 1000), (5000, 1000), (100_000, 5000)])
def test_asked_for_distances_on_profiles_within_two_percent(n: int, sample_size: int) -> None:
    """Binned PSI / Jensen-Shannon from the histograms: 2% relative, or 0.001 absolute for
    values near zero (a JS of 0.019 is off by 0.0004 at 5,000 rows)."""
    report, expected = _run_overrides(n, sample_size=sample_size)
    checked = 0
    for column, exp in expected["columns"].items():
        got = report.column(column)
        if got.method != "profile":
            continue
        checked += 1
        assert got.test == exp["test"] and got.drifted == exp["drifted"], column
        assert _score(report, column) == pytest.approx(exp["score"], rel=0.02, abs=1e-3), column
    assert checked >= 8


@pytest.mark.parametrize(("n", "sample_size"), [(1100, 1000), (5000, 1000), (100_000, 5000)])
def test_profile_approximation_within_two_percent_same_verdict(n: int, sample_size: int) -> None:
    report, expected = _run(n, sample_size=sample_size)
    on_profiles = [c for c in report.columns if c.method == "profile"]
    assert {c.test for c in on_profiles} >= {"wasserstein", "jensenshannon"}
    for column, exp in expected["columns"].items():
        got = report.column(column)
        assert got.test == exp["test"], column
        assert got.drifted == exp["drifted"], column
        assert _score(report, column) == pytest.approx(exp["score"], rel=0.02), column
    assert report.dataset_drifted == expected["dataset_drifted"]


def test_small_sample_rules_seen_in_the_golden_file() -> None:
    """The cases the preset has to get right at 500 rows, spelled out."""
    cols = GOLDEN["sizes"]["500"]["columns"]
    assert cols["int_few"]["test"] == "chisquare"  # int64, <= 10 values: categorical
    assert cols["int_many"]["test"] == "ks"
    assert cols["num_few"]["test"] == "chisquare"  # float, 4 values
    assert cols["num_binary"]["test"] == "ztest"
    assert cols["bool_drift"]["test"] == "ztest"
    assert cols["cat_new"]["score"] == 0.0  # a category absent from the reference
    # Evidently flags undrifted columns here (p just under 0.05): int_few, num_few.
    assert cols["int_few"]["drifted"] and cols["num_few"]["drifted"]


def test_evidently_column_typing_of_arrow_data() -> None:
    """Evidently 0.7's infer_column_type on each column after Arrow's to_pandas(), as
    printed by that version (uint8: unknown; int64 with nulls: float64, numerical; bool
    with nulls: object, unknown; >50% distinct strings: text; date: unknown)."""
    r = np.random.default_rng(0)
    n = 200
    table = pa.table(
        {
            "u8": pa.array(r.integers(0, 50, n), pa.uint8()),
            "i_nulls": pa.array([None if i % 10 == 0 else i % 3 for i in range(n)], pa.int64()),
            "i_few": pa.array(np.arange(n) % 10, pa.int64()),
            "i_11": pa.array(np.arange(n) % 11, pa.int64()),
            "i32_few": pa.array(np.arange(n) % 3, pa.int32()),
            "b": pa.array(r.random(n) < 0.5),
            "b_nulls": pa.array([None if i % 10 == 0 else i % 2 == 0 for i in range(n)]),
            "s_text": pa.array([f"id{i}" if i < 101 else "x" for i in range(n)]),
            "s_cat": pa.array([f"id{i}" if i < 99 else "x" for i in range(n)]),
            "dict": pa.array(["a", "b"] * (n // 2)).dictionary_encode(),
            "date": pa.array([date(2020, 1, 1)] * n),
            "f32": pa.array(r.random(n), pa.float32()),
        }
    )
    report = drift_report(table, table, preset="evidently")
    kinds = {c.column: (c.kind if c.error is None else "error") for c in report.columns}
    assert kinds == {
        "i_nulls": "numeric",
        "i_few": "categorical",
        "i_11": "numeric",
        "i32_few": "categorical",
        "b": "categorical",
        "s_text": "error",
        "s_cat": "categorical",
        "dict": "categorical",
        "f32": "numeric",
    }
    assert "treats it as text" in (report.column("s_text").error or "")
    plinth = drift_report(table, table)
    assert {c.column for c in plinth.columns} == set(table.column_names) - {"date"}
