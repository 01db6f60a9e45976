"""What a drift test can read of one column on one side: exact values, a sample, counts
or the profile's histogram, and which of these it got.

A side is *exact* when the profile's sample holds every non-null value of the column
(raw data no larger than the sample size): tests then run on the values themselves.
Otherwise tests that allow it run on the profile (fixed-grid histogram, tracked counts)
and the others on the sample.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from plinth.stats.profile import ColumnProfile, Histogram

FloatArray = NDArray[np.float64]
OTHER = "(other values)"
_NON_FINITE_KEYS = {"nan", "inf", "-inf", "NaN"}
_MANY = 1 << 62


@dataclass(frozen=True)
class Side:
    col: ColumnProfile
    numeric: bool  # numeric or temporal: values are floats

    @property
    def n(self) -> int:
        """Non-null values (numeric: finite ones) - what the tests count."""
        valid = self.col.count - self.col.nulls
        return valid - self.col.infinite if self.numeric else valid

    @property
    def exact(self) -> bool:
        sample = self.col.sample
        return sample is not None and len(sample) >= self.col.count - self.col.nulls

    def values(self) -> FloatArray:
        """The finite sampled values (all of them when `exact`)."""
        sample = self.col.sample
        if sample is None:
            return np.empty(0, dtype=np.float64)
        arr = np.asarray(sample, dtype=np.float64)
        return arr[np.isfinite(arr)]

    def histogram(self) -> Histogram | None:
        return self.col.histogram

    def population_std(self) -> float:
        """Standard deviation with ddof=0 (numpy's default, as Evidently uses)."""
        if self.exact:
            return float(np.std(self.values()))
        std, n = self.col.std, self.n
        if std is None or n < 2:
            return 0.0
        return float(std) * float(np.sqrt((n - 1) / n))

    def tracked(self) -> dict[str, int] | None:
        """Counts per value from the profile (numeric: finite values only)."""
        values = self.col.values
        if values is None:
            return None
        if self.numeric:
            return {k: v for k, v in values.items() if k not in _NON_FINITE_KEYS}
        return dict(values)

    def sample_counts(self) -> dict[str, int]:
        sample = self.col.sample
        if sample is None:
            return {}
        if self.numeric:
            return dict(Counter(repr(float(v) + 0.0) for v in self.values()))
        return dict(Counter(_key(v) for v in sample))


@dataclass(frozen=True)
class PairCounts:
    keys: list[str]
    reference: FloatArray
    current: FloatArray
    exact: bool  # every value counted (no lumped "other" bucket)


def pair_counts(ref: Side, cur: Side) -> PairCounts | None:
    """Counts per value on both sides over the union of values, from the profiles'
    tracked counts, else from exact samples; None when neither side can give them."""
    rt, ct = ref.tracked(), cur.tracked()
    complete = not ref.col.other and not cur.col.other
    if rt is not None and ct is not None and (complete or not (ref.exact and cur.exact)):
        exact = complete
        if not complete:
            rt, ct = _common_and_other(rt, ct, ref.n, cur.n)
    elif ref.exact and cur.exact:
        rt, ct, exact = ref.sample_counts(), cur.sample_counts(), True
    else:
        return None
    keys = sorted(set(rt) | set(ct))
    return PairCounts(
        keys,
        np.array([rt.get(k, 0) for k in keys], dtype=np.float64),
        np.array([ct.get(k, 0) for k in keys], dtype=np.float64),
        exact,
    )


def _common_and_other(
    rt: dict[str, int], ct: dict[str, int], n_ref: int, n_cur: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Counts of the values tracked on both sides, the rest of each side in one bucket: a
    value tracked on one side only has an unknown count on the other. Merging values
    can only lower a divergence, so the result is a lower bound of the exact one."""
    common = set(rt) & set(ct)
    ref = {k: rt[k] for k in common}
    cur = {k: ct[k] for k in common}
    ref[OTHER] = n_ref - sum(ref.values())
    cur[OTHER] = n_cur - sum(cur.values())
    return ref, cur


def combined_distinct(ref: Side, cur: Side) -> int:
    """Distinct non-null values over both sides (pandas' nunique of the concatenation);
    a large number when neither the profiles nor exact samples can tell."""
    counts = pair_counts(ref, cur)
    if counts is not None and counts.exact:
        return len(counts.keys)
    return max(ref.col.distinct or _MANY, cur.col.distinct or _MANY)


def distinct(side: Side) -> int:
    tracked = side.tracked()
    if tracked is not None and not side.col.other:
        return len(tracked)
    if side.exact:
        return len(side.sample_counts())
    return side.col.distinct if side.col.distinct is not None else _MANY


def _key(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)
