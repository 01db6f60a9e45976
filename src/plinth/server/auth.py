"""Authentication of every request, ahead of routing (and of the fast paths).

With authentication on, a request either carries a valid bearer token (a Plinth API token
or an OpenID Connect JWT) and runs as its principal, or is answered 401 — except the few
routes anyone may call (health, readiness, the API's description, password sign-in).
Failures are counted per client address; past the limit the client gets 429 until the
window passes, before any check runs.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plinth.api import API_PREFIX
from plinth.auth.access import Access, set_client_address
from plinth.auth.context import Pending, acting_as
from plinth.auth.identity import Authenticator
from plinth.auth.limiter import FailureLimiter
from plinth.auth.secrets import bearer_of
from plinth.auth.types import ANONYMOUS, Principal
from plinth.errors import PlinthError, RateLimited, Unauthenticated
from plinth.ui.web import PREFIX as DASHBOARD
from plinth.ui.web import SESSION_COOKIE, SIGN_IN

OPEN_PATHS = frozenset(
    {
        "/health",
        "/ready",
        f"{API_PREFIX}/health",
        f"{API_PREFIX}/ready",
        "/docs",
        "/docs/oauth2-redirect",
        f"{API_PREFIX}/openapi.json",
        f"{API_PREFIX}/auth/login",
    }
)
# the dashboard's way in (its other pages want the session cookie)
DASHBOARD_OPEN = frozenset({"/", DASHBOARD, SIGN_IN})


class Authenticate:
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator | None,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.limiter = limiter or FailureLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("", 0))[0]
        set_client_address(client)
        if self.authenticator is None:  # authentication off: the embedded default's rules
            await self.app(scope, receive, send)
            return
        retry = self.limiter.retry_after(client)
        if retry:
            error = RateLimited(
                f"too many failed sign-ins or refused tokens from {client}: try again in {retry} s",
                retry,
            )
            await _answer(send, error, {"retry-after": str(retry)})
            return
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith("/static/") or path in DASHBOARD_OPEN:
            with acting_as(ANONYMOUS):
                await self.app(scope, receive, self._counting_failures(send, client))
            return
        credential = bearer_of(scope["headers"])
        dashboard = path.startswith(f"{DASHBOARD}/")
        if credential is None and dashboard:
            # the dashboard's pages: the session cookie, else the sign-in page
            credential = _session_of(scope)
            if credential is None:
                await _to_sign_in(scope, send)
                return
        if credential is None:
            await _answer(
                send,
                Unauthenticated(
                    "this server needs a token: send 'Authorization: Bearer <token>' "
                    "(PLINTH_TOKEN or plinth login)"
                ),
                {"www-authenticate": "Bearer"},
            )
            return
        authenticator = self.authenticator

        def check() -> Principal:
            # runs on the worker thread of the first code that asks who the caller is
            try:
                return authenticator.authenticate(credential)
            except Unauthenticated as exc:
                _record_refusal(authenticator.access, exc.message)
                if dashboard:  # a page answers with the sign-in page, not a 401: count here
                    self.limiter.failed(client)
                raise

        with acting_as(Pending(check)):
            await self.app(scope, receive, self._counting_failures(send, client))

    def _counting_failures(self, send: Send, client: str) -> Send:
        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.limiter.failed(client)
            await send(message)

        return counting


def _session_of(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"cookie":
            found = cookie_parser(value.decode("latin-1")).get(SESSION_COOKIE)
            if found:
                return found
    return None


async def _to_sign_in(scope: Scope, send: Send) -> None:
    target = scope["path"]
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    location = f"{SIGN_IN}?{urlencode({'next': target})}"
    # htmx follows HX-Redirect with a whole page load (a redirect would land in a fragment)
    htmx = any(name == b"hx-request" for name, _ in scope["headers"])
    status, headers = (204, [(b"hx-redirect", location.encode())]) if htmx else (303, [])
    headers += [(b"location", location.encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _record_refusal(access: Access, reason: str) -> None:
    access.record("token_refused", "", "refused", reason, actor="")


async def _answer(send: Send, error: PlinthError, headers: dict[str, str]) -> None:
    body = json.dumps(error.to_dict()).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": error.http_status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
