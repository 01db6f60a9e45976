"""Column statistics of an Arrow table, all columns in ONE DuckDB query.

Per column: ``count`` (rows, nulls included), ``nulls`` (NaN counts as null), ``distinct``
(exact up to ``EXACT_DISTINCT_MAX_ROWS`` rows, beyond that DuckDB's HyperLogLog estimate,
typically within a few percent); for numeric columns mean, std (sample, ddof=1), min, max
and deciles (0%, 10%, ..., 100%, linear interpolation as numpy's default); for timestamps,
dates, strings and booleans min and max. Columns of other types get count and nulls only.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from plinth.errors import InvalidArgument
from plinth.features import duck
from plinth.features.types import ColumnStatistics

EXACT_DISTINCT_MAX_ROWS = 100_000  # exact counting costs ~0.25 s per 1M-row column
DECILES = [i / 10 for i in range(11)]
_PER_COLUMN = 8  # count, nulls, distinct, mean, std, min, max, deciles


def compute(table: pa.Table, columns: list[str]) -> list[ColumnStatistics]:
    unknown = [c for c in columns if c not in table.column_names]
    if unknown:
        raise InvalidArgument(
            f"cannot compute statistics of column {unknown[0]!r}: the table has {table.column_names}"
        )
    if not columns:
        return []
    exact = table.num_rows <= EXACT_DISTINCT_MAX_ROWS
    select = ", ".join(
        ", ".join(_expressions(name, table.schema.field(name).type, exact)) for name in columns
    )
    with duck.cursor() as con:
        con.register("data", table.select(columns))
        row = con.execute(f"SELECT {select} FROM data").fetchone()
    assert row is not None  # an aggregate query always returns one row
    return [
        _statistics(name, row[i * _PER_COLUMN : (i + 1) * _PER_COLUMN])
        for i, name in enumerate(columns)
    ]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _expressions(name: str, kind: pa.DataType, exact: bool) -> list[str]:
    value = _quote(name)
    if pa.types.is_floating(kind):
        value = f"(CASE WHEN isnan({value}) THEN NULL ELSE {value} END)"
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    ordered = numeric or any(
        check(kind)
        for check in (
            pa.types.is_timestamp,
            pa.types.is_date,
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_boolean,
        )
    )
    distinct = f"count(DISTINCT {value})" if exact else f"approx_count_distinct({value})"
    number = f"CAST({value} AS DOUBLE)"
    deciles = ", ".join(str(q) for q in DECILES)
    return [
        "count(*)",
        f"count(*) - count({value})",
        distinct if ordered else "NULL",
        f"avg({number})" if numeric else "NULL",
        f"stddev_samp({number})" if numeric else "NULL",
        f"min({value})" if ordered else "NULL",
        f"max({value})" if ordered else "NULL",
        f"quantile_cont({number}, [{deciles}])" if numeric else "NULL",
    ]


def _statistics(name: str, values: tuple[Any, ...]) -> ColumnStatistics:
    count, nulls, distinct, mean, std, low, high, deciles = values
    return ColumnStatistics(
        column=name,
        count=int(count),
        nulls=int(nulls),
        distinct=None if distinct is None else int(distinct),
        mean=mean,
        std=std,
        min=low,
        max=high,
        deciles=[float(d) for d in deciles or []],
    )
