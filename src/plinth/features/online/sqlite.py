"""The default online store: one SQLite file in WAL mode, one table per feature group version.

Each table holds one row per entity: the encoded key (primary key), the event time in
microseconds and the feature values packed in one msgpack blob, so a lookup is one B-tree
probe and one unpack, whatever the number of features.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Sequence
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from plinth.errors import InvalidArgument, Unavailable
from plinth.features.online.base import OnlineColumns, OnlineStore
from plinth.features.online.codec import (
    check_table,
    empty_columns,
    encode_key,
    encode_key_rows,
    encode_rows,
    fresh_only,
    reader_for,
)

_MMAP_BYTES = 1 << 30


class SqliteOnlineStore(OnlineStore):
    """Online tables in the SQLite file at ``path`` (created if missing).

    Every thread gets its own connection, so reads go on while another thread writes; it
    is closed when the thread ends or at ``close()``.
    """

    def __init__(self, path: str | PathLike[str], *, timeout: float = 30.0) -> None:
        if str(path) in ("", ":memory:"):
            raise InvalidArgument(
                "the SQLite online store needs a file path (each thread opens its own "
                "connection, which an in-memory database would not share)"
            )
        self.path = Path(path).expanduser()
        self._timeout = timeout
        self._local = threading.local()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._connection()  # a path that cannot be opened fails here, not at the first lookup

    def __repr__(self) -> str:
        return f"SqliteOnlineStore({str(self.path)!r})"

    def write(self, table: str, keys: list[str], rows: pa.Table, event_time: str) -> int:
        upsert = _upsert_sql(check_table(table))
        conn = self._connection()
        written = 0
        try:
            # IMMEDIATE takes the write lock up front: no deadlock upgrading a read lock
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_create_sql(table))
                for batch in encode_rows(rows, keys, event_time):
                    cursor = conn.executemany(
                        upsert, zip(batch.keys, batch.event_times, batch.values, strict=True)
                    )
                    written += cursor.rowcount  # inserted and replaced rows, not skipped ones
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise Unavailable(
                    f"the SQLite online store at {self.path} stayed locked by another writer "
                    f"for {self._timeout} s: {exc}",
                    "the online feature store (SQLite)",
                ) from exc
            raise
        return written

    def read_columns(
        self,
        table: str,
        key_rows: Sequence[tuple[Any, ...]],
        features: list[str],
        *,
        not_before: int | None = None,
    ) -> OnlineColumns:
        check_table(table)
        n = len(key_rows)
        if not n:
            return OnlineColumns([], empty_columns(features, 0))
        try:
            if n == 1:
                one = encode_key(key_rows[0])
                found = self._connection().execute(_select_one_sql(table), (one,)).fetchall()
                found = found or [(None, None)]
            else:
                # one row per requested key, in request order, NULLs for unknown keys
                wanted = orjson.dumps(encode_key_rows(key_rows)).decode()
                found = self._connection().execute(_select_sql(table), (wanted,)).fetchall()
        except sqlite3.OperationalError as exc:
            if str(exc) == f"no such table: {table}":
                return OnlineColumns([None] * n, empty_columns(features, n))
            if "json_each" in str(exc):
                raise Unavailable(
                    f"the SQLite library here ({sqlite3.sqlite_version}) lacks the JSON "
                    "functions the online store reads with: use SQLite 3.38 or later"
                ) from exc
            raise
        micros, packed = zip(*found, strict=True)
        columns = reader_for(features).columns(fresh_only(micros, packed, not_before))
        return OnlineColumns(micros, dict(zip(features, columns, strict=True)))

    def drop(self, table: str) -> None:
        self._connection().execute(f'DROP TABLE IF EXISTS "{check_table(table)}"')

    def close(self) -> None:
        with self._lock:
            held, self._held = list(self._held), weakref.WeakSet()
            self._local = threading.local()  # a later call opens fresh connections
        for one in held:
            one.conn.close()

    def _connection(self) -> sqlite3.Connection:
        try:
            held: _Held = self._local.held
            return held.conn
        except AttributeError:
            pass
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self._timeout,
                isolation_level=None,  # autocommit; writes open their own transaction
                check_same_thread=False,  # only so that it may be closed from any thread
                cached_statements=512,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL cannot corrupt the file; a power cut may lose the
            # last commits, which materialisation writes again
            conn.execute("PRAGMA synchronous=NORMAL")
            # reads from the mapped file skip a system call per page: a third off a lookup
            conn.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        except (OSError, sqlite3.Error) as exc:
            raise Unavailable(
                f"cannot open the SQLite online store at {self.path}: {exc}",
                "the online feature store (SQLite)",
            ) from exc
        held = _Held(conn)
        with self._lock:
            self._held.add(held)
        self._local.held = held
        return conn


class _Held:
    """A thread's connection: closed when the thread ends, as its thread-local state goes."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


@lru_cache(maxsize=1024)
def _select_one_sql(table: str) -> str:
    return f'SELECT event_time, features FROM "{table}" WHERE key = ?'


@lru_cache(maxsize=1024)
def _select_sql(table: str) -> str:
    # The keys come as one JSON array of their text forms; the LEFT JOIN probes the primary
    # key once per array item and keeps a row (of NULLs) for the unknown ones.
    return (
        f'SELECT t.event_time, t.features FROM json_each(?) AS k LEFT JOIN "{table}" AS t '
        "ON t.key = k.value ORDER BY k.key"
    )


@lru_cache(maxsize=1024)
def _upsert_sql(table: str) -> str:
    return (
        f'INSERT INTO "{table}" (key, event_time, features) VALUES (?, ?, ?) '
        "ON CONFLICT (key) DO UPDATE SET event_time = excluded.event_time, "
        f'features = excluded.features WHERE excluded.event_time >= "{table}".event_time'
    )


def _create_sql(table: str) -> str:
    return (
        f'CREATE TABLE IF NOT EXISTS "{table}" (key TEXT PRIMARY KEY, '
        "event_time INTEGER NOT NULL, features BLOB NOT NULL) WITHOUT ROWID"
    )
