from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest
from pydantic import TypeAdapter

from plinth.errors import InvalidArgument
from plinth.features import statistics
from plinth.features.statistics import compute
from plinth.features.types import ColumnStatistics

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


def test_histogram_matches_numpy_without_nan_and_null() -> None:
    spend = stats_of("spend")
    assert len(spend.bin_edges) == statistics.BINS + 1
    assert (spend.bin_edges[0], spend.bin_edges[-1]) == (SPEND.min(), SPEND.max())
    counts, _ = np.histogram(SPEND, spend.bin_edges)
    assert spend.bin_counts == list(counts)
    assert sum(spend.bin_counts) == len(SPEND)  # the NaN and the null left out


def test_histogram_of_integers_closes_the_last_bin() -> None:
    orders = stats_of("orders")
    values = np.append(ORDERS, [0, 0])
    counts, edges = np.histogram(values, statistics.BINS, (values.min(), values.max()))
    assert orders.bin_edges == pytest.approx(list(edges))
    assert orders.bin_counts == list(counts)
    assert orders.bin_counts[-1] == np.count_nonzero(values >= edges[-2])  # max included


def test_histogram_leaves_out_infinities_and_handles_decimals() -> None:
    table = pa.table(
        {
            "x": pa.array([-np.inf, 1.0, 2.0, 3.0, np.inf, None]),
            "d": pa.array([Decimal("0.5"), Decimal("1.5"), None] * 2, pa.decimal128(4, 2)),
        }
    )
    x, d = compute(table, ["x", "d"])
    assert (x.bin_edges[0], x.bin_edges[-1], sum(x.bin_counts)) == (1.0, 3.0, 3)
    assert (d.bin_edges[0], d.bin_edges[-1], sum(d.bin_counts)) == (0.5, 1.5, 4)


def test_constant_all_null_and_empty_columns() -> None:
    table = pa.table(
        {"same": pa.array([2.5] * 4), "none": pa.array([None, np.nan] * 2, pa.float64())}
    )
    same, none = compute(table, ["same", "none"])
    assert (same.bin_edges, same.bin_counts) == ([2.5, 2.5], [4])
    assert (none.bin_edges, none.bin_counts) == ([], [])
    (empty,) = compute(pa.table({"x": pa.array([], pa.int64())}), ["x"])
    assert (empty.bin_edges, empty.bin_counts, empty.top_values) == ([], [], [])


def test_top_values_by_count_then_value() -> None:
    words = ["b"] * 3 + ["a"] * 3 + ["c"] * 5 + [f"w{i:02}" for i in range(20)] + [None] * 9
    (top,) = compute(pa.table({"w": pa.array(words)}), ["w"])
    assert [(t.value, t.count) for t in top.top_values] == [("c", 5), ("a", 3), ("b", 3)] + [
        (f"w{i:02}", 1) for i in range(7)
    ]
    segment = stats_of("segment")
    assert [(t.value, t.count) for t in segment.top_values] == [("a", 500), ("b", 500), ("c", 1)]
    assert stats_of("spend").top_values == [] and segment.bin_counts == []


def test_top_values_of_booleans() -> None:
    (flag,) = compute(pa.table({"f": pa.array([True, False, None, True, False])}), ["f"])
    assert [(t.value, t.count) for t in flag.top_values] == [("false", 2), ("true", 2)]


def test_no_top_values_above_the_distinct_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statistics, "TOP_VALUES_MAX_DISTINCT", 2)
    assert stats_of("segment").top_values == []


def test_statistics_stored_before_histograms_still_load() -> None:
    old = '[{"column": "x", "count": 3, "nulls": 0, "distinct": 2, "deciles": [1.0, 2.0]}]'
    (loaded,) = TypeAdapter(list[ColumnStatistics]).validate_json(old)
    assert (loaded.bin_edges, loaded.bin_counts, loaded.top_values) == ([], [], [])
    assert loaded.deciles == [1.0, 2.0]
