"""The caller of the operation running now: set per request by the server, per process
by a local client.

A server sets it before its handler runs; the credential is checked where the principal
is first asked for, on the handler's own worker thread (checking a token waits on the
store, which the event loop must not do, and a second thread hop per request would cost
more than the check).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from plinth.auth.types import Principal, Role

#: background work of the platform itself (reconciling jobs, replaying spools)
SYSTEM = Principal("plinth", Role.ADMIN, via="system")


class Pending:
    """A credential not checked yet: ``resolve`` checks it once, on first use (a failure
    is remembered too, so every use in the request gets the same answer)."""

    def __init__(self, check: Callable[[], Principal]) -> None:
        self._check = check
        self._lock = threading.Lock()
        self._principal: Principal | None = None
        self._error: Exception | None = None

    def resolve(self) -> Principal:
        with self._lock:
            if self._principal is None and self._error is None:
                try:
                    self._principal = self._check()
                except Exception as exc:
                    self._error = exc
            if self._error is not None:
                raise self._error
            assert self._principal is not None
            return self._principal


_current: ContextVar[Principal | Pending | None] = ContextVar("plinth_principal", default=None)


def current_principal() -> Principal | None:
    """The principal set for this request or task, None where none was set."""
    found = _current.get()
    return found.resolve() if isinstance(found, Pending) else found


def is_pending() -> bool:
    """Whether the caller's credential is still to be checked (which waits on the store:
    not a thing to do on an event loop)."""
    found = _current.get()
    return isinstance(found, Pending) and found._principal is None and found._error is None


@contextlib.contextmanager
def acting_as(principal: Principal | Pending) -> Iterator[Principal | Pending]:
    token = _current.set(principal)
    try:
        yield principal
    finally:
        _current.reset(token)
