"""Monitoring: the monitors with their last status and open alerts, the recent alerts
(acknowledge), and a monitor's page (its spec, its evaluations over time, drift per column
over time with reference-vs-current histograms, or performance per window; run it now).

The pages call the same ``MonitorService`` and ``MonitoringData`` methods as the API and
the CLI, as the signed-in user: a monitor the user may not read, or whose model or feature group
the user may not read, is not listed and its page answers 404, as for one that does not
exist. Buttons are shown only to a user who may act (the service
checks again). Alert routes live under ``/monitors/_alerts``: no monitor name starts with
``_``.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from plinth.auth.types import Action, Kind
from plinth.errors import InvalidArgument, PlinthError, Unauthenticated
from plinth.monitoring.data import MonitoringData
from plinth.monitoring.service import MonitorService
from plinth.monitoring.types import Monitor
from plinth.ui.monitor_views import MAX_MONITORS, list_view, monitor_view
from plinth.ui.sections import Section
from plinth.ui.web import PREFIX, HtmlRoute, may, page_token, render, services

router = APIRouter(route_class=HtmlRoute)
section = Section(
    "monitors",
    "Monitoring",
    "/monitors",
    router,
    summary=(
        "Monitors of feature groups and models: drift per column over time, reference vs "
        "current histograms, performance per window (measured and estimated), alerts."
    ),
    order=55,
)

ALERT_STATUSES = ("open", "acknowledged")
_NOTICES = {
    "ack": "alert acknowledged",
    "run": "evaluated now",
}


def monitoring(request: Request) -> tuple[MonitorService, MonitoringData]:
    """The server's monitor service and monitoring data over the dashboard's store."""
    found = services(request)
    data = MonitoringData(found.tracking.store, found.registry, found.features)
    return MonitorService(found.tracking.store, data), data


def may_act(request: Request, monitor: Monitor) -> bool:
    """Whether the caller may run the monitor and acknowledge its alerts: WRITE on the
    monitor (the service checks again)."""
    return may(request, Action.WRITE, Kind.MONITOR, monitor.name)


# -- the list ----------------------------------------------------------------------------


@router.get("/monitors")
def monitors(
    request: Request, target: str = "", alerts: str = "open", done: str = "", page: int = 1
) -> Response:
    if alerts not in (*ALERT_STATUSES, "all"):
        raise InvalidArgument(f"alerts: one of open, acknowledged, all; not {alerts!r}")
    service, _ = monitoring(request)
    view = list_view(
        service,
        target=target.strip() or None,
        alert_status=None if alerts == "all" else alerts,
        page_token=page_token(page, MAX_MONITORS),
    )
    context = {
        "view": view,
        "target": target,
        "alerts_shown": alerts,
        "alert_statuses": (*ALERT_STATUSES, "all"),
        "may_ack": {m.name: may_act(request, m) for m in view.monitors_by_name.values()},
        "done": _NOTICES.get(done, ""),
        "page": page,
        "back": str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
    }
    return render(request, "monitors/list.html", context)


@router.post("/monitors/_alerts/{alert_id}/acknowledge")
def acknowledge(request: Request, alert_id: int, back: Annotated[str, Form()] = "") -> Response:
    service, _ = monitoring(request)
    service.acknowledge_alert(alert_id)
    return _back(back, "ack")


# -- a monitor ---------------------------------------------------------------------------


@router.get("/monitors/{name}")
def monitor(request: Request, name: str, done: str = "") -> Response:
    return _monitor_page(request, name, done=done)


@router.post("/monitors/{name}/run")
def run(request: Request, name: str) -> Response:
    service, _ = monitoring(request)
    try:
        service.run_monitor(name)
    except Unauthenticated:
        raise
    except PlinthError as error:
        return _monitor_page(request, name, failure=error)
    return _back(f"{PREFIX}/monitors/{quote(name, safe='')}", "run")


def _monitor_page(
    request: Request, name: str, *, done: str = "", failure: PlinthError | None = None
) -> Response:
    service, data = monitoring(request)
    view = monitor_view(service, data, name)
    here = f"{PREFIX}/monitors/{quote(name, safe='')}"
    context: dict[str, Any] = {
        "view": view,
        "m": view.monitor,
        "here": here,
        "may_run": may_act(request, view.monitor),
        "may_ack": {view.monitor.name: may_act(request, view.monitor)},
        "done": _NOTICES.get(done, ""),
        "failure": failure,
        "back": here,
        "standalone": False,
    }
    status = failure.http_status if failure else 200
    return render(request, "monitors/monitor.html", context, status_code=status)


def _back(back: str, done: str) -> Response:
    """Back to the page the form was on (only a page of the monitoring section)."""
    target = back if back.startswith(f"{PREFIX}/monitors") and "//" not in back else ""
    target = target or f"{PREFIX}/monitors"
    path, _, query = target.partition("?")
    pairs = [p for p in query.split("&") if p and not p.startswith("done=")]
    pairs.append(urlencode({"done": done}))
    return RedirectResponse(f"{path}?{'&'.join(pairs)}", status_code=303)
