"""One in-process DuckDB database for the feature store's queries.

Opening a DuckDB database costs tens of milliseconds, more than a small query; every query
gets its own cursor (a connection to the shared database) instead, so registered tables
never meet another thread's and closing it is cheap.
"""

from __future__ import annotations

import os
import threading

import duckdb

_database: duckdb.DuckDBPyConnection | None = None
_lock = threading.Lock()


def cursor() -> duckdb.DuckDBPyConnection:
    """A fresh connection to the shared database (close it, or use it in ``with``)."""
    global _database
    with _lock:
        if _database is None or _owner != os.getpid():
            _open()
        assert _database is not None
        return _database.cursor()


_owner = 0


def _open() -> None:
    # a forked child must not share its parent's database
    global _database, _owner
    _database = duckdb.connect(config={"threads": cores()})
    _database.execute("SET GLOBAL TimeZone = 'UTC'")  # aware timestamps come back in UTC
    _owner = os.getpid()


def cores() -> int:
    # The CPUs this process may use (a container's share), not the host's count.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
