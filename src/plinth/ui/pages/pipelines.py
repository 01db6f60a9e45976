"""Pipelines: the pipelines with their last run and schedules; a pipeline's runs, its
schedules (pause, resume) and its steps' durations over recent runs; a run's steps with
their logs, the failed step's traceback and the decision the run made; the registry's
champion/challenger decisions with their evidence.

The pages call the same ``PipelineService`` and ``RegistryService.list_decisions`` as the
API and the CLI, as the signed-in user: a pipeline the user may not read is not listed and
its pages (and its runs') answer 404, as for one that does not exist; decisions are those
of models the user may read. Pause and Resume are shown only to a user who may write the
pipeline (the service checks again). The pages' paths mirror the API's
(``/pipeline-runs/{id}``, ``/pipeline-schedules/{id}/pause``, ``/model-decisions``).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from plinth.auth.types import Action, Kind
from plinth.pipelines.service import PipelineService
from plinth.ui.pages.monitors import monitoring
from plinth.ui.pipeline_views import (
    MAX_DECISIONS,
    MAX_PIPELINES,
    MAX_RUNS,
    alerts_by_id,
    decisions_view,
    evidence_items,
    list_view,
    margin,
    pipeline_view,
    run_seconds,
    run_view,
    schedule_text,
)
from plinth.ui.sections import Section
from plinth.ui.web import PREFIX, HtmlRoute, may, page_token, render, services

router = APIRouter(route_class=HtmlRoute)
section = Section(
    "pipelines",
    "Pipelines",
    "/pipelines",
    router,
    summary=(
        "Pipelines and their runs: each step's status, duration and log, failed steps' "
        "tracebacks; schedules (pause, resume); retraining decisions with their evidence."
    ),
    order=57,
)

_NOTICES = {"paused": "schedule paused", "resumed": "schedule resumed"}


def pipelines(request: Request) -> PipelineService:
    """The server's pipeline service over the dashboard's store."""
    found = services(request)
    return PipelineService(found.tracking.store, found.tracking)


def may_write(request: Request, pipeline: str) -> bool:
    """Whether the caller may pause and resume the pipeline's schedules (WRITE on it)."""
    return may(request, Action.WRITE, Kind.PIPELINE, pipeline)


def _helpers() -> dict[str, Any]:
    return {
        "schedule_text": schedule_text,
        "run_seconds": run_seconds,
        "margin": margin,
        "evidence_items": evidence_items,
    }


# -- the list ----------------------------------------------------------------------------


@router.get("/pipelines")
def pipelines_page(request: Request, page: int = 1) -> Response:
    view = list_view(pipelines(request), page_token(page, MAX_PIPELINES))
    context = {"view": view, "page": page, **_helpers()}
    return render(request, "pipelines/list.html", context)


# -- decisions ---------------------------------------------------------------------------


@router.get("/model-decisions")
def decisions_page(request: Request, model: str = "", page: int = 1) -> Response:
    monitors, _ = monitoring(request)
    view = decisions_view(
        services(request).registry,
        monitors,
        model=model.strip() or None,
        page_token=page_token(page, MAX_DECISIONS),
    )
    context = {"view": view, "model": model, "page": page, **_helpers()}
    return render(request, "pipelines/decisions.html", context)


# -- a pipeline --------------------------------------------------------------------------


@router.get("/pipelines/{name}")
def pipeline_page(request: Request, name: str, page: int = 1, done: str = "") -> Response:
    view = pipeline_view(pipelines(request), name, page_token(page, MAX_RUNS))
    monitors, _ = monitoring(request)
    here = f"{PREFIX}/pipelines/{quote(name, safe='')}"
    context = {
        "view": view,
        "p": view.pipeline,
        "alerts": alerts_by_id(monitors, [r.alert_id for r in view.runs]),
        "may_write": may_write(request, view.pipeline.name),
        "done": _NOTICES.get(done, ""),
        "page": page,
        "here": here,
        **_helpers(),
    }
    return render(request, "pipelines/pipeline.html", context)


@router.post("/pipeline-schedules/{schedule_id}/pause")
def pause(request: Request, schedule_id: int, back: Annotated[str, Form()] = "") -> Response:
    schedule = pipelines(request).pause_schedule(schedule_id)
    return _back(back, schedule.pipeline, "paused")


@router.post("/pipeline-schedules/{schedule_id}/resume")
def resume(request: Request, schedule_id: int, back: Annotated[str, Form()] = "") -> Response:
    schedule = pipelines(request).resume_schedule(schedule_id)
    return _back(back, schedule.pipeline, "resumed")


def _back(back: str, pipeline: str, done: str) -> Response:
    """Back to the page the form was on (only a pipelines page), else the pipeline's."""
    ours = back.startswith(f"{PREFIX}/pipelines") and "//" not in back
    target = back if ours else f"{PREFIX}/pipelines/{quote(pipeline, safe='')}"
    path, _, query = target.partition("?")
    pairs = [p for p in query.split("&") if p and not p.startswith("done=")]
    pairs.append(urlencode({"done": done}))
    return RedirectResponse(f"{path}?{'&'.join(pairs)}", status_code=303)


# -- a run -------------------------------------------------------------------------------


@router.get("/pipeline-runs/{run_id}")
def run_page(request: Request, run_id: int) -> Response:
    monitors, _ = monitoring(request)
    view = run_view(pipelines(request), services(request).registry, monitors, run_id)
    context = {"view": view, "r": view.run, **_helpers()}
    return render(request, "pipelines/run.html", context)
