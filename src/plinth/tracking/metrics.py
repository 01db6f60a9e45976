"""The metric write path (batched, columnar) and metric reads."""

from __future__ import annotations

import functools
import itertools
import math
import operator
from typing import Any

from sqlalchemy import Connection, Dialect, bindparam, insert, select

from plinth.errors import InvalidArgument
from plinth.store.schema import metric_spools, metric_summaries, metrics, runs
from plinth.store.sql import to_datetime, upsert
from plinth.tracking.types import (
    MetricBatch,
    MetricPoint,
    MetricSummary,
    infer_goal,
    validate_key,
)

_INT64 = 2**63


def validate_batch(batch: MetricBatch) -> None:
    """Refuse a batch the store could not hold faithfully, naming the metric at fault."""
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
    if batch.first_seq < 0 or (batch.spool is not None and not batch.spool.isalnum()):
        raise InvalidArgument(f"metric batch: bad spool mark {batch.spool!r}@{batch.first_seq}")
    # Fast paths first: a batch from log_metric holds only floats and ints.
    if not all(type(v) is float for v in batch.values):
        for key, v in zip(batch.keys, batch.values, strict=True):
            if type(v) is not float and (type(v) is not int or abs(v) >= _INT64):
                raise InvalidArgument(f"metric {key!r}: value {v!r:.40} is not a number")
    for name, column in (("step", batch.steps), ("timestamp", batch.timestamps)):
        if not all(type(x) is int for x in column) or (
            column and not -_INT64 <= min(column) <= max(column) < _INT64
        ):
            for key, x in zip(batch.keys, column, strict=True):
                if type(x) is not int or not -_INT64 <= x < _INT64:
                    raise InvalidArgument(
                        f"metric {key!r}: {name} {x!r:.40} is not a 64-bit integer"
                    )
    for key, best in zip(batch.keys, batch.is_best, strict=True):
        if best is not None and type(best) is not bool:
            raise InvalidArgument(
                f"metric {key!r}: is_best {best!r:.40} is not true, false or null"
            )


_SUMMARY_COLUMNS = (
    "goal",
    "count",
    "last",
    "last_step",
    "last_timestamp",
    "min",
    "max",
    "best",
    "best_step",
)
_REPLACE_SUMMARY = {name: operator.attrgetter(name) for name in _SUMMARY_COLUMNS}
_POINT_COLUMNS = ["run_id", "key", "step", "value", "timestamp", "is_best"]


