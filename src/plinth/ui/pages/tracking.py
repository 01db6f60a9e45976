"""Experiments and runs: the list of experiments and the runs of one, paged, sorted and
filtered on the server (the filter language of ``search_runs``), with chosen metric and
param columns. A run links to its own page (``pages/run.py``); runs compare on
``pages/compare.py``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from plinth.errors import InvalidArgument
from plinth.tracking.types import Run, RunKeys, RunStatus
from plinth.ui.sections import Section
from plinth.ui.web import HtmlRoute, is_htmx, page_token, render, services

router = APIRouter(route_class=HtmlRoute)
Strings = Annotated[list[str] | None, Query()]  # ?metrics=a&metrics=b
section = Section(
    "tracking",
    "Experiments",
    "/experiments",
    router,
    summary="Experiments and their runs: params, metric charts, artifacts, lineage; compare runs.",
    order=10,
)

EXPERIMENTS_PER_PAGE = 50
RUNS_PER_PAGE = 50
DEFAULT_METRICS = 6  # columns shown before the user chooses
DEFAULT_PARAMS = 3
KEY_SAMPLE = 250  # the newest runs whose metric and param names are offered as columns
TABLE_ID = "runs-table"  # the part of the page that refreshes itself while runs go on

# sort key -> (header, first direction when chosen)
FIXED_SORTS = {
    "name": ("Name", "asc"),
    "status": ("Status", "asc"),
    "start_time": ("Started", "desc"),
    "duration": ("Duration", "desc"),
}
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


@router.get("/experiments")
def experiments(request: Request, q: str = "", page: int = 1) -> Response:
    token = page_token(page, EXPERIMENTS_PER_PAGE)
    found = services(request).tracking.list_experiments(
        name_like=f"%{q}%" if q else None, max_results=EXPERIMENTS_PER_PAGE, page_token=token
    )
    context = {
        "experiments": found.items,
        "q": q,
        "page": page,
        "has_next": bool(found.next_page_token),
    }
    return render(request, "tracking/experiments.html", context)


@dataclass(frozen=True)
class Column:
    """A chosen metric (by name) or param (``group.name``) column of the runs table."""

    kind: str  # metric | param
    name: str

    @property
    def sort_key(self) -> str:
        return f"{self.kind}s.{self.name}"


MAX_COLUMNS = 50  # of each kind, metrics and params


@dataclass(frozen=True)
class RunRow:
    run: Run
    duration: float | None  # seconds; so far, for a run that goes on
    values: list[Any]  # one per chosen column: a metric's last value, a param's value


@router.get("/experiments/{name:path}")
def runs_page(
    request: Request,
    name: str,
    page: int = 1,
    sort: str = "start_time",
    order: str = "desc",
    filter_: Annotated[str, Query(alias="filter")] = "",
    metrics: Strings = None,
    params: Strings = None,
    columns: str = "",
) -> Response:
    for kind, chosen_names in (("metrics", metrics or []), ("params", params or [])):
        if len(chosen_names) > MAX_COLUMNS:  # each column repeats the page's links
            raise InvalidArgument(
                f"choose at most {MAX_COLUMNS} {kind} columns, got {len(chosen_names)}"
            )
    tracking = services(request).tracking
    experiment = tracking.get_experiment(name)
    keys = tracking.list_run_keys(experiment.id, newest=KEY_SAMPLE)
    chosen = choose_columns(keys, metrics or [], params or [], chosen=bool(columns))
    failure: InvalidArgument | None = None
    runs: list[Run] = []
    has_next = False
    try:
        found = tracking.search_runs(
            filter=filter_ or None,
            order_by=[order_term(sort, order)],
            experiments=[experiment.id],
            max_results=RUNS_PER_PAGE,
            page_token=page_token(page, RUNS_PER_PAGE),
        )
        runs, has_next = found.items, bool(found.next_page_token)
    except InvalidArgument as error:  # shown above the table, where the filter is
        failure = error
    now = datetime.now(UTC)
    context = {
        "experiment": experiment,
        # a column chosen from an older run stays on offer though the sample lacks it
        "offered": RunKeys(
            _unique(keys.metrics + [c.name for c in chosen if c.kind == "metric"]),
            _unique(keys.params + [c.name for c in chosen if c.kind == "param"]),
        ),
        "sampled": KEY_SAMPLE,
        "columns": chosen,
        "rows": [_row(run, chosen, now) for run in runs],
        "running": any(run.status == RunStatus.RUNNING for run in runs),
        "sorts": FIXED_SORTS,
        "sort": sort,
        "order": order,
        "filter": filter_,
        "page": page,
        "has_next": has_next,
        "failure": failure,
        "table_id": TABLE_ID,
        "next_order": lambda key: _next_order(key, sort, order),
    }
    status = failure.http_status if failure else 200
    # Back and forward to a pushed address ask (as htmx) for the whole page: not a part.
    partial = is_htmx(request)
    if partial and request.headers.get("hx-target") == TABLE_ID:
        return render(request, "tracking/_runs_table.html", context, status_code=status)
    template = "tracking/_runs.html" if partial else "tracking/runs.html"
    return render(request, template, context, status_code=status)


def choose_columns(
    keys: RunKeys, metrics: list[str], params: list[str], *, chosen: bool
) -> list[Column]:
    """The columns asked for; before any choice, the first metrics and params."""
    if not chosen and not metrics and not params:
        metrics, params = keys.metrics[:DEFAULT_METRICS], keys.params[:DEFAULT_PARAMS]
    for param in params:
        if "." not in param:
            raise InvalidArgument(f"params: {param!r} is not GROUP.NAME (such as hyper.lr)")
    return [Column("metric", m) for m in _unique(metrics)] + [
        Column("param", p) for p in _unique(params)
    ]


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def order_term(sort: str, order: str) -> str:
    """The ``order_by`` term of search_runs for a column of the table."""
    if order not in ("asc", "desc"):
        raise InvalidArgument(f"order: {order!r}; use asc or desc")
    if sort in FIXED_SORTS:
        ident = sort
    elif sort.startswith("metrics.") and len(sort) > len("metrics."):
        ident = "metrics." + _quoted(sort.removeprefix("metrics."))
    elif sort.startswith("params.") and "." in sort.removeprefix("params."):
        group, _, key = sort.removeprefix("params.").partition(".")
        ident = f"params.{_quoted(group)}.{_quoted(key)}"
    else:
        raise InvalidArgument(
            f"sort: unknown column {sort!r}; use {', '.join(FIXED_SORTS)}, metrics.NAME or "
            "params.GROUP.NAME"
        )
    return f"{ident} {order.upper()}"


def _quoted(name: str) -> str:
    if _PLAIN.fullmatch(name):
        return name
    if "`" in name or not name:
        raise InvalidArgument(f"sort: cannot sort by {name!r} (empty, or holds a backtick)")
    return f"`{name}`"


def _next_order(key: str, sort: str, order: str) -> str:
    """A header's link: the other direction when the table is sorted by it already."""
    if key == sort:
        return "asc" if order == "desc" else "desc"
    return FIXED_SORTS[key][1] if key in FIXED_SORTS else "desc"


def _row(run: Run, columns: list[Column], now: datetime) -> RunRow:
    end = run.end_time or (now if run.status == RunStatus.RUNNING else None)
    duration = (end - run.start_time).total_seconds() if end else None
    values: list[Any] = []
    for column in columns:
        if column.kind == "metric":
            summary = run.metrics.get(column.name)
            values.append(None if summary is None else summary.last)
        else:
            group, _, key = column.name.partition(".")
            values.append(run.params.get(group, {}).get(key))
    return RunRow(run, duration, values)
