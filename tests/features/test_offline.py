from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from plinth.errors import Conflict, InvalidArgument, NotFound, Unavailable
from plinth.features.ingest import prepare
from plinth.features.offline import OfflineStore, s3_storage_options
from plinth.features.types import FeatureGroup, FeatureSpec

DAY = datetime(2024, 1, 1, tzinfo=UTC)
GROUP = FeatureGroup(
    "customer_stats",
    1,
    "customer",
    ["customer_id"],
    "event_time",
    [FeatureSpec("orders", "int64"), FeatureSpec("spend", "float64")],
)


def rows(*values: tuple[int, int, int, float], group: FeatureGroup = GROUP) -> pa.Table:
    """(customer_id, day, orders, spend) tuples -> a prepared table."""
    ids, days, orders, spend = zip(*values, strict=True) if values else ((), (), (), ())
    data = pa.table(
        {
            "customer_id": pa.array(ids, pa.int64()),
            "event_time": pa.array(
                [DAY + timedelta(days=d) for d in days], pa.timestamp("us", "UTC")
            ),
            "orders": pa.array(orders, pa.int64()),
            "spend": pa.array(spend, pa.float64()),
        }
    )
    return prepare(data, group)


def content(table: pa.Table) -> list[tuple[object, ...]]:
    sorted_ = table.sort_by([("customer_id", "ascending"), ("event_time", "ascending")])
    return list(zip(*(sorted_[c].to_pylist() for c in sorted_.column_names), strict=True))


def as_tuples(table: pa.Table) -> list[tuple[object, ...]]:
    return content(table)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> OfflineStore:
    if request.param == "local":
        return OfflineStore(str(tmp_path / "offline"))
    bucket: str = request.getfixturevalue("s3_bucket")
    return OfflineStore(f"{bucket}/offline")


