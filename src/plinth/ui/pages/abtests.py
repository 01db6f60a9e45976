"""A/B experiments: the list, the design form with its power analysis, an experiment's
page (design, history, start / pause / resume / stop / promote, live results with their
charts and warnings).

The pages call the same ``AbTestService`` methods as the API and the CLI, as the signed-in
user; a button is shown only to a user who may take its action (the service checks again).
The create form is at ``/abtests/_new``: no experiment name starts with ``_``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from plinth.abtests.power import PowerResult, duration_days, sample_size
from plinth.abtests.service import AbTestService
from plinth.abtests.types import (
    Arm,
    Bandit,
    Canary,
    Experiment,
    Guardrail,
    Kpi,
    KpiKind,
    Mode,
    Status,
    Unit,
)
from plinth.auth.types import Action, Kind, Role
from plinth.errors import InvalidArgument, PlinthError, Unauthenticated
from plinth.ui.abtest_results import ESTIMATE_METHOD, results_view
from plinth.ui.sections import Section
from plinth.ui.web import (
    PREFIX,
    HtmlRoute,
    has_role,
    is_htmx,
    may,
    me,
    page_token,
    render,
    services,
)

router = APIRouter(route_class=HtmlRoute)
section = Section(
    "abtests",
    "A/B tests",
    "/abtests",
    router,
    summary=(
        "Online experiments between models: design with a power analysis, start, pause, "
        "stop and promote; live results with lifts, intervals and warnings."
    ),
    order=50,
)

PER_PAGE = 50
ARM_ROWS = 4  # rows of the form's arms (empty ones are left out)
GUARDRAIL_ROWS = 3
REFRESH = "every 5s"
TRANSITIONS = ("start", "pause", "resume", "stop")
# The actions a status offers, in the order of the buttons.
OFFERED = {
    Status.DRAFT: ("start",),
    Status.RUNNING: ("pause", "stop", "promote"),
    Status.PAUSED: ("resume", "stop", "promote"),
    Status.STOPPED: ("promote",),
}
_NOTICES = {
    "created": "created in draft: start it when the arms are serving",
    "start": "started",
    "pause": "paused: every unit gets the control arm",
    "resume": "running again, every unit in the arm it had",
    "stop": "stopped",
    "promote": "promoted: the arm's model version is in PRODUCTION",
}


def abtests(request: Request) -> AbTestService:
    """The server's A/B service over the dashboard's store, artifacts and registry."""
    found = services(request)
    return AbTestService(found.tracking.store, found.settings.resolved_artifact_uri, found.registry)


# -- the list ----------------------------------------------------------------------------


@router.get("/abtests")
def experiments(request: Request, status: str = "", page: int = 1) -> Response:
    chosen = _status(status)
    found = abtests(request).list_abtests(
        status=chosen, max_results=PER_PAGE, page_token=page_token(page, PER_PAGE)
    )
    context = {
        "experiments": found.items,
        "statuses": [s.value for s in Status],
        "status": status,
        "page": page,
        "has_next": bool(found.next_page_token),
        "may_create": _may_create(request),
    }
    return render(request, "abtests/list.html", context)


def _status(text: str) -> Status | None:
    if not text:
        return None
    try:
        return Status(text)
    except ValueError:
        shown = ", ".join(s.value for s in Status)
        raise InvalidArgument(f"status: one of {shown}, not {text!r}") from None


def _may_create(request: Request) -> bool:
    return me(request).is_admin or has_role(request, Role.EDITOR)


# -- the design form ---------------------------------------------------------------------


@dataclass
class DesignForm:
    """The form's fields as typed, kept when the service refuses them."""

    name: str = ""
    hypothesis: str = ""
    kpi_name: str = "conversion"
    kpi_kind: str = KpiKind.PROPORTION.value
    kpi_event: str = ""
    kpi_denominator: str = ""
    mde: str = "0.02"
    alpha: str = "0.05"
    power: str = "0.8"
    baseline: str = "0.1"
    units_per_day: str = ""
    mode: str = Mode.AB.value
    unit: str = Unit.USER.value
    reason: str = ""
    arms: list[dict[str, str]] = field(default_factory=list)
    control: str = "0"
    guardrails: list[dict[str, str]] = field(default_factory=list)
    # the schedules: used in their own mode only
    canary_steps: str = ", ".join(f"{s:g}" for s in Canary().steps)
    canary_every: str = f"{Canary().every_seconds:g}"
    bandit_every: str = f"{Bandit().every_seconds:g}"
    bandit_floor: str = f"{Bandit().floor:g}"

    def padded(self) -> DesignForm:
        # a canary starts with the challenger at 0: the controller takes its steps
        canary = self.mode == Mode.CANARY.value
        arms = self.arms or [
            {"name": "control", "target": "", "share": "1" if canary else "0.5"},
            {"name": "treatment", "target": "", "share": "0" if canary else "0.5"},
        ]
        arms = arms + [{"name": "", "target": "", "share": ""}] * (ARM_ROWS - len(arms))
        rails = self.guardrails + [{"metric": "", "max_drop": "", "max_value": ""}] * (
            GUARDRAIL_ROWS - len(self.guardrails)
        )
        return DesignForm(**{**self.__dict__, "arms": arms, "guardrails": rails})


