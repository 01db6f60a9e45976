"""An A/B experiment's results as people look at them: a row per arm, the warnings, and
the charts (lift with its interval per arm and metric; the cumulative KPI per arm and the
sequential interval over time). The dashboard's page and ``plinth ab report`` show the
same view; the chart specs are embedded in the page (``charts.spec``), so one reading of
the logs draws every chart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from plinth.abtests.decisions import planned_sample
from plinth.abtests.types import Experiment, ExperimentVersion, Status
from plinth.errors import PlinthError
from plinth.ui.charts import series, spec

if TYPE_CHECKING:
    from plinth.abtests.checks import GuardrailCheck
    from plinth.abtests.results import Results
    from plinth.abtests.service import AbTestService

ESTIMATE_METHOD = "normal interval: estimate ± z·standard error"
# A rate of units a day from less time than this is noise, not a rate to plan by.
MIN_RATE_DAYS = 1 / 24
# plinth.js's palette: an arm keeps its colour (by its place in the design) in every chart
COLOURS = ("#1f5fbf", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#be185d")


@dataclass(frozen=True)
class ArmRow:
    """One arm: its units and KPI estimate with its interval; against control (treatment
    arms) the lifts, p-values, the probability to beat control and, when the results have
    one, the always-valid (sequential) interval on the absolute lift."""

    arm: str
    control: bool
    share: float
    units: int
    estimate: float | None
    low: float | None
    high: float | None
    comparison: Any = None  # stats.Comparison
    adjusted_p: float | None = None
    beat: float | None = None
    sequential: tuple[float, float, float] | None = None  # lift, lower, upper


@dataclass(frozen=True)
class ChartView:
    key: str
    title: str
    alt: str
    caption: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class GuardrailRow:
    metric: str
    arm: str
    check: GuardrailCheck


@dataclass(frozen=True)
class Progress:
    """How far the experiment is towards its planned sample (``decisions.planned_sample``):
    the arm with the fewest units against the plan, and the days left at the rate units
    have come since it started."""

    per_arm: int
    fewest: int
    share: float
    units_per_day: float | None
    days_left: float | None
    method: str


@dataclass(frozen=True)
class ResultsView:
    experiment: Experiment
    results: Results
    level: float
    rows: list[ArmRow]
    warnings: list[str]
    guardrails: list[GuardrailRow]
    charts: list[ChartView]
    notes: list[str]
    sequential_method: str = ""
    timeline_method: str = ""
    history: list[ExperimentVersion] = field(default_factory=list)  # newest first, capped
    history_total: int = 0  # versions in all (a bandit re-allocating for months has many)
    progress: Progress | None = None
    cuped: dict[str, Any] = field(default_factory=dict)  # arm -> stats.Comparison


# the newest versions a page or report shows (``plinth ab history`` lists them all)
HISTORY_SHOWN = 200


def results_view(service: AbTestService, name: str, *, history: bool = False) -> ResultsView:
    """Read ``name``'s design, results and (when the service has it) timeline."""
    exp = service.get_abtest(name)
    results = service.abtest_results(name)
    level = 1 - exp.alpha
    rows = _rows(exp, results, level)
    notes = list(results.notes)
    charts = _lift_charts(exp, results, rows, level)
    timeline_method = ""
    if results.units_by_arm:
        try:
            timeline = service.abtest_timeline(name)
        except PlinthError as exc:  # the figures above stand without it
            notes.append(f"the KPI over time could not be read: {exc.message}")
        else:
            timeline_method = str(timeline.method)
            notes += [str(n) for n in timeline.notes]
            charts += _timeline_charts(exp, timeline)
    _paint(charts, exp)
    versions = service.abtest_history(name) if history else []
    first = next(iter(results.sequential.values()), None)
    method = "" if first is None else first.method
    return ResultsView(
        experiment=exp,
        results=results,
        level=level,
        rows=rows,
        warnings=warnings(results),
        guardrails=[
            GuardrailRow(metric, arm, check)
            for metric, arms in results.guardrails.items()
            for arm, check in arms.items()
        ],
        charts=charts,
        notes=notes,
        sequential_method=method,
        timeline_method=timeline_method,
        history=list(reversed(versions[-HISTORY_SHOWN:])),
        history_total=len(versions),
        progress=plan_progress(exp, results, notes),
        cuped=dict(results.cuped),
    )


