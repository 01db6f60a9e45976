"""Runs compared: params side by side (differences marked), metric summaries, metric
curves overlaid, and a param against a metric (under the Experiments navigation entry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from plinth.errors import InvalidArgument, NotFound
from plinth.tracking.types import RunComparison
from plinth.ui.charts import chart, series
from plinth.ui.sections import Section
from plinth.ui.web import HtmlRoute, render, services

router = APIRouter(route_class=HtmlRoute)
Strings = Annotated[list[str] | None, Query()]  # ?runs=a&runs=b
section = Section("compare", "Compare runs", "/compare", router, nav_as="tracking")

MIN_RUNS, MAX_RUNS = 2, 20
DEFAULT_CHARTS = 4
CHART_POINTS = 1000  # per run: 20 runs stay a light chart


@dataclass(frozen=True)
class Scatter:
    """A param (x) against a metric's last value (y): one point per run holding both."""

    x: str
    y: str
    points: list[tuple[str, float, float]]  # run name, x, y
    problem: str  # why there is no chart ("" when there is one)


@router.get("/compare")
def compare(
    request: Request,
    runs: Strings = None,
    only: str = "",
    metric: Strings = None,
    x: str = "",
    y: str = "",
) -> Response:
    runs = runs or []
    found = compared(request, runs)
    charts = [known_metric(found, m) for m in dict.fromkeys(metric or [])]
    charts = charts or list(found.metrics)[:DEFAULT_CHARTS]
    numeric = [name for name, values in found.params.items() if _numeric(values)]
    scatter = _scatter(found, x or _default_x(found, numeric), y or next(iter(found.metrics), ""))
    params = found.params_differing if only else list(found.params)
    context = {
        "c": found,
        "runs": runs,
        "only": bool(only),
        "params": params,
        "charts": charts,
        "chart_urls": {m: _url("/ui/compare/chart", runs, metric=m) for m in charts},
        "numeric": numeric,
        "scatter": scatter,
        "scatter_url": _url("/ui/compare/scatter", runs, x=scatter.x, y=scatter.y),
    }
    return render(request, "tracking/compare.html", context)


@router.get("/compare/chart")
def compare_chart(request: Request, metric: str, runs: Strings = None) -> Response:
    """One metric of every run that logged it, one line each."""
    found = compared(request, runs)
    known_metric(found, metric)
    tracking = services(request).tracking
    drawn = []
    for run_id, name, summary in zip(
        found.run_ids, found.run_names, found.metrics[metric], strict=True
    ):
        if summary is not None:
            got = tracking.get_metric_series(run_id, metric, max_points=CHART_POINTS)
            drawn.append(series(name, got.steps, got.values))
    return chart(drawn, "step", metric)


@router.get("/compare/scatter")
def compare_scatter(request: Request, x: str, y: str, runs: Strings = None) -> Response:
    found = compared(request, runs)
    scatter = _scatter(found, x, y)
    if scatter.problem:
        raise InvalidArgument(scatter.problem)
    drawn = [series(name, [px], [py], "points") for name, px, py in scatter.points]
    return chart(drawn, x, f"{y} (last)", empty="No run holds both values.")


def compared(request: Request, runs: list[str] | None) -> RunComparison:
    runs = runs or []
    if not MIN_RUNS <= len(runs) <= MAX_RUNS:
        raise InvalidArgument(
            f"compare {MIN_RUNS} to {MAX_RUNS} runs (?runs=ID&runs=ID...), got {len(runs)}: "
            "tick them in the table of an experiment's runs"
        )
    twice = sorted({r for r in runs if runs.count(r) > 1})
    if twice:
        raise InvalidArgument(f"runs {twice} are listed more than once")
    return services(request).tracking.compare_runs(runs)


def known_metric(found: RunComparison, metric: str) -> str:
    if metric not in found.metrics:
        raise NotFound(
            f"none of these runs logged metric {metric!r}; they have {sorted(found.metrics)}"
        )
    return metric


def _numeric(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(_is_number(v) for v in present)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _default_x(found: RunComparison, numeric: list[str]) -> str:
    differing = [p for p in numeric if p in found.params_differing]
    return (differing or numeric or list(found.params) or [""])[0]


def _scatter(found: RunComparison, x: str, y: str) -> Scatter:
    if not x or not y:
        return Scatter(x, y, [], "these runs need a param and a metric for a scatter")
    if x not in found.params:
        raise NotFound(f"none of these runs has param {x!r}; they have {sorted(found.params)}")
    known_metric(found, y)
    values = found.params[x]
    if not _numeric(values):
        shown = ", ".join(sorted({repr(v) for v in values if v is not None})[:5])
        return Scatter(
            x, y, [], f"param {x} is not a number in these runs ({shown}): a scatter needs numbers"
        )
    points = [
        (name, float(px), summary.last)
        for name, px, summary in zip(found.run_names, values, found.metrics[y], strict=True)
        if px is not None and summary is not None
    ]
    return Scatter(x, y, sorted(points, key=lambda p: p[1]), "")


def _url(path: str, runs: list[str], **more: str) -> str:
    return f"{path}?{urlencode([('runs', r) for r in runs] + list(more.items()))}"
