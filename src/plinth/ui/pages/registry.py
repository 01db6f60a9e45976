"""The model registry: models, their versions (stage, aliases, lineage, signature), stage
transitions through the gates, aliases, rollback and the audit trail."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from plinth.auth.types import Action, Kind
from plinth.errors import GateFailed, InvalidArgument, NotFound, PlinthError, Unauthenticated
from plinth.registry.rules import stage_action
from plinth.registry.service import RegistryService
from plinth.registry.types import HistoryEntry, ModelVersion, RegisteredModel, Stage
from plinth.ui.sections import Section
from plinth.ui.web import PREFIX, HtmlRoute, may, page_token, render, services

router = APIRouter(route_class=HtmlRoute)
section = Section(
    "registry",
    "Models",
    "/models",
    router,
    summary=(
        "Registered models: versions with their stage, aliases, lineage and signature; "
        "promote through the gates, set aliases, roll back, read the audit trail."
    ),
    order=20,
)

MODELS_PER_PAGE = 25
VERSIONS_PER_PAGE = 50
HISTORY_SHOWN = 200
# The stages a list shows a latest version for, in the order a model moves through them.
LISTED_STAGES = (Stage.PRODUCTION, Stage.STAGING, Stage.SHADOW, Stage.DEVELOPMENT)

# What a refused form is filled in with again.
_EMPTY_FORM = {"stage": "", "stage_reason": "", "alias": "", "alias_reason": ""}


@dataclass(frozen=True)
class ModelRow:
    model: RegisteredModel
    latest: dict[str, int]  # stage -> newest version in it


@dataclass(frozen=True)
class Event:
    """One entry of the audit trail as the page shows it."""

    entry: HistoryEntry
    change: str
    gates: list[dict[str, Any]]


# -- pages -------------------------------------------------------------------------------


@router.get("/models")
def models(request: Request, q: str = "", page: int = 1) -> Response:
    registry = services(request).registry
    found = registry.list_registered_models(
        name_like=f"%{q}%" if q else None,
        max_results=MODELS_PER_PAGE,
        page_token=page_token(page, MODELS_PER_PAGE),
    )
    rows = [ModelRow(m, registry.latest_versions(m.name)) for m in found.items]
    context = {
        "rows": rows,
        "stages": [s.value for s in LISTED_STAGES],
        "q": q,
        "page": page,
        "has_next": bool(found.next_page_token),
    }
    return render(request, "registry/models.html", context)


@router.get("/models/{name}")
def model(request: Request, name: str, page: int = 1, done: str = "") -> Response:
    return _model_page(request, name, page=page, done=done)


@router.get("/models/{name}/versions/{version}")
def version(request: Request, name: str, version: str, done: str = "", alias: str = "") -> Response:
    return _version_page(request, name, _version_number(version), done=done, alias=alias)


# -- actions -----------------------------------------------------------------------------


@router.post("/models/{name}/versions/{version}/stage")
def move(
    request: Request,
    name: str,
    version: str,
    stage: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    allow_archived: Annotated[str, Form()] = "",
) -> Response:
    number = _version_number(version)

    def act() -> str:
        target = Stage.parse(stage.strip())
        services(request).registry.set_stage(
            name, number, target, _reason(reason), allow_archived=bool(allow_archived)
        )
        return "stage"

    form = {**_EMPTY_FORM, "stage": stage, "stage_reason": reason}
    return _act(request, name, number, act, form)


@router.post("/models/{name}/versions/{version}/aliases")
def set_alias(
    request: Request,
    name: str,
    version: str,
    alias: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    number = _version_number(version)

    def act() -> str:
        services(request).registry.set_alias(name, alias.strip(), number, _reason(reason))
        return f"alias:{alias.strip()}"

    form = {**_EMPTY_FORM, "alias": alias, "alias_reason": reason}
    return _act(request, name, number, act, form)


@router.post("/models/{name}/versions/{version}/aliases/{alias}/delete")
def delete_alias(request: Request, name: str, version: str, alias: str) -> Response:
    number = _version_number(version)

    def act() -> str:
        registry = services(request).registry
        # a page shown before the alias moved must not remove it from another version
        if alias not in registry.get_model_version(name, number).aliases:
            raise NotFound(f"v{number} of model {name!r} has no alias {alias!r}")
        registry.delete_alias(name, alias)
        return f"unalias:{alias}"

    return _act(request, name, number, act, _EMPTY_FORM)


@router.post("/models/{name}/rollback")
def rollback(request: Request, name: str, reason: Annotated[str, Form()] = "") -> Response:
    try:
        services(request).registry.rollback(name, _reason(reason))
    except Unauthenticated:
        raise
    except PlinthError as error:
        return _model_page(request, name, failure=error, reason=reason)
    return _redirect(_model_path(name), "rollback")


# -- building the pages ------------------------------------------------------------------


def _model_page(
    request: Request,
    name: str,
    *,
    page: int = 1,
    done: str = "",
    failure: PlinthError | None = None,
    reason: str = "",
) -> Response:
    registry = services(request).registry
    found = registry.get_registered_model(name)
    versions = registry.list_model_versions(
        name, max_results=VERSIONS_PER_PAGE, page_token=page_token(page, VERSIONS_PER_PAGE)
    )
    history = registry.model_history(name)
    context = {
        "model": found,
        "versions": versions.items,
        "version_count": found.latest_version or 0,
        "page": page,
        "has_next": bool(versions.next_page_token),
        "gates": registry.get_gates(name),
        "events": [_event(e) for e in reversed(history[-HISTORY_SHOWN:])],
        "history_count": len(history),
        "rollback_to": _rollback_target(found, history, lambda n: _exists(registry, name, n)),
        "may_promote": may(request, Action.PROMOTE, Kind.MODEL, name),
        "done": _model_notice(done, found),
        "failure": failure,
        "reason": reason,
    }
    status = failure.http_status if failure else 200
    return render(request, "registry/model.html", context, status_code=status)


def _version_page(
    request: Request,
    name: str,
    number: int,
    *,
    done: str = "",
    alias: str = "",
    failure: PlinthError | None = None,
    form: dict[str, str] = _EMPTY_FORM,
) -> Response:
    registry = services(request).registry
    mv = registry.get_model_version(name, number)
    may_write = may(request, Action.WRITE, Kind.MODEL, name)
    may_promote = may(request, Action.PROMOTE, Kind.MODEL, name)
    allowed = {Action.WRITE: may_write, Action.PROMOTE: may_promote}
    targets = [s for s in Stage if s is not mv.stage and allowed[stage_action(s, mv.stage)]]
    lineage = mv.lineage
    context = {
        "mv": mv,
        "model_path": _model_path(name),
        "gates": registry.get_gates(name),
        "targets": [s.value for s in targets],
        "may_promote": may_promote,
        "run_id": mv.run_id or lineage.get("run_id"),
        "code": lineage.get("code") or {},
        "datasets": lineage.get("datasets") or [],
        "training_datasets": lineage.get("training_datasets") or [],
        "metrics": sorted((lineage.get("metrics") or {}).items()),
        "requirements": sorted((lineage.get("requirements") or {}).items()),
        "done": _version_notice(done, alias, mv),
        "failure": failure,
        "gate_results": failure.results if isinstance(failure, GateFailed) else [],
        "form": form,
    }
    status = failure.http_status if failure else 200
    return render(request, "registry/version.html", context, status_code=status)


def _act(
    request: Request, name: str, number: int, act: Callable[[], str], form: dict[str, str]
) -> Response:
    """Take an action on a version: back to its page with a notice, or the page again with
    the service's refusal (and each gate's result when the gates refused)."""
    try:
        done = act()
    except Unauthenticated:
        raise
    except PlinthError as error:
        return _version_page(request, name, number, failure=error, form=form)
    return _redirect(f"{_model_path(name)}/versions/{number}", done)


def _redirect(path: str, done: str) -> Response:
    """Back to the page with a notice of what was done: a code (and an alias name), never
    text, so a link cannot put words in the page's mouth."""
    code, _, alias = done.partition(":")
    query = {"done": code, **({"alias": alias} if alias else {})}
    return RedirectResponse(f"{PREFIX}{path}?{urlencode(query)}", status_code=303)


