"""What the monitoring pages and ``plinth monitors report`` show, built from the services.

A view is plain data and charts (``monitor_charts``' inline SVG): the pages and the report
render the same views with the same partial templates. Nothing here is made up: a chart
without data says so.

- drift: the per-column table of an evaluation's drift report, the drift statistic of each
  column over the monitor's evaluations (p-values on a log scale against alpha, distances
  against their thresholds), reference-vs-current histograms of the drifted columns from
  the evaluation's stored profiles;
- performance: the metric per window with its interval, measured (solid) and estimated
  (dashed), against the version's validation metric and the monitor's bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from plinth.errors import InvalidArgument, NotFound, PermissionDenied
from plinth.ui.monitor_charts import (
    Line,
    Rule,
    category_chart,
    empty_chart,
    histogram_chart,
    line_chart,
    status_strip,
)

if TYPE_CHECKING:
    from plinth.stats.drift import ColumnDrift

DRIFT_KINDS = ("feature_drift", "input_drift", "prediction_drift")
PERFORMANCE_KINDS = ("performance", "estimated_performance")
MAX_LINES = 8  # columns drawn in one drift-over-time chart (the table has them all)
MAX_HISTOGRAMS = 6  # drifted columns whose histograms are drawn
HISTOGRAM_BINS = 30
MAX_CATEGORIES = 12


def seconds(at: datetime | int | float) -> float:
    """Seconds since the epoch of a datetime (naive: UTC) or of milliseconds."""
    if isinstance(at, datetime):
        if at.tzinfo is None:
            from datetime import UTC

            at = at.replace(tzinfo=UTC)
        return at.timestamp()
    return float(at) / 1000


# -- drift: one evaluation's columns -----------------------------------------------------


def drift_result(result: dict[str, Any] | None, key: str = "report") -> dict[str, Any]:
    """The drift report in an evaluation's result: the result itself (a
    ``DriftReport.to_dict()``) or, in a model check's whole answer (``InputDrift``), its
    ``report`` (the inputs) or ``prediction`` (the predictions against the labels)."""
    if not result:
        return {}
    if "columns" in result:
        return result
    nested = result.get(key)
    return nested if isinstance(nested, dict) and "columns" in nested else {}


def report_key(kind: str) -> str:
    """Which report of a model check a monitor of ``kind`` judges by."""
    return "prediction" if kind == "prediction_drift" else "report"


def column_rows(result: dict[str, Any]) -> list[ColumnDrift]:
    """The columns of a drift report (``DriftReport.to_dict()``), drifted first."""
    from plinth.stats.drift import ColumnDrift

    rows = []
    for c in result.get("columns") or []:
        try:
            rows.append(ColumnDrift.from_dict(c))
        except (TypeError, KeyError):  # not a column of a drift report: left out
            continue
    return sorted(rows, key=lambda r: (not r.drifted, r.error is not None, r.column))


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        found = float(value)  # JSON may carry "NaN" / "Infinity" as strings
    except (TypeError, ValueError):
        return None
    return found if math.isfinite(found) else None


@dataclass(frozen=True)
class DriftSummary:
    preset: str
    tested: int
    drifted: int
    share: float
    share_threshold: float
    dataset_drifted: bool
    correction: str | None
    alpha: float
    reference_rows: int
    current_rows: int


def drift_summary(result: dict[str, Any]) -> DriftSummary | None:
    if "columns" not in result:
        return None
    return DriftSummary(
        preset=str(result.get("preset", "")),
        tested=int(result.get("tested_columns") or 0),
        drifted=int(result.get("drifted_columns") or 0),
        share=_number(result.get("drifted_share")) or 0.0,
        share_threshold=_number(result.get("share_threshold")) or 0.0,
        dataset_drifted=bool(result.get("dataset_drifted")),
        correction=result.get("correction"),
        alpha=_number(result.get("alpha")) or 0.05,
        reference_rows=int(result.get("reference_rows") or 0),
        current_rows=int(result.get("current_rows") or 0),
    )


# -- drift over time ---------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    """A chart with its heading and a caption (what it draws, what it leaves out)."""

    key: str
    title: str
    svg: Markup
    caption: str = ""


def drift_over_time(evaluations: Sequence[Any], key: str = "report") -> list[Chart]:
    """The drift statistic of each column over the evaluations (oldest first): one chart
    of p-values (log scale, the alpha line) for the p-value tests, one per distance test
    and threshold. Drifted points are filled."""
    ordered = sorted(evaluations, key=lambda e: seconds(e.at))
    groups: dict[tuple[str, float], dict[str, list[tuple[float, ColumnDrift]]]] = {}
    for evaluation in ordered:
        for row in column_rows(drift_result(evaluation.result, key)):
            if row.score is None:
                continue
            measure = "p-value" if row.p_value is not None else row.test
            by_column = groups.setdefault((measure, row.threshold), {})
            by_column.setdefault(row.column, []).append((seconds(evaluation.at), row))
    charts = []
    for (measure, threshold), by_column in sorted(groups.items()):
        chosen = _most_drifted(by_column, pvalue=measure == "p-value")
        lines = [
            Line(
                column,
                [t for t, _ in by_column[column]],
                [r.score for _, r in by_column[column]],
                marked=[r.drifted for _, r in by_column[column]],
            )
            for column in chosen
        ]
        tests = sorted({r.test for points in by_column.values() for _, r in points})
        if measure == "p-value":
            title = f"p-value per column over time ({', '.join(tests)})"
            rule = Rule(f"alpha {threshold:g}", threshold)
            label = "p-value (log scale)"
        else:
            title = f"{measure} distance per column over time"
            rule = Rule(f"threshold {threshold:g}", threshold)
            label = measure
        left_out = len(by_column) - len(chosen)
        caption = (
            f"{len(chosen)} of {len(by_column)} columns drawn (the most drifted); the "
            "table lists them all. "
            if left_out
            else ""
        ) + "Filled points: the evaluation flagged the column as drifted."
        svg = line_chart(
            lines,
            title=title,
            x_label="evaluated at (UTC)",
            y_label=label,
            rules=[rule],
            log_y=measure == "p-value",
        )
        charts.append(Chart(f"drift-{measure}-{threshold:g}", title, svg, caption))
    return charts


def _most_drifted(
    by_column: dict[str, list[tuple[float, ColumnDrift]]], *, pvalue: bool
) -> list[str]:
    def rank(column: str) -> tuple[int, float]:
        points = [r for _, r in by_column[column]]
        flagged = sum(r.drifted for r in points)
        scores = [r.score for r in points if r.score is not None]
        extreme = (min(scores) if pvalue else -max(scores)) if scores else math.inf
        return (-flagged, extreme)

    return sorted(sorted(by_column), key=rank)[:MAX_LINES]


# -- reference vs current ----------------------------------------------------------------


def histograms(
    rows: Sequence[ColumnDrift],
    reference: Any | None,
    current: Any | None,
    *,
    names: tuple[str, str] = ("reference", "current"),
) -> list[Chart]:
    """Reference-vs-current charts of the drifted columns, from two ``ProfileView``s read on
    shared edges (``get_profile(id, compare_to=other)``); a column missing from one is
    drawn as a note saying so."""
    if reference is None or current is None:
        return []
    charts = []
    for row in [r for r in rows if r.drifted][:MAX_HISTOGRAMS]:
        ref, cur = _column(reference, row.column), _column(current, row.column)
        title = f"{row.column}: {names[0]} vs {names[1]}"
        if ref is None or cur is None:
            missing = names[0] if ref is None else names[1]
            svg = empty_chart(title, f"the {missing} profile has no column {row.column!r}")
        else:
            svg = compare_columns(ref, cur, title=title, names=names)
        caption = f"{row.test}: statistic {_fmt(row.statistic)}" + (
            f", p-value {_fmt(row.p_value)}" if row.p_value is not None else ""
        )
        charts.append(Chart(f"hist-{row.column}", title, svg, caption))
    return charts


def _column(profile: Any, name: str) -> Any | None:
    return next((c for c in getattr(profile, "columns", None) or [] if c.name == name), None)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def compare_columns(
    ref: Any, cur: Any, *, title: str, names: tuple[str, str] = ("reference", "current")
) -> Markup:
    """Two ``ColumnView``s of one column: their histograms when both have them on the same
    edges (numbers, times), else the shares of their top values."""
    ref_edges, cur_edges = list(ref.edges or []), list(cur.edges or [])
    if ref_edges and ref_edges == cur_edges:
        return histogram_chart(
            ref_edges,
            list(ref.counts),
            list(cur.counts),
            title=title,
            x_label=str(ref.name),
            names=names,
            x_time=ref.kind == "temporal",
        )
    if ref.top or cur.top:
        categories, ref_counts, cur_counts = shared_categories(ref, cur)
        return category_chart(
            categories, ref_counts, cur_counts, title=title, x_label=str(ref.name), names=names
        )
    return empty_chart(title, "no histogram or top values in these profiles to draw")


def shared_categories(ref: Any, cur: Any) -> tuple[list[str], list[float], list[float]]:
    """The values most common in either column (by share), each side's count of them (0
    when not among its top values), and the rest of each side's rows as "(other)"."""
    ref_top = {str(k): int(v) for k, v in ref.top or []}
    cur_top = {str(k): int(v) for k, v in cur.top or []}
    ref_total = max(int(ref.count) - int(ref.nulls), 0)
    cur_total = max(int(cur.count) - int(cur.nulls), 0)

    def share(values: dict[str, int], total: int, key: str) -> float:
        return values.get(key, 0) / total if total else 0.0

    ranked = sorted(
        set(ref_top) | set(cur_top),
        key=lambda k: (-max(share(ref_top, ref_total, k), share(cur_top, cur_total, k)), k),
    )
    shown = ranked[:MAX_CATEGORIES]
    ref_counts = [float(ref_top.get(k, 0)) for k in shown]
    cur_counts = [float(cur_top.get(k, 0)) for k in shown]
    ref_rest, cur_rest = ref_total - sum(ref_counts), cur_total - sum(cur_counts)
    if ref_rest > 0 or cur_rest > 0:
        shown = [*shown, "(other)"]
        ref_counts.append(max(float(ref_rest), 0.0))
        cur_counts.append(max(float(cur_rest), 0.0))
    return shown, ref_counts, cur_counts