def plan_progress(exp: Experiment, results: Results, notes: list[str]) -> Progress | None:
    if not results.units_by_arm or exp.started_at is None:
        return None
    plan = planned_sample(exp, results, notes)
    if plan is None:
        return None
    active = [a.name for a in exp.arms if a.share > 0]
    fewest = min(results.units_by_arm.get(arm, 0) for arm in active)
    total = sum(results.units_by_arm.get(arm, 0) for arm in active)
    end = exp.stopped_at or datetime.now(UTC)
    days = (end - exp.started_at).total_seconds() / 86_400
    rate = total / days if days >= MIN_RATE_DAYS and total else None
    left = max(plan.per_arm * len(active) - total, 0)
    running = exp.status is Status.RUNNING
    days_left = left / rate if rate and running and fewest < plan.per_arm else None
    return Progress(plan.per_arm, fewest, min(fewest / plan.per_arm, 1.0), rate, days_left,
                    plan.method)  # fmt: skip


def warnings(results: Results) -> list[str]:
    """What must be seen before any figure is believed: a sample-ratio mismatch and each
    guardrail breach."""
    found = []
    srm = results.srm
    if srm is not None and srm.flagged:
        counts = ", ".join(f"{arm} {n:,}" for arm, n in srm.observed.items())
        found.append(
            f"Sample ratio mismatch: the units per arm ({counts}) do not fit the planned "
            f"shares (p = {srm.p_value:.3g}, below {srm.threshold:g}; {srm.method}). The "
            "assignment or the logging is broken: do not trust the lifts until it is fixed."
        )
    for metric, arms in results.guardrails.items():
        for arm, check in arms.items():
            if check.breached:
                state = "broken" if check.significant else "possibly broken"
                found.append(f"Guardrail {metric} {state} in arm {arm}: {check.evidence}.")
    return found


def _rows(exp: Experiment, results: Results, level: float) -> list[ArmRow]:
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    sequential = results.sequential
    rows = []
    for arm in exp.arms:
        summary = results.summaries.get(arm.name)
        low = high = estimate = None
        if summary is not None:
            estimate = summary.estimate
            half = z * math.sqrt(max(summary.variance, 0.0))
            low, high = estimate - half, estimate + half
        adjusted = results.adjusted.get(arm.name)
        bayes = results.bayes.get(arm.name)
        look = sequential.get(arm.name)
        rows.append(
            ArmRow(
                arm=arm.name,
                control=arm.control,
                share=arm.share,
                units=results.units_by_arm.get(arm.name, 0),
                estimate=estimate,
                low=low,
                high=high,
                comparison=results.primary.get(arm.name),
                adjusted_p=None if adjusted is None else adjusted.adjusted_p_value,
                beat=None if bayes is None else bayes.probability_to_beat_control,
                sequential=None if look is None else (look.lift, look.ci[0], look.ci[1]),
            )
        )
    return rows


# -- charts ------------------------------------------------------------------------------


def _paint(charts: list[ChartView], exp: Experiment) -> None:
    """Each arm in its own colour in every chart; the bound red, the always-valid grey."""
    place = {arm.name: i for i, arm in enumerate(exp.arms)}
    fixed = {"bound": "#a3261b", "always-valid": "#5a6472"}
    for chart in charts:
        for drawn in chart.spec["series"]:
            label = drawn["label"]
            if label in place:
                drawn["colour"] = COLOURS[place[label] % len(COLOURS)]
            elif label in fixed:
                drawn["colour"] = fixed[label]


def _lift_charts(
    exp: Experiment, results: Results, rows: list[ArmRow], level: float
) -> list[ChartView]:
    kpi = results.kpi.name
    compared = [r for r in rows if r.comparison is not None]
    if not compared:
        return []
    names = {float(i + 1): r.arm for i, r in enumerate(compared)}
    percent = f"{level:.0%}"
    absolute, relative = [], []
    for i, row in enumerate(compared):
        c, x = row.comparison, float(i + 1)
        absolute.append(
            series(row.arm, [x], [c.absolute_lift], "points", lower=[c.absolute_ci[0]],
                   upper=[c.absolute_ci[1]])
        )  # fmt: skip
        if c.relative_lift is not None and c.relative_ci is not None:
            relative.append(
                series(row.arm, [x], [100 * c.relative_lift], "points",
                       lower=[100 * c.relative_ci[0]], upper=[100 * c.relative_ci[1]])
            )  # fmt: skip
    sequential = [r for r in compared if r.sequential is not None]
    if sequential:
        xs = [float(compared.index(r) + 1) + 0.2 for r in sequential]
        looks = [r.sequential for r in sequential if r.sequential is not None]
        absolute.append(
            series("always-valid", xs, [s[0] for s in looks], "points",
                   lower=[s[1] for s in looks], upper=[s[2] for s in looks])
        )  # fmt: skip
    charts = [
        ChartView(
            "lift-absolute",
            f"Absolute lift of {kpi}",
            _lift_alt(f"absolute lift of {kpi}", compared, percent, relative=False),
            f"Each treatment arm minus control, with its {percent} interval ({compared[0].comparison.method})"
            + ("; beside it the always-valid interval." if sequential else ".")
            + " The dashed line is no effect.",
            spec(absolute, "arm", f"lift of {kpi}", x_names=names, zero=True),
        )
    ]
    if relative:
        charts.append(
            ChartView(
                "lift-relative",
                f"Relative lift of {kpi}",
                _lift_alt(f"relative lift of {kpi}", compared, percent, relative=True),
                f"Each treatment arm against control in percent, with its {percent} interval "
                f"({compared[0].comparison.relative_method}).",
                spec(relative, "arm", f"lift of {kpi} (%)", x_names=names, zero=True),
            )
        )
    charts += _guardrail_charts(results)
    return charts


