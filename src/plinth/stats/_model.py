"""Column and table profiles: mergeable statistics of a column (see ``plinth.stats.profile``)."""

from __future__ import annotations

import base64
import heapq
import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np

from plinth.errors import InvalidArgument
from plinth.stats import _sketch
from plinth.stats._histogram import Histogram, refined_cdf, refined_quantile
from plinth.stats._validate import column_fields

Kind = Literal["numeric", "categorical", "temporal", "other"]
KINDS: tuple[Kind, ...] = ("numeric", "categorical", "temporal", "other")
MAX_CATEGORIES = 10_000  # categorical values counted exactly; beyond: the most frequent
MAX_TRACKED = 1000  # numeric distinct values counted exactly; beyond: values=None
DECILES = [i / 10 for i in range(11)]


@dataclass
class ColumnProfile:
    """Mergeable statistics of one column (more in ``plinth.stats.profile``).

    ``count`` rows with nulls; ``nulls`` nulls and NaN; ``infinite`` +-inf; ``mean``, ``m2``
    (sum of squared deviations), ``min``, ``max`` and ``histogram`` of the finite values
    (numeric, temporal in epoch seconds); ``values`` exact counts of the non-null values
    while tracked (numeric keys repr(float(v) + 0.0) for every numeric type, so 1, 1.0
    and Decimal("1.00") share "1.0"; categorical "true"/"false", str), else
    None; ``other`` categorical values beyond the tracked ones; ``sample`` a uniform sample
    without replacement of the non-null values (at most ``sample_size``); ``sketch`` the
    KMV hashes once distinct values are no longer exact.
    """

    name: str
    kind: Kind
    dtype: str
    count: int = 0
    nulls: int = 0
    infinite: int = 0
    mean: float | None = None
    m2: float = 0.0
    min: float | None = None
    max: float | None = None
    histogram: Histogram | None = None
    values: dict[str, int] | None = None
    other: int = 0
    sample: np.ndarray | None = None
    sample_size: int = 1000  # the sample's capacity (merges keep the smaller)
    sketch: np.ndarray | None = field(default=None, repr=False)  # KMV hashes when inexact

    @property
    def valid(self) -> int:
        return self.count - self.nulls

    @property
    def finite(self) -> int:
        return self.valid - self.infinite if self.kind in ("numeric", "temporal") else 0

    @property
    def std(self) -> float | None:
        if self.mean is None or self.finite < 2:
            return None
        return math.sqrt(max(self.m2, 0.0) / (self.finite - 1))

    @property
    def distinct_exact(self) -> bool:
        return self.sketch is None and (self.values is not None or self.valid == 0)

    @property
    def distinct(self) -> int | None:
        """Distinct non-null values: exact while values are tracked, else a KMV estimate
        (relative standard error about 3%)."""
        if self.sketch is not None:
            return _sketch.estimate(self.sketch)
        if self.values is not None:
            return len(self.values)
        return 0 if self.valid == 0 else None

    @property
    def deciles(self) -> list[float]:
        return [float(v) for v in self.quantile(DECILES)] if self.min is not None else []

    def quantile(self, q: Any) -> np.ndarray:
        """Quantiles of the finite values: exact (numpy's linear) from tracked values, else
        from the histogram, inside a bin linear or shaped by the sample's points there
        (``refined_quantile``); always within [min, max] and the right bin; q 0 and 1
        are the min and max themselves."""
        share = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)
        if self.min is None or self.max is None:
            return np.full(share.shape, np.nan)
        if self.values is not None and self.kind != "categorical":
            result = _exact_quantile(self.values, share)
        else:
            assert self.histogram is not None
            result = refined_quantile(self.histogram, self._finite_sample(), share)
        clipped = np.clip(result, self.min, self.max)
        ends: np.ndarray = np.where(
            share == 0.0, self.min, np.where(share == 1.0, self.max, clipped)
        )
        return ends

    def cdf(self, x: Any) -> np.ndarray:
        """Share of the finite values at or below ``x``: the histogram's, inside a bin
        shaped by the sample's points there (heavy tails, outliers); exact when tracked."""
        points = np.asarray(x, dtype=np.float64)
        if self.values is not None and self.kind != "categorical":
            return _exact_cdf(self.values, points)
        if self.histogram is None:
            return np.full(points.shape, np.nan)
        return refined_cdf(self.histogram, self._finite_sample(), points)

    def rebin(self, edges: Any, clip: bool = True) -> np.ndarray:
        """Counts of the finite values in the ``len(edges) - 1`` bins of ``edges`` (from
        ``cdf``: bins closed on the right, so shaped like it); ``clip`` as ``Histogram.rebin``."""
        bounds = np.asarray(edges, dtype=np.float64)
        mass = np.nan_to_num(self.cdf(bounds)) * self.finite
        counts: np.ndarray = np.diff(mass)
        if clip and len(counts):
            counts[0] += mass[0]
            counts[-1] += self.finite - mass[-1]
        return counts

    def _finite_sample(self) -> np.ndarray:
        if self.sample is None or self.kind == "categorical":
            return np.empty(0)
        numbers = np.asarray(self.sample, dtype=np.float64)
        return np.sort(numbers[np.isfinite(numbers)])

    def top(self, k: int = 10) -> list[tuple[str, int]]:
        """The ``k`` most frequent tracked values, ties in order of value."""
        if not self.values:
            return []
        return heapq.nsmallest(k, self.values.items(), key=lambda item: (-item[1], item[0]))

    def merge(self, other: ColumnProfile, rng: np.random.Generator | None = None) -> ColumnProfile:
        left, right = self, other
        if left.kind != right.kind:
            if _untyped(left) or _untyped(right):
                typed, untyped = (right, left) if _untyped(left) else (left, right)
                return replace(
                    typed, count=typed.count + untyped.count, nulls=typed.nulls + untyped.nulls
                )
            raise InvalidArgument(
                f"column {left.name!r} changed type: {left.dtype} in one profile, "
                f"{right.dtype} in the other"
            )
        if rng is None:
            rng = np.random.default_rng([left.count, right.count, zlib.crc32(left.name.encode())])
        merged = ColumnProfile(
            left.name, left.kind, left.dtype, left.count + right.count,
            left.nulls + right.nulls, left.infinite + right.infinite,
        )  # fmt: skip
        _merge_moments(merged, left, right)
        _merge_values(merged, left, right)
        _merge_sample(merged, left, right, rng)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "dtype": self.dtype,
            "count": self.count,
            "nulls": self.nulls,
            "infinite": self.infinite,
            "mean": self.mean,
            "m2": self.m2 if math.isfinite(self.m2) else None,  # strict JSON: None = overflowed
            "min": self.min,
            "max": self.max,
            "histogram": None if self.histogram is None else self.histogram.to_dict(),
            "values": self.values,
            "other": self.other,
            "sample": _sample_to_json(self.sample, self.kind),
            "sample_size": self.sample_size,
            "sketch": None if self.sketch is None else _b64(self.sketch),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnProfile:
        """From ``to_dict``'s output, every field checked (profiles arrive over HTTP):
        anything malformed is an InvalidArgument naming the column and the field."""
        limits = {"numeric": MAX_TRACKED, "temporal": MAX_TRACKED, "categorical": MAX_CATEGORIES}
        return cls(**column_fields(data, KINDS, limits))


