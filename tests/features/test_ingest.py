from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plinth.errors import InvalidArgument
from plinth.features.ingest import TIME_TYPE, iter_chunks, prepare
from plinth.features.types import FeatureGroup, FeatureSpec


def make_group(**dtypes: str) -> FeatureGroup:
    features = [FeatureSpec(name, dtype) for name, dtype in (dtypes or {"x": "float64"}).items()]
    return FeatureGroup("stats", 1, "customer", ["customer_id"], "event_time", features)


def frame(rows: int = 3, **columns: object) -> pd.DataFrame:
    data: dict[str, object] = {
        "customer_id": np.arange(rows),
        "event_time": pd.date_range("2024-01-01", periods=rows, freq="D", tz="UTC"),
        "x": np.arange(rows, dtype=float),
    }
    data.update(columns)
    return pd.DataFrame(data)


GROUP = make_group()


def refused(data: object, group: FeatureGroup = GROUP) -> str:
    with pytest.raises(InvalidArgument) as info:
        prepare(data, group)
    return info.value.message


class TestSources:
    def test_pandas_orders_columns_and_drops_extras(self) -> None:
        df = frame(extra="dropped")[["x", "extra", "event_time", "customer_id"]]
        table = prepare(df, GROUP)
        assert table.column_names == ["customer_id", "event_time", "x"]
        assert table.schema.field("event_time").type == TIME_TYPE
        assert table.schema.metadata is None
        assert table["x"].to_pylist() == [0.0, 1.0, 2.0]

    def test_aware_times_are_converted_to_utc(self) -> None:
        df = frame(event_time=pd.date_range("2024-01-01 09:00", periods=3, tz="Europe/Berlin"))
        first = prepare(df, GROUP)["event_time"][0].as_py()
        assert first == datetime(2024, 1, 1, 8, tzinfo=UTC)
        assert str(prepare(df, GROUP).schema.field("event_time").type) == "timestamp[us, tz=UTC]"

    def test_nanoseconds_are_truncated_to_microseconds(self) -> None:
        times = pd.to_datetime(["2024-01-01 00:00:00.000001999"], utc=True).as_unit("ns")
        table = prepare(frame(1, event_time=times), GROUP)
        assert table["event_time"][0].as_py().microsecond == 1

    def test_arrow_table_and_record_batch(self) -> None:
        table = pa.Table.from_pandas(frame(), preserve_index=False)
        assert prepare(table, GROUP).num_rows == 3
        assert prepare(table.to_batches()[0], GROUP).num_rows == 3

    def test_arrow_stream(self) -> None:
        table = pa.Table.from_pandas(frame(), preserve_index=False)
        reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
        assert prepare(reader, GROUP).num_rows == 3

    def test_parquet_file_and_folder(self, tmp_path: Path) -> None:
        table = pa.Table.from_pandas(frame(4), preserve_index=False)
        pq.write_table(table.slice(0, 2), tmp_path / "a.parquet")
        pq.write_table(table.slice(2), tmp_path / "b.parquet")
        assert prepare(tmp_path / "a.parquet", GROUP).num_rows == 2
        folder = prepare(str(tmp_path), GROUP)
        assert sorted(folder["customer_id"].to_pylist()) == [0, 1, 2, 3]

    def test_missing_parquet_path(self, tmp_path: Path) -> None:
        assert "no Parquet file or folder" in refused(tmp_path / "nope.parquet")

    def test_polars(self) -> None:
        pl = pytest.importorskip("polars")
        table = prepare(pl.from_pandas(frame()), GROUP)
        assert table.column_names == ["customer_id", "event_time", "x"]
        assert table.num_rows == 3

    def test_key_in_the_index(self) -> None:
        assert prepare(frame().set_index("customer_id"), GROUP).num_rows == 3

    def test_categorical_becomes_string(self) -> None:
        group = make_group(segment="string")
        table = prepare(frame(segment=pd.Categorical(["a", "b", "a"])), group)
        assert table.schema.field("segment").type == pa.string()

    def test_unsupported_source(self) -> None:
        assert "cannot ingest a list" in refused([1, 2])


def test_entity_tables_take_every_source_ingestion_takes(tmp_path: Path) -> None:
    from plinth.features.ingest import as_table

    data = frame()
    data.to_parquet(tmp_path / "e.parquet")
    whole = pa.Table.from_pandas(data, preserve_index=False)
    for source in (data, whole, whole.to_batches()[0], str(tmp_path / "e.parquet")):
        assert as_table(source, doing="read entity_df from").equals(whole)
    assert as_table(data, ["x", "customer_id"]).column_names == ["x", "customer_id"]
    with pytest.raises(InvalidArgument, match="cannot read entity_df from a dict"):
        as_table({"customer_id": [1]}, doing="read entity_df from")