def _lift_alt(what: str, rows: list[ArmRow], percent: str, *, relative: bool) -> str:
    parts = []
    for row in rows:
        c = row.comparison
        if relative:
            if c.relative_lift is None or c.relative_ci is None:
                continue
            lift, (low, high) = c.relative_lift, c.relative_ci
            parts.append(f"{row.arm} {lift:+.2%} [{low:+.2%}, {high:+.2%}]")
        else:
            low, high = c.absolute_ci
            parts.append(f"{row.arm} {c.absolute_lift:+.4g} [{low:+.4g}, {high:+.4g}]")
    return f"Chart of the {what} per arm with {percent} intervals: " + "; ".join(parts)


def _guardrail_charts(results: Results) -> list[ChartView]:
    charts = []
    for metric, arms in results.guardrails.items():
        if not arms:
            continue
        names = {float(i + 1): arm for i, arm in enumerate(arms)}
        drawn = []
        parts = []
        for i, (arm, check) in enumerate(arms.items()):
            scale = 100 if check.relative else 1
            drawn.append(
                series(arm, [float(i + 1)], [scale * check.lift], "points",
                       lower=[scale * check.ci[0]], upper=[scale * check.ci[1]])
            )  # fmt: skip
            parts.append(f"{arm}: {check.evidence}")
        first = next(iter(arms.values()))
        scale = 100 if first.relative else 1
        edge = [0.5, len(arms) + 0.5]
        drawn.append(series("bound", edge, [scale * first.bound] * 2))
        unit = " (%)" if first.relative else ""
        charts.append(
            ChartView(
                f"guardrail-{metric}",
                f"Guardrail {metric}",
                f"Chart of the lift of guardrail {metric} per arm against its bound: "
                + "; ".join(parts),
                f"Lift against control with its interval; the line is the bound ({first.method}).",
                spec(drawn, "arm", f"lift of {metric}{unit}", x_names=names, zero=True),
            )
        )
    return charts


def _timeline_charts(exp: Experiment, timeline: Any) -> list[ChartView]:
    points = list(timeline.points)
    kpi = timeline.kpi.name
    if not points:
        return []
    xs = [p.at.timestamp() for p in points]
    arms = [a.name for a in exp.arms]
    per_arm = [
        series(arm, xs, [p.estimate.get(arm) for p in points])
        for arm in arms
        if any(arm in p.estimate for p in points)
    ]
    last = points[-1]
    shown = ", ".join(f"{arm} {value:.4g}" for arm, value in last.estimate.items())
    charts = [
        ChartView(
            "kpi-over-time",
            f"{kpi} over time",
            f"Line chart of the cumulative {kpi} per arm over {len(points)} times; latest: {shown}",
            f"Cumulative from the start, per arm ({timeline.method}).",
            spec(per_arm, "time", kpi, x_time=True),
        )
    ]
    treated = [a for a in arms if a != timeline.control and any(a in p.lift for p in points)]
    bands = [
        series(
            arm,
            xs,
            [p.lift.get(arm) for p in points],
            lower=[p.lower.get(arm) for p in points],
            upper=[p.upper.get(arm) for p in points],
        )
        for arm in treated
    ]
    if bands:
        now = "; ".join(
            f"{arm} {last.lift[arm]:+.4g} [{last.lower[arm]:+.4g}, {last.upper[arm]:+.4g}]"
            for arm in treated
            if arm in last.lift and arm in last.lower and arm in last.upper
        )
        charts.append(
            ChartView(
                "sequential",
                "Sequential interval",
                f"Line chart of the absolute lift of {kpi} per treatment arm over time with its "
                f"always-valid interval narrowing; latest: {now}",
                "The lift against control with its always-valid interval (a band): valid "
                "however often it is looked at. The dashed line is no effect.",
                spec(bands, "time", f"lift of {kpi}", x_time=True, zero=True),
            )
        )
    return charts
