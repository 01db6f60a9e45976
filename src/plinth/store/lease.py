"""Leases in the central store: one holder at a time for a piece of background work shared
by replicas (the A/B controller; a scheduler), by compare-and-set in SQL.

A lease is a row ``(name, holder, expires_at_ms)``. ``acquire`` takes it when it is free,
expired, or already the caller's; ``renew`` extends it only while the caller still holds
it; ``release`` gives it up. Each is one conditional statement, so two replicas racing for
one lease cannot both win. Times are the callers' clocks (milliseconds since the epoch):
replicas' clocks must agree to well within a lease's length.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from plinth.errors import InvalidArgument
from plinth.store.engine import Store
from plinth.store.schema import leases
from plinth.store.sql import now_ms


@dataclass(frozen=True)
class LeaseState:
    name: str
    holder: str
    expires_at_ms: int


def new_holder() -> str:
    """A holder name unique to this process and call: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(store: Store, name: str, holder: str, seconds: float, now: int | None = None) -> bool:
    """Hold ``name`` for ``seconds`` from ``now`` (ms) if it is free, expired or already
    ``holder``'s; False when someone else holds it."""
    at = now_ms() if now is None else now
    expires = at + _millis(seconds)
    c = leases.c
    with store.write() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        taken = conn.execute(
            dialect.insert(leases)
            .values(name=_checked(name), holder=_checked(holder, "holder"), expires_at_ms=expires)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        if taken.rowcount == 1:
            return True
        moved = conn.execute(
            update(leases)
            .where(c.name == name, (c.holder == holder) | (c.expires_at_ms <= at))
            .values(holder=holder, expires_at_ms=expires)
        )
        return moved.rowcount == 1


def renew(store: Store, name: str, holder: str, seconds: float, now: int | None = None) -> bool:
    """Extend ``holder``'s unexpired lease to ``seconds`` from ``now``; False when it has
    expired or another holder has it (the caller must stop the work and acquire again)."""
    at = now_ms() if now is None else now
    c = leases.c
    with store.write() as conn:
        done = conn.execute(
            update(leases)
            .where(c.name == name, c.holder == holder, c.expires_at_ms > at)
            .values(expires_at_ms=at + _millis(seconds))
        )
    return done.rowcount == 1


def release(store: Store, name: str, holder: str) -> bool:
    """Give ``name`` up if ``holder`` has it (expired or not); False otherwise."""
    with store.write() as conn:
        done = conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))
    return done.rowcount == 1


def current(store: Store, name: str, now: int | None = None) -> LeaseState | None:
    """Who holds ``name`` now; None when nobody does (no row, or an expired one)."""
    at = now_ms() if now is None else now
    with store.read() as conn:
        row = conn.execute(select(leases).where(leases.c.name == name)).first()
    if row is None or row.expires_at_ms <= at:
        return None
    return LeaseState(row.name, row.holder, row.expires_at_ms)


def _millis(seconds: float) -> int:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise InvalidArgument(f"seconds: a lease lasts more than 0 seconds, got {seconds!r}")
    return max(1, round(seconds * 1000))


def _checked(value: str, field: str = "name") -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 500:
        raise InvalidArgument(f"lease {field}: 1 to 500 characters, got {value!r}")
    return value
