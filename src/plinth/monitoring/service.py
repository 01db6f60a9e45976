"""Monitors in the central store: named checks of a feature group's or a model's data,
evaluated on a schedule, on each new commit or score job (``loop.py``) or by hand; each
evaluation stored, each breach raising an alert (``alerts.py``).

The check itself is ``plinth.monitoring.checks.evaluate`` over ``MonitoringData``; the
service takes another ``evaluator`` (and ``newest_event``) for tests and embedders. An
exception in a check is the evaluation's ``error`` status with its message: it never
leaves the service, so one broken monitor never stops the scheduler's pass.

A monitor shows its target's data: every read of a monitor (its evaluations, its alerts)
also needs READ on its target, and a caller without it is told the monitor does not
exist. A monitor is checked only while its owner may still read the target; otherwise
its evaluation is an ``error`` saying so (no alert, no webhook).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from pydantic import TypeAdapter
from sqlalchemy import delete, insert, select, update

from plinth.api import endpoint
from plinth.auth.access import Access, access_for, guarded
from plinth.auth.context import SYSTEM
from plinth.auth.types import Action, Kind, Level, Principal, Role
from plinth.errors import AlreadyExists, InvalidArgument, NotFound, PlinthError
from plinth.monitoring import alerts as alerting
from plinth.monitoring import rows as stored
from plinth.monitoring import validation
from plinth.monitoring.alerts import WebhookPolicy
from plinth.monitoring.types import (
    Alert,
    Evaluation,
    LoopAction,
    Monitor,
    MonitorSpec,
)
from plinth.store.engine import Store
from plinth.store.schema import (
    alerts,
    group_members,
    monitor_evaluations,
    monitors,
    users,
)
from plinth.store.sql import (
    check_max_results,
    decode_page_token,
    encode_page_token,
    now_ms,
    to_datetime,
)
from plinth.tracking.types import Page

if TYPE_CHECKING:
    from plinth.monitoring.data import MonitoringData

log = logging.getLogger("plinth.monitoring")

_SPEC: TypeAdapter[MonitorSpec] = TypeAdapter(MonitorSpec)
_SUMMARY_CHARS = 2000
_STATUSES = ("ok", "breach", "skipped")


class Outcome(Protocol):
    """What a check answers (``checks.CheckOutcome``; read too: its ``retry`` if it has
    one, True when the event's data is not there yet)."""

    @property
    def status(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def result(self) -> dict[str, Any]: ...
    @property
    def reference_profile(self) -> int | None: ...
    @property
    def current_profile(self) -> int | None: ...
    @property
    def event(self) -> int | None: ...


#: ``evaluate(data, monitor, *, now_ms, trigger) -> CheckOutcome``
Evaluator = Callable[..., Outcome]
#: ``newest_event(data, monitor) -> int | None``: the newest commit / score job to look at
EventFinder = Callable[[Any, Monitor], "int | None"]


def default_evaluator(
    data: MonitoringData, monitor: Monitor, *, now_ms: int, trigger: str
) -> Outcome:
    """``plinth.monitoring.checks.evaluate`` (imported when first used: the checks load
    the statistics stack)."""
    from plinth.monitoring.checks import evaluate

    return evaluate(data, monitor, now_ms=now_ms, trigger=trigger)


def default_newest_event(data: MonitoringData, monitor: Monitor) -> int | None:
    """``plinth.monitoring.checks.newest_event``."""
    from plinth.monitoring.checks import newest_event

    return newest_event(data, monitor)


class MonitorService:
    """Monitors, their evaluations and alerts. ``data`` is the ``MonitoringData`` the
    checks read (profiles, prediction logs, labels); ``webhook`` how alerts' webhooks are
    tried."""

    def __init__(
        self,
        store: Store,
        data: MonitoringData | None = None,
        *,
        evaluator: Evaluator | None = None,
        newest_event: EventFinder | None = None,
        webhook: WebhookPolicy | None = None,
    ) -> None:
        self.store = store
        self.data = data
        self.evaluator: Evaluator = evaluator or default_evaluator
        self.newest_event: EventFinder = newest_event or default_newest_event
        self.webhook = webhook or WebhookPolicy()

    @property
    def access(self) -> Access:
        return access_for(self.store)

    # -- monitors --------------------------------------------------------------------------

    @endpoint("POST", "/monitors")
    @guarded(role=Role.EDITOR)
    def create_monitor(
        self,
        name: str,
        kind: str,
        target: str,
        spec: MonitorSpec | None = None,
        schedule_seconds: int | None = None,
        on_event: bool = False,
        webhook_url: str | None = None,
        cooldown_seconds: int = 3600,
    ) -> Monitor:
        """A new monitor, owned by its creator, who must be able to read its target (a
        feature group for ``feature_drift``, a registered model for the other kinds).
        A feature group is named ``name`` (its newest version) or ``name:vN``. Without a
        ``spec``, the kind's defaults (a feature group's verdict against its own drift
        reference, stored with each commit; a model's window against its training data)."""
        validation.check_name(name)
        kind = validation.check_kind(kind)
        checked = validation.check_spec(kind, validation.coerce_spec(spec, kind))
        self._require_target(kind, target, checked)
        at = now_ms()
        made = Monitor(
            name=name,
            kind=kind,
            target=target,
            spec=checked,
            schedule_seconds=validation.check_schedule(schedule_seconds),
            on_event=validation.check_flag(on_event, "on_event"),
            webhook_url=validation.check_webhook(webhook_url),
            cooldown_seconds=validation.check_cooldown(cooldown_seconds),
            enabled=True,
            owner=self.access.actor(),
            created_at=to_datetime(at),
            updated_at=to_datetime(at),
        )
        with self.store.write() as conn:
            if stored.row_of(conn, name) is not None:
                raise AlreadyExists(f"monitor {name!r} already exists")
            conn.execute(insert(monitors).values(stored.columns_of(made)))
            self.access.on_created(conn, Kind.MONITOR, name)
        return made

    @endpoint("GET", "/monitors/{name}")
    @guarded(Action.READ, Kind.MONITOR, "name")
    def get_monitor(self, name: str) -> Monitor:
        """A monitor, for a caller who may read it and its target (else: not found)."""
        with self.store.read() as conn:
            return self._shown(self._readable(stored.load(conn, name)))

    @endpoint("GET", "/monitors")
    @guarded()
    def list_monitors(
        self,
        kind: str | None = None,
        target: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[Monitor]:
        """The monitors the caller may see (it and its target), by name; only one kind's or
        target's if given."""
        offset, limit = decode_page_token(page_token), check_max_results(max_results)
        query = select(monitors).order_by(monitors.c.name)
        if kind is not None:
            query = query.where(monitors.c.kind == validation.check_kind(kind))
        if target is not None:
            query = query.where(monitors.c.target == target)
        visible = self._visible_monitors()
        if visible is not None:
            query = query.where(monitors.c.name.in_(visible))
        with self.store.read() as conn:
            rows = conn.execute(query.offset(offset).limit(limit + 1)).all()
        items = [self._shown(stored.monitor_of(row)) for row in rows[:limit]]
        return Page(items, encode_page_token(offset + limit) if len(rows) > limit else None)

    @endpoint("POST", "/monitors/{name}")
    @guarded(Action.WRITE, Kind.MONITOR, "name")
    def update_monitor(
        self,
        name: str,
        enabled: bool | None = None,
        spec: MonitorSpec | None = None,
        schedule_seconds: int | None = None,
        on_event: bool | None = None,
        webhook_url: str | None = None,
        cooldown_seconds: int | None = None,
    ) -> Monitor:
        """Change what is given: ``enabled`` (a disabled monitor is not scheduled; it may
        still be run by hand), the whole ``spec``, ``schedule_seconds`` (0: not scheduled),
        ``on_event``, ``webhook_url`` ("": none) and ``cooldown_seconds``."""
        with self.store.read() as conn:
            found = self._readable(stored.load(conn, name))
        kind, target = found.kind, found.target
        fields: dict[str, Any] = {}
        if enabled is not None:
            fields["enabled"] = validation.check_flag(enabled, "enabled")
        if spec is not None:
            fields["spec"] = validation.check_spec(kind, validation.coerce_spec(spec, kind))
            self._require_target(kind, target, fields["spec"])
        if schedule_seconds is not None:
            fields["schedule_seconds"] = validation.check_schedule(schedule_seconds or None)
        if on_event is not None:
            fields["on_event"] = validation.check_flag(on_event, "on_event")
        if webhook_url is not None:
            fields["webhook_url"] = validation.check_webhook(webhook_url or None)
        if cooldown_seconds is not None:
            fields["cooldown_seconds"] = validation.check_cooldown(cooldown_seconds)
        with self.store.write() as conn:
            stored.lock(conn, name)
            before = stored.load(conn, name)
            if not fields:
                return self._shown(before)
            after = replace(before, **fields, updated_at=to_datetime(now_ms()))
            conn.execute(
                update(monitors).where(monitors.c.name == name).values(stored.columns_of(after))
            )
        return self._shown(after)

    @endpoint("DELETE", "/monitors/{name}")
    @guarded(Action.MANAGE, Kind.MONITOR, "name")
    def delete_monitor(self, name: str) -> None:
        """Delete a monitor with its evaluations and alerts (owner or admin)."""
        with self.store.write() as conn:
            stored.lock(conn, name)
            stored.load(conn, name)
            conn.execute(delete(alerts).where(alerts.c.monitor == name))
            conn.execute(delete(monitor_evaluations).where(monitor_evaluations.c.monitor == name))
            conn.execute(delete(monitors).where(monitors.c.name == name))
            self.access.on_deleted(conn, Kind.MONITOR, name)
        self.access.record("monitor_deleted", f"monitor:{name}")

    # -- evaluations -----------------------------------------------------------------------

    @endpoint("POST", "/monitors/{name}/run")
    @guarded(Action.WRITE, Kind.MONITOR, "name")
    def run_monitor(self, name: str) -> Evaluation:
        """Evaluate the monitor now (trigger ``manual``), enabled or not: the evaluation is
        stored and returned; a breach alerts (cooldown allowing) and its webhook is tried
        within the delivery budget before the answer (the scheduler retries it later)."""
        with self.store.read() as conn:
            monitor = self._readable(stored.load(conn, name))
        return self.evaluate(monitor, "manual")

    @endpoint("GET", "/monitors/{name}/evaluations")
    @guarded(Action.READ, Kind.MONITOR, "name")
    def list_evaluations(
        self,
        name: str,
        status: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[Evaluation]:
        """A monitor's evaluations, newest first; only one status's if given."""
        offset, limit = decode_page_token(page_token), check_max_results(max_results)
        e = monitor_evaluations.c
        query = select(monitor_evaluations).where(e.monitor == name)
        if status is not None:
            if status not in (*_STATUSES, "error"):
                raise InvalidArgument(
                    f"status: {status!r} is not one of ok, breach, error, skipped"
                )
            query = query.where(e.status == status)
        query = query.order_by(e.at.desc(), e.id.desc()).offset(offset).limit(limit + 1)
        with self.store.read() as conn:
            self._readable(stored.load(conn, name))
            rows = conn.execute(query).all()[: limit + 1]
            raised = stored.alerts_of(conn, [row.id for row in rows[:limit]])
        items = [stored.evaluation_of(row, raised.get(row.id)) for row in rows[:limit]]
        return Page(items, encode_page_token(offset + limit) if len(rows) > limit else None)

    # -- alerts ----------------------------------------------------------------------------

    @endpoint("GET", "/alerts")
    @guarded()
    def list_alerts(
        self,
        monitor: str | None = None,
        status: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[Alert]:
        """Alerts of the monitors the caller may see (they and their targets), newest first; only one monitor's, or
        only ``open`` or ``acknowledged`` ones, if given."""
        offset, limit = decode_page_token(page_token), check_max_results(max_results)
        a = alerts.c
        query = select(alerts).order_by(a.at.desc(), a.id.desc())
        if monitor is not None:
            query = query.where(a.monitor == monitor)
        if status is not None:
            if status not in ("open", "acknowledged"):
                raise InvalidArgument(f"status: {status!r} is not one of open, acknowledged")
            query = query.where(a.status == status)
        visible = self._visible_monitors()
        if visible is not None:
            query = query.where(a.monitor.in_(visible))
        with self.store.read() as conn:
            rows = conn.execute(query.offset(offset).limit(limit + 1)).all()
        items = [stored.alert_of(row) for row in rows[:limit]]
        return Page(items, encode_page_token(offset + limit) if len(rows) > limit else None)

    @endpoint("POST", "/alerts/{alert_id}/ack")
    @guarded(check=lambda access, arguments: _may_change_alert(access, arguments))
    def acknowledge_alert(self, alert_id: int) -> Alert:
        """Mark an alert seen (WRITE on its monitor, READ on its target); one acknowledged
        already stays as it was, with its first acknowledger."""
        with self.store.read() as conn:
            monitor = stored.alert_row(conn, alert_id).monitor
            try:
                self._readable(stored.load(conn, monitor))
            except NotFound:  # in the words used for an alert that is not there
                raise NotFound(f"alert {alert_id} does not exist") from None
        with self.store.write() as conn:
            row = stored.alert_row(conn, alert_id)
            if row.status != "acknowledged":
                conn.execute(
                    update(alerts)
                    .where(alerts.c.id == alert_id)
                    .values(
                        status="acknowledged",
                        acknowledged_by=self.access.actor(),
                        acknowledged_at=now_ms(),
                    )
                )
                row = stored.alert_row(conn, alert_id)
        return stored.alert_of(row)

    @endpoint("POST", "/monitor-scheduler/tick")
    @guarded(role=Role.ADMIN)
    def tick_monitors(self) -> list[LoopAction]:
        """One pass of the monitor scheduler, as ``plinth server`` runs it in the
        background: due and event-triggered monitors evaluated, failed webhook deliveries
        retried."""
        from plinth.monitoring.loop import run_once

        return run_once(self)

    # -- for the scheduler (``loop.py``); not operations of their own -------------------------

    def enabled_monitors(self) -> list[Monitor]:
        """Every enabled monitor (the scheduler's view), by name."""
        query = select(monitors).where(monitors.c.enabled.is_(True)).order_by(monitors.c.name)
        with self.store.read() as conn:
            return [stored.monitor_of(row) for row in conn.execute(query)]

    def evaluate(self, monitor: Monitor, trigger: str, event: int | None = None) -> Evaluation:
        """Run the monitor's check now and store what it found (``event``: the commit /
        score job that triggered it, recorded as the monitor's last event whatever the
        check said, so a failing check is not run again for the same event; unless the
        check answered ``retry``: the event's data is not there yet, look again). A breach
        alerts unless an alert for the same finding stands within the cooldown; its webhook
        is then tried once round (``alerts.deliver``), after the transaction."""
        at = now_ms()
        found = self._check(monitor, at, trigger)
        seen = _newest(found.event, event)
        alert_id: int | None = None
        suppressed_by: int | None = None
        key = ""
        with self.store.write() as conn:
            stored.lock(conn, monitor.name)
            current = stored.load(conn, monitor.name)  # deleted meanwhile: NotFound
            if found.status == "breach":
                key = alerting.dedup_key(current, found.result)
                suppressed_by = alerting.standing_alert(conn, current, key, at)
            envelope = {
                "summary": found.summary,
                "event": seen,
                "suppressed_by": suppressed_by,
                "result": found.result,
            }
            evaluation_id = conn.execute(
                insert(monitor_evaluations)
                .returning(monitor_evaluations.c.id)
                .values(
                    monitor=monitor.name,
                    at=at,
                    status=found.status,
                    trigger=trigger[:100],
                    result=json.dumps(envelope, default=str),
                    reference_profile=found.reference_profile,
                    current_profile=found.current_profile,
                )
            ).scalar_one()
            if found.status == "breach" and suppressed_by is None:
                message = found.summary[:_SUMMARY_CHARS]
                alert_id = alerting.raise_alert(conn, current, evaluation_id, at, message, key)
            marks: dict[str, Any] = {"last_run_at": at}
            newer = current.last_event is None or (seen is not None and seen > current.last_event)
            if seen is not None and newer and not found.retry:
                marks["last_event"] = seen
            conn.execute(update(monitors).where(monitors.c.name == monitor.name).values(marks))
        if suppressed_by is not None:
            log.info(
                "monitor %r: breach within the cooldown of alert %d: no new alert",
                monitor.name,
                suppressed_by,
            )
        if alert_id is not None and current.webhook_url:
            alerting.deliver(self.store, alert_id, self.webhook)
        return Evaluation(
            id=evaluation_id,
            monitor=monitor.name,
            at=to_datetime(at),
            status=found.status,
            trigger=trigger[:100],
            summary=found.summary,
            result=found.result,
            reference_profile=found.reference_profile,
            current_profile=found.current_profile,
            event=seen,
            alert_id=alert_id,
            suppressed_by=suppressed_by,
        )

    def _check(self, monitor: Monitor, at: int, trigger: str) -> _Found:
        refused = self._owner_refused(monitor)
        if refused is not None:  # its results (and webhook) are the owner's: not checked
            log.warning("monitor %r: %s", monitor.name, refused)
            return _Found("error", refused, {"error": refused})
        try:
            outcome = self.evaluator(self.data, monitor, now_ms=at, trigger=trigger)
            return _found(outcome)
        except PlinthError as exc:
            log.warning("monitor %r: check failed: %s", monitor.name, exc.message)
            return _Found("error", exc.message, {"error": exc.message})
        except Exception as exc:  # a check's bug is its evaluation's error, not the caller's
            log.exception("monitor %r: check failed", monitor.name)
            message = f"{type(exc).__name__}: {exc}"
            return _Found("error", message, {"error": message})

    # -- permissions -----------------------------------------------------------------------

    def _readable(self, monitor: Monitor) -> Monitor:
        """The monitor, if the caller may read its target too: it shows the target's data
        statistics or performance. Else it does not exist, for the caller."""
        principal = self.access.principal()
        if principal.is_admin:
            return monitor
        resource, key = target_of(monitor.kind, monitor.target)
        if self.access.level(principal, resource, key) < Level.VIEWER:
            raise NotFound(f"monitor {monitor.name!r} does not exist")
        return monitor

    def _visible_monitors(self) -> set[str] | None:
        """The monitors the caller may read whose targets it may read too; None: all."""
        visible = self.access.visible(Kind.MONITOR)
        if visible is None:
            return None
        readable = {
            Kind.MODEL: self.access.visible(Kind.MODEL) or set(),
            Kind.FEATURE_GROUP: self.access.visible(Kind.FEATURE_GROUP) or set(),
        }
        c = monitors.c
        query = select(c.name, c.kind, c.target).where(c.name.in_(visible))
        with self.store.read() as conn:
            rows = conn.execute(query).all()
        shown = set()
        for row in rows:
            resource, key = target_of(row.kind, row.target)
            if key in readable[resource]:
                shown.add(row.name)
        return shown

    def _owner_refused(self, monitor: Monitor) -> str | None:
        """Why the monitor's owner may no longer have it checked (it may not read the
        target: disabled, deleted, or its grants gone); None when it may."""
        resource, key = target_of(monitor.kind, monitor.target)
        owner = self._principal_of(monitor.owner)
        if owner is not None and self.access.level(owner, resource, key) >= Level.VIEWER:
            return None
        label = "feature group" if resource is Kind.FEATURE_GROUP else "model"
        return f"owner {monitor.owner} may no longer read {label} {key}"

    def _principal_of(self, name: str) -> Principal | None:
        """A stored user's principal (None: disabled); else the platform's own, or the
        store's default principal (the local user of an embedded store) when ``name`` is
        theirs; else None (a user since deleted)."""
        with self.store.read() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
            if row is not None:
                if row.disabled:
                    return None
                groups = conn.execute(
                    select(group_members.c.group_name).where(group_members.c.user_name == name)
                ).scalars()
                return Principal(row.name, Role(row.role), tuple(sorted(groups)), row.kind, "owner")
        if name == SYSTEM.name:  # made by the platform itself
            return SYSTEM
        default = self.access.default
        return default if default.name == name else None

    def _require_target(self, kind: str, target: str, spec: MonitorSpec) -> None:
        """A monitor may only watch what its creator may read: it shows its data's
        statistics and its model's performance."""
        resource = Kind.FEATURE_GROUP if kind == "feature_drift" else Kind.MODEL
        key = validation.group_of(target)[0] if kind == "feature_drift" else target
        try:
            self.access.require(Action.READ, resource, key, repr(key), log=False)
        except NotFound as exc:
            raise NotFound(f"target: {exc.message}") from None
        with self.store.read() as conn:
            if kind == "feature_drift":
                validation.require_group(conn, target, spec)
            else:
                validation.require_model(conn, target, spec, kind)

    def _shown(self, monitor: Monitor) -> Monitor:
        """The monitor as the caller may see it: a webhook URL often carries a secret in its
        path (Slack's do), so only who may change the monitor sees more than its host."""
        if monitor.webhook_url is None:
            return monitor
        principal = self.access.principal()
        if principal.is_admin or monitor.owner == principal.name:
            return monitor
        if self.access.level(principal, Kind.MONITOR, monitor.name) >= Level.EDITOR:
            return monitor
        parts = urlsplit(monitor.webhook_url)
        return replace(monitor, webhook_url=f"{parts.scheme}://{parts.hostname}/…")


# -- what a check found ------------------------------------------------------------------------


class _Found:
    __slots__ = (
        "current_profile",
        "event",
        "reference_profile",
        "result",
        "retry",
        "status",
        "summary",
    )

    def __init__(
        self,
        status: str,
        summary: str,
        result: dict[str, Any],
        reference_profile: int | None = None,
        current_profile: int | None = None,
        event: int | None = None,
        retry: bool = False,
    ) -> None:
        self.retry = retry
        self.status = status
        self.summary = summary
        self.result = result
        self.reference_profile = reference_profile
        self.current_profile = current_profile
        self.event = event


def _found(outcome: Outcome) -> _Found:
    status = outcome.status
    if status not in _STATUSES:
        raise TypeError(f"the check answered status {status!r}, not one of {', '.join(_STATUSES)}")
    # as it will read back: what JSON cannot hold is stored as its text
    result = json.loads(json.dumps(dict(outcome.result or {}), default=str))
    return _Found(
        status,
        str(outcome.summary),
        result,
        _optional_int(outcome.reference_profile),
        _optional_int(outcome.current_profile),
        _optional_int(outcome.event),
        # not ready: the event is not recorded as seen (an outcome may not say: False)
        bool(getattr(outcome, "retry", False)),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _newest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def target_of(kind: str, target: str) -> tuple[Kind, str]:
    """The resource a monitor watches: a feature group (``name`` or ``name:vN``), or a
    registered model."""
    if kind == "feature_drift":
        return Kind.FEATURE_GROUP, validation.group_of(target)[0]
    return Kind.MODEL, target


def _may_change_alert(access: Access, arguments: dict[str, Any]) -> None:
    """write on the alert's monitor"""
    alert_id = arguments["alert_id"]
    with access.store.read() as conn:
        monitor = conn.execute(select(alerts.c.monitor).where(alerts.c.id == alert_id)).scalar()
    if monitor is None:
        return  # the method says it does not exist
    try:
        access.require(Action.WRITE, Kind.MONITOR, str(monitor), repr(str(monitor)))
    except NotFound:  # in the words used for an alert that is not there
        raise NotFound(f"alert {alert_id} does not exist") from None
