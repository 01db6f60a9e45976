"""The caller of the operation running now: set per request by the server, per process
by a local client."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from plinth.auth.types import Principal, Role

_current: ContextVar[Principal | None] = ContextVar("plinth_principal", default=None)

#: background work of the platform itself (reconciling jobs, replaying spools)
SYSTEM = Principal("plinth", Role.ADMIN, via="system")


def current_principal() -> Principal | None:
    """The principal set for this request or task, None where none was set."""
    return _current.get()


@contextlib.contextmanager
def acting_as(principal: Principal) -> Iterator[Principal]:
    token = _current.set(principal)
    try:
        yield principal
    finally:
        _current.reset(token)
