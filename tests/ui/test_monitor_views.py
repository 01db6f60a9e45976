"""The monitoring view models: drift per column over time grouped by what is comparable,
the columns of a report in order, the bounds a performance monitor breaches outside of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from plinth.ui.monitor_views import (
    MAX_LINES,
    column_rows,
    drift_over_time,
    drift_result,
    shared_categories,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def column(
    name: str, test: str, value: float, drifted: bool, threshold: float = 0.05
) -> dict[str, Any]:
    pvalue = test in ("ks", "chisquare")
    return {
        "column": name, "kind": "numeric", "test": test, "threshold": threshold,
        "statistic": 0.3 if pvalue else value, "p_value": value if pvalue else None,
        "drifted": drifted, "method": "exact", "sample_size": None,
        "reference_rows": 100, "current_rows": 100,
    }  # fmt: skip


def evaluation(day: int, columns: list[dict[str, Any]], nested: bool = False) -> Any:
    report = {"columns": columns, "tested_columns": len(columns)}
    result = {"report": report} if nested else report
    return SimpleNamespace(at=T0 + timedelta(days=day), result=result, status="ok")


def test_p_values_and_distances_are_drawn_apart() -> None:
    found = drift_over_time(
        [
            evaluation(
                1, [column("age", "ks", 1e-6, True), column("x", "wasserstein", 0.2, True, 0.1)]
            ),
            evaluation(
                0, [column("age", "ks", 0.4, False), column("x", "wasserstein", 0.05, False, 0.1)]
            ),
        ]
    )
    titles = [c.title for c in found]
    assert titles == [
        "p-value per column over time (ks)",
        "wasserstein distance per column over time",
    ]
    pvalues = found[0].svg
    assert "age: 2 points from 1e-6 to 0.4, last 1e-6" in pvalues  # oldest first
    assert "alpha 0.05 at 0.05" in pvalues
    assert "threshold 0.1 at 0.1" in found[1].svg


def test_many_columns_draw_the_most_drifted_and_say_so() -> None:
    columns = [column(f"c{i:02d}", "ks", 0.5 - i / 100, i >= 8) for i in range(12)]
    [chart] = drift_over_time([evaluation(0, columns)])
    assert f"{MAX_LINES} of 12 columns drawn" in chart.caption
    drawn = [f"c{i:02d}" for i in range(12) if f"c{i:02d}: " in chart.svg]
    assert drawn == [f"c{i:02d}" for i in range(4, 12)]  # the 4 flagged, then the lowest p


def test_the_table_lists_drifted_columns_first_and_reads_a_nested_report() -> None:
    nested = evaluation(
        0,
        [
            column("b", "ks", 0.3, False),
            column("a", "ks", 0.3, False),
            column("z", "ks", 1e-3, True),
        ],
        nested=True,
    )
    rows = column_rows(drift_result(nested.result))
    assert [r.column for r in rows] == ["z", "a", "b"]
    assert rows[0].score == 1e-3 and rows[0].drifted
    assert drift_result({"status": "skipped"}) == {}


def test_categories_beyond_either_sides_top_values_are_other() -> None:
    ref = SimpleNamespace(top=[("a", 60), ("b", 30)], count=100, nulls=0)
    cur = SimpleNamespace(top=[("b", 50), ("c", 40)], count=110, nulls=10)
    names, ref_counts, cur_counts = shared_categories(ref, cur)
    assert names == ["a", "b", "c", "(other)"]
    assert ref_counts == [60, 30, 0, 10] and cur_counts == [0, 50, 40, 10]
