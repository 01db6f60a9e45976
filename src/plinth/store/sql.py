"""Small SQL helpers shared by every part's service."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from plinth.errors import InvalidArgument


def now_ms() -> int:
    return int(time.time() * 1000)


def to_datetime(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def opt_datetime(millis: int | None) -> datetime | None:
    return None if millis is None else to_datetime(millis)


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    update: Mapping[str, Callable[[Any], Any]] | None = None,
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE/NOTHING on SQLite and PostgreSQL alike.

    ``update`` maps columns to functions of the ``excluded`` row giving their new value.
    Statements are built once per (dialect, table, keys, updated columns): a call site must
    always pass the same functions for the same columns.
    """
    if not rows:
        return
    cache_key = (conn.dialect.name, table.name, tuple(keys), tuple(update or ()))
    stmt = _upserts.get(cache_key)
    if stmt is None:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(table)
        if update:
            built = {name: expr(stmt.excluded) for name, expr in update.items()}
            stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=built)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        _upserts[cache_key] = stmt
    conn.execute(stmt, list(rows))


_upserts: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], Any] = {}


MAX_PAGE = 10_000


def check_max_results(max_results: int) -> int:
    if not 1 <= max_results <= MAX_PAGE:
        raise InvalidArgument(f"max_results must be between 1 and {MAX_PAGE}, got {max_results}")
    return max_results


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
        if isinstance(offset, int) and 0 <= offset < 2**31:
            return offset
    except (ValueError, KeyError, TypeError):
        pass
    raise InvalidArgument(f"page_token {token[:40]!r} is not a token returned by a previous page")
