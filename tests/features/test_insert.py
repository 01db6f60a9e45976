"""Inserts: small ones whole, large ones streamed in chunks into one commit, judged before
the commit is made; and the guards around materialisation and online lookups."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pytest

from plinth.errors import InvalidArgument, NotFound
from plinth.features.store import FeatureStore
from plinth.features.types import Expectation
from tests.features.conftest import day, define


def frame(n: int, spend: float = 10.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": list(range(n)),
            "event_time": [day(i % 20) for i in range(n)],
            "orders_30d": [i % 7 for i in range(n)],
            "avg_spend": [spend + i for i in range(n)],
        }
    )


def test_a_large_insert_streams_into_one_commit(fs: FeatureStore) -> None:
    define(fs)
    fs.service.set_expectations(
        "customer_stats", 1, [Expectation("not_null", column="avg_spend")], mode="warn"
    )
    seen: list[int] = []
    streamed = fs.insert("customer_stats", frame(7), chunk_rows=2, progress=seen.append)
    assert seen == [2, 4, 6, 7]
    assert (streamed.commit_version, streamed.rows) == (0, 7)
    group = fs.service.get_feature_group("customer_stats")
    assert [h["version"] for h in fs.offline.history(group)] == [0]  # one commit
    whole = fs.insert("customer_stats", frame(7))
    assert whole.commit_version == 1
    assert streamed.statistics == whole.statistics  # judged on the same rows either way
    [first, _] = fs.service.list_reports("customer_stats", 1)
    assert (first.passed, first.rows, first.commit_version) == (True, 7, 0)


def test_a_streamed_insert_refused_or_broken_commits_nothing(fs: FeatureStore) -> None:
    define(fs)
    group = fs.service.get_feature_group("customer_stats")
    fs.service.set_expectations(
        "customer_stats", 1, [Expectation("mean", column="avg_spend", max=100.0)]
    )
    with pytest.raises(InvalidArgument, match=r"mean of 'avg_spend' is 1003\.0, above the maximum"):
        fs.insert("customer_stats", frame(7, spend=1000.0), chunk_rows=3)
    assert fs.offline.version(group) is None
    [refused] = fs.service.list_reports("customer_stats", 1)
    assert (refused.passed, refused.commit_version) == (False, None)

    schema = pa.Table.from_pandas(frame(1), preserve_index=False).schema

    def batches() -> Iterator[pa.RecordBatch]:
        yield pa.RecordBatch.from_pandas(frame(3), schema=schema, preserve_index=False)
        raise ConnectionResetError("the source went away")

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    with pytest.raises(Exception, match="the source went away"):
        fs.insert("customer_stats", reader, chunk_rows=2)
    assert fs.offline.version(group) is None


def test_write_through_and_a_handle_sees_later_expectations(fs: FeatureStore) -> None:
    stats = define(fs)
    stats.insert(frame(5), write_online=True, chunk_rows=2)  # type: ignore[attr-defined]
    found = fs.get_online_features(["customer_stats:avg_spend"], [{"customer_id": 4}], now=day(5))
    assert found.rows[0]["avg_spend"] == 14.0
    fs.service.set_expectations("customer_stats", 1, [Expectation("row_count", max=2)])
    with pytest.raises(InvalidArgument, match="row count is 5"):
        stats.insert(frame(5))  # type: ignore[attr-defined]


def test_materialize_guards(fs: FeatureStore) -> None:
    define(fs).insert(frame(6))  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match="start 2026-01-01T00:00:00 has no timezone"):
        fs.materialize("customer_stats", start=day(0).replace(tzinfo=None))
    assert fs.materialize("customer_stats", start=day(3)) == 3  # customers 3, 4, 5
    # a window does not count as a full copy: the next incremental run copies everything
    assert fs.materialize_incremental("customer_stats") == 6
    assert fs.materialize_incremental("customer_stats") == 0
    fs.create_feature_group(
        "offline_only", entity="customer", event_time="event_time", schema={"x": "float64"}
    )
    with pytest.raises(InvalidArgument, match="offline_only:v1 is not online"):
        fs.materialize("offline_only")
    with pytest.raises(NotFound, match="feature group 'nope'"):
        fs.service.list_commits("nope", 1)


def test_online_lookup_guards(fs: FeatureStore) -> None:
    define(fs).insert(frame(3))  # type: ignore[attr-defined]
    fs.create_feature_group(
        "other", entity="customer", event_time="event_time", schema={"avg_spend": "float64"}
    )
    with pytest.raises(InvalidArgument, match="one lacks 'customer_id'"):
        fs.get_online_features(["customer_stats:avg_spend"], [{"customer_id": 1}, {"id": 2}])
    with pytest.raises(InvalidArgument, match="'avg_spend' of other:v1 is requested twice"):
        fs.get_online_features(
            ["customer_stats:avg_spend", "other:avg_spend"], [{"customer_id": 1}]
        )


def test_lookups_cache_definitions_for_a_moment(fs: FeatureStore) -> None:
    define(fs).insert(frame(3))  # type: ignore[attr-defined]
    fs.materialize("customer_stats")
    ask = (["customer_stats:avg_spend"], [{"customer_id": 1}])
    assert fs.get_online_features(*ask, now=day(40)).statuses[0]["avg_spend"] == "OUTSIDE_TTL"
    elsewhere = FeatureStore(fs.service, fs.offline, fs.online)  # another process, say
    define(elsewhere, ttl="90d")  # same schema: the TTL of v1 changes
    assert fs.get_online_features(*ask, now=day(40)).statuses[0]["avg_spend"] == "OUTSIDE_TTL"
    fs.forget_definitions()  # or wait DEFINITIONS_SECONDS
    assert fs.get_online_features(*ask, now=day(40)).statuses[0]["avg_spend"] == "PRESENT"
