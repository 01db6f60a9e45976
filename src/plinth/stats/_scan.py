"""One column's chunk (an Arrow array) -> its ColumnProfile, merged into a running one."""

from __future__ import annotations

import math
import threading
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plinth.errors import InvalidArgument
from plinth.stats import _sketch
from plinth.stats._histogram import choose_width, histogram_of
from plinth.stats._model import MAX_CATEGORIES, MAX_TRACKED, ColumnProfile, Kind

_SECONDS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
_local = threading.local()


def scratch(name: str, n: int, dtype: type[np.generic]) -> np.ndarray:
    """A reusable per-thread buffer: fresh large arrays cost page faults on every chunk."""
    buffers: dict[str, np.ndarray] = _local.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or len(buffer) < n or buffer.dtype != dtype:
        buffer = buffers[name] = np.empty(max(n, 1 << 17), dtype=dtype)
    return buffer[:n]


def kind_of(dtype: pa.DataType) -> Kind:
    types = pa.types
    if types.is_integer(dtype) or types.is_floating(dtype) or types.is_decimal(dtype):
        return "numeric"
    if (
        types.is_string(dtype)
        or types.is_large_string(dtype)
        or types.is_dictionary(dtype)
        or types.is_boolean(dtype)
        or _is_string_view(dtype)
    ):
        return "categorical"
    if types.is_timestamp(dtype) or types.is_date(dtype):
        return "temporal"
    return "other"


def _is_string_view(dtype: pa.DataType) -> bool:
    return bool(getattr(pa.types, "is_string_view", lambda _: False)(dtype))


def release() -> None:
    """Drop this thread's scratch buffers."""
    _local.__dict__.pop("buffers", None)


class Scanner:
    """The running profile of one column, fed chunk by chunk (not thread-safe: one chunk
    at a time; different columns' scanners run in parallel)."""

    def __init__(self, name: str, dtype: pa.DataType, sample_size: int, seed: int) -> None:
        self.dtype = dtype
        self.kind = kind_of(dtype)
        self.sample_size = sample_size
        self.rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        self.profile = ColumnProfile(name, self.kind, str(dtype), sample_size=sample_size)
        if self.kind != "other":
            self.profile.values = {}  # nothing seen yet: exactly no values
        self.width: float | None = None

    def add(self, array: pa.Array | pa.ChunkedArray) -> None:
        chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
        for chunk in chunks:
            if len(chunk):
                try:
                    self._add(chunk)
                except (ArithmeticError, ValueError, TypeError) as e:  # Arrow's errors too
                    raise InvalidArgument(
                        f"column {self.profile.name!r} ({self.dtype}) could not be "
                        f"profiled: {type(e).__name__}: {e}"
                    ) from e

    def _add(self, chunk: pa.Array) -> None:
        self.profile = self.profile.merge(self._chunk(chunk), self.rng)
        if self.profile.histogram is not None:  # merging may have coarsened it
            self.width = self.profile.histogram.width

    def _chunk(self, array: pa.Array) -> ColumnProfile:
        part = ColumnProfile(
            self.profile.name, self.kind, str(self.dtype), count=len(array),
            nulls=array.null_count, sample_size=self.sample_size,
        )  # fmt: skip
        if self.kind == "other":
            return part
        if part.valid == 0:
            part.values = {}
            return part
        if array.null_count:
            array = pc.drop_null(array)
        if self.kind == "categorical":
            if _is_string_view(array.type):  # fewer kernels take views
                array = array.cast(pa.large_string())
            self._categorical(part, array)
        else:
            self._numeric(part, array)
        return part

    def _categorical(self, part: ColumnProfile, array: pa.Array) -> None:
        keys, counts = _value_counts(array)
        if len(keys) <= MAX_CATEGORIES:
            part.values = dict(zip(keys.to_pylist(), counts.tolist(), strict=True))
        else:
            part.sketch = _sketch.update(None, _sketch.hash_strings(keys))
            top = np.argpartition(counts, -MAX_CATEGORIES)[-MAX_CATEGORIES:]
            part.values = dict(zip(keys.take(top).to_pylist(), counts[top].tolist(), strict=True))
            part.other = part.valid - int(counts[top].sum())
        k = min(self.sample_size, len(array))
        if k:
            picked = array.take(self.rng.choice(len(array), k, replace=False))
            part.sample = np.array(_texts(picked), dtype=object)

    def _numeric(self, part: ColumnProfile, array: pa.Array) -> None:
        numbers = _floats(array)
        total = float(numbers.sum())
        finite = numbers
        if not math.isfinite(total):  # NaN or infinities present (or an overflowing sum)
            nan = np.isnan(numbers)
            if nan.any():
                part.nulls += int(nan.sum())
                numbers = numbers[~nan]
            ok = np.isfinite(numbers)
            part.infinite = len(numbers) - int(ok.sum())
            finite = numbers[ok] if part.infinite else numbers
            total = float(finite.sum())
        self._sample(part, numbers)
        if len(finite) == 0:
            self._track(part, array, numbers, None)
            return
        part.min, part.max = float(finite.min()), float(finite.max())
        if part.min == part.max:
            part.mean, part.m2 = part.min, 0.0
        else:
            mean = total / len(finite) if math.isfinite(total) else float(np.mean(finite / 2) * 2)
            part.mean = min(max(mean, part.min), part.max)
            deviation = scratch("work", len(finite), np.float64)
            np.subtract(finite, part.mean, out=deviation)
            with np.errstate(over="ignore"):  # beyond ~1e154 the squares overflow: m2 inf
                np.square(deviation, out=deviation)
            part.m2 = float(deviation.sum())
        if self.width is None:
            self.width = self._first_width(part, finite)
        n = len(finite)
        part.histogram = histogram_of(
            finite, self.width, part.min, part.max,
            scratch("work", n, np.float64), scratch("index", n, np.intp),
        )  # fmt: skip
        self.width = part.histogram.width
        self._track(part, array, numbers, part.histogram.counts)

    def _first_width(self, part: ColumnProfile, finite: np.ndarray) -> float:
        sample = part.sample.astype(np.float64) if part.sample is not None else finite
        sample = sample[np.isfinite(sample)]
        q1, q3 = np.percentile(sample, [25, 75]) if len(sample) else (0.0, 0.0)
        std = math.sqrt(part.m2 / len(finite)) if len(finite) > 1 else 0.0
        assert part.min is not None and part.max is not None
        integer = pa.types.is_integer(self.dtype)
        return choose_width([float(q3 - q1), std, part.max - part.min], part.min, part.max, integer)

    def _sample(self, part: ColumnProfile, numbers: np.ndarray) -> None:
        k = min(self.sample_size, len(numbers))
        part.sample = numbers[self.rng.choice(len(numbers), k, replace=False)] if k else None

    def _track(
        self, part: ColumnProfile, array: pa.Array, numbers: np.ndarray, bins: np.ndarray | None
    ) -> None:
        """Exact value counts while this column has at most MAX_TRACKED distinct values;
        the first chunk with more (its non-empty bins alone may show it) stops tracking."""
        if len(numbers) == 0:
            part.values = {}
            return
        tracking = self.profile.values is not None
        few = bins is None or np.count_nonzero(bins) <= MAX_TRACKED
        if tracking and few:
            keys, counts = _numeric_counts(numbers)
            if len(keys) <= MAX_TRACKED:
                part.values = dict(zip(keys, counts.tolist(), strict=True))
                return
        hashes = _sketch.hash_floats(numbers, out=scratch("work", len(numbers), np.float64))
        part.sketch = _sketch.update(None, _sketch.below(hashes, self.profile.sketch))