# -- evaluations over time ---------------------------------------------------------------


def status_chart(evaluations: Sequence[Any]) -> Markup:
    ordered = sorted(evaluations, key=lambda e: seconds(e.at))
    return status_strip(
        [seconds(e.at) for e in ordered],
        [str(e.status) for e in ordered],
        title="Evaluations over time",
    )


# -- performance -------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowRow:
    """One window's metric, measured or estimated, with its interval."""

    start: float  # seconds since the epoch
    end: float
    value: float | None
    lower: float | None
    upper: float | None
    n: int
    estimated: bool
    method: str


@dataclass
class PerformanceView:
    metric: str
    windows: list[WindowRow] = field(default_factory=list)
    validation: float | None = None
    min_value: float | None = None
    max_value: float | None = None
    confidence: float = 0.95
    note: str = ""


def performance_chart(view: PerformanceView) -> Markup:
    """The metric per window (at each window's middle): measured as a solid line with its
    band, estimated as a dashed one; the validation metric and the bounds as rules."""
    lines = []
    for estimated, label in ((False, "measured"), (True, "estimated")):
        rows = [w for w in view.windows if w.estimated is estimated]
        if not rows:
            continue
        lines.append(
            Line(
                f"{view.metric} {label}",
                [(w.start + w.end) / 2 for w in rows],
                [w.value for w in rows],
                lower=[w.lower for w in rows],
                upper=[w.upper for w in rows],
                dashed=estimated,
                colour="#1f5fbf" if not estimated else "#7c3aed",
            )
        )
    rules = []
    if view.validation is not None:
        rules.append(Rule(f"validation {view.validation:.4g}", view.validation, "#15803d"))
    for bound, label in ((view.min_value, "min"), (view.max_value, "max")):
        if bound is not None:
            rules.append(Rule(f"{label} {bound:.4g}", bound, "#a3261b"))
    return line_chart(
        lines,
        title=f"{view.metric} per window",
        x_label="window (UTC)",
        y_label=view.metric,
        rules=rules,
        empty="No windows with predictions yet.",
    )


