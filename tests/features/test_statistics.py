from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from plinth.errors import InvalidArgument
from plinth.features import statistics
from plinth.features.statistics import compute

RNG = np.random.default_rng(7)
SPEND = RNG.normal(100, 15, 1_000)
ORDERS = RNG.integers(0, 40, 1_000)
START = datetime(2024, 1, 1, tzinfo=UTC)
TABLE = pa.table(
    {
        # one NaN and one null at the end
        "spend": pa.array(np.append(SPEND, [np.nan, 0]), mask=np.arange(1_002) == 1_001),
        "orders": pa.array(np.append(ORDERS, [0, 0]), pa.int64()),
        "segment": pa.array(["a", "b"] * 500 + [None, "c"]),
        "seen": pa.array(
            [START + timedelta(hours=i) for i in range(1_002)], pa.timestamp("us", "UTC")
        ),
        "day": pa.array([date(2024, 1, 1 + i % 28) for i in range(1_002)], pa.date32()),
        "tags": pa.array([["x"]] * 1_002),
    }
)


def stats_of(column: str) -> statistics.ColumnStatistics:
    (result,) = compute(TABLE, [column])
    return result


def test_numeric_against_numpy() -> None:
    spend = stats_of("spend")
    assert (spend.count, spend.nulls, spend.distinct) == (1_002, 2, 1_000)  # NaN counts as null
    assert spend.mean == pytest.approx(SPEND.mean())
    assert spend.std == pytest.approx(SPEND.std(ddof=1))
    assert (spend.min, spend.max) == (SPEND.min(), SPEND.max())
    deciles = np.percentile(SPEND, np.arange(0, 101, 10))
    assert spend.deciles == pytest.approx(list(deciles))


def test_integers() -> None:
    values = np.append(ORDERS, [0, 0])
    orders = stats_of("orders")
    assert (orders.count, orders.nulls, orders.distinct) == (1_002, 0, len(set(values)))
    assert orders.mean == pytest.approx(values.mean())
    assert orders.min == 0 and orders.max == values.max() and isinstance(orders.max, int)
    assert orders.deciles == pytest.approx(list(np.percentile(values, range(0, 101, 10))))


def test_strings_timestamps_and_dates_get_min_and_max() -> None:
    segment = stats_of("segment")
    assert (segment.nulls, segment.distinct, segment.min, segment.max) == (1, 3, "a", "c")
    assert segment.mean is None and segment.deciles == []
    seen = stats_of("seen")
    assert seen.min == START and seen.max == START + timedelta(hours=1_001)
    assert seen.max.utcoffset() == timedelta(0)
    day = stats_of("day")
    assert (day.min, day.max, day.distinct) == (date(2024, 1, 1), date(2024, 1, 28), 28)


def test_other_types_get_counts_only() -> None:
    tags = stats_of("tags")
    assert (tags.count, tags.nulls, tags.distinct, tags.min) == (1_002, 0, None, None)


def test_all_columns_in_one_call_keep_their_order() -> None:
    names = ["day", "spend", "orders"]
    assert [s.column for s in compute(TABLE, names)] == names


def test_empty_table() -> None:
    (empty,) = compute(pa.table({"x": pa.array([], pa.float64())}), ["x"])
    assert (empty.count, empty.nulls, empty.distinct) == (0, 0, 0)
    assert empty.mean is None and empty.std is None and empty.deciles == []


def test_distinct_is_approximate_for_large_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statistics, "EXACT_DISTINCT_MAX_ROWS", 10)
    distinct = stats_of("spend").distinct
    assert distinct is not None and abs(distinct - 1_000) <= 50


def test_unknown_column() -> None:
    with pytest.raises(InvalidArgument, match="'nope'"):
        compute(TABLE, ["spend", "nope"])
    assert compute(TABLE, []) == []