@router.get("/abtests/_new")
def new(request: Request, mode: str = "") -> Response:
    """The empty form; ``?mode=canary`` (or another mode) starts from that mode's shares."""
    chosen = mode if mode in {m.value for m in Mode} else Mode.AB.value
    return _form_page(request, DesignForm(mode=chosen).padded())


@router.post("/abtests/_new")
def create(
    request: Request,
    name: Annotated[str, Form()] = "",
    hypothesis: Annotated[str, Form()] = "",
    kpi_name: Annotated[str, Form()] = "",
    kpi_kind: Annotated[str, Form()] = "",
    kpi_event: Annotated[str, Form()] = "",
    kpi_denominator: Annotated[str, Form()] = "",
    mde: Annotated[str, Form()] = "",
    alpha: Annotated[str, Form()] = "",
    power: Annotated[str, Form()] = "",
    baseline: Annotated[str, Form()] = "",
    units_per_day: Annotated[str, Form()] = "",
    mode: Annotated[str, Form()] = "",
    unit: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    arm_name: Annotated[list[str] | None, Form()] = None,
    arm_target: Annotated[list[str] | None, Form()] = None,
    arm_share: Annotated[list[str] | None, Form()] = None,
    control: Annotated[str, Form()] = "",
    rail_metric: Annotated[list[str] | None, Form()] = None,
    rail_max_drop: Annotated[list[str] | None, Form()] = None,
    rail_max_value: Annotated[list[str] | None, Form()] = None,
    canary_steps: Annotated[str, Form()] = "",
    canary_every: Annotated[str, Form()] = "",
    bandit_every: Annotated[str, Form()] = "",
    bandit_floor: Annotated[str, Form()] = "",
) -> Response:
    typed = DesignForm(
        name=name,
        hypothesis=hypothesis,
        kpi_name=kpi_name,
        kpi_kind=kpi_kind,
        kpi_event=kpi_event,
        kpi_denominator=kpi_denominator,
        mde=mde,
        alpha=alpha,
        power=power,
        baseline=baseline,
        units_per_day=units_per_day,
        mode=mode,
        unit=unit,
        reason=reason,
        arms=_rows(("name", arm_name), ("target", arm_target), ("share", arm_share)),
        control=control,
        guardrails=_rows(
            ("metric", rail_metric), ("max_drop", rail_max_drop), ("max_value", rail_max_value)
        ),
        canary_steps=canary_steps,
        canary_every=canary_every,
        bandit_every=bandit_every,
        bandit_floor=bandit_floor,
    )
    try:
        made = abtests(request).create_abtest(**_design(typed))
    except Unauthenticated:
        raise
    except PlinthError as error:
        return _form_page(request, typed.padded(), error)
    return _redirect(made.name, "created")