# -- the pages' views --------------------------------------------------------------------

MAX_EVALUATIONS = 100  # evaluations a monitor's page draws (newest)
MAX_ALERTS = 50
MAX_MONITORS = 50  # a page of the list


@dataclass(frozen=True)
class MonitorRow:
    monitor: Any  # plinth.monitoring.types.Monitor
    last: Any | None  # its newest Evaluation
    open_alerts: int


@dataclass(frozen=True)
class ListView:
    rows: list[MonitorRow]
    alerts: list[Any]  # Alert, newest first
    has_next: bool = False

    @property
    def monitors_by_name(self) -> dict[str, Any]:
        return {r.monitor.name: r.monitor for r in self.rows}


def list_view(
    service: Any,
    *,
    target: str | None = None,
    alert_status: str | None = "open",
    page_token: str | None = None,
) -> ListView:
    """The monitors the caller may see (of ``target`` only if given), each with its newest
    evaluation and its open alerts; the recent alerts (of one status if given)."""
    listed = service.list_monitors(target=target, max_results=MAX_MONITORS, page_token=page_token)
    found = list(listed.items)
    open_alerts = list(service.list_alerts(status="open", max_results=10_000).items)
    counts: dict[str, int] = {}
    for alert in open_alerts:
        counts[alert.monitor] = counts.get(alert.monitor, 0) + 1
    rows = []
    for monitor in found:
        newest = list(service.list_evaluations(monitor.name, max_results=1).items)
        rows.append(MonitorRow(monitor, newest[0] if newest else None, counts.get(monitor.name, 0)))
    names = {m.name for m in found}
    alerts = [
        a
        for a in service.list_alerts(status=alert_status, max_results=MAX_ALERTS).items
        if a.monitor in names
    ]
    return ListView(rows, alerts, bool(listed.next_page_token))


