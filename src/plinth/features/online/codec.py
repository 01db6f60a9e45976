"""What both online stores share: table names, key encoding and the row value format.

A key tuple becomes one text key: each part as JSON (``1001``, ``"abc"``), several parts as a
JSON array (``[1001,"abc"]``). A row's feature values become one msgpack array: first the
feature names as one JSON string (the row's layout, parsed once per read and layout), then
the values; timestamps as msgpack timestamps (read back UTC-aware), dates as an extension
type. Rows carry their own layout, so rows written before a feature was added still read.
Event times are integer microseconds since the epoch, UTC.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any, cast

import msgpack
import pyarrow as pa
import pyarrow.compute as pc

from plinth.errors import InvalidArgument

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE_EXT = 1  # msgpack extension code: a date as its proleptic Gregorian ordinal (int32)
_ORDINAL = struct.Struct("<i")
_unpackb = msgpack.unpackb
BATCH_ROWS = 65_536  # rows converted at a time, to bound memory on large writes


def check_table(table: str) -> str:
    """``table`` itself if it is a safe identifier; it is interpolated into SQL and key names."""
    if isinstance(table, str) and table in _valid_tables:  # a lookup checks it every call
        return table
    if not isinstance(table, str) or not _TABLE.fullmatch(table):
        raise InvalidArgument(
            f"online table name {table!r} is not valid: use letters, digits and underscores, "
            "starting with a letter or underscore, at most 128 characters"
        )
    if len(_valid_tables) > 4096:
        _valid_tables.clear()
    _valid_tables.add(table)
    return table


_valid_tables: set[str] = set()


def micros_to_datetime(micros: int) -> datetime:
    return _EPOCH + timedelta(0, 0, micros)  # positional: a third faster than microseconds=


# -- keys ----------------------------------------------------------------------------------


def encode_key(key: tuple[Any, ...]) -> str:
    """The text key of one key tuple, equal to what ``encode_keys`` gives for the same values."""
    if len(key) == 1:
        value = key[0]
        return int.__repr__(value) if type(value) is int else _key_part(value)
    return "[" + ",".join(map(_key_part, key)) + "]"


def _key_part(value: Any) -> str:
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value)  # not repr(): an IntEnum must encode as its number
    if value is None:
        return "null"  # matches nothing: stored keys are never null
    if hasattr(value, "item") and not isinstance(value, bool):  # a NumPy scalar
        item = value.item()
        if isinstance(item, int | str) and not isinstance(item, bool):
            return _key_part(item)
    raise InvalidArgument(
        f"online keys are integers or strings; got {value!r} ({type(value).__name__})"
    )


def encode_key_rows(key_rows: Sequence[tuple[Any, ...]]) -> list[str]:
    """``encode_key`` of each key tuple; a batch of one-part integer or string keys is
    encoded in one pass in C (the common lookup)."""
    if set(map(len, key_rows)) == {1}:
        values = list(map(_first, key_rows))
        kinds = set(map(type, values))
        if kinds == {int}:
            return list(map(int.__repr__, values))
        if kinds == {str}:
            return list(map(encode_basestring_ascii, values))
    return list(map(encode_key, key_rows))


_first = itemgetter(0)


def encode_keys(rows: pa.RecordBatch, keys: list[str]) -> list[str]:
    parts = [_key_column(rows.column(name)) for name in keys]
    if len(parts) == 1:
        return parts[0]
    return ["[" + ",".join(values) + "]" for values in zip(*parts, strict=True)]


def _key_column(column: pa.Array) -> list[str]:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_integer(column.type):
        return list(map(int.__repr__, column.to_pylist()))
    return list(map(encode_basestring_ascii, column.to_pylist()))


# -- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedBatch:
    keys: list[str]
    event_times: list[int]
    values: list[bytes]


def encode_rows(
    rows: pa.Table, keys: list[str], event_time: str, batch_rows: int = BATCH_ROWS
) -> Iterator[EncodedBatch]:
    """``rows`` as text keys, event times in microseconds and packed feature values, in
    batches; every column that is neither a key nor the event time is a feature. The whole
    table is checked before the first batch, so bad input writes nothing."""
    features = _check_rows(rows, keys, event_time)
    layout = json.dumps(features, separators=(",", ":"))
    pack = msgpack.Packer(datetime=True, default=_pack_default).pack
    for batch in rows.to_batches(max_chunksize=batch_rows):
        columns = [_feature_values(batch.column(name)) for name in features]
        yield EncodedBatch(
            encode_keys(batch, keys),
            _event_micros(batch.column(event_time)),
            [pack((layout, *values)) for values in zip(*columns, strict=True)]
            if columns
            else [pack((layout,))] * batch.num_rows,
        )


def _check_rows(rows: pa.Table, keys: list[str], event_time: str) -> list[str]:
    """The feature columns of ``rows``, once its keys and event time are found valid."""
    names = rows.column_names
    if len(set(names)) != len(names):
        raise InvalidArgument(f"online rows have duplicate column names: {names}")
    if not keys:
        raise InvalidArgument("an online table needs at least one key column")
    missing = [name for name in [*keys, event_time] if name not in names]
    if missing:
        raise InvalidArgument(f"online rows lack the columns {missing}; they have {names}")
    if event_time in keys:
        raise InvalidArgument(f"the event time column {event_time!r} cannot also be a key")
    schema = rows.schema
    for name in keys:
        kind = _value_type(schema.field(name).type)
        if not (pa.types.is_integer(kind) or _is_string(kind)):
            raise InvalidArgument(
                f"key column {name!r} has type {kind}: online keys are integers or strings"
            )
    if not pa.types.is_timestamp(schema.field(event_time).type):
        raise InvalidArgument(
            f"event time column {event_time!r} has type {schema.field(event_time).type}, "
            "not timestamp"
        )
    for name in [*keys, event_time]:
        nulls = rows.column(name).null_count
        if nulls:
            raise InvalidArgument(
                f"column {name!r} has {nulls} null values; keys and event times cannot be null"
            )
    features = [name for name in names if name not in keys and name != event_time]
    for name in features:
        kind = _value_type(schema.field(name).type)
        if not any(check(kind) for check in _FEATURE_TYPES):
            raise InvalidArgument(
                f"feature column {name!r} has type {kind}: online stores hold booleans, "
                "integers, floats, strings, timestamps and dates"
            )
    return features


_STRING_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
_FEATURE_TYPES = (
    pa.types.is_boolean,
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_null,
    pa.types.is_date,
    pa.types.is_timestamp,
    *_STRING_TYPES,
)


def _value_type(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _event_micros(column: pa.Array) -> list[int]:
    # a timestamp without a time zone is taken as UTC; nanoseconds are truncated
    micros = column.cast(pa.timestamp("us", column.type.tz), safe=False)
    values: list[int] = micros.cast(pa.int64()).to_pylist()
    return values


def _feature_values(column: pa.Array) -> list[Any]:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("us", "UTC"), safe=False)
    values: list[Any] = column.to_pylist()
    return values


def _is_string(kind: pa.DataType) -> bool:
    return any(check(kind) for check in _STRING_TYPES)


def _pack_default(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return msgpack.ExtType(_DATE_EXT, _ORDINAL.pack(value.toordinal()))
    raise TypeError(f"cannot store {value!r} in an online store")


def _unpack_ext(code: int, data: bytes) -> Any:
    if code == _DATE_EXT:
        return date.fromordinal(_ORDINAL.unpack(data)[0])
    return msgpack.ExtType(code, data)


def fresh_only(
    micros: Sequence[int | None], packed: Sequence[bytes | None], not_before: int | None
) -> Sequence[bytes | None]:
    """``packed`` with None in place of the rows older than ``not_before``."""
    if not_before is None:
        return packed
    times = [m for m in micros if m is not None] if None in micros else micros
    if not times or min(cast("Sequence[int]", times)) >= not_before:
        return packed
    return [None if m is None or m < not_before else p for m, p in zip(micros, packed, strict=True)]


def empty_columns(features: list[str], n: int) -> dict[str, list[Any]]:
    return {name: [None] * n for name in features}


def reader_for(features: list[str]) -> ColumnReader:
    """The (shared) reader of ``features``: its per-layout pickers are made once."""
    key = tuple(features)
    reader = _readers.get(key)
    if reader is None:
        if len(_readers) > 4096:
            _readers.clear()
        reader = _readers[key] = ColumnReader(list(features))
    return reader


class ColumnReader:
    """Reads ``features`` out of packed rows into one column per feature: None for a row
    that is None (an unknown key, a stale row) and for a feature a row lacks."""

    def __init__(self, features: list[str]) -> None:
        self.features = features
        self._positions: dict[str, list[int | None]] = {}  # by layout
        self._pickers: dict[str, Callable[[list[Any]], tuple[Any, ...]]] = {}

    def columns(self, packed: Sequence[bytes | None]) -> list[list[Any]]:
        """One list per feature, one value per entry of ``packed``, in order.

        All rows are decoded in one msgpack call (an array header before the joined rows)
        and turned into columns with ``zip``: no Python loop per row unless some rows are
        None or rows of several layouts (written before and after a feature was added) mix.
        """
        n, width = len(packed), len(self.features)
        if n == 1 and packed[0] is not None:  # one entity: the most common lookup
            row = _unpackb(packed[0], timestamp=3, ext_hook=_unpack_ext)
            return [[None if i is None else row[i]] for i in self._positions_in(row[0])]
        blobs = [p for p in packed if p is not None] if None in packed else packed
        if not blobs or not width:
            return [[None] * n for _ in range(width)]
        rows: list[list[Any]] = _unpackb(
            _array_header(len(blobs)) + b"".join(cast("list[bytes]", blobs)),
            timestamp=3,
            ext_hook=_unpack_ext,
        )
        layouts = set(map(_first, rows))
        if len(layouts) == 1:
            positions = self._positions_in(rows[0][0])
            null: list[Any] | tuple[Any, ...] = [None] * len(rows[0])
        else:
            rows = [self._picker(row[0])(row) for row in rows]  # type: ignore[misc]
            positions = list(range(width))
            null = (None,) * width
        if len(blobs) < n:
            found = iter(rows)
            rows = [null if p is None else next(found) for p in packed]  # type: ignore[misc]
        transposed = list(zip(*rows, strict=True))
        return [[None] * n if i is None else list(transposed[i]) for i in positions]

    def _positions_in(self, layout: str) -> list[int | None]:
        positions = self._positions.get(layout)
        if positions is None:
            where = {name: i for i, name in enumerate(json.loads(layout), start=1)}
            positions = self._positions[layout] = [where.get(f) for f in self.features]
        return positions

    def _picker(self, layout: str) -> Callable[[list[Any]], tuple[Any, ...]]:
        """A function from a row of ``layout`` to the values of ``features``, in order."""
        pick = self._pickers.get(layout)
        if pick is None:
            positions = self._positions_in(layout)

            def pick(row: list[Any]) -> tuple[Any, ...]:
                return tuple(None if i is None else row[i] for i in positions)

            self._pickers[layout] = pick
        return pick


_readers: dict[tuple[str, ...], ColumnReader] = {}
_ARRAY16, _ARRAY32 = struct.Struct(">BH"), struct.Struct(">BI")


def _array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return _ARRAY16.pack(0xDC, n)
    return _ARRAY32.pack(0xDD, n)