def _rows(*columns: tuple[str, list[str] | None]) -> list[dict[str, str]]:
    """The form's repeated fields as rows (all of a row's fields, in order)."""
    length = max(len(values or []) for _, values in columns)
    return [
        {key: ((values or [])[i] if i < len(values or []) else "") for key, values in columns}
        for i in range(length)
    ]


def _design(form: DesignForm) -> dict[str, Any]:
    """``create_abtest``'s arguments from the form; InvalidArgument names the field."""
    arms: list[Arm] = []
    for i, row in enumerate(form.arms):
        if not any(v.strip() for v in row.values()):
            continue  # an empty row of the form
        target = row["target"].strip()
        serves = {"model_uri": target} if target.startswith("models:/") else {"url": target}
        arms.append(
            Arm(
                name=row["name"].strip(),
                share=_number(row["share"], f"arms[{len(arms)}].share"),
                control=str(i) == form.control,
                **serves,
            )
        )
    rails: list[Guardrail] = []
    for row in form.guardrails:
        if not any(v.strip() for v in row.values()):
            continue
        where = f"guardrails[{len(rails)}]"
        rails.append(
            Guardrail(
                metric=row["metric"].strip(),
                max_drop=_optional(row["max_drop"], f"{where}.max_drop"),
                max_value=_optional(row["max_value"], f"{where}.max_value"),
            )
        )
    kind = _choice(KpiKind, form.kpi_kind, "primary.kind")
    denominator = form.kpi_denominator.strip() or None
    mode = _choice(Mode, form.mode, "mode")
    schedule: dict[str, Any] = {}
    if mode is Mode.CANARY:
        steps = [s for s in form.canary_steps.replace(";", ",").split(",") if s.strip()]
        schedule["canary"] = Canary(
            [_number(step, f"canary.steps[{i}]") for i, step in enumerate(steps)],
            _number(form.canary_every, "canary.every_seconds"),
        )
    elif mode is Mode.BANDIT:
        schedule["bandit"] = Bandit(
            _number(form.bandit_every, "bandit.every_seconds"),
            _number(form.bandit_floor, "bandit.floor"),
        )
    return {
        **schedule,
        "name": form.name.strip(),
        "hypothesis": form.hypothesis.strip(),
        "primary": Kpi(form.kpi_name.strip(), kind, form.kpi_event.strip(), denominator),
        "arms": arms,
        "mde": _number(form.mde, "mde"),
        "alpha": _number(form.alpha, "alpha"),
        "power": _number(form.power, "power"),
        "guardrails": rails,
        "mode": mode,
        "unit": _choice(Unit, form.unit, "unit"),
        "reason": form.reason.strip(),
    }


