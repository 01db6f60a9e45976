"""Serving: batch score jobs with their checks, and a model's recent predictions from the
prediction log."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from plinth.errors import InvalidArgument
from plinth.serving.jobs import STATUSES
from plinth.ui.charts import chart, series
from plinth.ui.sections import Section
from plinth.ui.web import PREFIX, HtmlRoute, is_htmx, page_token, render, services

if TYPE_CHECKING:
    from plinth.serving.checks import CheckResult
    from plinth.serving.jobs import ScoreJob
    from plinth.serving.logged import LoggedRequest

router = APIRouter(route_class=HtmlRoute)
section = Section(
    "serving",
    "Serving",
    "/serving",
    router,
    summary="Batch score jobs and their checks; a model's recent predictions.",
    order=40,
)

JOBS_PER_PAGE = 50
PREDICTIONS_PER_PAGE = 50
REFRESH = "every 3s"  # how often a page with a RUNNING job asks again

# window: (seconds, chart bucket in seconds)
WINDOWS = {
    "15m": (900, 60),
    "1h": (3_600, 60),
    "6h": (21_600, 300),
    "24h": (86_400, 900),
    "7d": (604_800, 3_600),
    "30d": (2_592_000, 21_600),
}
DEFAULT_WINDOW = "24h"

# what each check compares (its thresholds are the job's own; its message gives them)
EXPECTS = {
    "prediction_distribution": "predictions distributed like the training labels",
    "prediction_values": "no null, NaN or infinite predictions",
    "input_ranges": "numeric inputs within the training data's range",
    "unseen_categories": "string inputs hold only values seen in training",
}


# -- score jobs --------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    job: ScoreJob
    duration: float | None  # seconds; a RUNNING job's so far
    delivered: int | None  # rows written to the output
    passed: int
    failed: int
    skipped: int


def job_row(job: ScoreJob, now_ms: int) -> JobRow:
    end = job.finished_at if job.finished_at is not None else now_ms
    judged = [c for c in job.checks if not c.skipped]
    delivered = job.rows if job.status == "DELIVERED" else (None if job.rows is None else 0)
    return JobRow(
        job,
        max(0, end - job.started_at) / 1000 if job.started_at else None,
        delivered,
        sum(c.passed for c in judged),
        sum(not c.passed for c in judged),
        len(job.checks) - len(judged),
    )


@router.get("/serving")
def jobs(request: Request, model: str = "", status: str = "", page: int = 1) -> Response:
    found = services(request).score_jobs.page_score_jobs(  # it checks the status
        model_name=model or None,
        status=status or None,
        max_results=JOBS_PER_PAGE,
        page_token=page_token(page, JOBS_PER_PAGE),
    )
    now = int(time.time() * 1000)
    rows = [job_row(job, now) for job in found.items]
    context = {
        "rows": rows,
        "model": model,
        "status": status,
        "statuses": STATUSES,
        "page": page,
        "has_next": bool(found.next_page_token),
        "running": any(r.job.status == "RUNNING" for r in rows),
        "refresh": REFRESH,
    }
    name = "serving/_jobs.html" if is_htmx(request) else "serving/jobs.html"
    return render(request, name, context)


@dataclass(frozen=True)
class CheckView:
    result: CheckResult
    verdict: str  # passed, failed, skipped
    observed: str
    expects: str


def check_view(result: CheckResult) -> CheckView:
    verdict = "skipped" if result.skipped else ("passed" if result.passed else "failed")
    observed = ", ".join(f"{k}={_short(v)}" for k, v in sorted(result.observed.items()))
    return CheckView(result, verdict, observed, EXPECTS.get(result.name, ""))


@router.get("/serving/jobs/{job_key:path}")
def job(request: Request, job_key: str) -> Response:
    found = services(request).score_jobs.get_score_job(job_key)
    context = {
        "row": job_row(found, int(time.time() * 1000)),
        "checks": [check_view(c) for c in found.checks],
        "refresh": REFRESH,
    }
    name = "serving/_job.html" if is_htmx(request) else "serving/job.html"
    return render(request, name, context)


# -- predictions -------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionRow:
    request: LoggedRequest
    rows: int
    inputs: str  # the first row's inputs, "age=41, spend=2.5"
    outputs: str  # the first outputs


def prediction_row(logged: LoggedRequest) -> PredictionRow:
    columns: dict[str, list[Any]] = json.loads(logged.inputs)
    outputs: list[Any] = json.loads(logged.outputs)
    rows = len(outputs)
    first = ", ".join(f"{name}={_short(values[0])}" for name, values in columns.items() if values)
    shown = ", ".join(_short(v) for v in outputs[:3]) + (", …" if rows > 3 else "")
    return PredictionRow(logged, rows, _clip(first, 120), _clip(shown, 80))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Window:
    name: str
    since_ms: int
    until_ms: int
    bucket_seconds: int


def parse_window(name: str, now_ms: int) -> Window:
    if name not in WINDOWS:
        raise InvalidArgument(f"window must be one of {', '.join(WINDOWS)}, not {name!r}")
    seconds, bucket = WINDOWS[name]
    # buckets start on whole multiples of their size, so a reload draws the same bars
    until = (now_ms // (bucket * 1000) + 1) * bucket * 1000
    return Window(name, until - seconds * 1000, until, bucket)


def parse_version(text: str) -> int | None:
    """The version filter: empty (every version) or a version number."""
    if not text.strip():
        return None
    try:
        version = int(text)
    except ValueError:
        raise InvalidArgument(f"version must be a version number, not {text!r}") from None
    if version < 1:
        raise InvalidArgument(f"version must be 1 or more, not {version}")
    return version


def _model_and_version(request: Request, model: str, version: int | None) -> None:
    """Unknown (or unreadable) models and versions are a page that says so."""
    registry = services(request).registry
    if version is None:
        registry.get_registered_model(model)
    else:
        registry.get_model_version(model, version)


@router.get("/serving/predictions")
def predictions(
    request: Request,
    model: str = "",
    version: str = "",
    window: str = DEFAULT_WINDOW,
    page: int = 1,
) -> Response:
    number = parse_version(version)
    span = parse_window(window, int(time.time() * 1000))
    token = page_token(page, PREDICTIONS_PER_PAGE)
    context: dict[str, Any] = {
        "model": model,
        "version": version,
        "window": span.name,
        "windows": list(WINDOWS),
        "page": page,
        "rows": [],
        "has_next": False,
        "models": [],
        "bucket_minutes": span.bucket_seconds // 60,
        "chart": "",
    }
    if not model:  # no model chosen yet: offer the ones the caller may see
        models = services(request).registry.list_registered_models(max_results=100)
        context["models"] = [m.name for m in models.items]
        return render(request, "serving/predictions.html", context)
    _model_and_version(request, model, number)
    found = services(request).score_jobs.recent_logged_requests(
        model, number, span.since_ms, span.until_ms, PREDICTIONS_PER_PAGE, token
    )
    query = {"model": model, "version": version, "window": span.name}
    context["chart"] = f"{PREFIX}/serving/predictions/chart?{urlencode(query)}"
    context["rows"] = [prediction_row(r) for r in found.items]
    context["has_next"] = bool(found.next_page_token)
    return render(request, "serving/predictions.html", context)


@router.get("/serving/predictions/chart")
def predictions_chart(
    request: Request,
    model: str,
    what: str = "requests",
    version: str = "",
    window: str = DEFAULT_WINDOW,
) -> Response:
    if what not in ("requests", "latency"):
        raise InvalidArgument(f"what must be requests or latency, not {what!r}")
    number = parse_version(version)
    span = parse_window(window, int(time.time() * 1000))
    _model_and_version(request, model, number)
    activity = services(request).score_jobs.prediction_activity(
        model, span.since_ms, span.until_ms, span.bucket_seconds * 1000, number
    )
    # every bucket of the window, so the axis spans it and quiet minutes show as such
    step = span.bucket_seconds * 1000
    found = {a.start: a for a in activity}
    starts = range(span.since_ms, span.until_ms, step)
    x = [start / 1000 for start in starts]
    buckets = [found.get(start) for start in starts]
    if what == "requests":
        drawn = [
            series("requests", x, [a.requests if a else 0 for a in buckets], "bars"),
            series("rows", x, [a.rows if a else None for a in buckets], "points"),
        ]
        per = f"per {span.bucket_seconds // 60} min"
        return chart(drawn, "time", per, x_time=True, empty="No predictions in this window.")
    drawn = [
        series("mean latency", x, [a.mean_latency_ms if a else None for a in buckets], "points"),
        series("max latency", x, [a.max_latency_ms if a else None for a in buckets], "points"),
    ]
    return chart(drawn, "time", "ms", x_time=True, empty="No predictions in this window.")
