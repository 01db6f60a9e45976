"""What the pipelines pages show, built from ``PipelineService`` and the registry's
decisions: plain data and inline SVG charts (``monitor_charts``), each with a text
alternative; the tables under them carry the same figures.

- a pipeline's runs with the duration of each step over its recent runs;
- a run's steps (status, duration, cached or reused, output summary), their logs and the
  failed step's traceback, and the champion/challenger decision it made, if any;
- decisions with their outcome and the challenger's score against the champion's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plinth.errors import NotFound, PermissionDenied, Unavailable
from plinth.ui.monitor_charts import Line, line_chart
from plinth.ui.monitor_views import Chart, seconds

MAX_PIPELINES = 50  # a page of the list
MAX_RUNS = 50  # a page of a pipeline's runs
CHART_RUNS = 20  # recent runs whose steps are drawn
MAX_DECISIONS = 50  # a page of decisions
MAX_LOG_CHARS = 20_000  # the end of a step's log a page shows
MAX_ALERTS_LOOKED_UP = 1_000  # newest alerts searched for the ones runs name


# -- the list ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineRow:
    pipeline: Any  # PipelineInfo
    last: Any | None  # its newest PipelineRun
    schedules: list[Any]  # Schedule


@dataclass(frozen=True)
class ListView:
    rows: list[PipelineRow]
    has_next: bool = False


def list_view(service: Any, page_token: str | None = None) -> ListView:
    """The pipelines the caller may read, each with its newest run and its schedules."""
    listed = service.list_pipelines(max_results=MAX_PIPELINES, page_token=page_token)
    by_pipeline: dict[str, list[Any]] = {}
    for schedule in service.list_all_schedules():
        by_pipeline.setdefault(schedule.pipeline, []).append(schedule)
    rows = []
    for pipeline in listed.items:
        newest = list(service.list_runs(pipeline.name, max_results=1).items)
        rows.append(
            PipelineRow(pipeline, newest[0] if newest else None, by_pipeline.get(pipeline.name, []))
        )
    return ListView(rows, bool(listed.next_page_token))


def schedule_text(schedule: Any) -> str:
    """A schedule in a few words: ``cron 0 3 * * * (UTC)``, ``on each alert of m``."""
    if schedule.kind == "cron":
        return f"cron {schedule.cron} ({schedule.timezone})"
    event = {"alert": "alert", "commit": "commit", "score_job": "score job"}
    source = {"alert": "monitor", "commit": "feature group", "score_job": "model"}
    kind = str(schedule.kind)
    return f"on each {event.get(kind, kind)} of {source.get(kind, 'target')} {schedule.target}"


# -- a pipeline --------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineView:
    pipeline: Any  # PipelineInfo
    runs: list[Any]  # PipelineRun, newest first
    schedules: list[Any]
    durations: Chart
    has_next: bool = False


def pipeline_view(service: Any, name: str, page_token: str | None = None) -> PipelineView:
    pipeline = service.get_pipeline(name)
    listed = service.list_runs(name, max_results=MAX_RUNS, page_token=page_token)
    runs = list(listed.items)
    recent = [service.get_run(r.id) for r in runs[:CHART_RUNS] if r.started_at is not None]
    return PipelineView(
        pipeline,
        runs,
        list(service.list_schedules(name)),
        durations_chart(recent, list(pipeline.steps)),
        bool(listed.next_page_token),
    )


def run_seconds(run: Any) -> float | None:
    """How long a finished run took (None before it finishes)."""
    if run.started_at is None or run.finished_at is None:
        return None
    return max(seconds(run.finished_at) - seconds(run.started_at), 0.0)


def durations_chart(runs: Sequence[Any], order: Sequence[str] = ()) -> Chart:
    """Each step's duration over the runs (at each run's start, oldest first). Cached,
    reused and skipped steps did no work: they are gaps, not zeros."""
    ordered = sorted(runs, key=lambda r: seconds(r.started_at))
    names = list(order)
    for run in ordered:
        names += [s.name for s in run.steps if s.name not in names]
    lines = []
    for name in names:
        xs, ys, failed = [], [], []
        for run in ordered:
            step = next((s for s in run.steps if s.name == name), None)
            ran = step is not None and step.status in ("succeeded", "failed")
            xs.append(seconds(run.started_at))
            ys.append(step.duration_seconds if ran and step is not None else None)
            failed.append(step is not None and step.status == "failed")
        if any(y is not None for y in ys):
            lines.append(Line(name, xs, ys, marked=failed))
    title = "Step durations over recent runs"
    svg = line_chart(
        lines,
        title=title,
        x_label="run started (UTC)",
        y_label="seconds",
        zero=True,
        empty="No finished steps yet.",
    )
    caption = (
        f"The newest {len(ordered)} runs that started; filled points: the step failed. "
        "Cached, reused and skipped steps did no work and are left out."
    )
    return Chart("step-durations", title, svg, caption)


# -- a run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRow:
    step: Any  # StepRun
    log: str
    log_cut: bool  # only the end of the log is shown
    log_note: str = ""  # why no log is shown

    @property
    def summary(self) -> str:
        return output_summary(self.step.output)


@dataclass(frozen=True)
class RunView:
    run: Any  # PipelineRun, with its steps
    steps: list[StepRow]
    decisions: list[Any]  # the registry's Decision made by this run
    alerts: dict[int, Any]  # the alerts it and its decisions name, that the caller may see

    @property
    def failed(self) -> list[Any]:
        return [r.step for r in self.steps if r.step.status == "failed" and r.step.error]


def run_view(
    service: Any, registry: Any, monitors: Any | None, run_id: int, logs: bool = True
) -> RunView:
    run = service.get_run(run_id)
    steps = []
    for step in sorted(run.steps, key=lambda s: s.position):
        text, note = _log(service, run_id, step.name) if logs else ("", "")
        cut = len(text) > MAX_LOG_CHARS
        steps.append(StepRow(step, text[-MAX_LOG_CHARS:] if cut else text, cut, note))
    decisions = run_decisions(registry, run_id)
    wanted = [run.alert_id, *(d.alert_id for d in decisions)]
    return RunView(run, steps, decisions, alerts_by_id(monitors, wanted))


def _log(service: Any, run_id: int, step: str) -> tuple[str, str]:
    """A step's log, or why there is none to show: the logs are artifacts of the run's
    tracking run, which the caller may not read (the steps' table still shows)."""
    try:
        return str(service.run_logs(run_id, step=step)), ""
    except (NotFound, PermissionDenied, Unavailable) as error:
        return "", f"not readable: {error.message}"


def run_decisions(registry: Any, run_id: int) -> list[Any]:
    """The decisions a pipeline run made, on models the caller may read."""
    return list(registry.list_decisions(pipeline_run=run_id).items)


def output_summary(output: dict[str, Any] | None) -> str:
    """A step's output in a few words: its kind and summary (rows/columns or a repr)."""
    if not output:
        return ""
    kind = str(output.get("kind") or "")
    summary = output.get("summary")
    if summary in (None, "", {}):
        return kind
    if isinstance(summary, dict):
        shown = ", ".join(f"{k} {_short(v)}" for k, v in summary.items())
    else:
        shown = _short(summary)
    return f"{kind}: {shown}" if kind else shown


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def alerts_by_id(monitors: Any | None, ids: Sequence[int | None]) -> dict[int, Any]:
    """The alerts among ``ids`` the caller may see (the newest ones are searched: an
    alert not found is named without a link)."""
    wanted = {i for i in ids if i is not None}
    if not wanted or monitors is None:
        return {}
    try:
        found = monitors.list_alerts(max_results=MAX_ALERTS_LOOKED_UP).items
    except (NotFound, PermissionDenied):
        return {}
    return {a.id: a for a in found if a.id in wanted}


# -- decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceItem:
    name: str
    value: str
    structured: bool  # a JSON object or list, shown as code


def evidence_items(evidence: dict[str, Any] | None) -> list[EvidenceItem]:
    items = []
    for key, value in (evidence or {}).items():
        if isinstance(value, dict | list):
            items.append(EvidenceItem(str(key), json.dumps(value, indent=1, default=str), True))
        else:
            items.append(EvidenceItem(str(key), str(value), False))
    return items


def margin(decision: Any) -> float | None:
    """How much better the challenger scored than the champion (in the metric's
    direction): positive when better."""
    challenger, champion = decision.challenger_score, decision.champion_score
    if challenger is None or champion is None:
        return None
    gain = float(challenger) - float(champion)
    return -gain if decision.direction == "min" else gain


@dataclass(frozen=True)
class DecisionsView:
    decisions: list[Any]  # Decision, newest first
    charts: list[Chart]
    alerts: dict[int, Any]
    has_next: bool = False


def decisions_view(
    registry: Any, monitors: Any | None, model: str | None = None, page_token: str | None = None
) -> DecisionsView:
    listed = registry.list_decisions(name=model, max_results=MAX_DECISIONS, page_token=page_token)
    decisions = list(listed.items)
    alerts = alerts_by_id(monitors, [d.alert_id for d in decisions])
    return DecisionsView(decisions, scores_charts(decisions), alerts, bool(listed.next_page_token))


def scores_charts(decisions: Sequence[Any]) -> list[Chart]:
    """Per model and metric: the challenger's and the champion's score at each decision
    (``decisions`` newest first, as listed), drawn when it was made; a promoted
    challenger's point is filled."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for d in decisions:
        groups.setdefault((d.model_name, d.metric), []).append(d)
    charts = []
    for (model, metric), newest_first in sorted(groups.items()):
        found = newest_first[::-1]
        # a decision not stored yet has no time: drawn in the order given instead
        timed = all(d.at is not None for d in found)
        xs = [seconds(d.at) if timed else float(k) for k, d in enumerate(found)]
        challenger = Line(
            "challenger",
            xs,
            [d.challenger_score for d in found],
            marked=[d.outcome == "promoted" for d in found],
            colour="#c2410c",
        )
        champion = Line("champion", xs, [d.champion_score for d in found], colour="#1f5fbf")
        title = f"{model}: {metric} of challenger vs champion"
        svg = line_chart(
            [challenger, champion],
            title=title,
            x_label="decided at (UTC)" if timed else "decisions, oldest first",
            y_label=metric,
            x_time=timed,
            empty="No scores to draw.",
        )
        better = "higher" if found[0].direction != "min" else "lower"
        promoted = sum(d.outcome == "promoted" for d in found)
        caption = (
            f"{len(found)} decisions, {promoted} promoted ({better} is better); "
            "filled points: the challenger was promoted."
        )
        charts.append(Chart(f"scores-{model}-{metric}", title, svg, caption))
    return charts
