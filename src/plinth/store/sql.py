"""Small SQL helpers shared by every part's service."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def now_ms() -> int:
    return int(time.time() * 1000)


def to_datetime(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc)


def opt_datetime(millis: int | None) -> datetime | None:
    return None if millis is None else to_datetime(millis)


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    update: Mapping[str, Any] | None = None,
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE/NOTHING on SQLite and PostgreSQL alike.

    ``update`` maps columns to expressions built from ``excluded`` via ``excluded_of``.
    """
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    if update:
        built = {name: expr(stmt.excluded) if callable(expr) else expr for name, expr in update.items()}
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=built)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(stmt, list(rows))