class TestOfflineStoreContract:
    def test_first_write_creates_the_table(self, store: OfflineStore) -> None:
        assert store.version(GROUP) is None
        assert store.write(GROUP, rows((1, 0, 3, 10.0), (2, 0, 1, 5.0))) == 0
        assert store.version(GROUP) == 0
        assert content(store.read(GROUP)) == content(rows((1, 0, 3, 10.0), (2, 0, 1, 5.0)))

    def test_upsert_replaces_same_key_and_time_and_appends_the_rest(
        self, store: OfflineStore
    ) -> None:
        store.write(GROUP, rows((1, 0, 3, 10.0), (2, 0, 1, 5.0)))
        version = store.write(GROUP, rows((1, 0, 4, 12.0), (1, 1, 5, 13.0), (3, 0, 1, 1.0)))
        assert version == 1  # exactly one commit for the whole write
        expected = rows((1, 0, 4, 12.0), (1, 1, 5, 13.0), (2, 0, 1, 5.0), (3, 0, 1, 1.0))
        assert content(store.read(GROUP)) == content(expected)
        latest = store.history(GROUP)[0]
        assert latest["version"] == 1 and latest["operation"] == "MERGE"
        assert (latest["rows_inserted"], latest["rows_updated"], latest["rows_written"]) == (
            2,
            1,
            3,
        )

    def test_each_write_is_one_commit(self, store: OfflineStore) -> None:
        for i in range(3):
            assert store.write(GROUP, rows((i, i, i, float(i)), (i + 10, i, i, 1.0))) == i
        history = store.history(GROUP)
        assert [h["version"] for h in history] == [2, 1, 0]
        assert history[-1]["operation"] == "WRITE" and history[-1]["rows_written"] == 2
        assert all(h["timestamp"].tzinfo is not None for h in history)

    def test_time_travel_by_version_and_time(self, store: OfflineStore) -> None:
        store.write(GROUP, rows((1, 0, 1, 1.0)))
        store.write(GROUP, rows((1, 0, 2, 2.0)))
        store.write(GROUP, rows((1, 0, 3, 3.0)))
        assert store.read(GROUP, as_of=0)["orders"].to_pylist() == [1]
        assert store.read(GROUP, as_of=1)["orders"].to_pylist() == [2]
        assert store.read(GROUP)["orders"].to_pylist() == [3]
        committed = {h["version"]: h["timestamp"] for h in store.history(GROUP)}
        assert store.read(GROUP, as_of=committed[1])["orders"].to_pylist() == [2]
        between = committed[1] + (committed[2] - committed[1]) / 2
        if between < committed[2]:  # commits in the same millisecond have no time between
            assert store.read(GROUP, as_of=between)["orders"].to_pylist() == [2]
        future = datetime.now(UTC) + timedelta(days=1)
        assert store.read(GROUP, as_of=future)["orders"].to_pylist() == [3]
        assert store.dataset(GROUP, as_of=0).to_table()["orders"].to_pylist() == [1]

    def test_time_travel_refusals(self, store: OfflineStore) -> None:
        store.write(GROUP, rows((1, 0, 1, 1.0)))
        with pytest.raises(NotFound, match="no version 5"):
            store.read(GROUP, as_of=5)
        with pytest.raises(NotFound, match="no version -1"):
            store.read(GROUP, as_of=-1)
        with pytest.raises(NotFound, match="no data yet"):
            store.read(GROUP, as_of=datetime(2000, 1, 1, tzinfo=UTC))
        with pytest.raises(InvalidArgument, match="no timezone"):
            store.read(GROUP, as_of=datetime(2100, 1, 1))
        with pytest.raises(InvalidArgument, match="as_of must be"):
            store.read(GROUP, as_of=True)

    def test_read_columns(self, store: OfflineStore) -> None:
        store.write(GROUP, rows((1, 0, 1, 1.0)))
        assert store.read(GROUP, columns=["spend"]).column_names == ["spend"]
        with pytest.raises(InvalidArgument, match="no column 'nope'"):
            store.read(GROUP, columns=["nope"])

    def test_nothing_written_yet(self, store: OfflineStore) -> None:
        with pytest.raises(NotFound, match="no offline data"):
            store.read(GROUP)
        with pytest.raises(NotFound):
            store.history(GROUP)
        store.delete_table(GROUP)  # nothing to delete is no error

    def test_dataset_serves_duckdb(self, store: OfflineStore) -> None:
        store.write(GROUP, rows((1, 0, 1, 1.0), (2, 0, 5, 2.0), (3, 1, 9, 3.0)))
        dataset = store.dataset(GROUP)
        with duckdb.connect() as con:
            con.register("stats", dataset)
            got = con.execute(
                "SELECT customer_id FROM stats WHERE orders > 2 ORDER BY 1"
            ).fetchall()
        assert got == [(2,), (3,)]

    def test_write_many_is_one_commit(self, store: OfflineStore) -> None:
        chunks = [rows((i, 0, i, 1.0), (i, 1, i, 2.0)) for i in range(4)]
        assert store.write_many(GROUP, iter(chunks)) == 0
        assert store.read(GROUP).num_rows == 8
        update = [rows((0, 0, 100, 1.0)), rows((9, 0, 9, 9.0))]
        assert store.write_many(GROUP, update) == 1
        table = store.read(GROUP)
        assert table.num_rows == 9 and 100 in table["orders"].to_pylist()
        assert len(store.history(GROUP)) == 2

    def test_duplicates_across_chunks_leave_no_commit(self, store: OfflineStore) -> None:
        chunks = [rows((1, 0, 1, 1.0)), rows((1, 0, 2, 2.0))]
        with pytest.raises(InvalidArgument, match="repeat a"):
            store.write_many(GROUP, chunks)
        assert store.version(GROUP) is None

    @pytest.mark.parametrize("existing", [False, True])
    def test_a_crash_mid_write_leaves_no_commit(self, store: OfflineStore, existing: bool) -> None:
        if existing:
            store.write(GROUP, rows((1, 0, 1, 1.0)))

        def crashing() -> Iterator[pa.Table]:
            yield rows((1, 0, 50, 5.0), (2, 0, 2, 2.0))
            yield rows((3, 0, 3, 3.0))
            raise ConnectionError("the feature pipeline lost its source")

        # the caller's own error, not deltalake's wrapping of it nor a storage failure
        with pytest.raises(ConnectionError, match="lost its source"):
            store.write_many(GROUP, crashing())
        if existing:
            assert store.version(GROUP) == 0
            assert content(store.read(GROUP)) == content(rows((1, 0, 1, 1.0)))
        else:
            assert store.version(GROUP) is None

    def test_a_bad_later_chunk_leaves_no_commit(self, store: OfflineStore) -> None:
        store.write(GROUP, rows((1, 0, 1, 1.0)))
        bad = rows((2, 0, 2, 2.0)).drop_columns(["spend"])
        with pytest.raises(InvalidArgument, match="pass it through"):
            store.write_many(GROUP, [rows((1, 0, 7, 7.0)), bad])
        assert store.version(GROUP) == 0
        assert store.read(GROUP)["orders"].to_pylist() == [1]

    def test_empty_writes(self, store: OfflineStore) -> None:
        assert store.write(GROUP, rows()) == 0  # creates the table with its schema
        assert store.read(GROUP).column_names == ["customer_id", "event_time", "orders", "spend"]
        store.write(GROUP, rows((1, 0, 1, 1.0)))
        assert store.write(GROUP, rows()) == 1  # nothing to commit
        assert store.version(GROUP) == 1

    def test_keys_are_cast_to_the_stored_type(self, store: OfflineStore) -> None:
        store.write(GROUP, rows((1, 0, 1, 1.0)))
        narrow = rows((1, 0, 2, 2.0))
        narrow = narrow.set_column(0, "customer_id", narrow["customer_id"].cast(pa.int32()))
        assert store.write(GROUP, narrow) == 1
        assert store.read(GROUP)["orders"].to_pylist() == [2]

    def test_unprepared_data_is_refused(self, store: OfflineStore) -> None:
        data = rows((1, 0, 1, 1.0)).select(["event_time", "customer_id", "orders", "spend"])
        with pytest.raises(InvalidArgument, match="pass it through"):
            store.write(GROUP, data)
        wrong = rows((1, 0, 1, 1.0))
        wrong = wrong.set_column(3, "spend", wrong["spend"].cast(pa.float32()))
        with pytest.raises(InvalidArgument, match="'spend'"):
            store.write(GROUP, wrong)
        assert store.version(GROUP) is None

    def test_a_concurrent_create_is_a_conflict(
        self, store: OfflineStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.write(GROUP, rows((1, 0, 1, 1.0)))
        real_open, looks = store._open, []

        def first_look_finds_nothing(uri: str) -> DeltaTable | None:
            looks.append(uri)  # as if another writer created the table right after this look
            return None if len(looks) == 1 else real_open(uri)

        monkeypatch.setattr(store, "_open", first_look_finds_nothing)
        with pytest.raises(Conflict, match="at the same time; retry"):
            store.write(GROUP, rows((2, 0, 1, 1.0)))
        assert store.version(GROUP) == 0

    def test_delete_table(self, store: OfflineStore) -> None:
        store.write(GROUP, rows((1, 0, 1, 1.0)))
        store.write(GROUP, rows((2, 0, 1, 1.0)))
        store.delete_table(GROUP)
        assert store.version(GROUP) is None
        assert store.write(GROUP, rows((3, 0, 1, 1.0))) == 0
        assert store.read(GROUP)["customer_id"].to_pylist() == [3]

    def test_versions_of_a_group_are_separate_tables(self, store: OfflineStore) -> None:
        v2 = FeatureGroup(
            "customer_stats", 2, "customer", ["customer_id"], "event_time", GROUP.features
        )
        store.write(GROUP, rows((1, 0, 1, 1.0)))
        store.write(v2, rows((2, 0, 1, 1.0), group=v2))
        assert store.read(GROUP)["customer_id"].to_pylist() == [1]
        assert store.read(v2)["customer_id"].to_pylist() == [2]


def test_table_uri(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path) + "/")
    assert store.table_uri("stats", 3) == f"{tmp_path}/features/stats/v3"
    assert OfflineStore(f"file://{tmp_path}").table_uri("s", 1) == f"{tmp_path}/features/s/v1"
    assert OfflineStore("s3://bucket/root").table_uri("s", 1) == "s3://bucket/root/features/s/v1"
    with pytest.raises(InvalidArgument, match="cannot name a folder"):
        store.table_uri("../escape", 1)


def test_the_group_table_uri_wins(tmp_path: Path) -> None:
    elsewhere = str(tmp_path / "moved" / "table")
    group = FeatureGroup(
        GROUP.name, 1, "customer", GROUP.keys, GROUP.event_time, GROUP.features, table_uri=elsewhere
    )
    OfflineStore(str(tmp_path / "root")).write(group, rows((1, 0, 1, 1.0)))
    assert (tmp_path / "moved" / "table" / "_delta_log").is_dir()


def test_storage_failure_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the tables' folder should be")
    with pytest.raises(Unavailable, match="offline store failed writing"):
        OfflineStore(str(blocker)).write(GROUP, rows((1, 0, 1, 1.0)))


def test_s3_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "PLINTH_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    assert s3_storage_options({}) == {
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
    }
    explicit = s3_storage_options({"aws_region": "us-east-2"})
    assert explicit["aws_region"] == "us-east-2" and "AWS_REGION" not in explicit
