"""The metric write path (batched, columnar) and metric reads."""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

from sqlalchemy import Connection, Dialect, case, insert, select

from plinth.errors import InvalidArgument
from plinth.store.schema import metric_summaries, metrics
from plinth.store.sql import to_datetime, upsert
from plinth.tracking.types import (
    MetricBatch,
    MetricPoint,
    MetricSummary,
    infer_goal,
    validate_key,
)


def validate_batch(batch: MetricBatch) -> None:
    n = len(batch.keys)
    columns: dict[str, list[Any]] = {
        "values": batch.values,
        "steps": batch.steps,
        "timestamps": batch.timestamps,
        "is_best": batch.is_best,
    }
    for name, column in columns.items():
        if len(column) != n:
            raise InvalidArgument(f"metric batch: {name} has {len(column)} entries, keys has {n}")
    for key in set(batch.keys):
        validate_key(key)
    for key, goal in batch.goals.items():
        if goal not in ("max", "min"):
            raise InvalidArgument(f"metric {key!r}: goal must be 'max' or 'min', not {goal!r}")


def summarise(run_id: str, batch: MetricBatch) -> list[dict[str, Any]]:
    """One summary row per key of the batch, to merge into the stored summary."""
    acc: dict[str, dict[str, Any]] = {}
    for key, value, step, ts, best in zip(
        batch.keys, batch.values, batch.steps, batch.timestamps, batch.is_best, strict=True
    ):
        row = acc.get(key)
        if row is None:
            goal = batch.goals.get(key) or infer_goal(key)
            row = acc[key] = {
                "run_id": run_id,
                "key": key,
                "goal": goal,
                "count": 0,
                "last": value,
                "last_step": step,
                "last_timestamp": ts,
                "min": None,
                "max": None,
                "best": None,
                "best_step": None,
            }
        row["count"] += 1
        if step >= row["last_step"]:
            row["last"], row["last_step"], row["last_timestamp"] = value, step, ts
        if not math.isnan(value):
            if row["min"] is None or value < row["min"]:
                row["min"] = value
            if row["max"] is None or value > row["max"]:
                row["max"] = value
        if best and (row["best_step"] is None or step >= row["best_step"]):
            row["best"], row["best_step"] = value, step
    for row in acc.values():
        row["last"] = _nan_to_none(row["last"])
        row["best"] = _nan_to_none(row["best"])
    return list(acc.values())


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _merge_summary_updates() -> dict[str, Any]:
    t = metric_summaries.c

    def newer(ex: Any) -> Any:
        return ex.last_step >= t.last_step

    def smaller(ex: Any, col: str) -> Any:
        mine, theirs = getattr(t, col), getattr(ex, col)
        return case(
            (mine.is_(None), theirs), (theirs.is_(None), mine), (theirs < mine, theirs), else_=mine
        )

    def larger(ex: Any, col: str) -> Any:
        mine, theirs = getattr(t, col), getattr(ex, col)
        return case(
            (mine.is_(None), theirs), (theirs.is_(None), mine), (theirs > mine, theirs), else_=mine
        )

    def better_best(ex: Any) -> Any:
        return ex.best_step.is_not(None) & (t.best_step.is_(None) | (ex.best_step >= t.best_step))

    return {
        "goal": lambda ex: ex.goal,
        "count": lambda ex: t.count + ex.count,
        "last": lambda ex: case((newer(ex), ex.last), else_=t.last),
        "last_step": lambda ex: case((newer(ex), ex.last_step), else_=t.last_step),
        "last_timestamp": lambda ex: case((newer(ex), ex.last_timestamp), else_=t.last_timestamp),
        "min": lambda ex: smaller(ex, "min"),
        "max": lambda ex: larger(ex, "max"),
        "best": lambda ex: case((better_best(ex), ex.best), else_=t.best),
        "best_step": lambda ex: case((better_best(ex), ex.best_step), else_=t.best_step),
    }


_SUMMARY_UPDATES = _merge_summary_updates()
_POINT_COLUMNS = ["run_id", "key", "step", "value", "timestamp", "is_best"]


@functools.cache
def _insert_points(dialect: Dialect) -> tuple[str, list[str] | None]:
    # Compiled once by SQLAlchemy for the dialect, then fed rows straight to the driver:
    # per-row parameter processing is most of the cost of a large executemany.
    compiled = insert(metrics).compile(dialect=dialect, column_keys=_POINT_COLUMNS)
    order = list(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    return compiled.string, order


def write_batch(conn: Connection, run_id: str, batch: MetricBatch) -> None:
    sql, order = _insert_points(conn.dialect)
    values = [None if v != v else v for v in batch.values]
    columns = {
        "run_id": itertools.repeat(run_id, len(values)),
        "key": batch.keys,
        "step": batch.steps,
        "value": values,
        "timestamp": batch.timestamps,
        "is_best": batch.is_best,
    }
    if order is not None:
        rows: list[Any] = list(zip(*(columns[name] for name in order), strict=True))
    else:
        rows = [
            dict(zip(_POINT_COLUMNS, row, strict=True))
            for row in zip(*(columns[n] for n in _POINT_COLUMNS), strict=True)
        ]
    conn.exec_driver_sql(sql, rows)
    upsert(conn, metric_summaries, summarise(run_id, batch), ["run_id", "key"], _SUMMARY_UPDATES)


def history(conn: Connection, run_id: str, key: str) -> list[MetricPoint]:
    m = metrics.c
    rows = conn.execute(
        select(m.step, m.value, m.timestamp, m.is_best)
        .where(m.run_id == run_id, m.key == key)
        .order_by(m.step, m.id)
    )
    nan = math.nan
    return [
        MetricPoint(step, nan if value is None else value, to_datetime(ts), is_best)
        for step, value, ts, is_best in rows
    ]


def summary_from_row(row: Any) -> MetricSummary:
    return MetricSummary(
        key=row.key,
        goal=row.goal,
        count=row.count,
        last=math.nan if row.last is None else row.last,
        last_step=row.last_step,
        min=row.min,
        max=row.max,
        best=row.best,
        best_step=row.best_step,
    )
