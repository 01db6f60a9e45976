"""Experiments and runs: the list of experiments, the runs of one, a run, runs compared."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from plinth.ui.sections import Section
from plinth.ui.web import HtmlRoute, page_token, render, services

router = APIRouter(route_class=HtmlRoute)
section = Section(
    "tracking",
    "Experiments",
    "/experiments",
    router,
    summary="Experiments and their runs: params, metric charts, artifacts, lineage; compare runs.",
    order=10,
)

EXPERIMENTS_PER_PAGE = 50


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