def _number(text: str, where: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise InvalidArgument(f"{where}: a number such as 0.05, not {text.strip()!r}") from None
    if not math.isfinite(value):
        raise InvalidArgument(f"{where}: a finite number, not {text.strip()!r}")
    return value


def _optional(text: str, where: str) -> float | None:
    return _number(text, where) if text.strip() else None


def _choice(kind: Any, text: str, where: str) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        shown = ", ".join(k.value for k in kind)
        raise InvalidArgument(f"{where}: one of {shown}, not {text.strip()!r}") from None


def _form_page(request: Request, form: DesignForm, failure: PlinthError | None = None) -> Response:
    context = {
        "form": form,
        "failure": failure,
        "kinds": [k.value for k in KpiKind],
        "modes": [m.value for m in Mode],
        "units": [u.value for u in Unit],
        "plan": _plan(form),
    }
    status = failure.http_status if failure else 200
    return render(request, "abtests/new.html", context, status_code=status)


@dataclass(frozen=True)
class Plan:
    """The power analysis of the form as typed: a result, or why there is none."""

    result: PowerResult | None
    days: float | None
    units_per_day: float | None
    problem: str


@router.get("/abtests/_power")
def power(
    request: Request,
    kpi_kind: str = "",
    mde: str = "",
    alpha: str = "",
    power: str = "",
    baseline: str = "",
    units_per_day: str = "",
    arm_name: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """The power analysis of the form as it is typed (htmx swaps it in as the user types)."""
    arms = [{"name": n, "target": "", "share": ""} for n in arm_name or [] if n.strip()]
    form = DesignForm(
        kpi_kind=kpi_kind,
        mde=mde,
        alpha=alpha,
        power=power,
        baseline=baseline,
        units_per_day=units_per_day,
        arms=arms,
    )
    if not is_htmx(request):
        return _form_page(request, form.padded())
    return render(request, "abtests/_power.html", {"plan": _plan(form)})


def _plan(form: DesignForm) -> Plan:
    named = [a for a in form.arms if a.get("name", "").strip()]
    try:
        proportion = form.kpi_kind.strip() == KpiKind.PROPORTION.value
        result = sample_size(
            "proportions" if proportion else "means",
            _number(form.mde, "mde"),
            _number(form.alpha, "alpha"),
            _number(form.power, "power"),
            max(len(named), 2),
            _number(form.baseline, "baseline") if proportion else None,
        )
        rate = _optional(form.units_per_day, "units a day")
        days = None if rate is None else duration_days(result, rate)
    except InvalidArgument as error:
        return Plan(None, None, None, error.message)
    return Plan(result, days, rate, "")


# -- an experiment -----------------------------------------------------------------------


@router.get("/abtests/{name}")
def experiment(request: Request, name: str, done: str = "") -> Response:
    return _experiment_page(request, name, done=done)


@router.get("/abtests/{name}/results")
def results(request: Request, name: str) -> Response:
    """The results, polled by the page while the experiment runs (the whole page when
    opened as one)."""
    if not is_htmx(request):
        return _experiment_page(request, name)
    view = results_view(abtests(request), name)
    return render(request, "abtests/_results.html", _results_context(request, view))


@router.post("/abtests/{name}/promote")
def promote(
    request: Request,
    name: str,
    arm: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    force: Annotated[str, Form()] = "",
) -> Response:
    service = abtests(request)
    extra: dict[str, Any] = {}
    if force:
        extra["force"] = True
    try:
        service.promote_abtest(name, arm=arm.strip() or None, reason=reason.strip(), **extra)
    except Unauthenticated:
        raise
    except PlinthError as error:
        return _experiment_page(request, name, failure=error, form={"promote": reason})
    return _redirect(name, "promote")


@router.post("/abtests/{name}/{action}")
def transition(
    request: Request, name: str, action: str, reason: Annotated[str, Form()] = ""
) -> Response:
    if action not in TRANSITIONS:
        raise InvalidArgument(f"action: one of {', '.join(TRANSITIONS)}, not {action!r}")
    service = abtests(request)
    try:
        getattr(service, f"{action}_abtest")(name, reason=reason.strip())
    except Unauthenticated:
        raise
    except PlinthError as error:
        return _experiment_page(request, name, failure=error, form={action: reason})
    return _redirect(name, action)


def _experiment_page(
    request: Request,
    name: str,
    *,
    done: str = "",
    failure: PlinthError | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    service = abtests(request)
    view = results_view(service, name, history=True)
    exp = view.experiment
    may_write = may(request, Action.WRITE, Kind.ABTEST, name)
    context = {
        **_results_context(request, view),
        "exp": exp,
        "history": view.history,
        "actions": OFFERED[exp.status] if may_write else (),
        "promotable": [a.name for a in exp.arms if a.model_uri is not None],
        "done": _NOTICES.get(done, ""),
        "failure": failure,
        "form": form or {},
    }
    status = failure.http_status if failure else 200
    return render(request, "abtests/experiment.html", context, status_code=status)


def _results_context(request: Request, view: Any) -> dict[str, Any]:
    exp: Experiment = view.experiment
    here = f"{PREFIX}/abtests/{quote(exp.name, safe='')}"
    return {
        "view": view,
        "here": here,
        "live": exp.status is Status.RUNNING,
        "refresh": REFRESH,
        "refresh_url": f"{here}/results",
        "estimate_method": ESTIMATE_METHOD,
    }


def _redirect(name: str, done: str) -> Response:
    query = urlencode({"done": done})
    return RedirectResponse(f"{PREFIX}/abtests/{quote(name, safe='')}?{query}", status_code=303)