@dataclass
class TableProfile:
    """The profiles of a table's columns, by name; ``rows`` the table's rows."""

    rows: int
    columns: dict[str, ColumnProfile]

    def column(self, name: str) -> ColumnProfile:
        if name not in self.columns:
            raise InvalidArgument(f"no column {name!r} in the profile; it has {list(self.columns)}")
        return self.columns[name]

    def merge(self, other: TableProfile) -> TableProfile:
        columns = dict(self.columns)
        for name, column in other.columns.items():
            columns[name] = columns[name].merge(column) if name in columns else column
        return TableProfile(self.rows + other.rows, columns)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": [c.to_dict() for c in self.columns.values()]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableProfile:
        """From ``to_dict``'s output, checked as ``ColumnProfile.from_dict``."""
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list):
            raise InvalidArgument("a table profile must be an object with a 'columns' list")
        rows = data.get("rows")
        if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows < 2**63:
            raise InvalidArgument(f"a table profile's 'rows' must be a count, not {rows!r}")
        columns: dict[str, ColumnProfile] = {}
        for item in data["columns"]:
            column = ColumnProfile.from_dict(item)
            if column.name in columns:
                raise InvalidArgument(f"column {column.name!r} appears twice in the profile")
            if column.count > rows:
                raise InvalidArgument(
                    f"column {column.name!r}: profile field 'count' {column.count} is more "
                    f"than the table's {rows} rows"
                )
            columns[column.name] = column
        return cls(rows, columns)


def _untyped(column: ColumnProfile) -> bool:
    """A column with no typed values (all nulls of Arrow's null type) adopts the other's type."""
    return column.dtype == "null" and column.valid == 0


def _merge_moments(merged: ColumnProfile, left: ColumnProfile, right: ColumnProfile) -> None:
    merged.histogram = _merge_optional(left.histogram, right.histogram)
    merged.min = _pick(min, left.min, right.min)
    merged.max = _pick(max, left.max, right.max)
    if left.mean is None or right.mean is None:
        source = left if right.mean is None else right
        merged.mean, merged.m2 = source.mean, source.m2
        return
    n_left, n_right = left.finite, right.finite
    n = n_left + n_right
    with np.errstate(over="ignore"):
        delta = right.mean - left.mean
        merged.mean = left.mean + delta * (n_right / n)
        merged.m2 = left.m2 + right.m2 + delta * delta * (n_left * n_right / n)


