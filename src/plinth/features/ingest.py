"""Turn user data into the Arrow table a feature group stores.

Sources: a pandas or polars DataFrame, a pyarrow Table, RecordBatch or anything that
exports an Arrow stream, or the path of a Parquet file or folder (a folder holding a Delta
table is read at its latest version).

The rules, each refused with an ``InvalidArgument`` that names the column:

- every key, the event-time column and every feature must be present; other columns are
  dropped. The output holds keys, event time, features, in that order.
- keys must not be null; keys are integers, strings, dates, timestamps or booleans.
- a column is cast to its declared dtype only where no value can change: integers widen to
  integers (narrowing is checked value by value) and to floats, floats to floats; a float
  never becomes an integer, a string never a number, a number never a string.
- **timestamps must carry a timezone.** A naive time is ambiguous (local? UTC?), so it is
  refused rather than guessed: localise it first, e.g.
  ``df["event_time"] = df["event_time"].dt.tz_localize("UTC")``. Aware times are converted
  to UTC and stored as ``timestamp[us, tz=UTC]``; digits finer than a microsecond are
  dropped. The same holds for features declared ``timestamp``.
- each (keys, event time) pair appears once: an upsert could not tell which row wins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from plinth.errors import InvalidArgument
from plinth.features.types import FeatureGroup

TIME_TYPE = pa.timestamp("us", tz="UTC")
ARROW_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "timestamp": TIME_TYPE,
    "date": pa.date32(),
}
_LOCALIZE = (
    'localise it first, e.g. df[{name!r}] = df[{name!r}].dt.tz_localize("UTC") '
    '(polars: pl.col({name!r}).dt.replace_time_zone("UTC"))'
)


def columns_of(group: FeatureGroup) -> list[str]:
    """The stored column order: keys, event time, features."""
    return [*group.keys, group.event_time, *(f.name for f in group.features)]


def declared_types(group: FeatureGroup) -> dict[str, pa.DataType]:
    """The Arrow type of the event time and of every feature (keys keep their own type)."""
    types = {group.event_time: TIME_TYPE}
    for feature in group.features:
        if feature.dtype not in ARROW_TYPES:
            raise InvalidArgument(
                f"feature {feature.name!r} of {group.ref} declares dtype {feature.dtype!r}; "
                f"use one of {list(ARROW_TYPES)}"
            )
        types[feature.name] = ARROW_TYPES[feature.dtype]
    return types


def prepare(data: Any, group: FeatureGroup) -> pa.Table:
    """Check ``data`` against ``group`` and return it as the table to store (see the module
    docstring for the rules)."""
    return _prepare(as_table(data, columns_of(group)), group)


def iter_chunks(data: Any, group: FeatureGroup, chunk_rows: int = 500_000) -> Iterator[pa.Table]:
    """``prepare`` applied to slices of at most ``chunk_rows`` rows, so a large input never
    sits in memory whole (a Parquet source is read batch by batch). Yields at least one
    chunk. Duplicates are checked within each chunk; ``OfflineStore.write_many`` checks them
    across chunks."""
    if chunk_rows < 1:
        raise InvalidArgument(f"chunk_rows must be at least 1, not {chunk_rows}")
    for piece in _pieces(data, columns_of(group), chunk_rows):
        yield _prepare(piece, group)


def check_unique(table: pa.Table, group: FeatureGroup) -> None:
    """Refuse a table where a (keys, event time) pair appears more than once."""
    pair = [*group.keys, group.event_time]
    counts = table.select(pair).group_by(pair).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts["count_all"], 1))
    if repeated.num_rows == 0:
        return
    rows = pc.sum(repeated["count_all"]).as_py()
    example = repeated.slice(0, 1).to_pylist()[0]
    times = example.pop("count_all")
    raise InvalidArgument(
        f"{rows} rows repeat a ({', '.join(pair)}) pair of another row "
        f"({repeated.num_rows} pairs), e.g. {example} appears {times} times; keep one row "
        f"per key and event time, e.g. df.drop_duplicates({pair}, keep='last')"
    )


# -- reading the source ------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A SQL query as a source: run by DuckDB (which reads Parquet, CSV and Delta files:
    ``SELECT * FROM 'tx/*.parquet'``), or against the database at ``uri`` (any SQLAlchemy
    URL) when given. Results stream batch by batch into large inserts."""

    sql: str
    uri: str | None = None

    def reader(self, batch_rows: int = 500_000) -> pa.RecordBatchReader:
        if self.uri is None:
            import duckdb

            try:
                relation = duckdb.sql(self.sql)
            except duckdb.Error as e:
                raise InvalidArgument(f"the query failed: {e}") from e
            if relation is None:  # a statement, not a query
                raise InvalidArgument(f"{self.sql!r} returns no rows; give a SELECT")
            return _utc(relation.to_arrow_reader(batch_rows))
        return _database_reader(self.sql, self.uri, batch_rows)


