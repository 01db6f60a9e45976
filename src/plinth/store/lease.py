"""Leases in the central store: one holder at a time for a piece of background work shared
by replicas (the A/B controller, the monitor and pipeline schedulers: ``LeasedLoop``), by
compare-and-set in SQL.

A lease is a row ``(name, holder, expires_at_ms)``. ``acquire`` takes it when it is free,
expired, or already the caller's; ``renew`` extends it only while the caller still holds
it; ``release`` gives it up. Each is one conditional statement, so two replicas racing for
one lease cannot both win. Times are the callers' clocks (milliseconds since the epoch):
replicas' clocks must agree to well within a lease's length.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

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


# -- a loop that works only while it holds a lease ---------------------------------------


class LeasedLoop(ABC):
    """Passes every ``seconds`` while holding the lease ``name``: a replica that does not
    hold it waits as a standby and takes it over once it expires (its holder died), within
    ``lease_seconds``. The lease is taken again (which renews it) when a quarter of its
    length has passed since, and renewed from a thread while a pass runs, so a pass longer
    than the lease keeps it; a pass that must not act once it lost the lease asks
    ``still_held`` before each step. A pass that fails (the store away) is logged and the
    next one tries again. ``run`` loops in the caller's thread, ``start`` in a daemon
    thread; ``stop`` ends either (a pass under way ends at its next ``still_held``) and
    gives the lease up. ``on_change(holds)`` is called when the loop gains or loses the
    lease; ``state()`` says what the loop last did."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        seconds: float,
        lease_seconds: float,
        logger: logging.Logger,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        _millis(seconds)
        _millis(lease_seconds)
        self.store = store
        self.name = _checked(name)
        self.seconds = seconds
        self.lease_seconds = lease_seconds
        self.holder = new_holder()
        self.log = logger
        self.on_change = on_change
        self.passes = 0
        self.last_pass_at: datetime | None = None
        self.failure: str | None = None
        self.released = False  # given up on the way out (else it expires by itself)
        self._holds = False
        self._renewed_at = 0.0  # monotonic seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def work(self) -> None:
        """One pass of the work, run only while the lease is held."""

    def lost(self) -> None:  # noqa: B027 (optional hook)
        """Called when the lease is lost or given up (before ``on_change(False)``)."""

    @property
    def holds(self) -> bool:
        return self._holds

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was asked for (a lease given up then is not a lease lost)."""
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def state(self) -> dict[str, object]:
        """From the loop's own memory (no store is asked): whether it runs and holds the
        lease, its passes, the last one's time (UTC) and a failure of the pass itself."""
        at = self.last_pass_at
        return {
            "running": self.alive,
            "holds_lease": self._holds,
            "passes": self.passes,
            "last_pass_at": None if at is None else at.isoformat(),
            "failure": self.failure,
        }

    def still_held(self) -> bool:
        """Renew the lease now; whether the pass may go on: False once it is lost (taken
        over by another replica after this one stalled) or a stop is asked for."""
        if self._stop.is_set():
            return False
        self._set_holds(renew(self.store, self.name, self.holder, self.lease_seconds))
        self._renewed_at = time.monotonic()
        return self._holds

    def run_pass(self) -> bool:
        """Take or renew the lease if due, then one pass while it is held; whether it is.
        Once a stop is asked for, the lease is given up (with the pass under way)."""
        try:
            if not self._stop.is_set():
                self._pass()
        finally:
            if self._stop.is_set():
                self._release()
        return self._holds

    def run(self) -> None:
        """Loop in this thread until ``stop``; the lease is given up on the way out."""
        try:
            while not self._stop.is_set():
                self.run_pass()
                self._stop.wait(self.seconds)
        finally:
            if not self.released:
                self._release()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is None:  # never started, or ``run`` in the caller's thread
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.log.warning(
                "%s: a pass is still under way after %g s; it stops at its next check of "
                "the lease and gives the lease up when it ends",
                self.name,
                timeout,
            )

    def _pass(self) -> None:
        try:
            if not self._holds or time.monotonic() - self._renewed_at >= self.lease_seconds / 4:
                self._set_holds(acquire(self.store, self.name, self.holder, self.lease_seconds))
                self._renewed_at = time.monotonic()
            if not self._holds:
                return
            with self._heartbeat():
                self.work()
            self.passes += 1
            self.last_pass_at = datetime.now(UTC)
            self.failure = None
        except Exception as exc:  # the store is away: try again on the next pass
            self.log.exception("%s: pass failed", self.name)
            self.failure = f"{type(exc).__name__}: {exc}"

    def _set_holds(self, holds: bool) -> None:
        was, self._holds = self._holds, holds
        if was and not holds:
            self.lost()
        if was != holds and self.on_change is not None:
            self.on_change(holds)

    def _release(self) -> None:
        try:
            release(self.store, self.name, self.holder)
            self.released = True
        except Exception:  # the store is gone: the lease expires by itself
            self.log.warning("%s: could not release its lease", self.name, exc_info=True)
        self._set_holds(False)

    @contextlib.contextmanager
    def _heartbeat(self) -> Iterator[None]:
        over = threading.Event()

        def beat() -> None:
            while not over.wait(self.lease_seconds / 4):
                try:
                    if not renew(self.store, self.name, self.holder, self.lease_seconds):
                        return  # lost: the pass finds out at its next ``still_held``
                    self._renewed_at = time.monotonic()
                except Exception:  # the store is away: try again on the next beat
                    self.log.warning("%s: could not renew its lease", self.name, exc_info=True)

        beating = threading.Thread(target=beat, name=f"{self.name}-lease", daemon=True)
        beating.start()
        try:
            yield
        finally:
            over.set()
            beating.join()
