"""Mount the dashboard on the server's app: the sign-in routes and every section."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse

from plinth.errors import NotFound
from plinth.ui.sections import discover
from plinth.ui.web import PREFIX, HtmlRoute, Services


def mount_dashboard(app: FastAPI, found: Services) -> None:
    from plinth.ui.session import router as session_router

    sections = tuple(discover())
    app.state.dashboard = replace(found, sections=sections)
    app.include_router(session_router)
    for section in sections:
        app.include_router(
            section.router,
            prefix=PREFIX,
            dependencies=[_marker(section.nav_as or section.name)],
            include_in_schema=False,  # pages, not operations of the API
        )

    app.include_router(_unknown)  # last: what no section answers

    @app.get("/", include_in_schema=False)
    @app.get(PREFIX, include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)


def _marker(name: str) -> Any:
    """Pages of a section know it (the navigation highlights it)."""

    def in_section(request: Request) -> None:
        request.state.section = name

    return Depends(in_section)


_unknown = APIRouter(route_class=HtmlRoute, include_in_schema=False)


@_unknown.get(PREFIX + "/{rest:path}")
def unknown_page(rest: str) -> None:
    raise NotFound(f"the dashboard has no page at {PREFIX}/{rest}")
