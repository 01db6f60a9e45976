"""The online store contract, run against SQLite and Redis, plus each backend's own faults.

Redis tests use database 9 of ``PLINTH_TEST_REDIS`` (default ``redis://127.0.0.1:6379/9``),
a fresh namespace per test, and delete that namespace afterwards.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
import redis

from plinth.errors import InvalidArgument, PlinthError, Unavailable
from plinth.features.online import OnlineRow, OnlineStore, online_store_for
from plinth.features.online.codec import encode_key, encode_rows, reader_for
from plinth.features.online.redis import RedisOnlineStore
from plinth.features.online.sqlite import SqliteOnlineStore

REDIS_URL = os.environ.get("PLINTH_TEST_REDIS", "redis://127.0.0.1:6379/9")
CLOSED_PORT = "redis://127.0.0.1:1/0"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TS = pa.timestamp("us", "UTC")


def rows(
    keys: dict[str, list[Any]], times: list[datetime], features: dict[str, pa.Array | list[Any]]
) -> pa.Table:
    return pa.table({**keys, "event_time": pa.array(times, TS), **features})


def customers(ids: list[int], times: list[datetime], **features: list[Any]) -> pa.Table:
    return rows({"customer_id": ids}, times, dict(features))


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        sqlite = SqliteOnlineStore(tmp_path / "online.db")
        yield sqlite
        sqlite.close()
        return
    with redis_store() as found:
        yield found


@contextlib.contextmanager
def redis_store() -> Iterator[RedisOnlineStore]:
    """A store under a fresh namespace, whose keys are all deleted afterwards."""
    namespace = f"plinth_test_{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - depends on the machine
        client.close()
        pytest.skip(f"Redis at {REDIS_URL} is not available: {exc}")
    store = RedisOnlineStore(REDIS_URL, namespace=namespace)
    try:
        yield store
    finally:
        store.close()
        left = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if left:
            client.unlink(*left)
        client.close()


class TestOnlineStoreContract:
    """What every online store does; the ``store`` fixture gives each backend in turn."""

    def test_round_trip_of_each_value_type(self, store: OnlineStore) -> None:
        features: dict[str, pa.Array] = {
            "flag": pa.array([True, False, None]),
            "count": pa.array([2**63 - 1, -(2**63), None], pa.int64()),
            "small": pa.array([7, 0, None], pa.int32()),
            "spend": pa.array([2.0, -0.1, None], pa.float64()),
            "ratio": pa.array([0.1, float("inf"), None], pa.float32()),
            "name": pa.array(['Zoë "quoted", with | pipes', "", None]),
            "seen_at": pa.array([T0, datetime(1960, 1, 1, tzinfo=UTC), None], TS),
            "born": pa.array([date(1990, 2, 3), date(1, 1, 1), None], pa.date32()),
            "nothing": pa.array([None, None, None], pa.null()),
        }
        table = customers([1, 2, 3], [T0, T0, T0], **features)
        assert store.write("customers__v1", ["customer_id"], table, "event_time") == 3

        found = store.read("customers__v1", [(1,), (2,), (3,)], list(features))

        expected = table.select(list(features)).to_pylist()  # what the offline store gives
        assert [row.values for row in found] == expected
        for row, want in zip(found, expected, strict=True):
            assert row.values is not None
            for name, value in want.items():
                assert type(row.values[name]) is type(value), name
        assert all(row.event_time == T0 for row in found)
        seen_at = found[0].values["seen_at"] if found[0].values else None
        assert seen_at is not None and seen_at.utcoffset() == timedelta(0)

    def test_nan_stays_a_float(self, store: OnlineStore) -> None:
        store.write("t", ["customer_id"], customers([1], [T0], x=[math.nan]), "event_time")
        [row] = store.read("t", [(1,)], ["x"])
        assert row.values is not None and math.isnan(row.values["x"])

    def test_timestamps_of_any_unit_and_zone_come_back_as_the_same_instant_in_utc(
        self, store: OnlineStore
    ) -> None:
        berlin = datetime(2024, 5, 1, 14, 0, tzinfo=ZoneInfo("Europe/Berlin"))
        table = pa.table(
            {
                "customer_id": [1],
                "event_time": pa.array([1_714_564_800_123_456_789], pa.timestamp("ns")),
                "local": pa.array([berlin], pa.timestamp("s", "Europe/Berlin")),
                "naive": pa.array([datetime(2024, 5, 1, 12, 0)], pa.timestamp("ms")),
            }
        )
        store.write("t", ["customer_id"], table, "event_time")

        [row] = store.read("t", [(1,)], ["local", "naive"])

        # naive timestamps are taken as UTC; nanoseconds are truncated to microseconds
        assert row.event_time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
        assert row.values == {"local": T0, "naive": T0}
        assert row.values["local"].utcoffset() == timedelta(0)

    def test_unknown_keys_and_tables_give_empty_rows(self, store: OnlineStore) -> None:
        store.write("t", ["customer_id"], customers([1], [T0], x=[1.0]), "event_time")

        assert store.read("t", [(2,), (1,), (None,)], ["x"]) == [
            OnlineRow(None, None),
            OnlineRow({"x": 1.0}, T0),
            OnlineRow(None, None),
        ]
        assert store.read("never_written", [(1,)], ["x"]) == [OnlineRow(None, None)]

    def test_newer_or_equal_event_time_wins_and_older_writes_are_ignored(
        self, store: OnlineStore
    ) -> None:
        def write(value: float, at: datetime) -> int:
            return store.write("t", ["customer_id"], customers([1], [at], x=[value]), "event_time")

        def stored() -> OnlineRow:
            return store.read("t", [(1,)], ["x"])[0]

        assert write(1.0, T0) == 1
        assert write(0.0, T0 - timedelta(microseconds=1)) == 0  # older: ignored
        assert stored() == OnlineRow({"x": 1.0}, T0)
        assert write(2.0, T0) == 1  # equal: replaces
        assert stored() == OnlineRow({"x": 2.0}, T0)
        assert write(3.0, T0 + timedelta(days=1)) == 1
        assert stored() == OnlineRow({"x": 3.0}, T0 + timedelta(days=1))

    def test_within_one_write_the_newest_row_per_key_wins(self, store: OnlineStore) -> None:
        later = T0 + timedelta(hours=1)
        table = customers(
            [1, 1, 2, 2, 3, 3], [later, T0, T0, later, T0, T0], x=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        )

        assert store.write("t", ["customer_id"], table, "event_time") == 5

        found = store.read("t", [(1,), (2,), (3,)], ["x"])
        assert found == [
            OnlineRow({"x": 1.0}, later),
            OnlineRow({"x": 4.0}, later),
            OnlineRow({"x": 6.0}, T0),  # a tie: the later row
        ]

    def test_composite_keys(self, store: OnlineStore) -> None:
        shops = ["north", 'a "quoted", [odd] key', "ünïcode"]
        table = rows({"customer_id": [1, 1, 2], "shop": shops}, [T0] * 3, {"x": [1.0, 2.0, 3.0]})
        store.write("t", ["customer_id", "shop"], table, "event_time")

        found = store.read(
            "t", [(1, shops[1]), (2, shops[2]), (1, "south"), (2, "north"), (1, shops[0])], ["x"]
        )

        assert [row.values for row in found] == [{"x": 2.0}, {"x": 3.0}, None, None, {"x": 1.0}]

    def test_integer_and_string_keys_are_distinct(self, store: OnlineStore) -> None:
        store.write("t", ["id"], rows({"id": ["1"]}, [T0], {"x": [1.0]}), "event_time")

        assert store.read("t", [(1,), ("1",)], ["x"]) == [
            OnlineRow(None, None),
            OnlineRow({"x": 1.0}, T0),
        ]

    def test_reading_a_subset_of_the_features(self, store: OnlineStore) -> None:
        table = customers([1], [T0], a=[1], b=["two"], c=[3.0], d=[False], e=[None])
        store.write("t", ["customer_id"], table, "event_time")

        assert store.read("t", [(1,)], ["c", "a"]) == [OnlineRow({"c": 3.0, "a": 1}, T0)]
        assert store.read("t", [(1,)], ["not_stored"]) == [OnlineRow({"not_stored": None}, T0)]
        assert store.read("t", [(1,)], []) == [OnlineRow({}, T0)]

    def test_drop_removes_one_table_only(self, store: OnlineStore) -> None:
        for table in ("t", "t_2", "tt"):
            store.write(table, ["customer_id"], customers([1, 2], [T0] * 2, x=[1, 2]), "event_time")

        store.drop("t")
        store.drop("t")  # dropping what is gone is no error
        store.drop("never_written")

        assert store.read("t", [(1,), (2,)], ["x"]) == [OnlineRow(None, None)] * 2
        assert store.read("t_2", [(2,)], ["x"]) == [OnlineRow({"x": 2}, T0)]
        assert store.read("tt", [(1,)], ["x"]) == [OnlineRow({"x": 1}, T0)]
        store.write("t", ["customer_id"], customers([3], [T0], x=[3]), "event_time")
        assert store.read("t", [(3,)], ["x"]) == [OnlineRow({"x": 3}, T0)]

    def test_a_batch_of_keys_in_one_call_keeps_the_request_order(self, store: OnlineStore) -> None:
        ids = list(range(1000, 1150))
        times = [T0 + timedelta(seconds=i) for i in range(len(ids))]
        table = customers(ids, times, x=[float(i) for i in ids], y=[str(i) for i in ids])
        assert store.write("t", ["customer_id"], table, "event_time") == 150

        wanted = [5_000 + i if i % 10 == 0 else 1000 + (i * 7) % 150 for i in range(100)]
        found = store.read("t", [(k,) for k in wanted], ["y", "x"])

        assert len(found) == 100
        for key, row in zip(wanted, found, strict=True):
            if key >= 5_000:
                assert row == OnlineRow(None, None)
            else:
                assert row == OnlineRow(
                    {"y": str(key), "x": float(key)}, T0 + timedelta(seconds=key - 1000)
                )

    def test_batches_larger_than_one_statement_or_script(self, store: OnlineStore) -> None:
        ids = list(range(1300))
        store.write("t", ["customer_id"], customers(ids, [T0] * 1300, x=ids), "event_time")

        found = store.read("t", [(k,) for k in [*ids, 1300, 0]], ["x"])

        assert [row.values for row in found] == [{"x": k} for k in ids] + [None, {"x": 0}]

    def test_empty_inputs(self, store: OnlineStore) -> None:
        empty = rows(
            {"customer_id": pa.array([], pa.int64())}, [], {"x": pa.array([], pa.float64())}
        )

        assert store.write("t", ["customer_id"], empty, "event_time") == 0
        assert store.read("t", [], ["x"]) == []
        assert store.read("t", [(1,)], ["x"]) == [OnlineRow(None, None)]
        no_features = customers([1], [T0])
        assert store.write("t", ["customer_id"], no_features, "event_time") == 1
        assert store.read("t", [(1,)], ["x"]) == [OnlineRow({"x": None}, T0)]

    @pytest.mark.parametrize("table", ["", "a:b", "t*", 'x"; DROP TABLE t; --', "1abc", "a" * 129])
    def test_table_names_are_checked(self, store: OnlineStore, table: str) -> None:
        one = customers([1], [T0], x=[1.0])
        for call in (
            lambda: store.write(table, ["customer_id"], one, "event_time"),
            lambda: store.read(table, [(1,)], ["x"]),
            lambda: store.drop(table),
        ):
            with pytest.raises(InvalidArgument, match="online table name"):
                call()

    def test_bad_rows_are_refused_and_nothing_is_written(self, store: OnlineStore) -> None:
        def refused(table: pa.Table, keys: list[str], match: str) -> None:
            with pytest.raises(InvalidArgument, match=match):
                store.write("t", keys, table, "event_time")

        nulls = pa.array([1, None], pa.int64())
        refused(customers([1, 2], [T0, T0], x=[1, 2]), ["shop"], r"lack the columns \['shop'\]")
        refused(rows({"customer_id": nulls}, [T0, T0], {"x": [1, 2]}), ["customer_id"], "null")
        refused(customers([1, 2], [T0, None], x=[1, 2]), ["customer_id"], "null")
        refused(customers([1], [T0], x=[[1, 2]]), ["customer_id"], "feature column 'x'")
        refused(rows({"id": [1.5]}, [T0], {"x": [1]}), ["id"], "key column 'id'")
        refused(customers([1], [T0], x=[1]), [], "at least one key")
        times = pa.table({"customer_id": [1], "event_time": ["2024-05-01"]})
        refused(times, ["customer_id"], "not timestamp")

        assert store.read("t", [(1,), (2,)], ["x"]) == [OnlineRow(None, None)] * 2

    def test_keys_of_other_types_are_refused_on_read(self, store: OnlineStore) -> None:
        with pytest.raises(InvalidArgument, match="integers or strings"):
            store.read("t", [(1.5,)], ["x"])
        with pytest.raises(InvalidArgument, match="integers or strings"):
            store.read("t", [(True,)], ["x"])

    def test_numpy_keys_find_the_same_rows(self, store: OnlineStore) -> None:
        import numpy as np

        store.write("t", ["customer_id"], customers([7], [T0], x=[1.0]), "event_time")

        assert store.read("t", [(np.int64(7),)], ["x"]) == [OnlineRow({"x": 1.0}, T0)]

    def test_reads_from_other_threads(self, store: OnlineStore) -> None:
        store.write("t", ["customer_id"], customers([1], [T0], x=[1.0]), "event_time")
        found: list[list[OnlineRow]] = []
        threads = [
            threading.Thread(target=lambda: found.append(store.read("t", [(1,)], ["x"])))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert found == [[OnlineRow({"x": 1.0}, T0)]] * 4

    # -- column by column ------------------------------------------------------------------

    def test_read_columns_gives_one_list_per_feature_in_request_order(
        self, store: OnlineStore
    ) -> None:
        times = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
        table = customers([1, 2, 3], times, x=[1.0, 2.0, 3.0], y=["a", "b", None])
        store.write("t", ["customer_id"], table, "event_time")

        found = store.read_columns("t", [(3,), (9,), (1,), (3,)], ["y", "x", "absent"])

        assert found.columns == {
            "y": [None, None, "a", None],
            "x": [3.0, None, 1.0, 3.0],
            "absent": [None] * 4,
        }
        micros = [
            (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) for t in times
        ]
        assert list(found.micros) == [micros[2], None, micros[0], micros[2]]
        assert found.rows() == store.read("t", [(3,), (9,), (1,), (3,)], ["y", "x", "absent"])

    def test_rows_older_than_not_before_keep_their_event_time_but_lose_their_values(
        self, store: OnlineStore
    ) -> None:
        times = [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
        store.write("t", ["customer_id"], customers([1, 2, 3], times, x=[1, 2, 3]), "event_time")
        at = (times[1] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)

        found = store.read_columns("t", [(1,), (2,), (3,), (4,)], ["x"], not_before=at)

        assert found.columns == {"x": [None, 2, 3, None]}  # the row at the bound is fresh
        assert list(found.micros) == [at - 3_600_000_000, at, at + 3_600_000_000, None]
        everything = store.read_columns("t", [(1,), (2,)], ["x"], not_before=at - 3_600_000_000)
        assert everything.columns == {"x": [1, 2]}

    def test_rows_written_before_and_after_a_feature_was_added_read_together(
        self, store: OnlineStore
    ) -> None:
        store.write("t", ["customer_id"], customers([1, 2], [T0] * 2, x=[1, 2]), "event_time")
        wider = customers([3], [T0], x=[3], y=["three"])
        store.write("t", ["customer_id"], wider, "event_time")

        found = store.read_columns("t", [(3,), (1,), (5,), (2,)], ["y", "x"])

        assert found.columns == {"y": ["three", None, None, None], "x": [3, 1, None, 2]}
        assert store.read_columns("t", [(1,), (3,)], ["x"]).columns == {"x": [1, 3]}

    def test_read_columns_of_no_keys_or_an_unknown_table(self, store: OnlineStore) -> None:
        assert store.read_columns("t", [], ["x"]).columns == {"x": []}
        found = store.read_columns("never_written", [(1,), (2,)], ["x", "y"])
        assert found.columns == {"x": [None, None], "y": [None, None]}
        assert list(found.micros) == [None, None]
        with pytest.raises(InvalidArgument, match="integers or strings"):
            store.read_columns("t", [(1,), (2.5,)], ["x"])

    def test_string_and_composite_keys_read_in_batches(self, store: OnlineStore) -> None:
        names = ['a"b', "c\\d", "Zoë", "x|y", "[1]", "1"]
        table = rows({"shop": names, "n": list(range(6))}, [T0] * 6, {"v": list(range(6))})
        store.write("t", ["shop", "n"], table, "event_time")
        store.write(
            "u", ["shop"], rows({"shop": names}, [T0] * 6, {"v": list(range(6))}), "event_time"
        )

        pairs = [(name, i) for i, name in reversed(list(enumerate(names)))]
        assert store.read_columns("t", [*pairs, ('a"b', 1)], ["v"]).columns == {
            "v": [5, 4, 3, 2, 1, 0, None]
        }
        singles = [(name,) for name in reversed(names)]
        assert store.read_columns("u", [*singles, (1,)], ["v"]).columns == {
            "v": [5, 4, 3, 2, 1, 0, None]  # the integer 1 is not the string "1"
        }


# -- key encoding ----------------------------------------------------------------------------


def test_read_keys_encode_like_written_keys() -> None:
    table = rows({"a": pa.array([-5, 2**63 - 1], pa.int64()), "b": ['x"y', "ü"]}, [T0, T0], {})
    [batch] = encode_rows(table, ["a", "b"], "event_time")

    assert batch.keys == [encode_key((-5, 'x"y')), encode_key((2**63 - 1, "ü"))]
    assert batch.keys[0] == '[-5,"x\\"y"]'


@pytest.mark.parametrize("n", [1, 15, 16, 65_535, 65_536])
def test_a_batch_of_any_size_decodes_into_columns(n: int) -> None:
    """All rows of a read are decoded in one call behind one msgpack array header, whose
    form changes at 16 and 65,536 items."""
    table = customers(list(range(n)), [T0] * n, x=list(range(n)))
    [batch] = encode_rows(table, ["customer_id"], "event_time", batch_rows=n)
    packed: list[bytes | None] = [*batch.values, None]

    [column] = reader_for(["x"]).columns(packed)

    assert column == [*range(n), None]


def test_a_row_whose_layout_lacks_every_feature_reads_as_nulls() -> None:
    [old] = encode_rows(customers([1], [T0], x=[1]), ["customer_id"], "event_time")
    [new] = encode_rows(customers([2], [T0], y=[2], x=[3]), ["customer_id"], "event_time")

    assert reader_for(["y"]).columns([*old.values, *new.values]) == [[None, 2]]
    assert reader_for(["y", "x"]).columns([None, *old.values]) == [[None, None], [None, 1]]
    assert reader_for(["y"]).columns([None, None]) == [[None, None]]
    assert reader_for([]).columns([*old.values]) == []


def test_rows_are_encoded_in_batches() -> None:
    table = customers(list(range(10)), [T0] * 10, x=list(range(10)))

    batches = list(encode_rows(table, ["customer_id"], "event_time", batch_rows=4))

    assert [len(b.keys) for b in batches] == [4, 4, 2]


# -- SQLite ----------------------------------------------------------------------------------


def test_sqlite_store_keeps_rows_across_connections(tmp_path: Path) -> None:
    first = SqliteOnlineStore(tmp_path / "nested" / "online.db")
    first.write("t", ["customer_id"], customers([1], [T0], x=[1.0]), "event_time")
    first.close()
    assert first.read("t", [(1,)], ["x"]) == [OnlineRow({"x": 1.0}, T0)]  # reopens
    first.close()

    second = SqliteOnlineStore(tmp_path / "nested" / "online.db")
    assert second.read("t", [(1,)], ["x"]) == [OnlineRow({"x": 1.0}, T0)]
    second.close()


def test_sqlite_reads_go_on_while_another_writer_holds_the_lock(tmp_path: Path) -> None:
    store = SqliteOnlineStore(tmp_path / "online.db", timeout=0.05)
    store.write("t", ["customer_id"], customers([1], [T0], x=[1.0]), "event_time")
    other = sqlite3.connect(tmp_path / "online.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert store.read("t", [(1,)], ["x"]) == [OnlineRow({"x": 1.0}, T0)]
        with pytest.raises(Unavailable, match="locked by another writer"):
            store.write("t", ["customer_id"], customers([2], [T0], x=[2.0]), "event_time")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.write("t", ["customer_id"], customers([2], [T0], x=[2.0]), "event_time") == 1
    store.close()


def test_sqlite_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    store = SqliteOnlineStore(tmp_path / "online.db")
    thread = threading.Thread(target=lambda: store.read("t", [(1,)], ["x"]))
    thread.start()
    thread.join()

    assert len(store._held) == 1  # the main thread's only
    store.close()
    assert len(store._held) == 0


def test_sqlite_store_needs_a_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="file path"):
        SqliteOnlineStore(":memory:")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(Unavailable, match="a_file"):
        SqliteOnlineStore(tmp_path / "a_file" / "online.db")


# -- Redis -----------------------------------------------------------------------------------


def test_a_redis_server_that_is_down_is_unavailable_on_read_write_and_drop() -> None:
    store = RedisOnlineStore(CLOSED_PORT)
    one = customers([1], [T0], x=[1.0])

    with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1"):
        store.read("t", [(1,)], ["x"])
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1"):
        store.write("t", ["customer_id"], one, "event_time")
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1"):
        store.drop("t")
    store.close()


def test_redis_errors_do_not_show_the_password() -> None:
    store = RedisOnlineStore("redis://reader:s3cret@127.0.0.1:1/0")

    with pytest.raises(Unavailable) as raised:
        store.read("t", [(1,)], ["x"])
    assert "s3cret" not in str(raised.value)
    assert "reader:***@127.0.0.1:1" in str(raised.value)
    assert "s3cret" not in repr(store)


def test_redis_namespace_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="namespace"):
        RedisOnlineStore(REDIS_URL, namespace="a*")


@pytest.mark.integration
def test_redis_keys_live_under_the_namespace_and_table() -> None:
    with redis_store() as store:
        store.write(
            "t",
            ["customer_id", "shop"],
            rows({"customer_id": [1], "shop": ["n"]}, [T0], {"x": [1.0]}),
            "event_time",
        )
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{store.namespace}:*"))
        client.close()

    assert keys == [f'{store.namespace}:t:[1,"n"]'.encode()]


# -- choosing a store ------------------------------------------------------------------------


def test_online_store_for_picks_the_backend_by_scheme(tmp_path: Path) -> None:
    by_uri = online_store_for(f"sqlite:///{tmp_path / 'a.db'}")
    by_path = online_store_for(str(tmp_path / "b.db"))
    by_redis = online_store_for("redis://127.0.0.1:6379/9")

    assert isinstance(by_uri, SqliteOnlineStore) and by_uri.path == tmp_path / "a.db"
    assert isinstance(by_path, SqliteOnlineStore) and by_path.path == tmp_path / "b.db"
    assert isinstance(by_redis, RedisOnlineStore)
    for store in (by_uri, by_path, by_redis):
        store.close()


@pytest.mark.parametrize("uri", ["postgresql://localhost/x", "s3://bucket/x", "sqlite://x.db"])
def test_online_store_for_refuses_other_schemes(uri: str) -> None:
    with pytest.raises(InvalidArgument, match=r"sqlite|redis") as raised:
        online_store_for(uri)
    assert isinstance(raised.value, PlinthError)
