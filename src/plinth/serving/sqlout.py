"""A SQL table beside the score history Delta table: each delivered job's rows copied into
any SQLAlchemy database (PostgreSQL, SQLite, ...) for applications that read scores with
SQL.

The Delta commit stays the job's one point of delivery; the copy follows it, exactly once:
one transaction inserts a marker row (job key, primary key) into ``plinth_score_deliveries``
and the job's rows read back from the commit. A job whose marker is there is not copied
again; a run killed halfway left no marker and no rows, and the next run of the job (which
finds it delivered in Delta) copies it; two runs copying at once meet on the marker's key,
and the second finds the first's.

The table is created on first use with a column per score column (integers, floats,
booleans, text, UTC timestamps); an existing table must hold every column.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from plinth.errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    from sqlalchemy import Engine, Table

MARKERS = "plinth_score_deliveries"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_BATCH_ROWS = 10_000


class SqlScores:
    def __init__(self, uri: str, table: str) -> None:
        if not _NAME.fullmatch(table):
            raise InvalidArgument(
                f"SQL table name {table!r} must be letters, digits and _ (not first), "
                "up to 63 characters"
            )
        self.uri = uri
        self.name = table
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
        from sqlalchemy.pool import NullPool

        if self._engine is None:
            try:  # one copy per job: connections are not worth keeping open
                self._engine = create_engine(self.uri, poolclass=NullPool)
            except (ArgumentError, NoSuchModuleError) as e:
                raise InvalidArgument(f"SQL URI {self.uri!r} is not usable: {e}") from None
        return self._engine

    def copied(self, job_key: str) -> bool:
        from sqlalchemy import inspect, select
        from sqlalchemy.exc import OperationalError

        try:
            if not inspect(self.engine).has_table(MARKERS):
                return False
            markers = _markers()
            query = select(markers.c.job_key).where(
                markers.c.table_name == self.name, markers.c.job_key == job_key
            )
            with self.engine.connect() as conn:
                return conn.execute(query).first() is not None
        except OperationalError as e:
            raise Unavailable(f"cannot reach the SQL database {self.uri}: {e}") from e

    def copy(self, job_key: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
        """Insert the rows of ``batches`` and the job's marker in one transaction; the
        rows copied (0 when an earlier run copied the job)."""
        from sqlalchemy import insert
        from sqlalchemy.exc import IntegrityError, OperationalError

        try:
            table = self._table(schema)
            copied = 0
            with self.engine.begin() as conn:
                conn.execute(insert(_markers()).values(table_name=self.name, job_key=job_key))
                for batch in batches:
                    for start in range(0, batch.num_rows, _BATCH_ROWS):
                        rows = batch.slice(start, _BATCH_ROWS).to_pylist()
                        conn.execute(insert(table), rows)
                        copied += len(rows)
            return copied
        except IntegrityError:  # another run copied this job first
            return 0
        except OperationalError as e:
            raise Unavailable(f"copying scores to {self.uri} failed: {e}") from e

    def _table(self, schema: pa.Schema) -> Table:
        from sqlalchemy import Column, MetaData, Table, inspect
        from sqlalchemy.exc import IntegrityError, ProgrammingError

        wanted = MetaData()
        _markers(wanted)
        table = Table(self.name, wanted, *(Column(f.name, _sql_type(f.type)) for f in schema))
        try:
            wanted.create_all(self.engine, checkfirst=True)
        except (ProgrammingError, IntegrityError):
            # another run created one of them between the check and the create (PostgreSQL
            # says DuplicateTable, or a unique violation in its catalog): they exist now
            wanted.create_all(self.engine, checkfirst=True)
        have = {c["name"] for c in inspect(self.engine).get_columns(self.name)}
        missing = [f.name for f in schema if f.name not in have]
        if missing:
            raise InvalidArgument(
                f"SQL table {self.name!r} in {self.uri} has no column {missing[0]!r} for the "
                "scores; give another --sql-table or add the column"
            )
        return table


def _markers(metadata: Any = None) -> Table:
    from sqlalchemy import Column, MetaData, String, Table

    return Table(
        MARKERS,
        metadata if metadata is not None else MetaData(),
        Column("table_name", String(63), primary_key=True),
        Column("job_key", String(128), primary_key=True),
    )


def _sql_type(kind: pa.DataType) -> Any:
    from sqlalchemy import BigInteger, Boolean, Date, DateTime, Double, Text

    if pa.types.is_integer(kind):
        return BigInteger()
    if pa.types.is_floating(kind):
        return Double()
    if pa.types.is_boolean(kind):
        return Boolean()
    if pa.types.is_timestamp(kind):
        return DateTime(timezone=kind.tz is not None)
    if pa.types.is_date(kind):
        return Date()
    return Text()
