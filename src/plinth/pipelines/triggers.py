"""Enqueue the runs that schedules and events call for.

Each schedule is looked at in its own write transaction: the runs it enqueues and its
cursor's move commit together, so a scheduler that dies half-way enqueues nothing twice
and misses nothing. ``(schedule_id, trigger_key)`` is unique (``records.insert_run``
returns None on a duplicate), so two schedulers racing, or a standby taking over, never
enqueue one occurrence or event twice.

- cron: occurrences after the cursor (the last one enqueued) up to now. After downtime
  (or a pause) the schedule's ``catchup`` says which missed ones run: ``all`` (oldest
  first, the newest ``MAX_CATCHUP``), ``latest`` (the newest one), ``skip`` (none, except
  one at most ``grace`` old: the tick that is simply a little late still runs it).
- alert / commit / score_job: each new alert of the monitor, commit of the feature group,
  DELIVERED score job of the model (``target``) with an id above the cursor. A score job
  still RUNNING holds the cursor back (it may be delivered later); the delivered ones after
  it are enqueued already, and the unique key keeps the next look from enqueuing them again.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, Table, func, select, update

from plinth.errors import PlinthError
from plinth.pipelines import cron, records
from plinth.pipelines.types import MAX_CATCHUP, SCHEDULE_KINDS
from plinth.store.engine import Store
from plinth.store.schema import (
    alerts,
    feature_commits,
    pipeline_schedules,
    pipelines,
    score_jobs,
)
from plinth.store.sql import now_ms

log = logging.getLogger("plinth.pipelines.scheduler")

#: events looked at per schedule and pass (the rest on the next pass)
EVENT_BATCH = 100


@dataclass(frozen=True)
class Enqueued:
    schedule_id: int
    pipeline: str
    pipeline_run: int
    trigger_key: str


def enqueue_due(store: Store, now: int | None = None, grace_ms: int = 60_000) -> list[Enqueued]:
    """One look at every schedule that is not paused; what it enqueued. A schedule that
    cannot be looked at (a bad cron string stored before it was checked) is logged and
    the others are still looked at. Only a schedule that may be due is looked at in a
    write transaction (a tick with nothing due writes nothing)."""
    at = now_ms() if now is None else now
    s = pipeline_schedules.c
    due = []
    with store.read() as conn:
        rows = conn.execute(
            select(s.id, s.kind, s.cron, s.timezone, s.target, s.cursor)
            .where(s.paused.is_(False))
            .order_by(s.id)
        ).all()
        for row in rows:
            try:
                if _may_be_due(conn, row, at):
                    due.append(row.id)
            except PlinthError as exc:
                log.warning("pipeline schedule %d: %s", row.id, exc.message)
    done: list[Enqueued] = []
    for schedule_id in due:
        try:
            done += enqueue_schedule(store, schedule_id, at, grace_ms)
        except PlinthError as exc:
            log.warning("pipeline schedule %d: %s", schedule_id, exc.message)
    return done


def _may_be_due(conn: Connection, row: Any, now: int) -> bool:
    if row.cursor is None:
        return True
    if row.kind == "cron":
        return bool(cron.next_at(row.cron, row.timezone, int(row.cursor)) <= now)
    table, column = _events_of(row.kind)
    newer = select(table.c.id).where(column == row.target, table.c.id > row.cursor).limit(1)
    return conn.execute(newer).first() is not None


def enqueue_schedule(store: Store, schedule_id: int, now: int, grace_ms: int) -> list[Enqueued]:
    """Enqueue what one schedule calls for at ``now`` and move its cursor, in one
    transaction."""
    s = pipeline_schedules.c
    with store.write() as conn:
        row = conn.execute(
            select(pipeline_schedules, pipelines.c.params.label("defaults"), pipelines.c.retries)
            .join(pipelines, pipelines.c.name == s.pipeline)
            .where(s.id == schedule_id)
            .with_for_update(of=pipeline_schedules)
        ).first()
        if row is None or row.paused:
            return []
        if row.cursor is None:  # never looked at: history does not fire
            cursor = now if row.kind == "cron" else _newest_event(conn, row)
            _move(conn, schedule_id, cursor)
            return []
        if row.kind == "cron":
            keys, cursor = _cron_due(row, now, grace_ms)
        else:
            keys, cursor = _events_due(conn, row)
        done = []
        for key, scheduled_for, alert_id in keys:
            made = records.insert_run(
                conn,
                pipeline=row.pipeline,
                trigger=row.kind,
                created_by=row.created_by,
                params=_params(row),
                schedule_id=schedule_id,
                trigger_key=key,
                scheduled_for=scheduled_for,
                alert_id=alert_id,
                max_attempts=row.retries + 1,
                now=now,
            )
            if made is not None:
                done.append(Enqueued(schedule_id, row.pipeline, made, key))
        if cursor != row.cursor:
            _move(conn, schedule_id, cursor)
    return done


_Due = tuple[str, int | None, int | None]  # trigger_key, scheduled_for, alert_id


def _cron_due(row: Row[Any], now: int, grace_ms: int) -> tuple[list[_Due], int]:
    expr, tz, cursor = row.cron, row.timezone, int(row.cursor)
    if row.catchup == "all":
        newest: deque[int] = deque(maxlen=MAX_CATCHUP)
        after = cursor
        while True:  # in chunks: a long downtime of a frequent schedule is many occurrences
            chunk = cron.occurrences(expr, tz, after, now, 1000)
            newest.extend(chunk)
            if len(chunk) < 1000:
                break
            after = chunk[-1]
        if not newest:
            return [], cursor
        return [(f"cron:{at}", at, None) for at in newest], newest[-1]
    latest = cron.latest_at(expr, tz, cursor, now)
    if latest is None:
        return [], cursor
    if row.catchup == "skip" and now - latest > grace_ms:
        return [], latest  # missed: passed over, the cursor moves on all the same
    return [(f"cron:{latest}", latest, None)], latest


def _events_due(conn: Connection, row: Row[Any]) -> tuple[list[_Due], int]:
    cursor = int(row.cursor)
    if row.kind == "alert":
        found: Sequence[Any] = conn.execute(
            select(alerts.c.id)
            .where(alerts.c.monitor == row.target, alerts.c.id > cursor)
            .order_by(alerts.c.id)
            .limit(EVENT_BATCH)
        ).all()
        return [(f"alert:{r.id}", None, r.id) for r in found], (found[-1].id if found else cursor)
    if row.kind == "commit":
        found = conn.execute(
            select(feature_commits.c.id)
            .where(feature_commits.c.group_name == row.target, feature_commits.c.id > cursor)
            .order_by(feature_commits.c.id)
            .limit(EVENT_BATCH)
        ).all()
        return [(f"commit:{r.id}", None, None) for r in found], (found[-1].id if found else cursor)
    if row.kind == "score_job":
        found = conn.execute(
            select(score_jobs.c.id, score_jobs.c.status)
            .where(score_jobs.c.model_name == row.target, score_jobs.c.id > cursor)
            .order_by(score_jobs.c.id)
            .limit(EVENT_BATCH)
        ).all()
        due: list[_Due] = []
        held = False
        for job in found:
            if job.status == "RUNNING":
                held = True
            elif job.status == "DELIVERED":
                due.append((f"job:{job.id}", None, None))
            if not held:
                cursor = job.id
        return due, cursor
    raise PlinthError(f"unknown schedule kind {row.kind!r}; expected {SCHEDULE_KINDS}")


def _newest_event(conn: Connection, row: Row[Any]) -> int:
    table, column = _events_of(row.kind)
    newest = conn.execute(select(func.max(table.c.id)).where(column == row.target)).scalar()
    return int(newest or 0)


def _events_of(kind: str) -> tuple[Table, ColumnElement[Any]]:
    found = {
        "alert": (alerts, alerts.c.monitor),
        "commit": (feature_commits, feature_commits.c.group_name),
        "score_job": (score_jobs, score_jobs.c.model_name),
    }.get(kind)
    if found is None:
        raise PlinthError(f"unknown schedule kind {kind!r}; expected {SCHEDULE_KINDS}")
    return found


def _move(conn: Connection, schedule_id: int, cursor: int) -> None:
    conn.execute(
        update(pipeline_schedules)
        .where(pipeline_schedules.c.id == schedule_id)
        .values(cursor=cursor)
    )


def _params(row: Row[Any]) -> dict[str, Any]:
    merged: dict[str, Any] = json.loads(row.defaults or "{}")
    merged.update(json.loads(row.params or "{}"))
    return merged