def _floats(array: pa.Array) -> np.ndarray:
    """Non-null values as float64 (temporal: epoch seconds)."""
    dtype = array.type
    seconds: np.ndarray
    if pa.types.is_timestamp(dtype):
        seconds = array.cast(pa.int64()).to_numpy() / _SECONDS[dtype.unit]
        return seconds
    if pa.types.is_date32(dtype):
        seconds = array.cast(pa.int32()).to_numpy().astype(np.float64) * 86_400.0
        return seconds
    if pa.types.is_date64(dtype):
        seconds = array.cast(pa.int64()).to_numpy() / 1e3
        return seconds
    if pa.types.is_float64(dtype):
        return np.asarray(array.to_numpy(zero_copy_only=False))
    if pa.types.is_floating(dtype) or pa.types.is_integer(dtype):
        numbers = scratch("numbers", len(array), np.float64)
        np.copyto(numbers, array.to_numpy(zero_copy_only=False), casting="unsafe")
        return numbers
    return np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False))


def _numeric_counts(numbers: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Distinct non-NaN values with their counts, keyed by ``value_key``: one key per
    number whatever its type (int 1, float 1.0, decimal 1.00 and -0.0 / 0.0 alike)."""
    counted = pc.value_counts(pa.array(numbers))
    values: dict[str, int] = {}
    numbers_seen = counted.field("values").to_numpy()
    for number, n in zip(numbers_seen.tolist(), counted.field("counts").to_pylist(), strict=True):
        key = value_key(number)
        values[key] = values.get(key, 0) + n
    return list(values), np.fromiter(values.values(), dtype=np.int64, count=len(values))


def value_key(number: float) -> str:
    """The key of a numeric value in ``ColumnProfile.values``: repr of the float, -0.0 as 0.0."""
    return repr(float(number) + 0.0)


def _value_counts(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Distinct values of a non-null categorical array as strings, with their counts."""
    if pa.types.is_dictionary(array.type):
        counts = np.bincount(
            array.indices.to_numpy(zero_copy_only=False), minlength=len(array.dictionary)
        )
        used = np.flatnonzero(counts)
        return _as_text(array.dictionary.take(pa.array(used))), counts[used]
    counted = pc.value_counts(array)
    return _as_text(counted.field("values")), counted.field("counts").to_numpy()


def _as_text(values: pa.Array) -> pa.Array:
    if pa.types.is_boolean(values.type):
        return pc.if_else(values, "true", "false")
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    return pc.cast(values, pa.string())


def _texts(values: pa.Array) -> list[Any]:
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return list(_as_text(values).to_pylist())
