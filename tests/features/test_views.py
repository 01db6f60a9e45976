"""Feature views: pinned definitions, request values and on-demand transformations applied by
the same code offline and online."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pandas as pd
import pytest

import plinth
from plinth.errors import InvalidArgument, NotFound
from plinth.features.store import FeatureStore
from plinth.features.types import FeatureSpec, Transformation
from tests.features.conftest import day, define, transactions
from tests.features.test_online import redis_store


@plinth.on_demand(inputs=["amount", "avg_spend"], outputs={"amount_over_avg": "float64"})
def amount_over_avg(df: pd.DataFrame) -> pd.Series:
    return df["amount"] / df["avg_spend"]


@plinth.on_demand(
    inputs=["orders_30d", "amount_over_avg"],
    outputs={"big_spender": "bool", "orders_squared": "int64"},
)
def flags(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"big_spender": df["amount_over_avg"] > 1.5, "orders_squared": df["orders_30d"] ** 2}
    )


def churn_view(fs: FeatureStore, **changes: Any) -> Any:
    definition: dict[str, Any] = {
        "label": "churned",
        "request": {"amount": "float64"},
        "transformations": [amount_over_avg, flags],
        "description": "what the churn model reads",
    }
    definition.update(changes)
    return fs.create_feature_view(
        "churn", ["customer_stats:orders_30d", "customer_stats:avg_spend"], **definition
    )


def entity_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [1, 1, 2, 3],
            "event_timestamp": pd.to_datetime([day(2), day(11), day(6), day(6)], utc=True),
            "amount": [50.0, 25.0, 9.9, 4.0],
            "churned": [0, 1, 0, 1],
        }
    )


def populated(fs: FeatureStore) -> Any:
    define(fs).insert(transactions())  # type: ignore[attr-defined]
    return churn_view(fs)


def test_a_view_pins_group_versions_and_versions_itself(fs: FeatureStore) -> None:
    view = populated(fs)
    assert view.ref == "churn:v1"
    assert view.features == ["customer_stats:v1:orders_30d", "customer_stats:v1:avg_spend"]
    assert view.keys == ["customer_id"] and view.label == "churned"
    assert view.output_names == [
        "orders_30d",
        "avg_spend",
        "amount_over_avg",
        "big_spender",
        "orders_squared",
    ]
    assert 'df["amount"] / df["avg_spend"]' in view.transformations[0].source
    assert churn_view(fs).version == 1  # the same definition again
    assert churn_view(fs, transformations=[amount_over_avg]).version == 2
    assert fs.get_feature_view("churn").version == 2
    assert fs.get_feature_view("churn", 1).transformations[1].name == "flags"
    assert [v.ref for v in fs.service.list_feature_views()] == ["churn:v1", "churn:v2"]
    with pytest.raises(NotFound, match="feature view 'nope'"):
        fs.get_feature_view("nope")


def test_the_version_follows_the_source_text(fs: FeatureStore) -> None:
    assert populated(fs).transformations[1].source.startswith("def flags(df: pd.DataFrame)")
    stricter = replace(flags, source=flags.source.replace("> 1.5", "> 2.0"))
    assert churn_view(fs, transformations=[amount_over_avg, stricter]).version == 2
    assert churn_view(fs, transformations=[amount_over_avg, stricter]).version == 2
    assert churn_view(fs).version == 3  # the text is the identity: back to the first one's


def test_training_rows_apply_the_transformations(fs: FeatureStore) -> None:
    view = populated(fs)
    rows = view.get_historical_features(entity_rows()).to_pandas()
    assert len(rows) == 4
    assert rows.amount_over_avg.tolist()[:3] == pytest.approx([50 / 20, 25 / 25, 9.9 / 99])
    assert math.isnan(rows.amount_over_avg.iloc[3])  # customer 3 has no features
    assert rows.big_spender.tolist()[:3] == [True, False, False]
    assert rows.orders_squared.tolist()[:3] == [9, 25, 1]
    assert rows.churned.tolist() == [0, 1, 0, 1]  # the label rides along


def assert_offline_row_equals_online_row(fs: FeatureStore, view: Any) -> None:
    entity = entity_rows().iloc[[1]]  # customer 1 on day 11: the day-10 values
    offline = view.get_historical_features(entity).to_pandas().iloc[0]
    fs.materialize("customer_stats")
    online = view.get_online_features([{"customer_id": 1, "amount": 25.0}], now=day(11))
    served = online.rows[0]
    for column in view.output_names:
        assert served[column] == offline[column], column
    assert set(online.statuses[0].values()) == {"PRESENT"}


def test_an_offline_row_equals_the_same_row_served_online(fs: FeatureStore) -> None:
    assert_offline_row_equals_online_row(fs, populated(fs))


@pytest.mark.integration
def test_the_same_on_redis(fs: FeatureStore) -> None:
    with redis_store() as redis:
        on_redis = FeatureStore(fs.service, fs.offline, redis)
        assert_offline_row_equals_online_row(on_redis, populated(on_redis))


def test_online_statuses_of_derived_values(fs: FeatureStore) -> None:
    view = populated(fs)
    fs.materialize("customer_stats")
    found = view.get_online_features(
        [{"customer_id": 3, "amount": 1.0}, {"customer_id": 2, "amount": 9.9}], now=day(80)
    )
    assert found.rows[0]["amount_over_avg"] is None
    assert found.statuses[0]["amount_over_avg"] == "NOT_FOUND"
    assert found.statuses[1]["amount_over_avg"] == "OUTSIDE_TTL"  # day 5 + 30d < day 80
    assert found.rows[1]["orders_squared"] is None


def test_request_values_are_required(fs: FeatureStore) -> None:
    view = populated(fs)
    with pytest.raises(InvalidArgument, match=r"request values \['amount'\]"):
        view.get_historical_features(entity_rows().drop(columns=["amount"]))
    with pytest.raises(
        InvalidArgument, match=r"entity row 1 lacks the request values \['amount'\]"
    ):
        view.get_online_features([{"customer_id": 1, "amount": 1.0}, {"customer_id": 2}])
    with pytest.raises(InvalidArgument, match="'amount' for feature view churn:v1 is not double"):
        view.get_online_features([{"customer_id": 1, "amount": "lots"}])


def test_bad_view_definitions(fs: FeatureStore) -> None:
    define(fs).insert(transactions())  # type: ignore[attr-defined]
    good = ["customer_stats:orders_30d"]
    with pytest.raises(InvalidArgument, match="has no feature 'spend'"):
        fs.create_feature_view("v", ["customer_stats:spend"])
    with pytest.raises(NotFound, match="feature group 'other'"):
        fs.create_feature_view("v", ["other:x"])
    with pytest.raises(InvalidArgument, match="not 'group:feature'"):
        fs.create_feature_view("v", ["orders_30d"])
    with pytest.raises(InvalidArgument, match="at least one feature"):
        fs.create_feature_view("v", [])
    with pytest.raises(InvalidArgument, match=r"reads \['amount', 'avg_spend'\]"):
        fs.create_feature_view("v", good, transformations=[amount_over_avg])
    with pytest.raises(InvalidArgument, match="'orders_30d' would be both"):
        fs.create_feature_view("v", good, request={"orders_30d": "int64"})
    with pytest.raises(InvalidArgument, match="'customer_id' would be both a key and the label"):
        fs.create_feature_view("v", good, label="customer_id")
    with pytest.raises(InvalidArgument, match="dtype 'decimal'"):
        fs.create_feature_view("v", good, request={"amount": "decimal"})
    with pytest.raises(InvalidArgument, match=r"made with @plinth\.on_demand"):
        fs.create_feature_view("v", good, transformations=[lambda df: df])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument, match="feature view name"):
        fs.create_feature_view("bad name", good)
    with pytest.raises(InvalidArgument, match="not the string"):
        fs.get_historical_features(entity_rows(), "customer_stats:orders_30d")
    assert fs.service.list_feature_views() == []  # nothing refused was stored


def test_a_transformation_is_checked_and_run_as_its_source_text(fs: FeatureStore) -> None:
    # by hand, as a caller that is not Python would send it: a server checks it (remote),
    # and the text is what runs
    define(fs).insert(transactions())  # type: ignore[attr-defined]
    source = "def tripled(df):\n    return df['orders_30d'] * 3\n"
    tripled = Transformation("tripled", ["orders_30d"], [FeatureSpec("y", "int64")], source)
    view = fs.create_feature_view("v", ["customer_stats:orders_30d"], transformations=[tripled])
    assert view.transformations[0].source == source
    assert view.get_historical_features(entity_rows().iloc[:2]).to_pandas().y.tolist() == [9, 15]
    for bad, message in [
        ("def t(df):\n    return df['orders_30d'] * FACTOR\n", r"uses the names \['FACTOR'\]"),
        ("", "carries no source"),
        ("t = lambda df: df\n", "exactly one function defined with def"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            fs.create_feature_view(
                "w", ["customer_stats:orders_30d"], transformations=[replace(tripled, source=bad)]
            )
    assert [v.ref for v in fs.service.list_feature_views()] == ["v:v1"]


def raising(df: pd.DataFrame) -> Any:
    raise ZeroDivisionError("no spend")


def not_a_column(df: pd.DataFrame) -> Any:
    return 42


def short(df: pd.DataFrame) -> Any:
    return df["orders_30d"].iloc[:1]


def something_else(df: pd.DataFrame) -> Any:
    return pd.DataFrame({"something_else": df["orders_30d"]})


FAILING = {"raise": raising, "type": not_a_column, "short": short, "missing": something_else}


def failing(kind: str) -> Transformation:
    made: Transformation = plinth.on_demand(
        inputs=["orders_30d"], outputs={"out": "float64"}, name=kind
    )(FAILING[kind])
    return made


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("raise", "transformation 'raise' of v:v1 raised ZeroDivisionError: no spend"),
        ("type", "returned a int; return a pandas Series"),
        ("short", "returned 1 values for 2 rows in 'out'"),
        ("missing", r"did not return \['out'\]"),
    ],
)
def test_a_failing_transformation_is_reported_as_the_users(
    fs: FeatureStore, kind: str, message: str
) -> None:
    define(fs).insert(transactions())  # type: ignore[attr-defined]
    view = fs.create_feature_view(
        "v", ["customer_stats:orders_30d"], transformations=[failing(kind)]
    )
    with pytest.raises(InvalidArgument, match=message):
        view.get_historical_features(entity_rows().iloc[:2]).to_arrow()


def test_a_wrong_output_type_is_named() -> None:
    import pyarrow as pa

    from plinth.features.transform import apply

    def exclaimed(df: pd.DataFrame) -> pd.Series:
        return df["x"] + "!"

    as_text = plinth.on_demand(inputs=["x"], outputs={"y": "int64"})(exclaimed)
    with pytest.raises(InvalidArgument, match="output 'y' is not int64"):
        apply([as_text], pa.table({"x": ["a", "b"]}), "v:v1")
