"""Column profiles: merge of parts equals the whole, quantiles, samples, edge cases."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plinth.errors import InvalidArgument, NotFound
from plinth.stats import profile as profile_module
from plinth.stats.profile import (
    MAX_BINS,
    MAX_CATEGORIES,
    ColumnProfile,
    Histogram,
    TableProfile,
    profile,
    profile_delta,
)


def _table(n: int = 20_000, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    normal = rng.normal(10, 3, n)
    normal[rng.random(n) < 0.05] = np.nan
    colours = np.array(["red", "green", "blue", "violet", "amber"])
    return pa.table(
        {
            "normal": normal,
            "lognormal": rng.lognormal(0, 1, n),
            "dice": rng.integers(1, 7, n),
            "colour": pa.array(colours[rng.integers(0, 5, n)]),
            "flag": pa.array(rng.random(n) < 0.3),
        }
    )


def _same_grid(a: Histogram, b: Histogram) -> tuple[Histogram, Histogram]:
    width = max(a.width, b.width)
    return a.coarsened(width).bounded(), b.coarsened(width).bounded()


def _assert_same(whole: ColumnProfile, merged: ColumnProfile) -> None:
    assert (merged.count, merged.nulls, merged.infinite) == (
        whole.count,
        whole.nulls,
        whole.infinite,
    )
    assert merged.values == whole.values
    assert merged.other == whole.other
    if whole.mean is None:
        assert merged.mean is None
        return
    assert merged.mean == pytest.approx(whole.mean, rel=1e-9)
    assert merged.std == pytest.approx(whole.std, rel=1e-9)
    assert (merged.min, merged.max) == (whole.min, whole.max)
    assert whole.histogram is not None and merged.histogram is not None
    a, b = _same_grid(whole.histogram, merged.histogram)
    assert a.offset == b.offset
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_allclose(merged.deciles, whole.deciles, rtol=0, atol=a.width)


def test_merge_of_parts_equals_the_whole() -> None:
    table = _table()
    whole = profile(table, chunk_rows=3000)
    parts = [profile(table.slice(0, 7000), seed=1), profile(table.slice(7000), seed=2)]
    merged = parts[0].merge(parts[1])
    assert merged.rows == whole.rows == 20_000
    for name in table.column_names:
        _assert_same(whole.column(name), merged.column(name))
    assert merged.column("dice").distinct == 6 and merged.column("dice").distinct_exact


def test_merge_of_differently_gridded_parts_is_exact() -> None:
    rng = np.random.default_rng(3)
    narrow = pa.table({"x": rng.normal(0, 0.01, 5000)})
    wide = pa.table({"x": rng.normal(0, 100, 5000)})
    merged = profile(narrow).merge(profile(wide))
    whole = profile(pa.concat_tables([narrow, wide]))
    _assert_same(whole.column("x"), merged.column("x"))
    histogram = merged.column("x").histogram
    assert histogram is not None and histogram.total() == 10_000


@pytest.mark.parametrize("draw", ["normal", "lognormal"])
def test_quantiles_close_to_numpy(draw: str) -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(5, 2, 200_000) if draw == "normal" else rng.lognormal(0, 1, 200_000)
    column = profile(pa.table({"x": values})).column("x")
    assert column.histogram is not None
    q = np.array([0.01, 0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975, 0.99])
    expected = np.quantile(values, q)
    np.testing.assert_allclose(column.quantile(q), expected, atol=column.histogram.width)
    assert column.deciles[0] == values.min() and column.deciles[-1] == values.max()
    assert column.mean == pytest.approx(values.mean(), rel=1e-12)
    assert column.std == pytest.approx(values.std(ddof=1), rel=1e-9)
    assert column.histogram.cdf(expected[4]) == pytest.approx(0.5, abs=1e-3)


def test_exact_quantiles_from_tracked_values() -> None:
    values = np.random.default_rng(5).integers(0, 50, 999)
    column = profile(pa.table({"x": values})).column("x")
    assert column.values is not None and column.distinct_exact
    q = np.linspace(0, 1, 21)
    np.testing.assert_allclose(column.quantile(q), np.quantile(values, q))


def test_merged_sample_is_uniform() -> None:
    # two parts with different means and sizes: a uniform sample of the union has the
    # union's mean (1/4 of the rows are 1000s), an unweighted one would have half
    low, high = np.zeros(30_000), np.full(10_000, 1000.0)
    merged = profile(pa.table({"x": low}), sample_size=2000, seed=1).merge(
        profile(pa.table({"x": high}), sample_size=2000, seed=2)
    )
    sample = merged.column("x").sample
    assert sample is not None and len(sample) == 2000
    assert sample.mean() == pytest.approx(250.0, abs=40.0)


def test_sample_of_chunks_is_uniform() -> None:
    values = np.concatenate([np.zeros(90_000), np.ones(10_000)])
    column = profile(pa.table({"x": values}), chunk_rows=7_000, sample_size=5000).column("x")
    assert column.sample is not None and len(column.sample) == 5000
    assert column.sample.mean() == pytest.approx(0.1, abs=0.015)


def test_round_trip_through_json() -> None:
    table = _table(5000)
    original = profile(table, sample_size=100)
    text = json.dumps(original.to_dict(), allow_nan=False)
    restored = TableProfile.from_dict(json.loads(text))
    assert restored.rows == original.rows
    for name in table.column_names:
        a, b = original.column(name), restored.column(name)
        assert a.to_dict() == b.to_dict()
        assert a.sample is not None and b.sample is not None
        assert list(a.sample) == list(b.sample)
    # a restored profile still merges
    assert restored.merge(original).column("dice").count == 10_000


def test_round_trip_of_a_sketch() -> None:
    column = profile(pa.table({"x": np.arange(50_000, dtype=np.float64)})).column("x")
    assert column.values is None and not column.distinct_exact
    restored = ColumnProfile.from_dict(json.loads(json.dumps(column.to_dict())))
    assert restored.distinct == column.distinct


def test_distinct_estimate_within_a_few_percent() -> None:
    rng = np.random.default_rng(6)
    values = rng.integers(0, 2**40, 200_000).astype(np.float64)
    half = len(values) // 2
    column = (
        profile(pa.table({"x": values[:half]}))
        .merge(profile(pa.table({"x": values[half:]})))
        .column("x")
    )
    truth = len(np.unique(values))
    assert column.distinct is not None
    assert abs(column.distinct - truth) / truth < 0.1


def test_empty_table() -> None:
    empty = pa.table({"x": pa.array([], pa.float64()), "s": pa.array([], pa.string())})
    result = profile(empty)
    assert result.rows == 0
    assert [c.count for c in result.columns.values()] == [0, 0]
    assert result.column("x").mean is None and result.column("x").deciles == []
    assert profile([]).rows == 0


def test_all_null_column() -> None:
    table = pa.table({"x": pa.array([None] * 10, pa.float64()), "n": pa.nulls(10)})
    result = profile(table)
    for name in ("x", "n"):
        column = result.column(name)
        assert (column.count, column.nulls, column.mean, column.histogram) == (10, 10, None, None)
        assert column.std is None
    # an all-null (untyped) part merges with a typed one
    typed = profile(pa.table({"n": [1.0, 2.0]}))
    for merged in (result.merge(typed).column("n"), typed.merge(result).column("n")):
        assert (merged.kind, merged.count, merged.nulls, merged.mean) == ("numeric", 12, 10, 1.5)


def test_changed_type_on_merge_names_the_column() -> None:
    numbers = profile(pa.table({"amount": [1, 2, 3]}))
    texts = profile(pa.table({"amount": ["1", "2", "3"]}))
    with pytest.raises(InvalidArgument, match=r"column 'amount' changed type: int64 .* string"):
        numbers.merge(texts)


def test_unknown_column_is_named() -> None:
    with pytest.raises(InvalidArgument, match="'missing'"):
        profile(_table(100), ["missing"])
    with pytest.raises(InvalidArgument, match="'missing'"):
        profile(_table(100)).column("missing")


def test_column_only_in_one_side_is_kept() -> None:
    merged = profile(pa.table({"a": [1.0]})).merge(profile(pa.table({"a": [2.0], "b": ["x"]})))
    assert merged.column("b").count == 1 and merged.column("a").count == 2


def test_booleans_dictionaries_and_timestamps() -> None:
    stamps = [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3)] + [None]
    table = pa.table(
        {
            "flag": pa.array([True, False, True, None]),
            "city": pa.array(["oslo", "rome", "oslo", None]).dictionary_encode(),
            "at": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "day": pa.array([date(1970, 1, 2)] * 4, pa.date32()),
        }
    )
    result = profile(table)
    flag, city, at, day = (result.column(n) for n in ("flag", "city", "at", "day"))
    assert flag.kind == city.kind == "categorical" and at.kind == day.kind == "temporal"
    assert flag.values == {"true": 2, "false": 1} and flag.nulls == 1
    assert city.top(1) == [("oslo", 2)] and city.distinct == 2
    assert city.sample is not None and sorted(city.sample) == ["oslo", "oslo", "rome"]
    assert at.min == datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    assert at.max == at.min + 2 * 86_400 and at.mean == at.min + 86_400
    assert day.min == day.max == 86_400.0


def test_nan_and_infinities() -> None:
    values = np.array([1.0, 2.0, np.nan, np.inf, -np.inf, 3.0, np.nan])
    column = profile(pa.table({"x": pa.array([*values, None])})).column("x")
    assert (column.count, column.nulls, column.infinite, column.valid) == (8, 3, 2, 5)
    assert (column.min, column.max, column.mean) == (1.0, 3.0, 2.0)
    assert column.histogram is not None and column.histogram.total() == 3
    assert column.sample is not None and len(column.sample) == 5
    assert column.std == pytest.approx(1.0)


def test_outliers_keep_the_histogram_bounded() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(0, 1, 100_000), [1e12, -1e15], rng.standard_cauchy(1000)])
    column = profile(pa.table({"x": values}), chunk_rows=10_000).column("x")
    assert column.histogram is not None
    assert len(column.histogram.counts) <= MAX_BINS
    assert column.histogram.total() == len(values)
    assert (column.min, column.max) == (-1e15, 1e12)


@pytest.mark.parametrize("value", [0.0, 7.5, -3e200, 1e-300, 123456789])
def test_constant_columns(value: float) -> None:
    column = profile(pa.table({"x": [value] * 100})).column("x")
    assert column.deciles == [value] * 11
    assert column.std == 0.0 and column.distinct == 1


def test_overflowing_squares_stay_strict_json() -> None:
    column = profile(pa.table({"x": [-1e300, 1e300]})).column("x")
    assert column.m2 == math.inf and column.std == math.inf
    text = json.dumps(column.to_dict(), allow_nan=False)
    assert ColumnProfile.from_dict(json.loads(text)).std == math.inf


def test_huge_and_tiny_magnitudes() -> None:
    rng = np.random.default_rng(8)
    for scale in (1e-200, 1e200, 1e15):
        values = 1e15 + rng.normal(0, 1, 10_000) if scale == 1e15 else rng.normal(0, scale, 10_000)
        column = profile(pa.table({"x": values})).column("x")
        assert column.histogram is not None and column.histogram.total() == 10_000
        median = float(column.quantile(0.5))
        assert abs(median - np.median(values)) <= column.histogram.width


def test_categories_beyond_the_cap_keep_the_most_frequent() -> None:
    n = MAX_CATEGORIES + 2000
    common = ["common"] * 5000
    table = pa.table({"s": pa.array([f"v{i}" for i in range(n)] + common)})
    column = profile(table, chunk_rows=4000).column("s")
    assert column.values is not None and len(column.values) <= MAX_CATEGORIES
    assert column.top(1) == [("common", 5000)]
    assert sum(column.values.values()) + column.other == n + 5000
    assert not column.distinct_exact
    assert column.distinct is not None and abs(column.distinct - (n + 1)) / n < 0.1


def test_rebin_and_cdf() -> None:
    histogram = Histogram(width=1.0, offset=0, counts=np.array([10, 20, 30, 40]))
    np.testing.assert_allclose(histogram.rebin(np.array([1.0, 2.0, 3.0])), [30, 70])
    np.testing.assert_allclose(histogram.rebin(np.array([1.5, 2.5]), clip=False), [25])
    np.testing.assert_allclose(histogram.cdf(np.array([-1.0, 0.5, 2.0, 9.0])), [0, 0.05, 0.3, 1])
    assert float(histogram.quantile(0.3)) == pytest.approx(2.0)
    coarse = histogram.coarsened(2.0)
    assert (coarse.offset, coarse.counts.tolist()) == (0, [30, 70])
    empty = Histogram(width=2.0**-10, offset=0, counts=np.zeros(0, dtype=np.int64))
    far = Histogram(width=1.0, offset=10**9, counts=np.array([5]))
    assert far.merge(empty) is far and empty.merge(far) is far
    # far apart on a fine grid: coarsened before any dense array is made
    near = Histogram(width=2.0**-20, offset=0, counts=np.array([1, 2]))
    merged = near.merge(Histogram(width=2.0**-20, offset=2**50, counts=np.array([3])))
    assert len(merged.counts) <= MAX_BINS and merged.total() == 6
    for encoded in (histogram.to_dict(), {"width": 1.0, "offset": 0, "counts": [10, 20, 30, 40]}):
        restored = Histogram.from_dict(json.loads(json.dumps(encoded)))
        assert (restored.width, restored.offset) == (1.0, 0)
        assert restored.counts.tolist() == [10, 20, 30, 40]


def test_pandas_input() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, None, 4.0], "s": ["a", "b", "a", None]})
    result = profile(frame, chunk_rows=3)
    assert result.rows == 4
    assert result.column("x").nulls == 1 and result.column("x").mean == pytest.approx(7 / 3)
    assert result.column("s").values == {"a": 2, "b": 1}
    assert list(profile(frame, ["s"]).columns) == ["s"]
    with pytest.raises(InvalidArgument, match="'t'"):
        profile(frame, ["t"])


def test_parquet_path_input(tmp_path: Path) -> None:
    table = _table(3000)
    pq.write_table(table.slice(0, 1000), tmp_path / "a.parquet")
    pq.write_table(table.slice(1000), tmp_path / "b.parquet")
    from_directory = profile(tmp_path)
    from_file = profile(str(tmp_path / "a.parquet"), ["dice"])
    assert from_directory.rows == 3000 and list(from_file.columns) == ["dice"]
    assert from_directory.column("dice").values == profile(table).column("dice").values


def test_profile_delta(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    table = _table(4000)
    uri = str(tmp_path / "delta")
    write_deltalake(uri, table.slice(0, 1000))
    write_deltalake(uri, table.slice(1000), mode="append")
    latest = profile_delta(uri, columns=["dice", "colour"])
    first = profile_delta(uri, version=0)
    assert latest.rows == 4000 and list(latest.columns) == ["dice", "colour"]
    assert latest.column("colour").values == profile(table).column("colour").values
    assert first.rows == 1000
    with pytest.raises(InvalidArgument, match="'nope'"):
        profile_delta(uri, columns=["nope"])
    with pytest.raises(NotFound, match="no version 9 of the Delta table"):
        profile_delta(uri, version=9)
    with pytest.raises(NotFound, match="no Delta table at"):
        profile_delta(str(tmp_path / "missing"))


def test_std_matches_numpy_on_shifted_data() -> None:
    values = 1e9 + np.random.default_rng(9).normal(0, 1e-3, 50_000)
    column = profile(pa.table({"x": values}), chunk_rows=5000).column("x")
    assert column.std == pytest.approx(values.std(ddof=1), rel=1e-6)
    assert not math.isnan(float(column.quantile(0.5)))


def test_parallel_columns_give_the_serial_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _table(120_000)  # 5 columns x 50k-row chunks: columns run in threads
    parallel = profile(table, chunk_rows=50_000)
    monkeypatch.setattr(profile_module, "_PARALLEL_MIN_CELLS", 10**12)
    serial = profile(table, chunk_rows=50_000)
    assert json.dumps(parallel.to_dict()) == json.dumps(serial.to_dict())
    other_seed = profile(table, chunk_rows=50_000, seed=1)
    assert other_seed.column("normal").to_dict() != serial.column("normal").to_dict()


def test_other_types_get_counts_only() -> None:
    table = pa.table(
        {
            "took": pa.array([1, None, 3], pa.duration("s")),
            "tags": pa.array([[1], [2, 3], None]),
            "blob": pa.array([b"x", b"y", b"x"]),
        }
    )
    for column in profile(table).columns.values():
        assert column.kind == "other" and column.count == 3
        assert (column.values, column.histogram, column.sample, column.distinct) == (
            None,
            None,
            None,
            None,
        )
    assert profile(table).column("took").nulls == 1


def test_decimals_string_views_and_dictionary_numbers() -> None:
    table = pa.table(
        {
            "price": pa.array([Decimal("1.50"), Decimal("2.25"), None], pa.decimal128(10, 2)),
            "code": pa.array(["a", "b", "b"], pa.string_view()),
            "level": pa.array([10, 20, 10]).dictionary_encode(),
            "ratio": pa.array([1.5, float("nan"), 2.5], pa.float32()),
        }
    )
    result = profile(table)
    price = result.column("price")
    assert price.kind == "numeric" and price.values == {"1.5": 1, "2.25": 1}
    assert price.mean == pytest.approx(1.875) and price.nulls == 1
    assert result.column("code").values == {"a": 1, "b": 2}
    assert result.column("level").kind == "categorical"
    assert result.column("level").values == {"10": 2, "20": 1}
    assert result.column("ratio").nulls == 1 and result.column("ratio").mean == 2.0


def test_pandas_column_that_starts_with_nulls() -> None:
    frame = pd.DataFrame({"s": [None, None, "a", "b"], "n": pd.array([None, 1, 2, 3], "Int64")})
    result = profile(frame, chunk_rows=2)
    assert result.column("s").kind == "categorical" and result.column("s").values == {
        "a": 1,
        "b": 1,
    }
    assert result.column("n").mean == 2.0 and result.column("n").nulls == 1


def test_reader_and_generator_inputs() -> None:
    table = _table(5000)
    expected = profile(table).column("dice").values
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=700))
    assert profile(reader).column("dice").values == expected
    generated = profile(b for b in table.to_batches(max_chunksize=900))
    assert generated.rows == 5000 and generated.column("dice").values == expected

    class Streamed:  # any object speaking Arrow's C stream protocol (polars, DuckDB, ...)
        def __arrow_c_stream__(self, requested_schema: object = None) -> object:
            return table.__arrow_c_stream__(requested_schema)

    assert profile(Streamed()).column("dice").values == expected
    with pytest.raises(InvalidArgument, match="cannot profile an iterable of int"):
        profile([1, 2])
    with pytest.raises(InvalidArgument, match="no such file"):
        profile("/nonexistent/data.parquet")


def test_sample_size_zero_keeps_no_sample() -> None:
    result = profile(_table(1000), sample_size=0)
    assert all(c.sample is None for c in result.columns.values())


def test_small_batches_are_gathered_and_must_agree() -> None:
    table = _table(3000)
    small = pa.Table.from_batches(table.to_batches(max_chunksize=100))
    assert profile(small).column("dice").values == profile(table).column("dice").values
    batches = [
        pa.record_batch({"x": [1.0, 2.0]}),
        pa.record_batch({"x": ["a", "b"]}),
    ]
    with pytest.raises(InvalidArgument, match="column 'x' changed type within the data"):
        profile(batches)
    with pytest.raises(InvalidArgument, match="column 'x' is missing"):
        profile([pa.record_batch({"x": [1.0]}), pa.record_batch({"y": [1.0]})])


def test_sample_shapes_coarse_bins_of_heavy_tails() -> None:
    # one outlier coarsens the grid until the bulk sits in a few bins; the sample's points
    # inside those bins still place the quantiles and the cdf
    rng = np.random.default_rng(10)
    values = np.append(rng.normal(0, 1, 200_000), 1e9)
    column = profile(pa.table({"x": values}), sample_size=5000).column("x")
    assert column.histogram is not None and column.histogram.width >= 2**14
    q = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    truth = np.quantile(values, q)
    assert np.max(np.abs(column.histogram.quantile(q) - truth)) > 1000  # the bare grid
    np.testing.assert_allclose(column.quantile(q), truth, atol=0.1)
    np.testing.assert_allclose(column.cdf(truth), q, atol=0.02)
    assert float(column.cdf(2e9)) == 1.0 and float(column.cdf(-1e6)) == 0.0
    counts = column.rebin(np.array([-1.0, 0.0, 1.0]))
    assert counts.sum() == pytest.approx(len(values))
    np.testing.assert_allclose(counts / len(values), [0.5, 0.5], atol=0.02)


def test_cdf_from_tracked_values_is_exact() -> None:
    column = profile(pa.table({"x": [1, 2, 2, 3, None]})).column("x")
    np.testing.assert_allclose(column.cdf([0.5, 1, 2, 2.5, 3, 9]), [0, 0.25, 0.75, 0.75, 1, 1])


@pytest.mark.parametrize(("distinct", "copies"), [(1010, 100), (3000, 40)])
def test_distinct_of_repeated_values(distinct: int, copies: int) -> None:
    values = np.tile(np.random.default_rng(11).random(distinct), copies)
    column = profile(pa.table({"x": values}), chunk_rows=30_000).column("x")
    assert column.values is None and not column.distinct_exact
    assert column.distinct is not None
    if distinct < 1024:  # fewer distinct hashes than the sketch holds: counted exactly
        assert column.distinct == distinct
    else:
        assert abs(column.distinct - distinct) / distinct < 0.1


def test_numeric_value_keys_are_one_per_number_whatever_the_type() -> None:
    from decimal import Decimal

    ints = profile(pa.table({"x": pa.array([0, 1, 1], pa.int64())})).column("x")
    floats = profile(pa.table({"x": pa.array([-0.0, 1.0, 1.0])})).column("x")
    decimals = profile(
        pa.table({"x": pa.array([Decimal("0.00"), Decimal("1.00"), Decimal("1.00")])})
    ).column("x")
    assert ints.values == floats.values == decimals.values == {"0.0": 1, "1.0": 2}


EXTREME = {
    "subnormals": (np.array([5e-324, 1e-323, 2e-323] * 100), 300),
    "subnormal_and_one": (np.r_[np.full(500, 5e-324), np.ones(500)], 1000),
    "unit_then_1e17_chunk": (
        np.r_[np.random.default_rng(0).random(1000), np.full(1000, 1e17)],
        1000,
    ),
    "tiny_then_huge_chunk": (np.r_[np.full(2000, 1e-300), np.full(2000, 1e300)], 2000),
    "int64_then_max_chunk": (
        pa.array(np.r_[np.arange(1000), np.full(1000, 2**63 - 1)], pa.int64()),
        1000,
    ),
    "uint64_max_chunks": (pa.array([1, 2, 3] + [2**64 - 1] * 3, pa.uint64()), 3),
}


@pytest.mark.parametrize("case", list(EXTREME))
def test_extreme_values_profile_without_errors(case: str) -> None:
    values, chunk = EXTREME[case]
    column = profile(pa.table({"x": values}), chunk_rows=chunk).column("x")
    numbers = np.asarray(values, dtype=np.float64)
    assert column.min == numbers.min() and column.max == numbers.max()
    assert column.histogram is not None and column.histogram.total() == len(numbers)
    assert abs(column.histogram.offset) < 2**53
    assert np.all(np.diff(column.deciles) >= 0)
    halves = profile(pa.table({"x": values[: len(values) // 2]})).merge(
        profile(pa.table({"x": values[len(values) // 2 :]}))
    )
    assert halves.column("x").histogram.total() == len(numbers)  # type: ignore[union-attr]


def test_a_pandas_column_of_floats_and_strings_is_named() -> None:
    frame = pd.DataFrame({"a": [1, 2], "mixed": [1.5, "text"]})
    with pytest.raises(InvalidArgument, match="'mixed'"):
        profile(frame)


def test_the_ends_of_the_deciles_are_the_min_and_max() -> None:
    values = np.r_[np.arange(1000), np.full(1000, 2**63 - 1)]
    column = profile(pa.table({"x": pa.array(values, pa.int64())}), chunk_rows=1000).column("x")
    assert column.deciles[0] == 0.0 and column.deciles[-1] == float(2**63 - 1)
    assert list(column.quantile([0.0, 1.0])) == [0.0, float(2**63 - 1)]
