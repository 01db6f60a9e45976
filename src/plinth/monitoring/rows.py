"""Monitors, evaluations and alerts as rows of the central store and back (value objects
in ``types.py``). A stored evaluation's ``result`` is a JSON envelope:
``{"summary", "event", "suppressed_by", "result": <the check's report>}``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, select

from plinth.errors import NotFound
from plinth.monitoring.types import Alert, Evaluation, Monitor, MonitorSpec
from plinth.store.schema import alerts, monitors
from plinth.store.sql import opt_datetime, to_datetime

_SPEC: TypeAdapter[MonitorSpec] = TypeAdapter(MonitorSpec)


def row_of(conn: Connection, name: str) -> Any:
    return conn.execute(select(monitors).where(monitors.c.name == name)).first()


def lock(conn: Connection, name: str) -> None:
    # an evaluation's dedup check and an update take turns on the monitor (a PostgreSQL
    # row lock; SQLite's writers already queue)
    conn.execute(select(monitors.c.name).where(monitors.c.name == name).with_for_update())


def load(conn: Connection, name: str) -> Monitor:
    row = row_of(conn, name)
    if row is None:
        raise NotFound(f"monitor {name!r} does not exist")
    return monitor_of(row)


_SPEC_FIELDS = set(MonitorSpec.__dataclass_fields__)


def monitor_of(row: Any) -> Monitor:
    config = json.loads(row.config or "{}")
    # read tolerantly: a field a newer replica added does not make the monitor unreadable
    spec = _SPEC.validate_python({k: v for k, v in config.items() if k in _SPEC_FIELDS})
    return Monitor(
        name=row.name,
        kind=row.kind,
        target=row.target,
        spec=spec,
        schedule_seconds=row.schedule_seconds,
        on_event=bool(row.on_event),
        webhook_url=row.webhook_url,
        cooldown_seconds=int(row.cooldown_seconds),
        enabled=bool(row.enabled),
        owner=row.owner,
        created_at=to_datetime(row.created_at),
        updated_at=to_datetime(row.updated_at),
        last_run_at=opt_datetime(row.last_run_at),
        last_event=row.last_event,
    )


def columns_of(monitor: Monitor) -> dict[str, Any]:
    return {
        "name": monitor.name,
        "kind": monitor.kind,
        "target": monitor.target,
        "config": _SPEC.dump_json(monitor.spec).decode(),
        "schedule_seconds": monitor.schedule_seconds,
        "on_event": monitor.on_event,
        "webhook_url": monitor.webhook_url,
        "cooldown_seconds": monitor.cooldown_seconds,
        "enabled": monitor.enabled,
        "owner": monitor.owner,
        "created_at": _ms(monitor.created_at),
        "updated_at": _ms(monitor.updated_at),
    }


def evaluation_of(row: Any, alert_id: int | None) -> Evaluation:
    stored = read_json(row.result)
    result = stored.get("result")
    return Evaluation(
        id=int(row.id),
        monitor=row.monitor,
        at=to_datetime(row.at),
        status=row.status,
        trigger=row.trigger,
        summary=str(stored.get("summary", "")),
        result=result if isinstance(result, dict) else {},
        reference_profile=row.reference_profile,
        current_profile=row.current_profile,
        event=stored.get("event"),
        alert_id=alert_id,
        suppressed_by=stored.get("suppressed_by"),
    )


def alerts_of(conn: Connection, evaluation_ids: list[int]) -> dict[int, int]:
    if not evaluation_ids:
        return {}
    rows = conn.execute(
        select(alerts.c.evaluation_id, alerts.c.id).where(
            alerts.c.evaluation_id.in_(evaluation_ids)
        )
    )
    return {int(r.evaluation_id): int(r.id) for r in rows}


def alert_row(conn: Connection, alert_id: int) -> Any:
    row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
    if row is None:
        raise NotFound(f"alert {alert_id} does not exist")
    return row


def alert_of(row: Any) -> Alert:
    return Alert(
        id=int(row.id),
        monitor=row.monitor,
        evaluation_id=int(row.evaluation_id),
        at=to_datetime(row.at),
        severity=row.severity,
        message=row.message,
        status=row.status,
        delivery=row.delivery,
        attempts=int(row.attempts),
        last_error=row.last_error,
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=opt_datetime(row.acknowledged_at),
        dedup_key=row.dedup_key,
        rounds=int(row.rounds),
    )


def _ms(at: Any) -> int:
    return int(at.timestamp() * 1000)


def read_json(text: str | None) -> dict[str, Any]:
    """A stored JSON object; {} for none or one that cannot be read."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
