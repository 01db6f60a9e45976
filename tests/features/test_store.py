"""The feature store end to end: definitions in the central store, Delta offline, online lookups."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import plinth
from plinth.client import Client
from plinth.features.ingest import Query
from plinth.features.store import FeatureStore
from plinth.features.types import Expectation
from tests.backends import running_server
from tests.features.conftest import day, define, transactions


def test_insert_is_one_commit_with_statistics(fs: FeatureStore) -> None:
    stats = define(fs)
    first = stats.insert(transactions())  # type: ignore[attr-defined]
    assert (first.commit_version, first.rows) == (0, 3)
    by_column = {s.column: s for s in first.statistics}
    assert by_column["avg_spend"].mean == pytest.approx(48.0) and by_column["orders_30d"].max == 5
    update = pd.DataFrame(
        {
            "customer_id": [1, 4],
            "event_time": [day(10), day(1)],
            "orders_30d": [6, 2],
            "avg_spend": [26.0, 10.0],
        }
    )
    second = stats.insert(update)  # type: ignore[attr-defined]
    assert second.commit_version == 1
    table = stats.read().to_pandas().sort_values(["customer_id", "event_time"])  # type: ignore[attr-defined]
    assert table.orders_30d.tolist() == [3, 6, 1, 2]  # (1, day 10) was replaced, (4, day 1) added
    assert len(stats.read(as_of=0)) == 3  # type: ignore[attr-defined]  # time travel
    commits = fs.service.list_commits("customer_stats", 1)
    assert [c.commit_version for c in commits] == [0, 1] and commits[0].written_by


def test_point_in_time_training_data(fs: FeatureStore, tmp_path: Path) -> None:
    define(fs, ttl="7d").insert(transactions())  # type: ignore[attr-defined]
    entity_df = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2, 3],
            "event_timestamp": [day(-1), day(0), day(12), day(6), day(13), day(6)],
            "label": [0, 1, 0, 1, 1, 0],
        }
    )
    job = fs.get_historical_features(
        entity_df, ["customer_stats:orders_30d", "customer_stats:avg_spend"]
    )
    out = job.to_pandas()
    assert out.label.tolist() == [0, 1, 0, 1, 1, 0]  # one row per entity row, same order
    orders = [None if pd.isna(v) else int(v) for v in out.orders_30d]
    # before the first value: null; at it: included; later values never leak; TTL 7 days
    assert orders == [None, 3, 5, 1, None, None]
    # the entity rows may come from a Parquet file or a SQL query too
    path = tmp_path / "entities.parquet"
    entity_df.to_parquet(path)
    features = ["customer_stats:orders_30d", "customer_stats:avg_spend"]
    assert fs.get_historical_features(str(path), features).to_pandas().equals(out)
    query = Query(f"SELECT * FROM '{path}'")
    assert fs.get_historical_features(query, features).to_pandas().equals(out)
    with pytest.raises(plinth.InvalidArgument, match="no feature 'nope'"):
        fs.get_historical_features(entity_df, ["customer_stats:nope"]).to_arrow()
    with pytest.raises(plinth.InvalidArgument, match="event_timestamp"):
        fs.get_historical_features(
            entity_df.drop(columns=["event_timestamp"]), ["customer_stats:avg_spend"]
        ).to_arrow()


def test_materialize_and_online_lookup(fs: FeatureStore) -> None:
    define(fs).insert(transactions())  # type: ignore[attr-defined]
    assert fs.materialize("customer_stats") == 2  # latest row per key
    now = day(12)
    response = fs.get_online_features(
        ["customer_stats:orders_30d", "customer_stats:avg_spend"],
        entity_rows=[{"customer_id": 1}, {"customer_id": 3}, {"customer_id": 2}],
        now=now,
    )
    assert response.to_dict()["orders_30d"] == [5, None, 1]
    assert [s["orders_30d"] for s in response.statuses] == ["PRESENT", "NOT_FOUND", "PRESENT"]
    # a text key for an integer entity is a mistake, not a miss
    with pytest.raises(plinth.InvalidArgument, match="'customer_id' of customer_stats:v1 is an"):
        fs.get_online_features(["customer_stats:avg_spend"], [{"customer_id": "abc"}])
    later = fs.get_online_features(["customer_stats:avg_spend"], [{"customer_id": 2}], now=day(40))
    assert later.statuses == [{"avg_spend": "OUTSIDE_TTL"}] and later.rows[0]["avg_spend"] is None
    newer = pd.DataFrame(
        {"customer_id": [2], "event_time": [day(20)], "orders_30d": [9], "avg_spend": [1.0]}
    )
    fs.get_feature_group("customer_stats").insert(newer)
    assert fs.materialize_incremental("customer_stats") == 1
    again = fs.get_online_features(["customer_stats:orders_30d"], [{"customer_id": 2}], now=day(21))
    assert again.rows[0]["orders_30d"] == 9


def test_a_batch_lookup_over_two_groups_gives_each_entity_its_own_statuses(
    fs: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    define(fs, ttl="10d").insert(transactions())  # type: ignore[attr-defined]
    fs.create_feature_group(
        "customer_profile",
        entity="customer",
        event_time="event_time",
        schema={"segment": "string"},
        online=True,
    ).insert(  # type: ignore[attr-defined]
        pd.DataFrame({"customer_id": [2, 3], "event_time": [day(1)] * 2, "segment": ["b", "c"]})
    )
    fs.materialize("customer_stats")
    fs.materialize("customer_profile")
    ids = [1, 2, 3, 4] * 25
    import plinth.features.online.base as base

    def no_row_objects(*args: object, **kwargs: object) -> None:
        raise AssertionError("a lookup built an object per entity")

    # the answer is made column by column: no OnlineRow, no dict per entity
    monkeypatch.setattr(base.OnlineRow, "__init__", no_row_objects)
    found = fs.get_online_features(
        ["customer_stats:orders_30d", "customer_profile:segment", "customer_stats:avg_spend"],
        [{"customer_id": i} for i in ids],
        now=day(16),  # customer 1's value (day 10) is fresh, customer 2's (day 5) is not
    )
    assert found._rows is None and found._statuses is None

    stats = {1: "PRESENT", 2: "OUTSIDE_TTL", 3: "NOT_FOUND", 4: "NOT_FOUND"}
    profile = {1: "NOT_FOUND", 2: "PRESENT", 3: "PRESENT", 4: "NOT_FOUND"}
    assert found.to_dict() == {
        "customer_id": ids,
        "orders_30d": [{1: 5}.get(i) for i in ids],
        "segment": [{2: "b", 3: "c"}.get(i) for i in ids],
        "avg_spend": [{1: 25.0}.get(i) for i in ids],
    }
    assert found.statuses == [
        {"orders_30d": stats[i], "segment": profile[i], "avg_spend": stats[i]} for i in ids
    ]
    assert found.rows[1] == {
        "customer_id": 2,
        "orders_30d": None,
        "segment": "b",
        "avg_spend": None,
    }


def test_strict_validation_refuses_and_warn_records(fs: FeatureStore) -> None:
    define(fs)
    suite = [
        Expectation("range", column="avg_spend", min=0, max=50),
        Expectation("not_null", column="orders_30d"),
    ]
    fs.service.set_expectations("customer_stats", 1, suite, "strict")
    with pytest.raises(plinth.InvalidArgument, match="refused"):
        fs.get_feature_group("customer_stats").insert(transactions())
    assert (
        fs.offline.version(fs.service.get_feature_group("customer_stats")) is None
    )  # nothing written
    fs.service.set_expectations("customer_stats", 1, suite, "warn")
    commit = fs.get_feature_group("customer_stats").insert(transactions())
    assert commit.validation_passed is False
    reports = fs.service.list_reports("customer_stats", 1)
    assert [(r.passed, r.commit_version) for r in reports] == [(False, None), (False, 0)]
    failed = [r for r in reports[-1].results if not r.passed]
    assert failed[0].failed_rows == 1


def test_schema_changes_make_versions_and_the_catalog_finds_them(fs: FeatureStore) -> None:
    define(fs)
    same = fs.create_feature_group(
        "customer_stats",
        entity="customer",
        event_time="event_time",
        schema=transactions().dtypes,
        online=True,
        ttl="30d",
        description="30-day order aggregates",
    )
    assert same.version == 1  # type: ignore[attr-defined]
    wider = transactions().assign(returns_30d=[0, 1, 0])
    v2 = fs.create_feature_group(
        "customer_stats", entity="customer", event_time="event_time", schema=wider.dtypes, ttl="30d"
    )
    assert v2.version == 2  # type: ignore[attr-defined]
    v2.insert(wider)  # type: ignore[attr-defined]
    assert fs.get_feature_group("customer_stats", 1).version == 1
    found = fs.service.list_feature_groups(query="order aggregates", all_versions=True)
    assert [(g.name, g.version) for g in found] == [("customer_stats", 1)]
    assert [g.version for g in fs.service.list_feature_groups(query="returns_30d")] == [2]
    assert fs.get_historical_features(
        pd.DataFrame({"customer_id": [1], "event_timestamp": [day(11)]}),
        ["customer_stats:v2:returns_30d"],
    ).to_pandas().returns_30d.tolist() == [1]


def test_bad_definitions(fs: FeatureStore) -> None:
    with pytest.raises(plinth.NotFound):
        fs.create_feature_group("g", entity="nobody", event_time="t", schema={"x": "float64"})
    fs.create_entity("customer", join_keys=["customer_id"])
    with pytest.raises(plinth.InvalidArgument, match="ttl"):
        fs.create_feature_group(
            "g", entity="customer", event_time="t", schema={"x": "float64"}, ttl="soon"
        )
    with pytest.raises(plinth.InvalidArgument):
        fs.create_feature_group(
            "bad name", entity="customer", event_time="t", schema={"x": "float64"}
        )
    with pytest.raises(plinth.InvalidArgument, match="feature reference"):
        fs.get_historical_features(pd.DataFrame({"customer_id": [1]}), ["no_colon"])


def test_the_default_client_has_one(tmp_path: Path) -> None:
    assert isinstance(plinth.feature_store(), FeatureStore)
    assert plinth.feature_store() is plinth.default_client().feature_store()


_ = Client  # the fixture's clients


def test_the_feature_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Applications that are not in Python look features up over HTTP."""
    import httpx

    artifacts, online = str(tmp_path / "artifacts"), f"sqlite:///{tmp_path / 'online.db'}"
    monkeypatch.setenv("PLINTH_ARTIFACT_URI", artifacts)
    monkeypatch.setenv("PLINTH_ONLINE_URI", online)
    with running_server(tmp_path / "server-home") as url, plinth.connect(url) as client:
        fs = client.feature_store()
        define(fs, ttl="3650d").insert(transactions())  # type: ignore[attr-defined]
        fs.materialize("customer_stats")
        api = f"{url}/api/v1/features/online"
        body = {
            "features": ["customer_stats:orders_30d"],
            "entity_rows": [{"customer_id": 1}, {"customer_id": 9}],
        }
        posted = httpx.post(api, json=body).json()
        assert posted["rows"] == [
            {"customer_id": 1, "orders_30d": 5},
            {"customer_id": 9, "orders_30d": None},
        ]
        assert [s["orders_30d"] for s in posted["statuses"]] == ["PRESENT", "NOT_FOUND"]
        one = httpx.get(
            api, params={"features": "customer_stats:avg_spend", "customer_id": "2"}
        ).json()
        assert one["rows"] == [{"customer_id": 2, "avg_spend": 99.0}]
        bad = httpx.get(api, params={"features": "customer_stats:avg_spend", "customer_id": "x"})
        assert bad.status_code == 422 and bad.json()["error_code"] == "INVALID_ARGUMENT"
        bad_body = {"features": ["customer_stats:avg_spend"], "entity_rows": [{"customer_id": "x"}]}
        bad = httpx.post(api, json=bad_body)  # the same refusal as the query string's
        assert bad.status_code == 422 and bad.json()["error_code"] == "INVALID_ARGUMENT"
        missing = httpx.post(
            api, json={"features": ["customer_stats:nope"], "entity_rows": [{"customer_id": 1}]}
        )
        assert missing.status_code == 422 and "nope" in missing.json()["message"]


def test_a_plan_about_to_expire_is_not_cached_for_an_inline_lookup(
    fs: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server looks up inline only when no metadata query can follow: a plan that
    would expire before the lookup reads the clock again does not count."""
    import plinth.features.store as store_module

    define(fs).insert(transactions())  # type: ignore[attr-defined]
    fs.materialize("customer_stats")
    features = ["customer_stats:orders_30d"]
    fs.get_online_features(features, [{"customer_id": 1}])
    expires = fs._plans[tuple(features)][0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: expires - 2.0)
    assert fs.plan_is_cached(features)
    monkeypatch.setattr(store_module.time, "monotonic", lambda: expires - 0.5)
    assert not fs.plan_is_cached(features)


def test_an_insert_of_no_rows_is_refused_and_records_nothing(fs: FeatureStore) -> None:
    stats = define(fs)
    stats.insert(transactions())  # type: ignore[attr-defined]
    with pytest.raises(plinth.InvalidArgument, match="nothing to insert into customer_stats"):
        stats.insert(transactions().iloc[:0])  # type: ignore[attr-defined]
    assert [c.commit_version for c in fs.service.list_commits("customer_stats", 1)] == [0]
