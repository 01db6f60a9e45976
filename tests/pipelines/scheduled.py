"""Pipelines and schedules written straight into the store, for the scheduler's tests
(the service that registers them is tested on its own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from plinth.client import Client
from plinth.config import local_user
from plinth.store.schema import pipeline_runs, pipeline_schedules, pipelines
from tests.backends import local_client

NOW = 1_780_000_000_000  # ms: 2026-05-28
MINUTE = 60_000
HOUR = 60 * MINUTE


def store_client(tmp_path: Path) -> Client:
    return local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))


def add_pipeline(client: Client, name: str = "nightly", **columns: Any) -> None:
    values: dict[str, Any] = {
        "name": name,
        "entrypoint": "pipes.py:pipeline",
        "experiment": name,
        "owner": local_user(),
        "created_at": NOW,
        "updated_at": NOW,
        "params": json.dumps({"since": "2026-01-01"}),
        **columns,
    }
    with client.tracking.store.write() as conn:
        conn.execute(insert(pipelines).values(**values))


def add_schedule(client: Client, pipeline: str = "nightly", **columns: Any) -> int:
    values: dict[str, Any] = {
        "pipeline": pipeline,
        "kind": "cron",
        "created_by": "local",
        "created_at": NOW,
        "updated_at": NOW,
        **columns,
    }
    with client.tracking.store.write() as conn:
        made = conn.execute(insert(pipeline_schedules).values(**values)).inserted_primary_key
    assert made is not None
    return int(made[0])


def runs(client: Client, **where: Any) -> list[Any]:
    query = select(pipeline_runs).order_by(pipeline_runs.c.id)
    for column, value in where.items():
        query = query.where(pipeline_runs.c[column] == value)
    with client.tracking.store.read() as conn:
        return list(conn.execute(query).all())


def cursor(client: Client, schedule_id: int) -> int | None:
    with client.tracking.store.read() as conn:
        found = conn.execute(
            select(pipeline_schedules.c.cursor).where(pipeline_schedules.c.id == schedule_id)
        ).scalar()
    return None if found is None else int(found)
