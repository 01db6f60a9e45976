"""Bearer tokens on a model service (``plinth serve --auth``).

A caller may predict when its token (the same API tokens and OpenID Connect JWTs as the
Plinth server's) holds read access to the served model. The decision is the central
store's: a service on a local store checks it directly; a service fed by a Plinth server
asks that server, with the caller's own token, for the model. Decisions are kept for
``ttl`` seconds so that a prediction does not wait on the store: a token revoked or a
grant taken away stops working within that time.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool

from plinth.auth.limiter import FailureLimiter
from plinth.auth.secrets import bearer_of
from plinth.errors import (
    PermissionDenied,
    PlinthError,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

if TYPE_CHECKING:
    from plinth.client import Client

OPEN_PATHS = frozenset({"/health", "/ready", "/v2/health/live", "/v2/health/ready", "/metrics"})
_MAX_DECISIONS = 10_000
_REFRESH_GIVE_UP = 5.0  # seconds


class PredictAccess:
    def __init__(
        self,
        client: Client,
        model: Callable[[], str],
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.model = model
        self.ttl = ttl
        self.clock = clock
        self._decisions: dict[str, tuple[float, PlinthError | None]] = {}
        self._refreshing: dict[str, float] = {}  # token digest -> when its refresh began
        self._lock = threading.Lock()
        self._local: Any = None

    def cached(self, credential: str) -> tuple[bool, PlinthError | None]:
        """(known, refusal): whether a decision is at hand, and what it was. An expired
        one is still used while another request refreshes it: one decision a second per
        token, however many requests arrive meanwhile."""
        digest = _digest(credential)
        found = self._decisions.get(digest)
        if found is None:
            return False, None
        if found[0] >= self.clock():
            return True, found[1]
        now = self.clock()
        with self._lock:
            # a refresh that never finished (its request cancelled) stops counting after a while
            if now - self._refreshing.get(digest, -_REFRESH_GIVE_UP) < _REFRESH_GIVE_UP:
                return True, found[1]
            self._refreshing[digest] = now
        return False, None

    def decide(self, credential: str) -> PlinthError | None:
        digest = _digest(credential)
        try:
            try:
                self._ask(credential)
                refusal = None
            except Unauthenticated as exc:
                # not kept: made-up tokens would crowd out the decisions of real ones
                # (the service's failure limiter slows whoever sends them)
                return exc
            except PermissionDenied as exc:
                refusal = exc
            with self._lock:
                if len(self._decisions) >= _MAX_DECISIONS:
                    self._decisions.clear()
                self._decisions[digest] = (self.clock() + self.ttl, refusal)
            return refusal
        finally:
            with self._lock:
                self._refreshing.pop(digest, None)

    def _ask(self, credential: str) -> None:
        name = self.model()
        if self.client.remote:
            self._ask_server(credential, name)
            return
        from plinth.auth.context import acting_as
        from plinth.auth.types import Action, Kind

        authenticator = self._authenticator()
        principal = authenticator.authenticate(credential)
        with acting_as(principal):
            try:
                authenticator.access.require(Action.READ, Kind.MODEL, name)
            except PlinthError as exc:
                raise PermissionDenied(f"{principal.name!r} may not predict with {name!r}") from exc

    def _authenticator(self) -> Any:
        # one for the service's life: it remembers when each token's use was last recorded
        if self._local is None:
            from plinth.auth.access import access_for
            from plinth.auth.identity import Authenticator

            self._local = Authenticator(access_for(self.client.tracking.store))
        return self._local

    def _ask_server(self, credential: str, name: str) -> None:
        import httpx

        transport: Any = self.client.tracking.transport  # type: ignore[attr-defined]
        try:
            answer = transport.http.get(
                f"/models/{quote(name, safe='')}",
                headers={"authorization": f"Bearer {credential}"},
            )
        except httpx.TransportError as exc:
            raise Unavailable(
                f"the Plinth server did not answer: {exc}", "the Plinth server"
            ) from None
        if answer.status_code == 401:
            raise Unauthenticated("the token was refused by the Plinth server")
        if answer.status_code in (403, 404):
            raise PermissionDenied(f"this token may not predict with {name!r}")
        if answer.status_code >= 400:
            raise Unavailable(
                f"the Plinth server answered {answer.status_code}", "the Plinth server"
            )


def _digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


class RequireToken:
    """ASGI middleware: every route but health, readiness and metrics needs a token."""

    def __init__(
        self,
        app: Any,
        access: PredictAccess,
        refuse: Callable[..., Any],
        limiter: FailureLimiter | None = None,
    ):
        self.app = app
        self.access = access
        self.refuse = refuse
        self.limiter = limiter or FailureLimiter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("", 0))[0]
        retry = self.limiter.retry_after(client)
        if retry:
            limited = RateLimited(
                f"too many refused tokens from {client}: try again in {retry} s", retry
            )
            await self.refuse(limited, {"retry-after": str(retry)})(scope, receive, send)
            return
        credential = bearer_of(scope["headers"])
        if credential is None:
            refusal: PlinthError | None = Unauthenticated(
                "this model service needs a token: send 'Authorization: Bearer <token>'"
            )
        else:
            known, refusal = self.access.cached(credential)
            if not known:
                try:
                    refusal = await run_in_threadpool(self.access.decide, credential)
                except PlinthError as exc:  # the store did not answer: not remembered
                    refusal = exc
        if refusal is not None:
            if isinstance(refusal, Unauthenticated):
                self.limiter.failed(client)
            await self.refuse(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)