def _merge_optional(left: Histogram | None, right: Histogram | None) -> Histogram | None:
    if left is None or right is None:
        return left if right is None else right
    return left.merge(right)


def _pick(choose: Any, left: float | None, right: float | None) -> float | None:
    if left is None or right is None:
        return left if right is None else right
    return float(choose(left, right))


def _merge_values(merged: ColumnProfile, left: ColumnProfile, right: ColumnProfile) -> None:
    merged.other = left.other + right.other
    if merged.kind == "other":
        return
    if left.values is None or right.values is None:
        merged.values = None
        merged.sketch = _union(_sketch_of(left), _sketch_of(right))
        return
    values = dict(left.values)
    for key, n in right.values.items():
        values[key] = values.get(key, 0) + n
    limit = MAX_CATEGORIES if merged.kind == "categorical" else MAX_TRACKED
    if len(values) <= limit and left.sketch is None and right.sketch is None:
        merged.values = values
        return
    merged.sketch = _union(_sketch_of(left), _sketch_of(right))
    if merged.kind != "categorical":
        merged.values = None
        return
    keys = list(values)
    counts = np.fromiter(values.values(), dtype=np.int64, count=len(keys))
    kept = np.argpartition(-counts, limit - 1)[:limit]
    merged.values = {keys[i]: int(counts[i]) for i in kept.tolist()}
    merged.other += int(counts.sum()) - int(counts[kept].sum())


def _sketch_of(column: ColumnProfile) -> np.ndarray | None:
    if column.sketch is not None:
        return column.sketch
    if not column.values:
        return None
    if column.kind == "categorical":
        return _sketch.update(None, _sketch.hash_keys(list(column.values)))
    numbers = np.array([float(key) for key in column.values], dtype=np.float64)
    return _sketch.update(None, _sketch.hash_floats(numbers))


def _union(left: np.ndarray | None, right: np.ndarray | None) -> np.ndarray | None:
    if left is None or right is None:
        return left if right is None else right
    return _sketch.update(left, right)


def _merge_sample(
    merged: ColumnProfile, left: ColumnProfile, right: ColumnProfile, rng: np.random.Generator
) -> None:
    """A uniform sample without replacement of the union: how many come from each side is
    hypergeometric in the sides' non-null counts, each side's share drawn from its sample."""
    merged.sample_size = min(left.sample_size, right.sample_size)
    if left.sample is None or right.sample is None:
        source = left if right.sample is None else right
        merged.sample = _cap(source.sample, merged.sample_size, rng)
        return
    size = min(merged.sample_size, left.valid + right.valid)
    from_left = int(rng.hypergeometric(left.valid, right.valid, size)) if size else 0
    parts = [
        _draw(left.sample, from_left, rng),
        _draw(right.sample, size - from_left, rng),
    ]
    merged.sample = np.concatenate(parts)


def _draw(sample: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    if k >= len(sample):
        return sample
    return sample[rng.choice(len(sample), k, replace=False)]


def _cap(sample: np.ndarray | None, size: int, rng: np.random.Generator) -> np.ndarray | None:
    return None if sample is None else _draw(sample, size, rng)


def _exact_quantile(values: dict[str, int], share: np.ndarray) -> np.ndarray:
    """numpy's linear quantile of the finite values, from their counts."""
    pairs = sorted((float(k), n) for k, n in values.items() if math.isfinite(float(k)))
    if not pairs:
        return np.full(share.shape, np.nan)
    numbers = np.array([p[0] for p in pairs])
    ends = np.cumsum([p[1] for p in pairs])  # rank (0-based) of the last copy is end - 1
    position = share * (ends[-1] - 1)
    below = np.floor(position)
    low = numbers[np.searchsorted(ends, below, side="right")]
    high = numbers[np.searchsorted(ends, np.minimum(below + 1, ends[-1] - 1), side="right")]
    return cast(np.ndarray, low + (position - below) * (high - low))


def _exact_cdf(values: dict[str, int], points: np.ndarray) -> np.ndarray:
    pairs = sorted((float(k), n) for k, n in values.items() if math.isfinite(float(k)))
    if not pairs:
        return np.full(points.shape, np.nan)
    numbers = np.array([p[0] for p in pairs])
    ends = np.cumsum([p[1] for p in pairs])
    index = np.searchsorted(numbers, points, side="right")
    below = np.concatenate([[0], ends])[index]
    share: np.ndarray = below / ends[-1]
    return share


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _sample_to_json(sample: np.ndarray | None, kind: str) -> Any:
    if sample is None:
        return None
    if kind == "categorical":
        return [str(v) for v in sample]
    return _b64(sample.astype(np.float64))
