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
  With ``latest`` or ``skip``, an occurrence due while the schedule already has a run
  queued (not yet started: behind a hung run, say) is passed over (logged; the cursor
  moves on): runs do not pile up behind one that does not end. ``all`` enqueues each.
- alert / commit / score_job: each new alert of the monitor, commit of the feature group,
  DELIVERED score job of the model (``target``) with an id above the cursor. A score job
  still RUNNING holds the cursor back (it may be delivered later); the delivered ones after
  it are enqueued already, and the unique key keeps the next look from enqueuing them again.
  Ids are taken in one order and committed in another (PostgreSQL: a slow transaction's
  event becomes visible after a newer one the cursor has passed), so each look also goes
  back over the ``LOOKBACK`` ids at or below the cursor and enqueues those events not yet
  enqueued for the schedule, if they are no older than its start (``updated_at``: its
  creation, or its resume): history from before it never fires.
- A trigger fires for its creator (``created_by``): while they may not READ its target
  (disabled, deleted, their grants gone) it enqueues nothing and is logged at each tick;
  its cursor stays, so the events wait until the creator may read the target again (or
  the schedule is paused or deleted).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    String,
    Table,
    and_,
    cast,
    exists,
    func,
    literal,
    select,
    update,
)

from plinth.auth.access import access_for
from plinth.auth.types import Kind, Level
from plinth.errors import PlinthError
from plinth.pipelines import cron, records
from plinth.pipelines.types import MAX_CATCHUP, SCHEDULE_KINDS
from plinth.store.engine import Store
from plinth.store.schema import (
    alerts,
    feature_commits,
    pipeline_runs,
    pipeline_schedules,
    pipelines,
    score_jobs,
)
from plinth.store.sql import now_ms

log = logging.getLogger("plinth.pipelines.scheduler")

#: events looked at per schedule and pass (the rest on the next pass)
EVENT_BATCH = 100
#: how far below its cursor (in ids) a trigger looks for events committed late
LOOKBACK = 1000


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
            select(s.id, s.kind, s.cron, s.timezone, s.target, s.cursor, s.created_by, s.updated_at)
            .where(s.paused.is_(False))
            .order_by(s.id)
        ).all()
        for row in rows:
            try:
                if _may_be_due(conn, row, at):
                    refused = _owner_refused(store, row)
                    if refused is None:
                        due.append(row.id)
                    else:
                        log.warning("pipeline schedule %d: nothing enqueued: %s", row.id, refused)
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
    if conn.execute(newer).first() is not None:
        return True
    return conn.execute(_missed(row, 1)).first() is not None


def _owner_refused(store: Store, row: Any) -> str | None:
    """Why a trigger's creator may no longer have it fire (they may not read its target);
    None when they may (a cron schedule has no target)."""
    if row.kind == "cron":
        return None
    from plinth.pipelines.worker import owner_principal

    kind = _TARGETS[row.kind]
    owner = owner_principal(store, row.created_by)
    if owner is not None and access_for(store).level(owner, kind, row.target) >= Level.VIEWER:
        return None
    return f"its creator {row.created_by} may no longer read {kind.value} {row.target!r}"


_TARGETS = {"alert": Kind.MONITOR, "commit": Kind.FEATURE_GROUP, "score_job": Kind.MODEL}
_PREFIX = {"alert": "alert:", "commit": "commit:", "score_job": "job:"}


def _missed(row: Any, limit: int) -> Any:
    """The events at most ``LOOKBACK`` ids below the cursor, no older than the schedule's
    start, that it has not enqueued (committed after a newer one the cursor passed)."""
    table, column = _events_of(row.kind)
    at = table.c.started_at if row.kind == "score_job" else table.c.at
    cursor = int(row.cursor)
    key = literal(_PREFIX[row.kind], String) + cast(table.c.id, String)
    enqueued = exists().where(
        and_(pipeline_runs.c.schedule_id == row.id, pipeline_runs.c.trigger_key == key)
    )
    query = select(table.c.id).where(
        column == row.target,
        table.c.id > cursor - LOOKBACK,
        table.c.id <= cursor,
        at >= row.updated_at,
        ~enqueued,
    )
    if row.kind == "score_job":
        query = query.where(table.c.status == "DELIVERED")
    return query.order_by(table.c.id).limit(limit)


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
            if keys and row.catchup != "all":
                waiting = _queued(conn, schedule_id)
                if waiting is not None:
                    log.info(
                        "pipeline schedule %d: occurrence %s passed over: its run %d is "
                        "still queued",
                        schedule_id,
                        keys[0][0],
                        waiting,
                    )
                    keys = []
        else:
            keys, cursor = _events_due(conn, row)
            missed = conn.execute(_missed(row, EVENT_BATCH)).scalars().all()
            prefix = _PREFIX[row.kind]
            keys = [
                (f"{prefix}{i}", None, i if row.kind == "alert" else None) for i in missed
            ] + keys
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


def _queued(conn: Connection, schedule_id: int) -> int | None:
    """A run of the schedule still queued (not started), if any."""
    r = pipeline_runs.c
    found = conn.execute(
        select(r.id).where(r.schedule_id == schedule_id, r.status == "queued").limit(1)
    ).scalar()
    return None if found is None else int(found)


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
