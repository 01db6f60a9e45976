"""Pipelines, their schedules, runs and steps as rows of the central store and back (value
objects in ``types.py``); the reads of the service. Runs are written by ``records.py``,
which also turns a run's and a step's row into its value object."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from plinth.errors import NotFound
from plinth.pipelines import validation
from plinth.pipelines.records import run_from_row, step_from_row
from plinth.pipelines.types import PipelineInfo, PipelineRun, PipelineSpec, Schedule, StepRun
from plinth.store.schema import pipeline_runs, pipeline_schedules, pipeline_steps, pipelines
from plinth.store.sql import to_datetime

# -- pipelines ----------------------------------------------------------------------------------


def pipeline_row(conn: Connection, name: str) -> Any:
    return conn.execute(select(pipelines).where(pipelines.c.name == name)).first()


def load_pipeline(conn: Connection, name: str) -> PipelineInfo:
    row = pipeline_row(conn, name)
    if row is None:
        raise NotFound(f"pipeline {name!r} does not exist")
    return pipeline_of(row)


def pipeline_of(row: Any) -> PipelineInfo:
    return PipelineInfo(
        name=row.name,
        entrypoint=row.entrypoint,
        description=row.description or "",
        steps=[str(s) for s in read_json(row.steps, [])],
        params=read_json(row.params, {}),
        experiment=row.experiment,
        timeout_seconds=row.timeout_seconds,
        retries=int(row.retries),
        retry_backoff_seconds=float(row.retry_backoff_seconds),
        concurrency=int(row.concurrency),
        owner=row.owner,
        created_at=to_datetime(row.created_at),
        updated_at=to_datetime(row.updated_at),
    )


def pipeline_columns(spec: PipelineSpec) -> dict[str, Any]:
    """The columns a registration sets (not its owner nor its times)."""
    return {
        "entrypoint": spec.entrypoint,
        "description": spec.description,
        "steps": json.dumps(spec.steps),
        "params": json.dumps(spec.params),
        "experiment": spec.experiment or spec.name,
        "timeout_seconds": spec.timeout_seconds,
        "retries": spec.retries,
        "retry_backoff_seconds": spec.retry_backoff_seconds,
        "concurrency": spec.concurrency,
    }


# -- runs and steps -----------------------------------------------------------------------------


def run_row(conn: Connection, run_id: int) -> Any:
    return conn.execute(select(pipeline_runs).where(pipeline_runs.c.id == run_id)).first()


def load_run(conn: Connection, run_id: int, steps: bool = True) -> PipelineRun:
    row = run_row(conn, run_id)
    if row is None:
        raise NotFound(f"pipeline run {run_id} does not exist")
    return run_from_row(row, steps_of(conn, run_id) if steps else [])


def steps_of(conn: Connection, run_id: int) -> list[StepRun]:
    s = pipeline_steps.c
    query = select(pipeline_steps).where(s.pipeline_run == run_id).order_by(s.position)
    return [step_from_row(row) for row in conn.execute(query)]


# -- schedules ----------------------------------------------------------------------------------


def schedule_row(conn: Connection, schedule_id: int) -> Any:
    return conn.execute(
        select(pipeline_schedules).where(pipeline_schedules.c.id == schedule_id)
    ).first()


def load_schedule(conn: Connection, schedule_id: int) -> Schedule:
    row = schedule_row(conn, schedule_id)
    if row is None:
        raise NotFound(f"pipeline schedule {schedule_id} does not exist")
    return schedule_of(row)


def schedule_of(row: Any) -> Schedule:
    next_at = None
    if row.kind == "cron" and row.cron and not row.paused and row.cursor is not None:
        try:
            next_at = to_datetime(validation.cron_next(row.cron, row.timezone, int(row.cursor)))
        except Exception:  # a row a newer replica wrote in a form this one cannot read
            next_at = None
    return Schedule(
        id=int(row.id),
        pipeline=row.pipeline,
        kind=row.kind,
        cron=row.cron,
        timezone=row.timezone,
        target=row.target,
        params=read_json(row.params, {}),
        catchup=row.catchup,
        paused=bool(row.paused),
        cursor=row.cursor,
        next_at=next_at,
        created_by=row.created_by,
        created_at=to_datetime(row.created_at),
        updated_at=to_datetime(row.updated_at),
    )


def read_json(text: str | None, default: Any) -> Any:
    """A stored JSON value of the default's type; the default for none, or one that cannot
    be read."""
    if not text:
        return default
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value if default is None or isinstance(value, type(default)) else default