def _model_notice(done: str, model: RegisteredModel) -> str:
    if done == "rollback" and model.production_version is not None:
        return f"rolled back: v{model.production_version} is PRODUCTION again"
    return ""


def _version_notice(done: str, alias: str, mv: ModelVersion) -> str:
    """The notice of an action, told from the version as it is now (nothing when that does
    not match what the code says was done)."""
    if done == "stage":
        return f"v{mv.version} is now {mv.stage.value}"
    if done == "alias" and alias in mv.aliases:
        return f"@{alias} now points to v{mv.version}"
    if done == "unalias" and alias and alias not in mv.aliases:
        return f"@{alias} removed"
    return ""


def _model_path(name: str) -> str:
    return f"/models/{quote(name, safe='')}"


def _version_number(text: str) -> int:
    if not text.isdigit():
        raise InvalidArgument(f"a model version is a whole number such as 3, not {text!r}")
    return int(text)


def _reason(text: str) -> str:
    reason = text.strip()
    if not reason:
        raise InvalidArgument("give a reason: it is kept in the model's history")
    return reason


def _exists(registry: RegistryService, name: str, version: int) -> bool:
    try:
        registry.get_model_version(name, version)
    except NotFound:
        return False
    return True


def _rollback_target(
    found: RegisteredModel, history: list[HistoryEntry], exists: Callable[[int], bool]
) -> int | None:
    """The version a rollback would restore (as the service picks it): the newest that
    left PRODUCTION, other than the current one and not deleted."""
    current = found.production_version
    for entry in reversed(history):
        version = entry.version
        left = entry.from_value == Stage.PRODUCTION.value
        if left and version is not None and version != current and exists(version):
            return version
    return None


def _event(entry: HistoryEntry) -> Event:
    details = entry.details
    gates = [g for g in details.get("gates", []) if isinstance(g, dict)]
    return Event(entry, _change(entry), gates)


def _change(entry: HistoryEntry) -> str:
    before, after, alias = entry.from_value, entry.to_value, entry.details.get("alias", "")
    if entry.action in ("register", "stage", "rollback"):
        return f"{before or '—'} → {after}"
    if entry.action == "alias":
        return f"@{alias}: {'v' + before if before else '—'} → v{after}"
    if entry.action == "unalias":
        return f"@{alias} removed (was v{before})"
    if entry.action == "gates":
        return "gates: " + (_gate_summary(after) or "none")
    if entry.action == "delete":
        return f"deleted (was {before})"
    if entry.action == "decision":
        return f"{after} (champion {'v' + before if before else '—'})"
    if entry.action == "tags":
        return f"tags: {after}"
    return f"{entry.action} changed"


def _gate_summary(encoded: str | None) -> str:
    try:
        gates = json.loads(encoded or "[]")
    except ValueError:
        return encoded or ""
    names = []
    for g in gates if isinstance(gates, list) else []:
        if isinstance(g, dict):
            shown = g.get("expression") or f"not worse on {g.get('metric', '')}"
            names.append(str(shown))
    return "; ".join(names)
