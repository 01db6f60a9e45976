"""The monitoring charts (inline SVG): what each draws, where, and its text alternative."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from plinth.ui.monitor_charts import (
    HEIGHT,
    Line,
    Rule,
    category_chart,
    histogram_chart,
    line_chart,
    nice_ticks,
    status_strip,
)

DAY = 86_400.0
T0 = 1_700_000_000.0


def parsed(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "svg"
    assert root.get("role") == "img"
    assert root.get("aria-label")
    return root


def numbers(points: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",") for p in points.split())]


def test_a_line_with_an_interval_draws_a_band_and_an_estimate_is_dashed() -> None:
    times = [T0 + i * DAY for i in range(4)]
    measured = Line("auc", times, [0.8, 0.78, 0.75, 0.7], lower=[0.75] * 4, upper=[0.85] * 4)
    estimated = Line("auc estimated", times, [0.8, 0.8, 0.79, 0.79], dashed=True)
    root = parsed(
        line_chart([measured, estimated], title="AUC", rules=[Rule("validation 0.82", 0.82)])
    )
    [band] = root.iter("polygon")
    assert len(numbers(band.get("points", ""))) == 8  # 4 upper, 4 lower
    solid, dashed = root.iter("polyline")
    assert solid.get("stroke-dasharray") is None
    assert dashed.get("stroke-dasharray")
    [rule] = [e for e in root.iter("line") if e.get("class") == "rule"]
    # higher values are drawn higher (smaller y): the rule at 0.82 is above the 0.7 point
    last = numbers(solid.get("points", ""))[-1]
    assert float(rule.get("y1", "nan")) < last[1]
    alt = root.get("aria-label", "")
    assert "auc: 4 points from 0.7 to 0.8, last 0.7" in alt
    assert "auc estimated (estimated)" in alt and "validation 0.82 at 0.82" in alt


def test_a_missing_value_breaks_the_line() -> None:
    times = [T0 + i * DAY for i in range(5)]
    root = parsed(line_chart([Line("f1", times, [0.5, 0.6, None, 0.7, 0.8])], title="t"))
    assert len(list(root.iter("polyline"))) == 2
    assert len(list(root.iter("circle"))) == 4


def test_p_values_on_a_log_scale_and_drifted_points_filled() -> None:
    times = [T0, T0 + DAY, T0 + 2 * DAY]
    line = Line("age", times, [0.5, 1e-8, 0.3], marked=[False, True, False])
    root = parsed(line_chart([line], title="p", rules=[Rule("alpha", 0.05)], log_y=True))
    circles = list(root.iter("circle"))
    ys = [float(c.get("cy", "nan")) for c in circles]
    assert ys[1] > ys[0] > 0  # 1e-8 far below 0.5
    assert ys[1] <= HEIGHT
    assert [c.get("fill") == "#fff" for c in circles] == [True, False, True]
    ticks = [t.text for t in root.iter("text")]
    assert "1e-8" in ticks and "1" in ticks


def test_no_points_says_so() -> None:
    root = parsed(line_chart([Line("x", [], [])], title="empty", empty="No windows yet."))
    assert [t.text for t in root.iter("text")] == ["No windows yet."]
    assert root.get("aria-label") == "empty: No windows yet."


def test_histograms_share_edges_and_are_drawn_as_shares() -> None:
    edges = [0.0, 1.0, 2.0, 3.0, 4.0]
    root = parsed(
        histogram_chart(edges, [10, 50, 30, 10], [0, 40, 80, 80], title="age", x_label="age")
    )
    bars = [r for r in root.iter("rect") if r.get("class") == "ref-bar"]
    assert len(bars) == 4
    heights = [float(b.get("height", "nan")) for b in bars]
    assert heights[1] == pytest.approx(5 * heights[0], rel=1e-3)  # 50 % vs 10 %
    [step] = [p for p in root.iter("polyline") if p.get("class") == "cur-step"]
    ys = [y for _, y in numbers(step.get("points", ""))]
    base = ys[0]
    # current: 0 %, 20 %, 40 %, 40 %: its first bin lies on the base line
    assert ys[1] == ys[2] == base
    assert ys[5] == ys[7] < ys[3] < base
    alt = root.get("aria-label", "")
    assert "reference peaks at [1, 2) with 50.0% of its rows" in alt
    assert "current peaks at [2, 3) with 40.0% of its rows" in alt


def test_histogram_edges_must_fit_the_counts() -> None:
    with pytest.raises(ValueError, match="one edge more than counts"):
        histogram_chart([0.0, 1.0], [1, 2], [1, 2], title="bad")


def test_categories_side_by_side_with_their_names_escaped() -> None:
    svg = category_chart(["<a>", "b"], [3, 1], [1, 3], title="city")
    root = parsed(svg)
    assert "&lt;a&gt;" in svg and "<a>" not in svg
    assert len([r for r in root.iter("rect") if r.get("class") in ("ref-bar", "cur-bar")]) == 4
    assert "<a> 75.0% → 25.0%, b 25.0% → 75.0%" in root.get("aria-label", "")


def test_the_status_strip_colours_each_evaluation() -> None:
    root = parsed(status_strip([T0, T0 + 60, T0 + 120], ["ok", "breach", "skipped"], title="s"))
    marks = [r for r in root.iter("rect") if "status-mark" in (r.get("class") or "")]
    assert [m.get("fill") for m in marks] == ["#1b6e3a", "#a3261b", "#8a96a3"]
    assert "3 evaluations (1 ok, 1 breach, 1 skipped); the last skipped" in root.get(
        "aria-label", ""
    )


def test_nice_ticks() -> None:
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.73, 0.86, 4) == [0.75, 0.8, 0.85]
