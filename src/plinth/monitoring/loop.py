"""The monitor scheduler: one pass evaluates the enabled monitors that are due, then
retries the alerts' webhook deliveries that failed.

A monitor is due on its schedule when ``schedule_seconds`` have passed since its last
evaluation (or it has never been evaluated); an ``on_event`` monitor is due when
``checks.newest_event`` names a commit (feature groups) or a score job (models) newer
than the last one it evaluated (trigger ``commit:V`` / ``job:N``); the schedule comes
first when both are due. A check that fails is its evaluation's ``error`` (the event is
recorded as seen all the same, so it is not run again until the next event or its
schedule), except a score job not ready to be checked (its input profile not stored
yet: ``CheckOutcome.retry``), looked at again on the next pass; a monitor that cannot
even be looked at is the pass's ``error`` action and the others are still evaluated.

``plinth server`` runs passes in the background every ``PLINTH_MONITOR_LOOP_SECONDS``
while it holds the lease ``monitor-scheduler`` (``MonitorLoop``), so among replicas one
evaluates at a time; the lease is renewed before each monitor and, while a pass runs,
every quarter of its length (a check may outlast the lease), and a replica that lost it
stops its pass. ``plinth monitors tick`` runs one pass.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from plinth.auth.context import SYSTEM, acting_as
from plinth.errors import PlinthError
from plinth.monitoring import alerts as alerting
from plinth.monitoring.types import LoopAction, Monitor
from plinth.store import lease
from plinth.store.sql import now_ms

if TYPE_CHECKING:
    from plinth.monitoring.service import MonitorService

log = logging.getLogger("plinth.monitoring")

#: the principal the scheduler acts as: the platform's own, under its own name
SCHEDULER = replace(SYSTEM, name="monitor-scheduler")
LEASE = "monitor-scheduler"


def run_once(
    service: MonitorService,
    now: int | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> list[LoopAction]:
    """One pass at ``now`` (ms; default: the clock, read per monitor), acting as the
    scheduler. ``keep_going`` is asked before each monitor and each delivery: False ends
    the pass there."""
    going = keep_going or (lambda: True)
    done: list[LoopAction] = []
    with acting_as(SCHEDULER):
        for monitor in service.enabled_monitors():
            if not going():
                return done
            did = _visit(service, monitor, now_ms() if now is None else now)
            if did is not None:
                done.append(did)
        done += retry_deliveries(service, now, going)
    return done


def due_trigger(
    service: MonitorService, monitor: Monitor, at: int
) -> tuple[str, int | None] | None:
    """Why ``monitor`` is to be evaluated at ``at`` (ms): its trigger and the event, or
    None when it is not due."""
    if monitor.schedule_seconds is not None:
        last = monitor.last_run_at
        if last is None or at - int(last.timestamp() * 1000) >= monitor.schedule_seconds * 1000:
            return "schedule", None
    if monitor.on_event:
        event = service.newest_event(service.data, monitor)
        if event is not None and (monitor.last_event is None or event > monitor.last_event):
            prefix = "commit" if monitor.kind == "feature_drift" else "job"
            return f"{prefix}:{event}", event
    return None


def _visit(service: MonitorService, monitor: Monitor, at: int) -> LoopAction | None:
    try:
        due = due_trigger(service, monitor, at)
        if due is None:
            return None
        trigger, event = due
        found = service.evaluate(monitor, trigger, event)
    except PlinthError as exc:
        log.warning("monitor scheduler: monitor %r: %s", monitor.name, exc.message)
        return LoopAction(monitor.name, "error", exc.message)
    except Exception as exc:  # one monitor's failure must not stop the others' evaluation
        log.exception("monitor scheduler: monitor %r", monitor.name)
        return LoopAction(monitor.name, "error", f"{type(exc).__name__}: {exc}")
    detail = f"{found.status} ({trigger}): {found.summary}"
    return LoopAction(monitor.name, "evaluated", detail, found.id, found.alert_id)


def retry_deliveries(
    service: MonitorService, now: int | None = None, keep_going: Callable[[], bool] | None = None
) -> list[LoopAction]:
    """A delivery round for each alert whose webhook is due to be tried again."""
    going = keep_going or (lambda: True)
    at = now_ms() if now is None else now
    done = []
    for pending in alerting.due_deliveries(service.store, at, service.webhook):
        if not going():
            break
        try:
            state = alerting.deliver(service.store, pending.alert_id, service.webhook)
        except Exception as exc:  # the store is away: the next pass tries again
            log.exception("monitor scheduler: alert %d", pending.alert_id)
            state, detail = "error", f"{type(exc).__name__}: {exc}"
        else:
            detail = f"webhook {state or 'untouched'}"
        if state is not None:
            done.append(LoopAction(pending.monitor, state, detail, alert_id=pending.alert_id))
    return done


# -- in the background of ``plinth server`` --------------------------------------------------


class MonitorLoop:
    """Passes every ``seconds`` in a daemon thread, each while holding the scheduler's
    lease (renewed, or taken when free or expired); a replica without it waits its turn.
    ``stop`` ends the loop (a pass under way ends before its next monitor) and gives the
    lease up. ``state()`` says what the loop last did (the server's ``/health`` shows
    it)."""

    def __init__(
        self,
        service: MonitorService,
        seconds: float,
        on_pass: Callable[[list[LoopAction] | None], None] | None = None,
    ) -> None:
        self.service = service
        self.seconds = seconds
        # a pass that dies with its replica frees the lease after this long; a pass is
        # bounded by its monitors' checks and one delivery budget per alert
        self.lease_seconds = max(3 * seconds, 120.0)
        self.holder = lease.new_holder()
        self.on_pass = on_pass
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor-scheduler", daemon=True)
        self._holds = False
        self._passes = 0
        self._last_pass_at: datetime | None = None
        self._last: dict[str, int] = {}
        self._last_errors: list[str] = []
        self._failure: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.ident is None:  # never started
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "monitor scheduler: a pass is still under way after %g s; it evaluates no "
                "further monitor and gives the lease up when it ends",
                timeout,
            )

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def state(self) -> dict[str, object]:
        """Whether the loop runs and holds the lease, its passes, the last one's time (UTC),
        what it did (``evaluated``, ``breaches``, ``delivered``...), its errors
        (``monitor: message``) and a failure of the pass itself."""
        return {
            "running": self.alive,
            "holds_lease": self._holds,
            "passes": self._passes,
            "last_pass_at": None if self._last_pass_at is None else self._last_pass_at.isoformat(),
            "last_pass": dict(self._last),
            "errors": list(self._last_errors),
            "failure": self._failure,
        }

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                done = self.run_pass()
                if self.on_pass is not None:
                    self.on_pass(done)
                self._stop.wait(self.seconds)
        finally:
            self._release()

    def _release(self) -> None:
        try:
            lease.release(self.service.store, LEASE, self.holder)
        except Exception:  # the store is gone: the lease expires by itself
            log.warning("monitor scheduler: could not release its lease", exc_info=True)
        self._holds = False

    def _still_held(self) -> bool:
        if self._stop.is_set():
            return False
        self._holds = lease.renew(self.service.store, LEASE, self.holder, self.lease_seconds)
        return self._holds

    @contextlib.contextmanager
    def _heartbeat(self) -> Iterator[None]:
        """Renew the lease every quarter of its length while the block runs: one check
        longer than the lease must not let another replica evaluate the same monitors."""
        over = threading.Event()

        def beat() -> None:
            while not over.wait(self.lease_seconds / 4):
                try:
                    if not lease.renew(self.service.store, LEASE, self.holder, self.lease_seconds):
                        return  # lost: the pass stops before its next monitor
                except Exception:  # the store is away: try again on the next beat
                    log.warning("monitor scheduler: could not renew its lease", exc_info=True)

        beating = threading.Thread(target=beat, name="monitor-scheduler-lease", daemon=True)
        beating.start()
        try:
            yield
        finally:
            over.set()
            beating.join()

    def run_pass(self, now: int | None = None) -> list[LoopAction] | None:
        """One pass if this replica holds (or gets) the lease; None otherwise."""
        store = self.service.store
        try:
            if self._stop.is_set():
                return None
            self._holds = lease.acquire(store, LEASE, self.holder, self.lease_seconds)
            if not self._holds:
                return None
            with self._heartbeat():
                done = run_once(self.service, now, keep_going=self._still_held)
        except Exception as exc:  # the store is away: try again next time
            log.exception("monitor scheduler: pass failed")
            self._failure = f"{type(exc).__name__}: {exc}"
            return None
        finally:
            if self._stop.is_set():  # stopped during the pass: the lease goes with it
                self._release()
        self._passes += 1
        self._last_pass_at = datetime.now(UTC)
        self._failure = None
        self._last = _counts(done)
        self._last_errors = [f"{d.monitor}: {d.detail}" for d in done if d.action == "error"]
        for did in done:
            if did.action != "error":  # errors were logged as warnings
                log.info("monitor scheduler: %s %s: %s", did.monitor, did.action, did.detail)
        return done


def _counts(done: list[LoopAction]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for did in done:
        counts[did.action] = counts.get(did.action, 0) + 1
        if did.action == "evaluated" and did.alert_id is not None:
            counts["alerts"] = counts.get("alerts", 0) + 1
    return counts
