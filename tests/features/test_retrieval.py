"""Point-in-time retrieval on DuckDB: hand-made cases with exact answers, every refusal, and
random data against a slow pure-Python reference. ``test_spark`` runs the same cases."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.dataset as ds  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from plinth.errors import InvalidArgument
from plinth.features.retrieval import FeatureRequest, point_in_time_join
from plinth.features.types import FeatureGroup, FeatureSpec

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T0_US = int(T0.timestamp()) * 1_000_000


def group(
    name: str, keys: list[str], features: dict[str, str], ttl: int | None = None
) -> FeatureGroup:
    specs = [FeatureSpec(feature, dtype) for feature, dtype in features.items()]
    return FeatureGroup(name, 1, name, keys, "event_time", specs, ttl_seconds=ttl)


def times(seconds: list[float | None], tz: str | None = "UTC") -> pa.Array:
    """Instants ``seconds`` after T0, in whole microseconds."""
    micros = [None if s is None else T0_US + round(s * 1_000_000) for s in seconds]
    return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz))


def nanos(offsets: list[int], tz: str = "UTC") -> pa.Array:
    """Instants ``offsets`` nanoseconds after T0."""
    return pa.array([T0_US * 1000 + n for n in offsets], pa.int64()).cast(pa.timestamp("ns", tz))


def entity_table(
    keys: dict[str, list[Any]], seconds: list[float | None], **extra: list[Any]
) -> pa.Table:
    return pa.table({**keys, "event_timestamp": times(seconds), **extra})


@dataclass(frozen=True)
class Case:
    entity: pa.Table
    requests: list[FeatureRequest]
    expected: dict[str, list[Any]]  # the feature columns, in order


CUSTOMER = group(
    "customer_stats", ["customer_id"], {"orders": "int64", "spend": "float64", "tier": "string"}
)
CUSTOMER_ROWS = pa.table(
    {
        "customer_id": [1, 1, 1, 2],
        "event_time": times([10, 20, 30, 15]),
        "orders": [1, 2, 3, 20],
        "spend": [1.5, 2.5, 3.5, 20.5],
        "tier": ["bronze", "silver", "gold", "bronze"],
    }
)


def case_as_of_rule() -> Case:
    entity = entity_table(
        {"customer_id": [1, 1, 1, 1, 1, 3, 2, 1]},
        [1000, 5, 10, 25, 25, 50, 100, 29.999999],
        label=[0, 1, 2, 3, 4, 5, 6, 7],
    )
    return Case(
        entity,
        [FeatureRequest(CUSTOMER, CUSTOMER_ROWS, ["orders", "spend", "tier"])],
        {
            # last event; before the first (null); equal time (included); two identical
            # rows (each its own row, later value at 30 never used); unknown key; 1 us early
            "orders": [3, None, 1, 2, 2, None, 20, 2],
            "spend": [3.5, None, 1.5, 2.5, 2.5, None, 20.5, 2.5],
            "tier": ["gold", None, "bronze", "silver", "silver", None, "bronze", "silver"],
        },
    )


def case_ttl_boundary() -> Case:
    fresh = group("fresh", ["customer_id"], {"orders": "int64"}, ttl=100)
    entity = entity_table({"customer_id": [1, 1, 1, 1, 1, 2]}, [15, 130, 130.000001, 500, 25, 115])
    return Case(
        entity,
        [FeatureRequest(fresh, CUSTOMER_ROWS, ["orders"])],
        # a value exactly ttl old is still valid (the window is inclusive); a microsecond
        # older it is missing, and an older row never stands in for a stale latest one
        {"orders": [1, 3, None, None, 2, 20]},
    )


def case_several_groups() -> Case:
    merchant = group(
        "merchant", ["merchant_id", "country"], {"risk": "float64", "fraud": "bool"}, ttl=50
    )
    merchant_rows = pa.table(
        {
            "merchant_id": ["m1", "m1", "m1", "m2"],
            "country": ["FR", "DE", "FR", "FR"],
            "event_time": times([0, 5, 40, 0]),
            "risk": [0.1, 0.2, 0.3, 0.9],
            "fraud": [False, True, False, True],
        }
    )
    entity = entity_table(
        {
            "customer_id": [1, 2, 1, 9],
            "merchant_id": ["m1", "m1", "m2", "m1"],
            "country": ["FR", "DE", "FR", "FR"],
        },
        [30, 30, 60, 89],
    )
    return Case(
        entity,
        [
            FeatureRequest(CUSTOMER, CUSTOMER_ROWS, ["orders"], prefix="c_"),
            FeatureRequest(merchant, ds.dataset(merchant_rows), ["fraud", "risk"], prefix="m_"),
            FeatureRequest(CUSTOMER, CUSTOMER_ROWS, ["tier"]),
        ],
        {
            # each group keeps its own keys and TTL: m2/FR is 60 s old at 60, past the
            # merchant TTL, while the customer group (no TTL) still answers
            "c_orders": [3, 20, 3, None],
            "m_fraud": [False, True, None, False],
            "m_risk": [0.1, 0.2, None, 0.3],
            "tier": ["gold", "bronze", "gold", None],
        },
    )


def case_categorical_keys() -> Case:
    # pandas' category dtype arrives as a dictionary array; a request may ask for nothing
    entity = entity_table(
        {"customer_id": pa.array([2, 1, 2, 5]).dictionary_encode()}, [16, 16, 14, 16]
    )
    return Case(
        entity,
        [
            FeatureRequest(CUSTOMER, CUSTOMER_ROWS, ["tier"]),
            FeatureRequest(CUSTOMER, CUSTOMER_ROWS, [], prefix="unused_"),
        ],
        {"tier": ["bronze", "bronze", None, None]},
    )


def case_keyless_group() -> Case:
    # a group without keys (a market-wide index) answers every row by time alone
    market = group("market", [], {"index": "float64"})
    rows = pa.table({"event_time": times([0, 20]), "index": [1.0, 2.0]})
    entity = entity_table({"customer_id": [1, 2, 3]}, [-1, 19, 20])
    return Case(entity, [FeatureRequest(market, rows, ["index"])], {"index": [None, 1.0, 2.0]})


def case_nanosecond_events() -> Case:
    precise = group("precise", ["customer_id"], {"orders": "int64"})
    rows = pa.table({"customer_id": [1, 1], "event_time": nanos([1, 2_000]), "orders": [1, 2]})
    # a nanosecond before, at and after events kept in nanoseconds, given in Paris time
    entity = pa.table(
        {
            "customer_id": [1, 1, 1, 1],
            "event_timestamp": nanos([0, 1, 1_999, 2_001], "Europe/Paris"),
        }
    )
    return Case(entity, [FeatureRequest(precise, rows, ["orders"])], {"orders": [None, 1, 1, 2]})


def case_nanosecond_entity() -> Case:
    # microsecond events (as Delta stores them) against nanosecond entity timestamps
    rows = pa.table({"customer_id": [1, 1], "event_time": times([0, 0.000001]), "orders": [7, 8]})
    entity = pa.table(
        {"customer_id": [1] * 5, "event_timestamp": nanos([-1, 0, 999, 1_000, 1_001])}
    )
    return Case(
        entity, [FeatureRequest(CUSTOMER, rows, ["orders"])], {"orders": [None, 7, 7, 8, 8]}
    )


def case_nanosecond_ttl_boundary() -> Case:
    # microsecond events, nanosecond entity times: 500 ns past the TTL is past it
    fresh = group("fresh", ["customer_id"], {"orders": "int64"}, ttl=100)
    second = 1_000_000_000
    entity = pa.table(
        {
            "customer_id": [1, 1, 1, 2, 2],
            "event_timestamp": nanos(
                [
                    130 * second,
                    130 * second + 500,
                    130 * second - 500,
                    115 * second,
                    115 * second + 1,
                ]
            ),
        }
    )
    return Case(
        entity,
        [FeatureRequest(fresh, CUSTOMER_ROWS, ["orders"])],
        {"orders": [3, None, 3, 20, None]},
    )


def case_nulls() -> Case:
    rows = CUSTOMER_ROWS.set_column(0, "customer_id", pa.array([1, None, 1, 2], pa.int64()))
    entity = entity_table({"customer_id": pa.array([None, 1, 1], pa.int64())}, [100, None, 100])
    return Case(
        entity,
        [FeatureRequest(CUSTOMER, rows, ["orders"])],
        # a null key or timestamp matches nothing, not even a row with a null key
        {"orders": [None, None, 3]},
    )


def case_empty_entity() -> Case:
    entity = entity_table({"customer_id": pa.array([], pa.int64())}, [])
    return Case(entity, [FeatureRequest(CUSTOMER, CUSTOMER_ROWS, ["spend"])], {"spend": []})


CASES: dict[str, Callable[[], Case]] = {
    "as_of_rule": case_as_of_rule,
    "ttl_boundary": case_ttl_boundary,
    "several_groups": case_several_groups,
    "categorical_keys": case_categorical_keys,
    "keyless_group": case_keyless_group,
    "nanosecond_events": case_nanosecond_events,
    "nanosecond_entity": case_nanosecond_entity,
    "nanosecond_ttl_boundary": case_nanosecond_ttl_boundary,
    "nulls": case_nulls,
    "empty_entity": case_empty_entity,
}


def check_case(case: Case, out: pa.Table) -> None:
    """The entity columns unchanged (timestamp in UTC), then exactly the expected features."""
    entity = case.entity
    assert out.column_names == [*entity.column_names, *case.expected]
    stamp = entity.schema.field("event_timestamp").type
    assert out.schema.field("event_timestamp").type == pa.timestamp(stamp.unit, "UTC")
    assert out.select(entity.column_names).cast(entity.schema).equals(entity)
    assert out.select(list(case.expected)).to_pydict() == case.expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_made_case(name: str) -> None:
    case = CASES[name]()
    check_case(case, point_in_time_join(case.entity, case.requests))


def test_parquet_dataset_source(tmp_path: Path) -> None:
    pq.write_table(CUSTOMER_ROWS, tmp_path / "part-0.parquet")
    case = case_as_of_rule()
    requests = [FeatureRequest(CUSTOMER, ds.dataset(tmp_path), ["orders", "spend", "tier"])]
    check_case(case, point_in_time_join(case.entity, requests))


def test_no_requests_returns_the_entity_table() -> None:
    entity = pa.table({"customer_id": [1], "event_timestamp": times([5], "Asia/Tokyo")})
    out = point_in_time_join(entity, [])
    assert out.schema.field("event_timestamp").type == pa.timestamp("us", "UTC")
    assert out.to_pydict()["customer_id"] == [1]


def test_output_types_follow_the_source() -> None:
    typed = group("typed", ["customer_id"], {"f": "float32", "n": "int32", "at": "timestamp"})
    rows = pa.table(
        {
            "customer_id": pa.array([1], pa.int32()),
            "event_time": times([0]),
            "f": pa.array([0.5], pa.float32()),
            "n": pa.array([3], pa.int32()),
            "at": nanos([5]),
        }
    )
    entity = entity_table({"customer_id": [1, 2]}, [1, 1])
    out = point_in_time_join(entity, [FeatureRequest(typed, rows, ["at", "f", "n"])])
    assert out.schema.field("at").type == pa.timestamp("ns", "UTC")
    assert out.schema.field("f").type == pa.float32()
    assert out.schema.field("n").type == pa.int32()
    assert out.column("n").to_pylist() == [3, None]


def _request(**changes: Any) -> FeatureRequest:
    fields: dict[str, Any] = {
        "group": CUSTOMER,
        "source": CUSTOMER_ROWS,
        "features": ["orders"],
        "prefix": None,
    }
    return FeatureRequest(**{**fields, **changes})


ENTITY = entity_table({"customer_id": [1]}, [20])
ERRORS: dict[str, tuple[pa.Table, list[FeatureRequest], str, str]] = {
    "no timestamp column": (ENTITY, [_request()], "ts", "no timestamp column 'ts'"),
    "naive timestamp": (
        ENTITY.set_column(1, "event_timestamp", times([20], tz=None)),
        [_request()],
        "event_timestamp",
        "'event_timestamp' is a timestamp without a timezone",
    ),
    "timestamp of another type": (
        ENTITY.set_column(1, "event_timestamp", pa.array(["2024-01-01"])),
        [_request()],
        "event_timestamp",
        "'event_timestamp' is string; it must be a timezone-aware timestamp",
    ),
    "missing join key": (
        ENTITY.rename_columns(["customer", "event_timestamp"]),
        [_request()],
        "event_timestamp",
        "lacks join key 'customer_id' of feature group customer_stats:v1",
    ),
    "unknown feature": (
        ENTITY,
        [_request(features=["orders", "refunds"])],
        "event_timestamp",
        "feature 'refunds' is not in feature group customer_stats:v1",
    ),
    "same output twice": (
        ENTITY,
        [_request(), _request(features=["spend", "orders"])],
        "event_timestamp",
        "output column 'orders' is requested twice",
    ),
    "output shadows an entity column": (
        ENTITY.append_column("c_orders", pa.array([0])),
        [_request(prefix="c_")],
        "event_timestamp",
        "output column 'c_orders' of customer_stats:v1 is already an entity column",
    ),
    "key types that cannot join": (
        ENTITY.set_column(0, "customer_id", pa.array(["1"])),
        [_request()],
        "event_timestamp",
        "join key 'customer_id' is string in the entity table but int64",
    ),
    "source without a requested column": (
        ENTITY,
        [_request(source=CUSTOMER_ROWS.drop_columns(["orders"]))],
        "event_timestamp",
        r"offline rows of customer_stats:v1 lack the columns \['orders'\]",
    ),
    "naive event time in the source": (
        ENTITY,
        [_request(source=CUSTOMER_ROWS.set_column(1, "event_time", times([1] * 4, tz=None)))],
        "event_timestamp",
        "customer_stats:v1's event time is a timestamp without a timezone",
    ),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_refusals_name_the_problem(name: str) -> None:
    entity, requests, column, message = ERRORS[name]
    with pytest.raises(InvalidArgument, match=message):
        point_in_time_join(entity, requests, column)


# -- random data against a slow reference ---------------------------------------------------


@dataclass(frozen=True)
class RandomData:
    entity: pa.Table
    requests: list[FeatureRequest]


def random_data(seed: int, rows: int = 500) -> RandomData:
    """Two groups (one with a composite key) over a small key space and a short time range,
    so that equal timestamps, repeated entity rows, TTL edges and unknown keys all occur."""
    rng = random.Random(seed)
    by_customer = group(
        "by_customer", ["customer_id"], {"x": "float64"}, ttl=rng.choice([None, 30])
    )
    by_pair = group("by_pair", ["customer_id", "region"], {"y": "int64", "z": "string"}, ttl=15)
    regions = ["eu", "us", None]

    def events(keys: list[tuple[Any, ...]]) -> list[tuple[tuple[Any, ...], int]]:
        return [(k, t) for k in keys for t in rng.sample(range(100), rng.randint(0, 12))]

    customer_events = events([(c,) for c in range(20)])
    pair_events = events([(c, r) for c in range(20) for r in regions[:2]])
    sources = [
        pa.table(
            {
                "customer_id": [k[0] for k, _ in customer_events],
                "event_time": times([t for _, t in customer_events]),
                "x": [rng.random() for _ in customer_events],
            }
        ),
        pa.table(
            {
                "customer_id": [k[0] for k, _ in pair_events],
                "region": [k[1] for k, _ in pair_events],
                "event_time": times([t for _, t in pair_events]),
                "y": [rng.randint(0, 9) for _ in pair_events],
                "z": [rng.choice(["a", "b", None]) for _ in pair_events],
            }
        ),
    ]
    entity = entity_table(
        {
            "customer_id": [rng.randint(0, 24) for _ in range(rows)],
            "region": [rng.choice(regions) for _ in range(rows)],
        },
        [None if rng.random() < 0.02 else rng.randint(-5, 130) for _ in range(rows)],
        row=list(range(rows)),
    )
    return RandomData(
        entity,
        [
            FeatureRequest(by_customer, sources[0], ["x"]),
            FeatureRequest(by_pair, ds.dataset(sources[1]), ["z", "y"], prefix="pair_"),
        ],
    )


def reference_join(data: RandomData) -> dict[str, list[Any]]:
    """The rule, one entity row at a time."""
    out: dict[str, list[Any]] = {name: [] for r in data.requests for name in r.output_names}
    for request in data.requests:
        keys, event_time = request.group.keys, request.group.event_time
        source = request.source
        rows = (source if isinstance(source, pa.Table) else source.to_table()).to_pylist()
        ttl = request.group.ttl_seconds
        for e in data.entity.to_pylist():
            at = e["event_timestamp"]
            seen = [
                r
                for r in rows
                if at is not None
                and r[event_time] <= at
                and all(e[k] is not None and r[k] == e[k] for k in keys)
            ]
            latest = max(seen, key=lambda r: r[event_time], default=None)
            if latest is not None and ttl is not None:
                latest = latest if latest[event_time] >= at - timedelta(seconds=ttl) else None
            for feature, name in zip(request.features, request.output_names, strict=True):
                out[name].append(None if latest is None else latest[feature])
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_data_matches_the_reference(seed: int) -> None:
    data = random_data(seed)
    out = point_in_time_join(data.entity, data.requests)
    expected = reference_join(data)
    assert out.column_names == [*data.entity.column_names, *expected]
    assert out.column("row").to_pylist() == list(range(data.entity.num_rows))
    assert out.select(list(expected)).to_pydict() == expected
    assert any(v is not None for v in expected["pair_y"])
