"""The pipelines pages' views on their own: which steps the duration chart draws, how a
decision's margin reads in the metric's direction, a step's output in a few words."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from plinth.pipelines.types import PipelineRun, StepRun
from plinth.registry.types import Decision
from plinth.ui.pipeline_views import durations_chart, margin, output_summary, scores_charts

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def run(k: int, statuses: dict[str, str]) -> PipelineRun:
    steps = [
        StepRun(name, i, status, duration_seconds=float(10 * k + i))
        for i, (name, status) in enumerate(statuses.items())
    ]
    return PipelineRun(k, "p", "succeeded", "cron", started_at=T0 + timedelta(hours=k), steps=steps)


def test_the_duration_chart_leaves_out_steps_that_did_no_work() -> None:
    runs = [
        run(1, {"load": "succeeded", "fit": "succeeded", "score": "succeeded"}),
        run(2, {"load": "cached", "fit": "failed", "score": "skipped"}),
        run(3, {"load": "reused", "fit": "succeeded", "score": "succeeded"}),
    ]
    chart = durations_chart(runs[::-1], ["load", "fit", "score"])
    alt = ET.fromstring(str(chart.svg)).get("aria-label", "")
    assert "load: 1 points from 10 to 10" in alt, alt
    assert "fit: 3 points from 11 to 31, last 31" in alt, alt
    assert "score: 2 points from 12 to 32" in alt, alt
    circles = list(ET.fromstring(str(chart.svg)).iter("circle"))
    assert sum(c.get("fill") != "#fff" for c in circles) == 1  # fit's failure
    assert "No finished steps yet." in str(durations_chart([run(1, {"a": "pending"})]).svg)


def decision(outcome: str, challenger: float, champion: float | None, direction: str) -> Decision:
    return Decision(outcome, "m", "rmse", direction, None, challenger, 1, champion, None, "", at=T0)


def test_a_margin_is_positive_when_the_challenger_is_better() -> None:
    assert margin(decision("promoted", 0.9, 0.8, "max")) == 0.9 - 0.8
    assert margin(decision("promoted", 1.5, 2.0, "min")) == 0.5
    assert margin(decision("kept", 2.5, 2.0, "min")) == -0.5
    assert margin(decision("promoted", 2.5, None, "min")) is None


def test_a_decisions_chart_draws_them_oldest_first() -> None:
    newest = Decision(
        "kept", "m", "rmse", "min", None, 3.0, 2, 2.0, None, "", at=T0 + timedelta(days=1)
    )
    oldest = decision("promoted", 2.0, 2.5, "min")
    [chart] = scores_charts([newest, oldest])
    alt = ET.fromstring(str(chart.svg)).get("aria-label", "")
    assert "challenger: 2 points from 2 to 3, last 3" in alt, alt
    assert "2 decisions, 1 promoted (lower is better)" in chart.caption


def test_an_outputs_summary() -> None:
    assert output_summary(None) == ""
    assert output_summary({"kind": "none"}) == "none"
    table = {"kind": "arrow", "summary": {"rows": 12, "columns": ["a", "b"]}}
    assert output_summary(table) == 'arrow: rows 12, columns ["a", "b"]'
    assert output_summary({"kind": "json", "summary": "x" * 300}).endswith("…")