@dataclass(frozen=True)
class DriftSection:
    summary: DriftSummary | None
    rows: list[ColumnDrift]
    over_time: list[Chart]
    histograms: list[Chart]
    evaluation: Any | None  # the evaluation the table and histograms are of


@dataclass(frozen=True)
class PerformanceSection:
    view: PerformanceView
    chart: Markup


@dataclass(frozen=True)
class MonitorView:
    monitor: Any
    evaluations: list[Any]  # newest first
    status_svg: Markup
    drift: DriftSection | None
    performance: PerformanceSection | None
    alerts: list[Any]

    @property
    def latest(self) -> Any | None:
        return self.evaluations[0] if self.evaluations else None

    @property
    def webhook(self) -> str:
        """Where alerts are POSTed, by host only: a webhook's path often holds its secret."""
        return webhook_host(self.monitor.webhook_url)


def webhook_host(url: str | None) -> str:
    if not url:
        return ""
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "(a webhook)"


def monitor_view(service: Any, data: Any, name: str) -> MonitorView:
    monitor = service.get_monitor(name)
    evaluations = list(service.list_evaluations(name, max_results=MAX_EVALUATIONS).items)
    evaluations.sort(key=lambda e: seconds(e.at), reverse=True)
    drift = (
        drift_section(data, evaluations, report_key(monitor.kind))
        if monitor.kind in DRIFT_KINDS
        else None
    )
    performance = performance_section(data, monitor) if monitor.kind in PERFORMANCE_KINDS else None
    alerts = list(service.list_alerts(monitor=name, max_results=MAX_ALERTS).items)
    return MonitorView(monitor, evaluations, status_chart(evaluations), drift, performance, alerts)


