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

import logging
from collections.abc import Callable
from dataclasses import replace
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


class MonitorLoop(lease.LeasedLoop):
    """Passes every ``seconds`` in a daemon thread while holding the scheduler's lease
    (``LeasedLoop``): a replica without it waits its turn, and a pass asks for the lease
    (renewing it) before each monitor and delivery, so one that lost it, or was asked to
    stop, evaluates no further monitor. ``done`` is the last pass's actions; ``state()``
    what the loop last did (the server's ``/health`` shows it)."""

    def __init__(self, service: MonitorService, seconds: float) -> None:
        # a pass that dies with its replica frees the lease after this long; a pass is
        # bounded by its monitors' checks and one delivery budget per alert
        super().__init__(
            service.store, LEASE, seconds=seconds, lease_seconds=max(3 * seconds, 120.0), logger=log
        )
        self.service = service
        self.done: list[LoopAction] = []
        self._now: int | None = None

    def state(self) -> dict[str, object]:
        """Also what the last pass did (``evaluated``, ``breaches``, ``delivered``...) and
        its errors (``monitor: message``)."""
        errors = [f"{d.monitor}: {d.detail}" for d in self.done if d.action == "error"]
        return {**super().state(), "last_pass": _counts(self.done), "errors": errors}

    def run_pass(self, now: int | None = None) -> bool:
        """One pass at ``now`` (ms; default: the clock) if this replica holds (or gets) the
        lease; whether it holds it."""
        self._now = now
        return super().run_pass()

    def work(self) -> None:
        done = run_once(self.service, self._now, keep_going=self.still_held)
        self.done = done
        for did in done:
            if did.action != "error":  # errors were logged as warnings
                log.info("monitor scheduler: %s %s: %s", did.monitor, did.action, did.detail)


def _counts(done: list[LoopAction]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for did in done:
        counts[did.action] = counts.get(did.action, 0) + 1
        if did.action == "evaluated" and did.alert_id is not None:
            counts["alerts"] = counts.get("alerts", 0) + 1
    return counts