class TestRefusals:
    @pytest.mark.parametrize("column", ["customer_id", "event_time", "x"])
    def test_missing_column(self, column: str) -> None:
        message = refused(frame().drop(columns=[column]))
        assert repr(column) in message and "stats:v1" in message

    def test_null_keys_are_counted(self) -> None:
        df = frame(4)
        df["customer_id"] = pd.array([1, None, None, 4], dtype="Int64")
        message = refused(df)
        assert "2 rows have a null key" in message and "'customer_id'" in message

    def test_null_event_time(self) -> None:
        df = frame(2)
        df.loc[0, "event_time"] = pd.NaT
        assert "1 rows have a null event-time value" in refused(df)

    def test_naive_timestamps_are_refused_with_the_fix(self) -> None:
        message = refused(frame(event_time=pd.date_range("2024-01-01", periods=3)))
        assert "without a timezone" in message
        assert 'tz_localize("UTC")' in message

    def test_naive_timestamp_feature_is_refused(self) -> None:
        group = make_group(seen="timestamp")
        assert "without a timezone" in refused(frame(seen=pd.date_range("2024", periods=3)), group)

    def test_string_event_time(self) -> None:
        message = refused(frame(event_time=["2024-01-01", "2024-01-02", "2024-01-03"]))
        assert "'event_time'" in message and "timezone-aware timestamp" in message

    def test_duplicates_are_counted_and_shown(self) -> None:
        df = frame(4)
        df.loc[3, ["customer_id", "event_time"]] = df.loc[0, ["customer_id", "event_time"]]
        df.loc[2, ["customer_id", "event_time"]] = df.loc[0, ["customer_id", "event_time"]]
        message = refused(df)
        assert "3 rows repeat a (customer_id, event_time) pair" in message
        assert "'customer_id': 0" in message and "appears 3 times" in message

    def test_float_keys_are_refused(self) -> None:
        assert "keys must be integers" in refused(frame(customer_id=[1.0, 2.0, 3.0]))

    def test_float_to_int_is_refused(self) -> None:
        message = refused(frame(n=[1.0, 2.0, 3.0]), make_group(n="int64"))
        assert "'n'" in message and "double" in message and "int64" in message

    def test_string_to_number_is_refused(self) -> None:
        message = refused(frame(x=["1", "2", "3"]))
        assert "'x'" in message and "string" in message and "double" in message
        assert "pd.to_numeric" in message

    def test_number_to_string_is_refused(self) -> None:
        assert "'s'" in refused(frame(s=[1, 2, 3]), make_group(s="string"))

    def test_integer_narrowing_checks_values(self) -> None:
        group = make_group(n="int32")
        assert prepare(frame(n=[1, 2, 3]), group).schema.field("n").type == pa.int32()
        assert "does not fit" in refused(frame(n=[1, 2, 2**40]), group)

    def test_float_narrowing_checks_overflow(self) -> None:
        group = make_group(f="float32")
        assert prepare(frame(f=[1.5, 2.5, 3.5]), group).schema.field("f").type == pa.float32()
        assert "beyond the range" in refused(frame(f=[1.0, 1e300, 2.0]), group)

    def test_int_to_float_is_allowed(self) -> None:
        table = prepare(frame(x=[1, 2, 3]), GROUP)
        assert table.schema.field("x").type == pa.float64()

    def test_unknown_declared_dtype(self) -> None:
        assert "declares dtype 'complex'" in refused(frame(), make_group(x="complex"))


class TestChunks:
    def test_dataframe_is_sliced(self) -> None:
        sizes = [chunk.num_rows for chunk in iter_chunks(frame(10), GROUP, chunk_rows=4)]
        assert sizes == [4, 4, 2]

    def test_arrow_table_is_sliced(self) -> None:
        table = pa.Table.from_pandas(frame(5), preserve_index=False)
        assert [c.num_rows for c in iter_chunks(table, GROUP, chunk_rows=2)] == [2, 2, 1]

    def test_parquet_batches_are_regrouped(self, tmp_path: Path) -> None:
        table = pa.Table.from_pandas(frame(10), preserve_index=False)
        pq.write_table(table, tmp_path / "data.parquet", row_group_size=3)
        chunks = list(iter_chunks(tmp_path / "data.parquet", GROUP, chunk_rows=4))
        assert [c.num_rows for c in chunks] == [4, 4, 2]
        ids = pa.concat_tables(chunks)["customer_id"].to_pylist()
        assert ids == list(range(10))

    def test_empty_input_gives_one_empty_chunk(self) -> None:
        chunks = list(iter_chunks(frame(0), GROUP))
        assert len(chunks) == 1 and chunks[0].num_rows == 0
        assert chunks[0].column_names == ["customer_id", "event_time", "x"]

    def test_each_chunk_is_checked(self) -> None:
        df = frame(6)
        df["customer_id"] = pd.array([1, 2, 3, 4, None, 6], dtype="Int64")
        chunks = iter_chunks(df, GROUP, chunk_rows=3)
        assert next(chunks).num_rows == 3
        with pytest.raises(InvalidArgument, match="null key"):
            next(chunks)

    def test_chunk_rows_must_be_positive(self) -> None:
        with pytest.raises(InvalidArgument, match="chunk_rows"):
            next(iter_chunks(frame(), GROUP, chunk_rows=0))


def test_a_query_is_a_source(tmp_path: Path) -> None:
    from plinth.features.ingest import Query

    rows = frame(5)
    rows.to_parquet(tmp_path / "rows.parquet")
    query = Query(f"SELECT * FROM '{tmp_path / 'rows.parquet'}' ORDER BY customer_id")
    by_duckdb = prepare(query, GROUP)
    assert by_duckdb.equals(prepare(rows, GROUP))
    assert pa.concat_tables(iter_chunks(query, GROUP, 2)).equals(by_duckdb)
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    rows.assign(event_time=rows.event_time.astype(str)).to_sql("t", database, index=False)
    # SQLite keeps times as text: refused by name, as any source's would be
    assert "event_time" in refused(Query("SELECT * FROM t", database))
    assert "the query failed" in refused(Query("SELECT * FROM nowhere"))
    assert "the query failed" in refused(Query("SELECT * FROM nowhere", database))
