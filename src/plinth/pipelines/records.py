"""Writes of pipeline runs and their steps; one run read back (lists and pages are
``rows.py``'s).

A run moves queued -> running (``claim``, by one worker) -> succeeded | failed
(``finish``). Each move is one conditional UPDATE, so two workers racing for a run, or a
worker finishing a run that was cancelled or handed to another worker meanwhile, cannot
both win. Step writes by a worker (``write_step``) are conditional the same way: once a
run is no longer its, nothing it does is recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, and_, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from plinth.errors import InvalidArgument, NotFound
from plinth.pipelines.types import PipelineRun, StepRun
from plinth.store.engine import Store
from plinth.store.schema import pipeline_runs, pipeline_steps
from plinth.store.sql import now_ms, opt_datetime

_runs = pipeline_runs.c
_steps = pipeline_steps.c
#: steps whose output a later run may take
DONE_STEPS = ("succeeded", "cached", "reused")


def insert_run(
    conn: Connection,
    *,
    pipeline: str,
    trigger: str,
    created_by: str,
    params: dict[str, Any] | None = None,
    schedule_id: int | None = None,
    trigger_key: str | None = None,
    scheduled_for: int | None = None,
    alert_id: int | None = None,
    attempt: int = 1,
    max_attempts: int = 1,
    retry_of: int | None = None,
    resumed_from: int | None = None,
    from_step: str | None = None,
    not_before: int | None = None,
    now: int | None = None,
) -> int | None:
    """Queue a run; its id, or None when the schedule already queued one for
    ``trigger_key`` (a trigger fires once however often it is seen)."""
    at = now_ms() if now is None else now
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    inserted = conn.execute(
        dialect.insert(pipeline_runs)
        .values(
            pipeline=pipeline,
            status="queued",
            trigger=trigger,
            schedule_id=schedule_id,
            trigger_key=trigger_key,
            scheduled_for=scheduled_for,
            alert_id=alert_id,
            params=_json(params or {}, "params"),
            attempt=attempt,
            max_attempts=max_attempts,
            retry_of=retry_of,
            resumed_from=resumed_from,
            from_step=from_step,
            queued_at=at,
            not_before=at if not_before is None else not_before,
            created_by=created_by,
        )
        .on_conflict_do_nothing(index_elements=["schedule_id", "trigger_key"])
        .returning(_runs.id)
    ).first()
    return None if inserted is None else int(inserted[0])


def claim(store: Store, pipeline_run: int, worker: str, now: int | None = None) -> bool:
    """Take a queued run for ``worker``: False when it is not queued (any more)."""
    at = now_ms() if now is None else now
    with store.write() as conn:
        moved = conn.execute(
            update(pipeline_runs)
            .where(_runs.id == pipeline_run, _runs.status == "queued")
            .values(status="running", worker=worker, started_at=at, heartbeat_at=at)
            .returning(_runs.id)
        ).first()
    return moved is not None


def heartbeat(store: Store, pipeline_run: int, worker: str, now: int | None = None) -> bool:
    """Say ``worker`` is still running the run; False when it no longer is (cancelled,
    finished, or taken back by the scheduler): the worker must stop."""
    at = now_ms() if now is None else now
    with store.write() as conn:
        touched = conn.execute(
            update(pipeline_runs)
            .where(_runs.id == pipeline_run, _runs.status == "running", _runs.worker == worker)
            .values(heartbeat_at=at)
            .returning(_runs.id)
        ).first()
    return touched is not None


def finish(
    store: Store,
    pipeline_run: int,
    status: str,
    error: str | None = None,
    *,
    worker: str | None = None,
    now: int | None = None,
) -> bool:
    """End a running run as ``succeeded`` or ``failed`` (only if it is still running, and
    under ``worker`` when given); its steps still running fail and its pending ones are
    skipped, with ``error``. False when the run was not running (under ``worker``)."""
    if status not in ("succeeded", "failed"):
        raise InvalidArgument(f"a run finishes as 'succeeded' or 'failed', not {status!r}")
    at = now_ms() if now is None else now
    condition = and_(_runs.id == pipeline_run, _runs.status == "running")
    if worker is not None:
        condition = and_(condition, _runs.worker == worker)
    with store.write() as conn:
        moved = conn.execute(
            update(pipeline_runs)
            .where(condition)
            .values(status=status, error=error, finished_at=at)
            .returning(_runs.id)
        ).first()
        if moved is None:
            return False
        close_steps(conn, pipeline_run, error, at)
    return True


def close_steps(conn: Connection, pipeline_run: int, error: str | None, now: int) -> None:
    """Steps of an ended run that are still running fail; pending ones are skipped."""
    for was, becomes in (("running", "failed"), ("pending", "skipped")):
        conn.execute(
            update(pipeline_steps)
            .where(_steps.pipeline_run == pipeline_run, _steps.status == was)
            .values(status=becomes, finished_at=now, error=error)
        )


def set_tracking_run(store: Store, pipeline_run: int, run_id: str, worker: str) -> bool:
    """Record the tracking run of a run ``worker`` holds."""
    with store.write() as conn:
        moved = conn.execute(
            update(pipeline_runs)
            .where(_runs.id == pipeline_run, _runs.status == "running", _runs.worker == worker)
            .values(run_id=run_id)
            .returning(_runs.id)
        ).first()
    return moved is not None


def add_steps(store: Store, pipeline_run: int, names: list[str]) -> None:
    """Each step of a run, pending (steps already recorded are left as they are)."""
    rows = [
        {"pipeline_run": pipeline_run, "name": name, "position": i, "status": "pending"}
        for i, name in enumerate(names)
    ]
    with store.write() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            dialect.insert(pipeline_steps).on_conflict_do_nothing(
                index_elements=["pipeline_run", "name"]
            ),
            rows,
        )


def write_step(store: Store, pipeline_run: int, name: str, worker: str, **values: Any) -> bool:
    """Update one step of a run while ``worker`` still runs it (False otherwise, and
    nothing written). ``inputs``/``output`` are given as dicts."""
    for key in ("inputs", "output"):
        if key in values and values[key] is not None:
            values[key] = _json(values[key], key)
    owned = exists().where(
        _runs.id == pipeline_run, _runs.status == "running", _runs.worker == worker
    )
    with store.write() as conn:
        moved = conn.execute(
            update(pipeline_steps)
            .where(_steps.pipeline_run == pipeline_run, _steps.name == name, owned)
            .values(**values)
            .returning(_steps.name)
        ).first()
    return moved is not None


def find_cached(
    store: Store, pipeline: str, cache_key: str, before: int, created_by: str
) -> tuple[int, dict[str, Any]] | None:
    """The newest done step of ``pipeline`` with ``cache_key`` in a run older than
    ``before`` created by ``created_by``: its run and output. Only the creator's own runs:
    a cached output may be a pickle, which runs the code of whoever wrote it when read
    (and anyone may run a pipeline nobody registered under the same name)."""
    query = (
        select(_steps.pipeline_run, _steps.output)
        .join(pipeline_runs, _runs.id == _steps.pipeline_run)
        .where(
            _steps.cache_key == cache_key,
            _steps.status.in_(("succeeded", "cached")),
            _steps.output.is_not(None),
            _runs.pipeline == pipeline,
            _runs.created_by == created_by,
            _runs.id < before,
        )
        .order_by(_steps.pipeline_run.desc())
        .limit(1)
    )
    with store.read() as conn:
        found = conn.execute(query).first()
    return None if found is None else (int(found[0]), json.loads(found[1]))


def previous_attempt(store: Store, pipeline_run: int, root: int) -> int | None:
    """The attempt just before ``pipeline_run`` among the retries of ``root``."""
    query = (
        select(_runs.id)
        .where((_runs.id == root) | (_runs.retry_of == root), _runs.id < pipeline_run)
        .order_by(_runs.id.desc())
        .limit(1)
    )
    with store.read() as conn:
        found = conn.execute(query).scalar()
    return None if found is None else int(found)


def get_run(store: Store, pipeline_run: int, steps: bool = True) -> PipelineRun:
    """One run (with its steps, in order, unless ``steps`` is False); NotFound otherwise."""
    with store.read() as conn:
        row = conn.execute(select(pipeline_runs).where(_runs.id == pipeline_run)).first()
        if row is None:
            raise NotFound(f"pipeline run {pipeline_run} does not exist")
        step_rows = (
            conn.execute(
                select(pipeline_steps)
                .where(_steps.pipeline_run == pipeline_run)
                .order_by(_steps.position)
            ).all()
            if steps
            else []
        )
    return run_from_row(row, [step_from_row(s) for s in step_rows])


def run_from_row(
    row: Row[Any] | Mapping[str, Any], steps: list[StepRun] | None = None
) -> PipelineRun:
    r = row._mapping if isinstance(row, Row) else row
    return PipelineRun(
        id=r["id"],
        pipeline=r["pipeline"],
        status=r["status"],
        trigger=r["trigger"],
        run_id=r["run_id"],
        schedule_id=r["schedule_id"],
        trigger_key=r["trigger_key"],
        scheduled_for=opt_datetime(r["scheduled_for"]),
        alert_id=r["alert_id"],
        params=json.loads(r["params"] or "{}"),
        attempt=r["attempt"],
        max_attempts=r["max_attempts"],
        retry_of=r["retry_of"],
        resumed_from=r["resumed_from"],
        from_step=r["from_step"],
        queued_at=opt_datetime(r["queued_at"]),
        not_before=opt_datetime(r["not_before"]),
        started_at=opt_datetime(r["started_at"]),
        finished_at=opt_datetime(r["finished_at"]),
        heartbeat_at=opt_datetime(r["heartbeat_at"]),
        worker=r["worker"],
        created_by=r["created_by"],
        error=r["error"],
        steps=steps or [],
    )


def step_from_row(row: Row[Any] | Mapping[str, Any]) -> StepRun:
    r = row._mapping if isinstance(row, Row) else row
    started, finished = r["started_at"], r["finished_at"]
    return StepRun(
        name=r["name"],
        position=r["position"],
        status=r["status"],
        started_at=opt_datetime(started),
        finished_at=opt_datetime(finished),
        duration_seconds=(finished - started) / 1000
        if started is not None and finished is not None
        else None,
        code_version=r["code_version"],
        cache_key=r["cache_key"],
        reused_from=r["reused_from"],
        inputs=json.loads(r["inputs"] or "{}"),
        output=json.loads(r["output"]) if r["output"] else None,
        log_path=r["log_path"],
        error=r["error"],
    )


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"pipeline run {what} must be JSON values: {exc}") from None
