"""The central store: one SQLAlchemy engine (SQLite or PostgreSQL), migrated on first use."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from plinth.errors import InvalidArgument, Unavailable, WriteConflict

# The newest migration; tests check it matches the Alembic scripts' head.
SCHEMA_REVISION = "0016"
_SQLITE_BUSY_TIMEOUT_S = 60.0


class Store:
    """The metadata store. ``read()`` and ``write()`` hand out connections in a transaction.

    On SQLite, writes start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the
    busy timeout instead of failing with "database is locked" when a read upgrades.
    """

    def __init__(
        self,
        uri: str,
        *,
        migrate: bool = True,
        connect_timeout: float = 5.0,
        statement_timeout: float = 60.0,
    ) -> None:
        self.uri = uri
        self.engine = _create_engine(uri, connect_timeout, statement_timeout)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if migrate:
            self.ensure_schema()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with _unavailable_on_disconnect(self.uri), self.engine.connect() as conn:
            yield conn
            conn.rollback()

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        with _unavailable_on_disconnect(self.uri), self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(plinth_immediate=True)
            with conn.begin():
                yield conn

    def current_revision(self) -> str | None:
        """The schema's revision; None before the first migration (no version table)."""
        with self.read() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except ProgrammingError:  # PostgreSQL: no such table
                return None
            except OperationalError as exc:  # SQLite: no such table; PostgreSQL: an outage
                if self.is_sqlite and "no such table" in str(exc.orig):
                    return None
                raise

    def ensure_schema(self) -> None:
        if self.current_revision() != SCHEMA_REVISION:
            self.upgrade()

    def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations, one process at a time."""
        from plinth.store import migrate

        with _unavailable_on_disconnect(self.uri), self._migration_lock() as conn:
            migrate.upgrade(conn, revision)

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[Connection]:
        if self.is_sqlite:
            from filelock import FileLock

            database = self.engine.url.database
            lock_path = f"{database}.migrate.lock" if database and database != ":memory:" else None
            lock: contextlib.AbstractContextManager[Any] = (
                FileLock(lock_path, timeout=120) if lock_path else contextlib.nullcontext()
            )
            with lock, self.engine.connect() as conn:
                yield conn
        else:
            with self.engine.connect() as conn, _without_timeouts(conn):
                # waits while another process migrates, however long that takes
                conn.execute(text("SELECT pg_advisory_lock(7301)"))
                conn.commit()
                try:
                    yield conn
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(7301)"))
                    conn.commit()

    def dispose(self) -> None:
        self.engine.dispose()


def _create_engine(uri: str, connect_timeout: float, statement_timeout: float) -> Engine:
    try:
        url = make_url(uri)
    except ArgumentError:
        raise InvalidArgument(
            f"store URI {uri!r} is not a database URL; expected sqlite:///path or "
            "postgresql+psycopg://user@host/db"
        ) from None
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            try:
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InvalidArgument(
                    f"cannot create the folder of SQLite store {uri!r}: {exc}"
                ) from None
        engine = create_engine(
            url,
            connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        )
        _setup_sqlite(engine)
        return engine
    if url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            pool_timeout=connect_timeout,  # all connections busy: as long as connecting
        )
        if url.drivername == "postgresql+psycopg":
            _setup_postgres(engine, connect_timeout, statement_timeout)
        return engine
    raise InvalidArgument(
        f"store URI {_redact(uri)!r} uses {url.get_backend_name()!r}; supported: sqlite, postgresql"
    )


def _setup_postgres(engine: Engine, connect_timeout: float, statement_timeout: float) -> None:
    from plinth.store import postgres

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return postgres.connect(cargs, cparams, connect_timeout, statement_timeout)


def _use_wal(cursor: Any) -> None:
    # Once a database is in WAL mode it stays so, and asking costs no lock. Switching a new
    # file takes an exclusive lock, and SQLite answers "database is locked" at once, without
    # its busy handler, while processes starting together all try: they wait their turn.
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_S
    while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # an in-memory database stays as it is
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextlib.contextmanager
def _without_timeouts(conn: Connection) -> Iterator[None]:
    """Lift the statement and read timeouts of one PostgreSQL connection; it is closed
    afterwards rather than returned to the pool without them."""
    conn.execute(text("SET statement_timeout = 0"))
    raw = conn.connection.dbapi_connection
    if raw is not None and hasattr(raw, "read_timeout"):
        raw.read_timeout = None
    try:
        yield
    finally:
        conn.invalidate()


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide how transactions start.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("plinth_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextlib.contextmanager
def _unavailable_on_disconnect(uri: str) -> Iterator[None]:
    """Map what the database refuses to Plinth's errors: outages are Unavailable, values it
    cannot hold (text that is not valid Unicode, integers beyond 64 bits) InvalidArgument."""
    try:
        yield
    except (UnicodeEncodeError, OverflowError) as exc:
        raise InvalidArgument(_unstorable(exc)) from None
    except IntegrityError as exc:
        # Whatever a service did not anticipate (two writers racing for one name, say)
        # is a 409 the caller can retry, never a 500.
        detail = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
        raise WriteConflict(
            "the write conflicts with a record written at the same time; try again", detail
        ) from exc
    except SQLAlchemyTimeoutError as exc:  # every pooled connection stayed busy
        raise Unavailable(
            f"metadata store {_redact(uri)} is unavailable: no connection free: {exc}",
            "the metadata store",
        ) from exc
    except OperationalError as exc:
        # PostgreSQL reports SQL mistakes as ProgrammingError: its OperationalErrors are the
        # server or the connection failing. SQLite's are mostly our bugs, except these.
        sqlite_outage = any(
            word in str(exc.orig) for word in ("locked", "unable to open", "disk I/O")
        )
        if exc.connection_invalidated or "psycopg" in type(exc.orig).__module__ or sqlite_outage:
            raise Unavailable(
                f"metadata store {_redact(uri)} is unavailable: {exc.orig}", "the metadata store"
            ) from exc
        raise

    except (StatementError, DataError) as exc:
        if isinstance(exc.orig, UnicodeEncodeError | OverflowError) or isinstance(exc, DataError):
            raise InvalidArgument(_unstorable(exc.orig or exc)) from None
        raise


def _unstorable(exc: BaseException) -> str:
    if isinstance(exc, UnicodeEncodeError):
        return "a text value is not valid Unicode (it holds a lone surrogate); nothing was stored"
    if isinstance(exc, OverflowError):
        return "an integer is out of the 64-bit range the store keeps; nothing was stored"
    return f"the store refused a value: {str(exc).splitlines()[0]}; nothing was stored"


def _redact(uri: str) -> str:
    try:
        return make_url(uri).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URI>"


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def open_store(uri: str, *, connect_timeout: float = 5.0, statement_timeout: float = 60.0) -> Store:
    """One Store (and so one connection pool) per URI per process; the timeouts of its first
    opening hold."""
    with _stores_lock:
        store = _stores.get(uri)
        if store is None:
            store = _stores[uri] = Store(
                uri, connect_timeout=connect_timeout, statement_timeout=statement_timeout
            )
        return store
