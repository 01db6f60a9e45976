"""What every page uses: the services, rendering, the error boundary, permissions, CSRF.

A page is a plain FastAPI route on a section's router (``route_class=HtmlRoute``). It
calls service methods as the signed-in user; a ``PlinthError`` they raise becomes the
same message in an HTML page with the same status (never a 500), an expired session a
redirect to the sign-in page. Every unsafe request (POST) must carry the CSRF token of
the browser's cookie, in the form's ``csrf`` field or the ``X-CSRF-Token`` header
(htmx sends it).
"""

from __future__ import annotations

import functools
import hmac
import logging
import math
import secrets
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from plinth.auth.access import access_for
from plinth.auth.types import Action, Kind, Principal, Role
from plinth.errors import InvalidArgument, PermissionDenied, PlinthError, Unauthenticated
from plinth.store.sql import encode_page_token

if TYPE_CHECKING:
    from plinth.auth.identity import Authenticator
    from plinth.auth.service import AuthService
    from plinth.config import Settings
    from plinth.features.service import FeatureService
    from plinth.features.store import FeatureStore
    from plinth.registry.service import RegistryService
    from plinth.serving.jobs import ScoreJobService
    from plinth.tracking.service import TrackingService
    from plinth.ui.sections import Section

log = logging.getLogger("plinth.ui")

PREFIX = "/ui"
SIGN_IN = f"{PREFIX}/sign-in"
SESSION_COOKIE = "plinth_session"
CSRF_COOKIE = "plinth_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# No script but the package's own files, no frame, no form posted elsewhere. Styles may be
# set inline: uPlot sizes its canvas that way.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True)
class Services:
    """The services the pages call: the server's own instances."""

    tracking: TrackingService
    registry: RegistryService
    features: FeatureService
    feature_store: FeatureStore
    score_jobs: ScoreJobService
    auth: AuthService
    settings: Settings
    authenticator: Authenticator | None
    sections: tuple[Section, ...] = ()


def services(request: Request) -> Services:
    found: Services = request.app.state.dashboard
    return found


# -- who may do what ---------------------------------------------------------------------


def me(request: Request) -> Principal:
    """The signed-in user (with authentication off, the server's own user)."""
    return access_for(services(request).tracking.store).principal()


def may(request: Request, action: Action, kind: Kind, resource: str) -> bool:
    """Whether the caller holds ``action``'s level on a resource: pages offer an action
    only when it is allowed (the service still checks when it is taken)."""
    access = access_for(services(request).tracking.store)
    principal = access.principal()
    if principal.is_admin:
        return True
    if not principal.authenticated:
        return False
    return access.level(principal, kind, resource) >= action.value


_ROLE_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2}


def has_role(request: Request, role: Role) -> bool:
    principal = me(request)
    return principal.authenticated and _ROLE_RANK[principal.role] >= _ROLE_RANK[role]


# -- rendering ---------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("plinth.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a page with a missing value fails its test
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=format_time, duration=format_duration, number=format_number, size=format_size
    )
    env.globals.update(url_with=url_with, quote=quote)
    return env


@functools.cache
def templates() -> Jinja2Templates:
    return Jinja2Templates(env=_environment())


def is_htmx(request: Request) -> bool:
    """Whether htmx asked for a part of a page (to be swapped in), not a whole page."""
    # a history restore (back/forward after an address push) wants the whole page
    return (
        request.headers.get("hx-request") == "true"
        and "hx-history-restore-request" not in request.headers
    )


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    found = services(request)
    principal = me(request)
    values = {
        "me": principal,
        "auth_on": found.settings.auth,
        "sections": found.sections,
        "csrf": csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "prefix": PREFIX,
        "section_name": getattr(request.state, "section", ""),
    }
    values.update(context or {})
    return templates().TemplateResponse(request, name, values, status_code=status_code)