def _utc(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """DuckDB names UTC "Etc/UTC", which Delta Lake refuses: call it "UTC"."""
    fields = [
        f.with_type(pa.timestamp(f.type.unit, "UTC"))
        if pa.types.is_timestamp(f.type)
        and f.type.tz in ("Etc/UTC", "Etc/Universal", "Universal", "Zulu")
        else f
        for f in reader.schema
    ]
    schema = pa.schema(fields)
    return reader if schema.equals(reader.schema) else reader.cast(schema)


def _database_reader(sql: str, uri: str, batch_rows: int) -> pa.RecordBatchReader:
    import pandas as pd  # type: ignore[import-untyped]
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(uri)
    try:
        with engine.connect() as conn:
            frames = pd.read_sql(text(sql), conn, chunksize=batch_rows)
            tables = [pa.Table.from_pandas(f, preserve_index=False) for f in frames]
    except (SQLAlchemyError, pd.errors.DatabaseError) as e:
        raise InvalidArgument(f"the query failed: {e}") from e
    finally:
        engine.dispose()
    if not tables:
        raise InvalidArgument("the query returned no columns")
    table = pa.concat_tables(tables, promote_options="permissive")
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


def _is_path(data: Any) -> bool:
    return isinstance(data, str | os.PathLike)


def _parquet(path: Any) -> ds.Dataset:
    where = Path(path)
    if not where.exists():
        raise InvalidArgument(f"no Parquet file or folder at {str(where)!r}")
    if (where / "_delta_log").is_dir():  # the folder also holds files no longer in the table
        from deltalake import DeltaTable

        return DeltaTable(str(where)).to_pyarrow_dataset()
    try:
        return ds.dataset(str(where), format="parquet", partitioning="hive")
    except (pa.ArrowInvalid, OSError) as e:
        raise InvalidArgument(f"cannot read {str(where)!r} as Parquet: {e}") from e


def _polars_frame(data: Any) -> bool:
    polars = sys.modules.get("polars")  # never import it: it is not a dependency
    return polars is not None and isinstance(data, polars.DataFrame)


def _pandas_frame(data: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(data, pandas.DataFrame)


def _from_pandas(frame: Any, wanted: list[str] | None) -> pa.Table:
    if wanted is None:
        wanted = [str(c) for c in frame.columns]
    in_index = [c for c in wanted if c not in frame.columns and c in (frame.index.names or [])]
    if in_index:
        frame = frame.reset_index(level=in_index)
    # convert only what is stored: an unused column of mixed objects must not fail the insert
    present = [c for c in wanted if c in frame.columns]
    try:
        return pa.Table.from_pandas(frame[present], preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise InvalidArgument(f"cannot convert the DataFrame to Arrow: {e}") from e


def as_table(data: Any, wanted: list[str] | None = None, doing: str = "ingest") -> pa.Table:
    """Any source Plinth reads (pandas, polars, Arrow, a Parquet file or folder, a Delta
    table's folder, a ``Query``, an Arrow stream) as one Arrow table: of the ``wanted``
    columns it has, or all of them. ``doing`` says what failed in the refusal."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if _pandas_frame(data):
        return _from_pandas(data, wanted)
    if _polars_frame(data):
        if wanted is None:
            return data.to_arrow()
        return data.select([c for c in wanted if c in data.columns]).to_arrow()
    if _is_path(data):
        dataset = _parquet(data)
        if wanted is None:
            return dataset.to_table()
        return dataset.to_table(columns=[c for c in wanted if c in dataset.schema.names])
    if isinstance(data, Query):
        return data.reader().read_all()
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise InvalidArgument(
        f"cannot {doing} a {type(data).__name__}; give a pandas or polars DataFrame, "
        "a pyarrow Table or RecordBatch, the path of a Parquet file or folder, or a Query"
    )


def _pieces(data: Any, wanted: list[str], rows: int) -> Iterator[pa.Table]:
    if _pandas_frame(data):
        yield from (_from_pandas(data.iloc[i : i + rows], wanted) for i in _starts(len(data), rows))
    elif _polars_frame(data):
        yield from (as_table(data.slice(i, rows), wanted) for i in _starts(len(data), rows))
    elif isinstance(data, pa.Table | pa.RecordBatch):
        yield from (as_table(data.slice(i, rows), wanted) for i in _starts(data.num_rows, rows))
    elif _is_path(data):
        dataset = _parquet(data)
        columns = [c for c in wanted if c in dataset.schema.names]
        reader = dataset.scanner(columns=columns, batch_size=rows).to_reader()
        yield from _regroup(reader, reader.schema, rows)
    elif isinstance(data, Query):
        reader = data.reader(rows)
        yield from _regroup(reader, reader.schema, rows)
    elif hasattr(data, "__arrow_c_stream__"):
        reader = pa.RecordBatchReader.from_stream(data)
        yield from _regroup(reader, reader.schema, rows)
    else:
        yield as_table(data, wanted)  # refuses it with the message above


def _starts(total: int, rows: int) -> range:
    return range(0, max(total, 1), rows)  # one (empty) piece for an empty input


def _regroup(batches: Iterable[pa.RecordBatch], schema: pa.Schema, rows: int) -> Iterator[pa.Table]:
    """Batches of any size -> tables of exactly ``rows`` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    emitted = False
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, rows)
            emitted = True
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held or not emitted:
        yield pa.Table.from_batches(pending, schema)


# -- checking and casting ----------------------------------------------------------------


def _prepare(table: pa.Table, group: FeatureGroup) -> pa.Table:
    _check_present(table, group)
    types = declared_types(group)
    columns = {key: _key(table[key], key) for key in group.keys}
    _check_no_nulls(columns, "key", "null keys cannot be joined")
    columns[group.event_time] = _time(table[group.event_time], group.event_time, "event time")
    _check_no_nulls({group.event_time: columns[group.event_time]}, "event-time", "")
    for feature in group.features:
        columns[feature.name] = _cast(table[feature.name], feature.name, types[feature.name])
    prepared = pa.table(columns)
    check_unique(prepared, group)
    return prepared


def _check_present(table: pa.Table, group: FeatureGroup) -> None:
    have = set(table.column_names)
    for role, names in (
        ("key", group.keys),
        ("event-time", [group.event_time]),
        ("feature", [f.name for f in group.features]),
    ):
        missing = [n for n in names if n not in have]
        if missing:
            raise InvalidArgument(
                f"the data has no {role} column {missing[0]!r} of {group.ref}"
                + (f" (also missing: {missing[1:]})" if missing[1:] else "")
                + f"; its columns are {table.column_names}"
            )


def _check_no_nulls(columns: dict[str, pa.ChunkedArray], role: str, why: str) -> None:
    nulls = {name: col.null_count for name, col in columns.items() if col.null_count}
    if not nulls:
        return
    mask = None
    for name in nulls:
        is_null = pc.is_null(columns[name])
        mask = is_null if mask is None else pc.or_(mask, is_null)
    rows = pc.sum(mask).as_py()
    detail = ", ".join(f"{name!r}: {count}" for name, count in nulls.items())
    raise InvalidArgument(
        f"{rows} rows have a null {role} value ({detail})" + (f"; {why}" if why else "")
    )


def _decoded(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):  # pandas categoricals
        col = col.cast(col.type.value_type)
    if pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
        col = col.cast(pa.string())
    return col


def _key(col: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    col = _decoded(col)
    kind = col.type
    if pa.types.is_null(kind):
        return col  # all null: the null check names it
    if pa.types.is_timestamp(kind):
        return _time(col, name, "key")
    ok = (
        pa.types.is_integer(kind)
        or pa.types.is_string(kind)
        or pa.types.is_date(kind)
        or pa.types.is_boolean(kind)
    )
    if not ok:
        hint = " (cast it with .astype('int64'))" if pa.types.is_floating(kind) else ""
        raise InvalidArgument(
            f"key column {name!r} has dtype {kind}; keys must be integers, strings, dates, "
            f"timestamps or booleans{hint}"
        )
    return col


def _time(col: pa.ChunkedArray, name: str, role: str) -> pa.ChunkedArray:
    kind = col.type
    if pa.types.is_null(kind):
        return col.cast(TIME_TYPE)  # all null: the null check names it
    if not pa.types.is_timestamp(kind):
        raise InvalidArgument(
            f"{role} column {name!r} has dtype {kind}; it must be a timezone-aware timestamp "
            f"(parse it with pd.to_datetime(..., utc=True))"
        )
    if kind.tz is None:
        raise InvalidArgument(
            f"{role} column {name!r} holds timestamps without a timezone ({kind}); "
            f"Plinth does not guess one: {_LOCALIZE.format(name=name)}"
        )
    # nanoseconds cannot overflow microseconds, only lose digits; coarser units may overflow
    return _checked_cast(col, name, TIME_TYPE, safe=kind.unit != "ns")


def _castable(given: pa.DataType, wanted: pa.DataType) -> bool:
    types = pa.types
    if given == wanted or types.is_null(given):
        return True
    if types.is_integer(wanted):
        return bool(types.is_integer(given))  # overflow is checked by the safe cast
    if types.is_floating(wanted):
        return any(is_(given) for is_ in (types.is_integer, types.is_floating, types.is_decimal))
    return bool(types.is_date(wanted) and types.is_date(given))


_HINTS = {
    "float->int": "round it and cast it to an integer dtype, or declare the feature as float64",
    "string->number": "parse it first, e.g. with pd.to_numeric",
}


def _cast(col: pa.ChunkedArray, name: str, wanted: pa.DataType) -> pa.ChunkedArray:
    col = _decoded(col)
    given = col.type
    if wanted == TIME_TYPE:
        return _time(col, name, "feature")
    if not _castable(given, wanted):
        hint = ""
        if pa.types.is_floating(given) and pa.types.is_integer(wanted):
            hint = "; " + _HINTS["float->int"]
        elif pa.types.is_string(given) and (
            pa.types.is_integer(wanted) or pa.types.is_floating(wanted)
        ):
            hint = "; " + _HINTS["string->number"]
        raise InvalidArgument(
            f"column {name!r} has dtype {given}, which cannot be cast safely to its declared "
            f"dtype {wanted}{hint}"
        )
    cast = _checked_cast(col, name, wanted, safe=True)
    if pa.types.is_floating(given) and wanted.bit_width < given.bit_width:
        overflow = pc.and_(pc.is_finite(col), pc.is_inf(cast))  # a safe cast lets it through
        if pc.any(overflow).as_py():
            raise InvalidArgument(
                f"column {name!r} has values beyond the range of its declared dtype {wanted}"
            )
    return cast


def _checked_cast(
    col: pa.ChunkedArray, name: str, wanted: pa.DataType, *, safe: bool
) -> pa.ChunkedArray:
    if col.type == wanted:
        return col
    try:
        return col.cast(wanted, safe=safe)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidArgument(
            f"column {name!r} ({col.type}) does not fit its declared dtype {wanted}: {e}"
        ) from e
