"""Expectations: rules a write must pass, each judged over the whole Arrow table at once.

Row rules (not_null, unique, range, allowed_values, regex) count the rows that break them
and show up to five of those rows. Aggregate rules (row_count, mean, std, quantile) judge
the table as a whole: their ``failed_rows`` is 0 and ``detail`` gives the observed value.

Missing values: not_null counts nulls and floating-point NaN; the other rules skip them
(a null neither matches nor breaks a range, set or pattern), and unique ignores rows where
any of its columns is null, as SQL does. Bounds are inclusive; std is the sample standard
deviation (ddof=1); quantiles interpolate linearly, as numpy does by default; regex searches
(anchor it with ``^...$`` to match whole values) with RE2 syntax.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plinth.errors import InvalidArgument
from plinth.features.types import Expectation, ExpectationResult

SAMPLE_ROWS = 5
_ROW_INDEX = "__plinth_row__"
_BOUNDED = ("range", "row_count", "mean", "std", "quantile")
_NUMERIC = ("range", "mean", "std", "quantile")
_NEEDS_COLUMN = ("not_null", "range", "allowed_values", "regex", "mean", "std", "quantile")


def check_expectation(e: Expectation) -> None:
    """Refuse an expectation that could never be judged (checked when a suite is attached)."""
    if e.kind not in _CHECKS:
        raise InvalidArgument(f"unknown expectation kind {e.kind!r}; use one of {list(_CHECKS)}")
    if e.kind in _NEEDS_COLUMN and not e.column:
        raise InvalidArgument(f"expectation {e.kind} needs a column")
    if e.kind == "unique" and not (e.columns or e.column):
        raise InvalidArgument("expectation unique needs a column or columns")
    if e.kind in _BOUNDED:
        if e.min is None and e.max is None:
            raise InvalidArgument(f"expectation {e.kind} needs min, max or both")
        if e.min is not None and e.max is not None and e.min > e.max:
            raise InvalidArgument(f"expectation {e.kind} has min {e.min} above max {e.max}")
    if e.kind == "quantile" and (e.q is None or not 0 <= e.q <= 1):
        raise InvalidArgument(f"expectation quantile needs q between 0 and 1, not {e.q}")
    if e.kind == "allowed_values" and not e.values:
        raise InvalidArgument("expectation allowed_values needs a non-empty list of values")
    if e.kind == "regex":
        if not e.pattern:
            raise InvalidArgument("expectation regex needs a pattern")
        try:  # Arrow's engine (RE2) judges the data, so it judges the pattern too
            pc.match_substring_regex(pa.array([""]), e.pattern)
        except pa.ArrowInvalid as err:
            raise InvalidArgument(f"regex {e.pattern!r} is not valid RE2 syntax: {err}") from err


def validate(table: pa.Table, expectations: list[Expectation]) -> list[ExpectationResult]:
    """One result per expectation, in order. A malformed expectation, or one naming a
    column the table lacks or of the wrong type, raises before any is judged."""
    for e in expectations:
        check_expectation(e)
        _check_columns(table, e)
    return [_CHECKS[e.kind](table, e) for e in expectations]


def _columns(e: Expectation) -> list[str]:
    if e.kind == "unique":
        return list(e.columns) or [str(e.column)]
    return [e.column] if e.column else []


def _check_columns(table: pa.Table, e: Expectation) -> None:
    for name in _columns(e):
        if name not in table.column_names:
            raise InvalidArgument(
                f"expectation {e.kind} names column {name!r}, which the data does not have; "
                f"it has {table.column_names}"
            )
    kind = table.schema.field(e.column).type if e.column else None
    if e.kind in _NUMERIC and not _is_numeric(kind):
        raise InvalidArgument(
            f"expectation {e.kind} needs a numeric column; {e.column!r} is {kind}"
        )
    if e.kind == "regex" and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InvalidArgument(f"expectation regex needs a string column; {e.column!r} is {kind}")


def _is_numeric(kind: pa.DataType | None) -> bool:
    return kind is not None and (
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def _values(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """NaN becomes null: both mean 'no value'; decimals compare as floats."""
    if pa.types.is_decimal(col.type):
        return col.cast(pa.float64())
    if pa.types.is_floating(col.type):
        return pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
    return col


# -- row rules ---------------------------------------------------------------------------


def _rows(
    table: pa.Table, e: Expectation, failing: pa.ChunkedArray, what: str
) -> ExpectationResult:
    failing = pc.fill_null(failing, False)
    failed = int(pc.sum(failing).as_py() or 0)
    sample = []
    if failed:
        first = pc.indices_nonzero(failing).slice(0, SAMPLE_ROWS)
        sample = table.take(first).to_pylist()
    detail = f"{failed} of {table.num_rows} rows {what}"
    return ExpectationResult(e, failed == 0, failed, detail, sample)


def _not_null(table: pa.Table, e: Expectation) -> ExpectationResult:
    col = table[e.column]
    return _rows(table, e, pc.is_null(col, nan_is_null=True), f"are null in {e.column!r}")


def _range(table: pa.Table, e: Expectation) -> ExpectationResult:
    col = _values(table[e.column])
    false = pa.scalar(False)
    below = pc.less(col, e.min) if e.min is not None else false
    above = pc.greater(col, e.max) if e.max is not None else false
    bounds = f"[{'-inf' if e.min is None else e.min}, {'inf' if e.max is None else e.max}]"
    return _rows(table, e, pc.or_(below, above), f"have {e.column!r} outside {bounds}")


def _allowed_values(table: pa.Table, e: Expectation) -> ExpectationResult:
    col = table[e.column]
    try:
        allowed = pa.array(e.values, type=col.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
        raise InvalidArgument(
            f"allowed values {e.values!r} do not fit column {e.column!r} ({col.type}): {err}"
        ) from err
    outside = pc.and_(pc.invert(pc.is_in(col, value_set=allowed)), pc.is_valid(col))
    return _rows(table, e, outside, f"have {e.column!r} not in {e.values!r}")


def _regex(table: pa.Table, e: Expectation) -> ExpectationResult:
    matches = pc.match_substring_regex(table[e.column], str(e.pattern))
    return _rows(table, e, pc.invert(matches), f"have {e.column!r} not matching /{e.pattern}/")


def _unique(table: pa.Table, e: Expectation) -> ExpectationResult:
    columns = _columns(e)
    rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
    keyed = table.select(columns).append_column(_ROW_INDEX, rows).drop_null()
    counts = keyed.group_by(columns).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts["count_all"], 1)).select(columns)
    detail = f"rows share their ({', '.join(columns)}) with another row"
    if repeated.num_rows == 0:
        return ExpectationResult(e, True, 0, f"0 of {table.num_rows} {detail}")
    offending = keyed.join(repeated, keys=columns, join_type="inner")[_ROW_INDEX]
    first = pc.sort_indices(offending)[:SAMPLE_ROWS]
    sample = table.take(pc.take(offending, first)).to_pylist()
    failed = len(offending)
    return ExpectationResult(e, False, failed, f"{failed} of {table.num_rows} {detail}", sample)


# -- aggregate rules ---------------------------------------------------------------------


def _judged(e: Expectation, name: str, value: float | None) -> ExpectationResult:
    if value is None:
        return ExpectationResult(e, False, 0, f"{name} has no values to judge")
    low, high = e.min, e.max
    if low is not None and value < low:
        return ExpectationResult(e, False, 0, f"{name} is {value}, below the minimum {low}")
    if high is not None and value > high:
        return ExpectationResult(e, False, 0, f"{name} is {value}, above the maximum {high}")
    return ExpectationResult(e, True, 0, f"{name} is {value}, within bounds")


def _as_float(scalar: pa.Scalar) -> float | None:
    value = scalar.as_py()
    return None if value is None else float(value)


def _row_count(table: pa.Table, e: Expectation) -> ExpectationResult:
    return _judged(e, "row count", table.num_rows)


def _mean(table: pa.Table, e: Expectation) -> ExpectationResult:
    mean = _as_float(pc.mean(_values(table[e.column])))
    return _judged(e, f"mean of {e.column!r}", mean)


def _std(table: pa.Table, e: Expectation) -> ExpectationResult:
    std = _as_float(pc.stddev(_values(table[e.column]), ddof=1))
    return _judged(e, f"std of {e.column!r}", std)


def _quantile(table: pa.Table, e: Expectation) -> ExpectationResult:
    values = pc.quantile(_values(table[e.column]), q=e.q, interpolation="linear")
    value = _as_float(values[0]) if len(values) else None
    return _judged(e, f"quantile {e.q} of {e.column!r}", value)


_CHECKS: dict[str, Callable[[pa.Table, Expectation], ExpectationResult]] = {
    "not_null": _not_null,
    "unique": _unique,
    "range": _range,
    "allowed_values": _allowed_values,
    "regex": _regex,
    "row_count": _row_count,
    "mean": _mean,
    "std": _std,
    "quantile": _quantile,
}
KINDS = tuple(_CHECKS)
