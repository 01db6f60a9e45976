"""Signing in and out of the dashboard.

A password sign-in issues an API token labelled ``dashboard session`` (revoked at
sign-out); a token sign-in (a Plinth API token, or the identity provider's ID token) keeps
the token the user gave. Either way the secret lives in an HTTP-only cookie scoped to the
dashboard, never in a page or a URL, and every request checks it like a bearer token.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from plinth.auth.access import access_for
from plinth.auth.service import SESSION_LABEL
from plinth.errors import InvalidArgument, Unauthenticated
from plinth.ui.web import (
    CSRF_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    HtmlRoute,
    render,
    secure_cookies,
    services,
)

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a page of the dashboard, never another site."""
    unsafe = ("\\", "\n", "\r")
    if target and target.startswith(f"{PREFIX}/") and not any(c in target for c in unsafe):
        return target
    return f"{PREFIX}/"


@router.get(f"{PREFIX}/sign-in")
def sign_in_page(request: Request, next: str | None = None) -> Response:
    if not services(request).settings.auth:  # nothing to sign in to
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "sign_in.html", {"next": safe_next(next), "failure": None, "user": ""})


@router.post(f"{PREFIX}/sign-in")
async def sign_in(
    request: Request,
    user: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    found = services(request)
    target = safe_next(next)
    if not found.settings.auth:
        return RedirectResponse(target, status_code=303)
    try:
        secret = await run_in_threadpool(_credential, request, user, password, token)
    except (Unauthenticated, InvalidArgument) as error:
        status = 401 if isinstance(error, Unauthenticated) else 422
        context = {"next": target, "failure": error, "user": user}
        return await run_in_threadpool(render, request, "sign_in.html", context, status)
    previous = request.cookies.get(SESSION_COOKIE)
    if previous and previous != secret:  # a new sign-in ends the session it replaces
        await run_in_threadpool(found.auth.end_session, previous)
    response = RedirectResponse(target, status_code=303)
    max_age = int(found.settings.session_hours * 3600)
    secure = secure_cookies(request)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=secure,
        path=PREFIX,
    )
    # a new CSRF token with the new session: one planted before sign-in is worth nothing
    response.set_cookie(
        CSRF_COOKIE,
        secrets.token_urlsafe(32),
        httponly=True,
        samesite="strict",
        secure=secure,
        path=PREFIX,
    )
    return response


def _credential(request: Request, user: str, password: str, token: str) -> str:
    found = services(request)
    if token.strip():
        if found.authenticator is None:
            raise Unauthenticated("this server does not take tokens")
        credential = token.strip()
        try:
            found.authenticator.authenticate(credential)
        except Unauthenticated as error:
            access = access_for(found.tracking.store)
            access.record("token_refused", "", "refused", error.message, actor="")
            raise
        return credential
    if not user or not password:
        raise InvalidArgument("give a user name and password, or a token")
    days = found.settings.session_hours / 24
    return found.auth.login(user, password, label=SESSION_LABEL, expires_in_days=days).secret


@router.post(f"{PREFIX}/sign-out")
def sign_out(request: Request) -> Response:
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        services(request).auth.end_session(secret)
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get(f"{PREFIX}/")
def home(request: Request) -> Response:
    return render(request, "home.html")