@functools.cache
def _insert_points(dialect: Dialect) -> tuple[str, list[str] | None]:
    # Compiled once by SQLAlchemy for the dialect, then fed rows straight to the driver:
    # per-row parameter processing is most of the cost of a large executemany.
    compiled = insert(metrics).compile(dialect=dialect, column_keys=_POINT_COLUMNS)
    order = list(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    return compiled.string, order


_lock_run = (
    select(runs.c.status, runs.c.deleted_at)
    .where(runs.c.id == bindparam("run_id"))
    .with_for_update(key_share=True)
)
_spool_seq = select(metric_spools.c.seq).where(
    metric_spools.c.run_id == bindparam("run_id"), metric_spools.c.spool == bindparam("spool")
)
_stored_summaries = select(metric_summaries).where(
    metric_summaries.c.run_id == bindparam("run_id"),
    metric_summaries.c.key.in_(bindparam("keys", expanding=True)),
)


def lock_run(conn: Connection, run_id: str) -> tuple[str, int | None] | None:
    """The run's status and deletion time, its row locked until the transaction ends
    (PostgreSQL; a SQLite write transaction holds the whole database): writers of one
    run's points queue here, so each judges is-best against what the one before it stored."""
    row = conn.execute(_lock_run, {"run_id": run_id}).first()
    return None if row is None else (row[0], row[1])


def spool_progress(conn: Connection, run_id: str, spool: str) -> int:
    return int(conn.execute(_spool_seq, {"run_id": run_id, "spool": spool}).scalar() or 0)


def already_written(conn: Connection, run_id: str, batch: MetricBatch) -> bool:
    """Whether the store holds every point of a spooled batch already (a retried write)."""
    return batch.spool is not None and spool_progress(conn, run_id, batch.spool) >= (
        batch.first_seq + len(batch)
    )


def write_batch(conn: Connection, run_id: str, batch: MetricBatch) -> int:
    """Write the points of a batch in the caller's transaction, after ``lock_run``; returns
    how many were new (the rest of a spooled batch had been written before)."""
    skip = 0
    if batch.spool is not None:
        params = {"run_id": run_id, "spool": batch.spool}
        done = spool_progress(conn, run_id, batch.spool)
        skip = min(max(done - batch.first_seq, 0), len(batch))
        end = max(done, batch.first_seq + len(batch))
        upsert(conn, metric_spools, [{**params, "seq": end}], ["run_id", "spool"], _SPOOL_SEQ)
    if skip == len(batch):
        return 0
    keys, values, steps = batch.keys[skip:], batch.values[skip:], batch.steps[skip:]
    stamps, flags = batch.timestamps[skip:], batch.is_best[skip:]
    stored = {
        row.key: row._asdict()
        for row in conn.execute(_stored_summaries, {"run_id": run_id, "keys": sorted(set(keys))})
    }
    marks, summaries = judge(run_id, keys, values, steps, stamps, flags, batch.goals, stored)
    sql, order = _insert_points(conn.dialect)
    columns = {
        "run_id": itertools.repeat(run_id, len(keys)),
        "key": keys,
        "step": steps,
        "value": [None if v != v else v for v in values],
        "timestamp": stamps,
        "is_best": marks,
    }
    if order is not None:
        rows: list[Any] = list(zip(*(columns[name] for name in order), strict=True))
    else:
        rows = [
            dict(zip(_POINT_COLUMNS, row, strict=True))
            for row in zip(*(columns[n] for n in _POINT_COLUMNS), strict=True)
        ]
    conn.exec_driver_sql(sql, rows)
    upsert(conn, metric_summaries, summaries, ["run_id", "key"], _REPLACE_SUMMARY)
    return len(keys)


_SPOOL_SEQ = {"seq": operator.attrgetter("seq")}


def judge(
    run_id: str,
    keys: list[str],
    values: list[float],
    steps: list[int],
    stamps: list[int],
    flags: list[bool | None],
    goals: dict[str, str],
    stored: dict[str, dict[str, Any]],
) -> tuple[list[bool], list[dict[str, Any]]]:
    """The is-best mark of each point and the metrics' new summaries, from the stored ones.

    A point left unmarked is best when it improves on the run's best so far in its goal's
    direction (NaN never does), whichever process logged the earlier points. The summary's
    best is the value of the last point marked best: by step for marks given by the caller,
    and always for an improvement."""
    acc: dict[str, dict[str, Any]] = {}
    marks: list[bool] = []
    for key, value, step, ts, flag in zip(keys, values, steps, stamps, flags, strict=True):
        row = acc.get(key)
        if row is None:
            row = acc[key] = _start_summary(run_id, key, goals, stored.get(key))
        row["count"] += 1
        if row["last_step"] is None or step >= row["last_step"]:
            row["last"], row["last_step"], row["last_timestamp"] = value, step, ts
        nan = value != value
        if not nan:
            if row["min"] is None or value < row["min"]:
                row["min"] = value
            if row["max"] is None or value > row["max"]:
                row["max"] = value
        best = row["best"]
        if flag is None:
            flag = not nan and (
                best is None or (value > best if row["goal"] == "max" else value < best)
            )
            improves = flag
        else:
            improves = flag and (row["best_step"] is None or step >= row["best_step"])
        if improves:
            row["best"], row["best_step"] = (None if nan else value), step
        marks.append(flag)
    for row in acc.values():
        row["last"] = _nan_to_none(row["last"])
    return marks, list(acc.values())


def _start_summary(
    run_id: str, key: str, goals: dict[str, str], stored: dict[str, Any] | None
) -> dict[str, Any]:
    if stored is None:
        row: dict[str, Any] = {
            "run_id": run_id,
            "key": key,
            "count": 0,
            "last": None,
            "last_step": None,
            "last_timestamp": 0,
            "min": None,
            "max": None,
            "best": None,
            "best_step": None,
        }
        row["goal"] = goals.get(key) or infer_goal(key)
    else:
        row = dict(stored)
        row["goal"] = goals.get(key) or row["goal"]
        if row["last"] is None:
            row["last"] = math.nan
    return row


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


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


def summary_from_tuple(row: Any) -> MetricSummary:
    """From (key, goal, count, last, last_step, min, max, best, best_step, last_timestamp)."""
    key, goal, count, last, last_step, low, high, best, best_step, last_ts = row
    last = math.nan if last is None else last
    return MetricSummary(
        key, goal, count, last, last_step, low, high, best, best_step, to_datetime(last_ts)
    )


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
        last_timestamp=to_datetime(row.last_timestamp),
    )
