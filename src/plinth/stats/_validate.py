"""Checked reading of a column profile's dict: profiles arrive over HTTP from remote
clients, so every field is validated before it reaches numpy (a forged width, offset or
zlib stream must be a named InvalidArgument, not a crash, a huge allocation or a wrong
verdict)."""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from typing import Any

import numpy as np

from plinth.errors import InvalidArgument
from plinth.stats import _sketch
from plinth.stats._histogram import MAX_BINS, Histogram

_INT64 = 2**63
_MAX_SAMPLE = 10_000_000  # far above any sample_size a profile is made with


class _Field:
    """Reads the fields of one column's dict; errors name the column and the field."""

    def __init__(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise InvalidArgument(f"a column profile must be an object, not {type(data).__name__}")
        self.data = data
        self.name = data.get("name")
        if not isinstance(self.name, str):
            raise InvalidArgument(f"a column profile's 'name' must be a string, not {self.name!r}")

    def fail(self, field: str, why: str) -> InvalidArgument:
        return InvalidArgument(f"column {self.name!r}: profile field '{field}' {why}")

    def count(self, field: str, default: int | None = None) -> int:
        value = self.data.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(field, f"must be a non-negative integer, not {value!r}")
        if value >= _INT64:
            raise self.fail(field, f"is too large: {value}")
        return value

    def number(self, field: str) -> float | None:
        value = self.data.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(field, f"must be a number or null, not {value!r}")
        if not math.isfinite(float(value)):
            raise self.fail(field, f"must be finite, not {value!r}")
        return float(value)

    def text(self, field: str) -> str:
        value = self.data.get(field)
        if not isinstance(value, str):
            raise self.fail(field, f"must be a string, not {value!r}")
        return value

    def histogram(self) -> Histogram | None:
        data = self.data.get("histogram")
        if data is None:
            return None
        if not isinstance(data, dict):
            raise self.fail("histogram", "must be an object or null")
        width = data.get("width")
        if isinstance(width, bool) or not isinstance(width, (int, float)):
            raise self.fail("histogram.width", f"must be a number, not {width!r}")
        width = float(width)
        if not (math.isfinite(width) and width > 0 and math.frexp(width)[0] == 0.5):
            raise self.fail("histogram.width", f"must be a positive power of two, not {width!r}")
        offset = data.get("offset")
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise self.fail("histogram.offset", f"must be an integer, not {offset!r}")
        counts = self._counts(data.get("counts"))
        if not -_INT64 <= offset <= _INT64 - 1 - len(counts):
            raise self.fail("histogram.offset", f"is outside int64: {offset}")
        return Histogram(width, offset, counts)

    def _counts(self, counts: Any) -> np.ndarray:
        field = "histogram.counts"
        if isinstance(counts, str):
            packed = self._b64(field, counts)
            inflate = zlib.decompressobj()
            try:  # bounded: a forged stream cannot inflate beyond MAX_BINS counts
                raw = inflate.decompress(packed, MAX_BINS * 8 + 1)
            except zlib.error as e:
                raise self.fail(field, f"is not zlib data: {e}") from e
            if len(raw) > MAX_BINS * 8 or len(raw) % 8:
                raise self.fail(field, f"must hold at most {MAX_BINS} int64 counts")
            array = np.frombuffer(raw, dtype="<i8").astype(np.int64)
        elif isinstance(counts, list):
            if len(counts) > MAX_BINS:
                raise self.fail(field, f"has {len(counts)} bins, more than {MAX_BINS}")
            if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
                raise self.fail(field, "must be integers")
            try:
                array = np.asarray(counts, dtype=np.int64)
            except OverflowError as e:
                raise self.fail(field, "has a count beyond int64") from e
        else:
            raise self.fail(field, "must be a list of integers or base64 of zlib int64s")
        if len(array) > MAX_BINS:
            raise self.fail(field, f"has {len(array)} bins, more than {MAX_BINS}")
        if (array < 0).any():
            raise self.fail(field, "must not be negative")
        return array

    def values(self, kind: str, limit: int) -> dict[str, int] | None:
        values = self.data.get("values")
        if values is None:
            return None
        if not isinstance(values, dict):
            raise self.fail("values", "must be an object or null")
        if len(values) > limit:
            raise self.fail("values", f"has {len(values)} values, more than {limit}")
        for key, n in values.items():
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < _INT64:
                raise self.fail("values", f"has count {n!r} for {key!r}, not a count")
            if kind != "categorical" and not _is_float(key):
                raise self.fail("values", f"has key {key!r}, which is not a number")
        return dict(values)

    def sample(self, kind: str, size: int) -> np.ndarray | None:
        data = self.data.get("sample")
        if data is None:
            return None
        if kind == "categorical":
            if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
                raise self.fail("sample", "must be a list of strings")
            sample = np.array(data, dtype=object)
        else:
            if not isinstance(data, str):
                raise self.fail("sample", "must be base64 of float64s")
            sample = self._array("sample", data, np.float64, size)
        if len(sample) > size:
            raise self.fail("sample", f"holds {len(sample)} values, more than sample_size {size}")
        return sample

    def sketch(self) -> np.ndarray | None:
        data = self.data.get("sketch")
        if data is None:
            return None
        if not isinstance(data, str):
            raise self.fail("sketch", "must be base64 of uint64 hashes")
        return self._array("sketch", data, np.uint64, _sketch.K)

    def _array(self, field: str, text: str, dtype: Any, most: int) -> np.ndarray:
        if len(text) > (most * 8 + 2) // 3 * 4 + 4:
            raise self.fail(field, f"holds more than {most} values")
        raw = self._b64(field, text)
        if len(raw) % 8:
            raise self.fail(field, "is not a whole number of 8-byte values")
        return np.frombuffer(raw, dtype=dtype).copy()

    def _b64(self, field: str, text: str) -> bytes:
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise self.fail(field, f"is not base64: {e}") from e


def column_fields(data: Any, kinds: tuple[str, ...], limits: dict[str, int]) -> dict[str, Any]:
    """The keyword arguments of ``ColumnProfile`` from a dict, every field checked."""
    f = _Field(data)
    kind = data.get("kind")
    if kind not in kinds:
        raise f.fail("kind", f"must be one of {list(kinds)}, not {kind!r}")
    count, nulls = f.count("count"), f.count("nulls")
    infinite, other = f.count("infinite", 0), f.count("other", 0)
    if nulls > count or infinite > count - nulls or other > count - nulls:
        raise f.fail("nulls", f"/ infinite / other exceed the count {count}")
    sample_size = f.count("sample_size", 1000)
    if sample_size > _MAX_SAMPLE:
        raise f.fail("sample_size", f"is too large: {sample_size}")
    m2 = data.get("m2", 0.0)
    if m2 is not None and (isinstance(m2, bool) or not isinstance(m2, (int, float)) or m2 < 0):
        raise f.fail("m2", f"must be a non-negative number or null, not {m2!r}")
    fields = {
        "name": f.name,
        "kind": kind,
        "dtype": f.text("dtype"),
        "count": count,
        "nulls": nulls,
        "infinite": infinite,
        "mean": f.number("mean"),
        "m2": math.inf if m2 is None else float(m2),
        "min": f.number("min"),
        "max": f.number("max"),
        "histogram": f.histogram(),
        "values": f.values(kind, limits.get(kind, 0)),
        "other": other,
        "sample": f.sample(kind, sample_size),
        "sample_size": sample_size,
        "sketch": f.sketch(),
    }
    _consistent(f, fields)
    return fields


def _consistent(f: _Field, fields: dict[str, Any]) -> None:
    low, high = fields["min"], fields["max"]
    if low is not None and high is not None and low > high:  # one may be null: overflowed
        raise f.fail("min", f"and 'max' are inconsistent: {low!r}, {high!r}")
    valid = fields["count"] - fields["nulls"]
    histogram, sample, values = fields["histogram"], fields["sample"], fields["values"]
    if sample is not None and len(sample) > valid:
        raise f.fail("sample", f"holds {len(sample)} values, more than the {valid} non-null")
    if values is not None and sum(values.values()) > valid:
        raise f.fail("values", f"count more than the {valid} non-null values")
    if histogram is not None and sum(histogram.counts.tolist()) > valid - fields["infinite"]:
        raise f.fail("histogram", "counts more values than the column's finite ones")


def _is_float(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    try:
        float(key)
    except ValueError:
        return False
    return True