def drift_section(data: Any, evaluations: Sequence[Any], key: str = "report") -> DriftSection:
    """The newest evaluation with a drift report: its table, the drifted columns'
    histograms; every evaluation's statistics over time. ``key``: which report of a model
    check (``report_key``); the predictions' have no histograms (the reference holds the
    training labels under their own name)."""
    over_time = drift_over_time(evaluations, key)
    latest = next((e for e in evaluations if drift_result(e.result, key)), None)
    if latest is None:
        return DriftSection(None, [], over_time, [], None)
    report = drift_result(latest.result, key)
    rows = column_rows(report)
    charts: list[Chart] = []
    if key == "report":
        reference, current = profiles(data, latest.reference_profile, latest.current_profile)
        charts = histograms(rows, reference, current)
    return DriftSection(drift_summary(report), rows, over_time, charts, latest)


def profiles(
    data: Any, reference_id: int | None, current_id: int | None
) -> tuple[Any | None, Any | None]:
    """Two stored profiles on shared histogram edges, or (None, None) when the evaluation
    kept none (or the caller may not read them: the table still shows the verdicts)."""
    if reference_id is None or current_id is None:
        return None, None
    try:
        reference = data.get_profile(reference_id, bins=HISTOGRAM_BINS, compare_to=current_id)
        current = data.get_profile(current_id, bins=HISTOGRAM_BINS, compare_to=reference_id)
    except (NotFound, PermissionDenied):
        return None, None
    return reference, current


PERFORMANCE_WINDOWS = 14  # windows a performance monitor's page draws
LOWER_IS_BETTER = ("log_loss", "rmse", "mae")


def performance_section(data: Any, monitor: Any) -> PerformanceSection:
    """The monitored version's metric over the last windows of the monitor's size, read
    now from the prediction log and the labels (``MonitoringData.performance``)."""
    spec = monitor.spec
    try:
        found = data.performance(
            monitor.target,
            version=spec.model_version,
            window_seconds=spec.window_seconds,
            windows=PERFORMANCE_WINDOWS,
            # as the check does: an estimated-performance monitor watches AUC by default
            metric=spec.metric or ("auc" if monitor.kind == "estimated_performance" else None),
        )
    except (NotFound, PermissionDenied, InvalidArgument) as error:
        view = PerformanceView(metric=spec.metric or "", note=error.message)
        return PerformanceSection(view, performance_chart(view))
    view = performance_view(found, spec)
    return PerformanceSection(view, performance_chart(view))


def performance_view(found: Any, spec: Any) -> PerformanceView:
    """A ``Performance`` as rows per window (measured and estimated) and the bounds the
    monitor breaches outside of."""
    metric = str(found.metric)
    rows = []
    for w in found.windows:
        for estimated, metrics in ((False, w.metrics), (True, w.estimated)):
            m = (metrics or {}).get(metric)
            if m is None:
                continue
            rows.append(
                WindowRow(
                    start=w.start / 1000,
                    end=w.end / 1000,
                    value=_number(m.value),
                    lower=_number(m.lower),
                    upper=_number(m.upper),
                    n=int(m.n),
                    estimated=estimated,
                    method=str(m.method or ""),
                )
            )
    low, high = spec.min_value, spec.max_value
    if low is None and high is None and found.validation is not None:
        if metric in LOWER_IS_BETTER:
            high = float(found.validation) + spec.tolerance
        else:
            low = float(found.validation) - spec.tolerance
    notes = [str(s) for s in found.skipped or []]
    if getattr(found, "capped", False):
        notes.append("the prediction log held more rows than were read (the newest were kept)")
    return PerformanceView(
        metric=metric,
        windows=rows,
        validation=_number(found.validation),
        min_value=low,
        max_value=high,
        note="; ".join(notes),
    )