def url_with(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (None removes one; a list gives
    a repeated one), keeping every value of the others' repeated ones (``?runs=a&runs=b``)."""
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    for key, value in changes.items():
        if isinstance(value, list | tuple):
            pairs += [(key, str(v)) for v in value]
        elif value is not None:
            pairs.append((key, str(value)))
    return f"{request.url.path}?{urlencode(pairs)}" if pairs else request.url.path


def page_token(page: int, size: int) -> str | None:
    """The service's page token for page ``page`` (1-based) of ``size`` items: pages keep
    stable URLs (``?page=3``) while the services page by token."""
    if page < 1:
        raise InvalidArgument(f"page must be 1 or more, got {page}")
    return None if page == 1 else encode_page_token((page - 1) * size)


def format_time(value: datetime | int | float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float):  # milliseconds since the epoch
        value = datetime.fromtimestamp(value / 1000, UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def format_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    return f"{value:.6g}"


def format_size(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


# -- CSRF --------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The browser's CSRF token (double-submit: a SameSite=Strict cookie that a page of
    another site can neither read nor send, repeated in each form)."""
    token: str | None = getattr(request.state, "csrf", None)
    if token is None:
        token = request.cookies.get(CSRF_COOKIE, "")
        if len(token) != 43:
            token = secrets.token_urlsafe(32)
            request.state.new_csrf = True
        request.state.csrf = token
    return token


async def check_csrf(request: Request) -> None:
    site = request.headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        raise PermissionDenied("this action came from another site: refused (CSRF)")
    expected = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        field = form.get(CSRF_FIELD)
        sent = field if isinstance(field, str) else ""
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise PermissionDenied(
            "this form's security token is missing or out of date (CSRF): reload the page "
            "and try again"
        )


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https" or services(request).settings.cookie_secure


def _finish(request: Request, response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("cache-control", "no-store")
    if getattr(request.state, "new_csrf", False):
        response.set_cookie(
            CSRF_COOKIE,
            request.state.csrf,
            httponly=True,
            samesite="strict",
            secure=secure_cookies(request),
            path=PREFIX,
        )
    return response


# -- the error boundary ------------------------------------------------------------------


def sign_in_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"{SIGN_IN}?{urlencode({'next': target})}"
    if is_htmx(request):  # a part of a page cannot show the sign-in page: reload to it
        response: Response = Response(status_code=204, headers={"hx-redirect": location})
    else:
        response = RedirectResponse(location, status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path=PREFIX, secure=secure_cookies(request), httponly=True, samesite="lax"
    )
    return response


def error_page(request: Request, error: PlinthError) -> Response:
    if _wants_json(request):  # a chart's data, asked for by plinth.js
        return JSONResponse(error.to_dict(), status_code=error.http_status)
    template = "_error.html" if is_htmx(request) else "error.html"
    return render(request, template, {"error": error}, status_code=error.http_status)


def _error_page_or_sign_in(request: Request, error: PlinthError) -> Response:
    # the page names its user: a caller whose credential fails goes to sign in instead
    try:
        return error_page(request, error)
    except Unauthenticated:
        return sign_in_redirect(request)


def _wants_json(request: Request) -> bool:
    return request.headers.get("accept", "").startswith("application/json")


class HtmlRoute(APIRoute):
    """A page: errors become pages, unsafe requests need the CSRF token."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                if request.method not in _SAFE_METHODS:
                    await check_csrf(request)
                response = await handler(request)
            except Unauthenticated:
                response = sign_in_redirect(request)
            except PlinthError as error:
                response = await _in_thread(_error_page_or_sign_in, request, error)
            except RequestValidationError as exc:
                invalid = InvalidArgument(_validation_message(exc))
                response = await _in_thread(_error_page_or_sign_in, request, invalid)
            except Exception:
                incident = uuid.uuid4().hex[:12]
                log.exception("unexpected error %s on %s", incident, request.url.path)
                response = HTMLResponse(
                    f"<!doctype html><title>Error</title><main><h1>Internal error</h1><p>"
                    f"Incident {incident}: see the server log.</p></main>",
                    status_code=500,
                )
            return _finish(request, response)

        return page


async def _in_thread(call: Callable[..., Response], *args: Any) -> Response:
    # rendering asks who the caller is, which may wait on the store: not on the event loop
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(call, *args)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors()[:5]:
        loc = list(err["loc"])
        if loc and loc[0] in ("query", "path", "body"):  # where it came from, not its name
            loc = loc[1:]
        where = ".".join(str(p) for p in loc)
        problems.append(f"{where}: {err['msg']}")
    return "invalid request: " + "; ".join(problems)
