"""Stored profiles on SQLite and PostgreSQL: saved in the caller's transaction, read back
whole, queryable by column, listed by subject."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import func, select

from plinth.errors import InvalidArgument, NotFound
from plinth.stats.profile import TableProfile, profile
from plinth.store.engine import Store, open_store
from plinth.store.profiles import delete_profiles, load_profile, profile_rows, save_profile
from plinth.store.schema import profile_columns, profiles
from tests.backends import empty_tables


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        found = open_store(f"sqlite:///{tmp_path / 'plinth.db'}")
    else:
        found = open_store(request.getfixturevalue("postgres_uri"))
        empty_tables(found)
    yield found


def table(rows: int = 400, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    amount = rng.normal(50.0, 10.0, rows)
    amount[:3] = [np.nan, np.inf, -np.inf]
    return pa.table(
        {
            "amount": pa.array(amount, pa.float64()),
            "orders": pa.array(rng.integers(0, 20, rows), pa.int64()),
            "country": pa.array(rng.choice(["de", "fr", "it"], rows).tolist(), pa.string()),
            "vip": pa.array((rng.random(rows) < 0.1).tolist(), pa.bool_()),
            "empty": pa.array([None] * rows, pa.float64()),
        }
    )


def save(store: Store, prof: TableProfile, **subject: object) -> int:
    keys = {"subject_kind": "dataset", "subject": "customers", **subject}
    with store.write() as conn:
        return save_profile(conn, prof, created_by="ana", **keys)  # type: ignore[arg-type]


def test_a_profile_reads_back_whole(store: Store) -> None:
    saved = profile(table())
    profile_id = save(store, saved)
    with store.read() as conn:
        loaded = load_profile(conn, profile_id)
    assert loaded.rows == saved.rows == 400
    assert sorted(loaded.columns) == sorted(saved.columns)
    for name, column in saved.columns.items():
        assert loaded.columns[name].to_dict() == column.to_dict(), name
    # the loaded profile is a real one: it merges with another and its figures add up
    merged = loaded.merge(profile(table(seed=1)))
    assert merged.rows == 800 and merged.column("amount").count == 800


def test_the_figures_are_columns(store: Store) -> None:
    saved = profile(table())
    profile_id = save(store, saved)
    with store.read() as conn:
        rows = {
            r.column_name: r
            for r in conn.execute(
                select(profile_columns).where(profile_columns.c.profile_id == profile_id)
            )
        }
    amount, orders, empty = rows["amount"], rows["orders"], rows["empty"]
    column = saved.column("amount")
    assert (amount.kind, amount.dtype, amount.count, amount.nulls) == ("numeric", "double", 400, 1)
    assert amount.mean == pytest.approx(column.mean) and amount.std == pytest.approx(column.std)
    assert amount.min == pytest.approx(column.min) and amount.max == pytest.approx(column.max)
    deciles = json.loads(amount.deciles)
    assert len(deciles) == 11 and deciles == sorted(deciles)
    assert 35 < deciles[5] < 65  # the median of N(50, 10)
    assert orders.distinct == saved.column("orders").distinct
    assert rows["country"].kind == "categorical" and rows["country"].distinct == 3
    assert rows["country"].mean is None and json.loads(rows["country"].deciles) == []
    assert (empty.count, empty.nulls, empty.mean, empty.min) == (400, 400, None, None)


def test_non_finite_figures_are_stored_as_null(store: Store) -> None:
    saved = profile(table())
    odd = replace(saved.column("amount"), mean=float("nan"), max=float("inf"))
    profile_id = save(store, TableProfile(saved.rows, {"amount": odd}))
    with store.read() as conn:
        row = conn.execute(select(profile_columns)).one()
    assert row.mean is None and row.max is None and row.min == pytest.approx(odd.min)
    assert "NaN" not in row.data and "Infinity" not in row.data  # strict JSON
    with store.read() as conn:
        assert load_profile(conn, profile_id).column("amount").mean is None


def test_an_empty_table_is_a_profile(store: Store) -> None:
    saved = profile(table().slice(0, 0))
    with store.read() as conn:
        loaded = load_profile(conn, save(store, saved))
    assert loaded.rows == 0 and loaded.column("amount").count == 0


def test_saved_in_the_callers_transaction(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as conn:
        save_profile(conn, profile(table()), subject_kind="dataset", subject="customers")
        raise RuntimeError("the caller's work failed")
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(profiles)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(profile_columns)).scalar() == 0


def test_listed_newest_first_by_subject(store: Store) -> None:
    small = profile(table(50))
    first = save(
        store,
        small,
        subject_kind="feature_commit",
        subject="customer_stats/1@0",
        group_name="customer_stats",
        group_version=1,
        commit_version=0,
        at_ms=1_000,
    )
    second = save(
        store,
        small,
        subject_kind="feature_commit",
        subject="customer_stats/1@1",
        group_name="customer_stats",
        group_version=1,
        commit_version=1,
        window_start=5_000,
        window_end=6_000,
    )
    model = save(
        store,
        small,
        subject_kind="training_data",
        subject="churn/2",
        model_name="churn",
        model_version=2,
    )
    with store.read() as conn:
        commits = profile_rows(conn, group_name="customer_stats", group_version=1)
        assert [r.id for r in commits] == [second, first]
        assert (commits[1].commit_version, commits[1].created_by, commits[1].rows) == (0, "ana", 50)
        assert commits[1].created_at.timestamp() == 1.0
        assert commits[0].window_start is not None and commits[0].window_start.timestamp() == 5.0
        assert [r.id for r in profile_rows(conn, subject="customer_stats/1@0")] == [first]
        assert [r.id for r in profile_rows(conn, model_name="churn", model_version=2)] == [model]
        assert [r.id for r in profile_rows(conn, subject_kind="training_data")] == [model]
        assert [r.id for r in profile_rows(conn, limit=1)] == [model]
        assert profile_rows(conn, model_name="churn", model_version=3) == []


def test_bad_input_is_named(store: Store) -> None:
    with store.read() as conn, pytest.raises(NotFound, match="profile 12345 does not exist"):
        load_profile(conn, 12345)
    with pytest.raises(InvalidArgument, match="'weather'"):
        save(store, profile(table(10)), subject_kind="weather")
    with store.read() as conn, pytest.raises(InvalidArgument, match="limit must be positive"):
        profile_rows(conn, limit=0)
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(profiles)).scalar() == 0


def test_deleted_with_their_subject(store: Store) -> None:
    small = profile(table(20))
    for version in (1, 2):
        save(store, small, subject_kind="feature_commit", group_name="g", group_version=version)
    kept = save(store, small, subject_kind="training_data", model_name="g", model_version=1)
    with store.write() as conn:
        assert (
            delete_profiles(conn, subject_kind="feature_commit", group_name="g", group_versions=[1])
            == 1
        )
    with store.read() as conn:
        assert [r.group_version for r in profile_rows(conn, group_name="g")] == [2]
        assert load_profile(conn, kept).rows == 20
    with store.write() as conn, pytest.raises(InvalidArgument, match="needs a filter"):
        delete_profiles(conn)
    with store.write() as conn:
        delete_profiles(conn, group_name="g")
    with store.read() as conn:
        ids = set(conn.execute(select(profile_columns.c.profile_id)).scalars())
    assert ids == {kept}


def test_a_long_arrow_type_is_stored(store: Store) -> None:
    # a struct's Arrow type names every field: far longer than a short string column
    fields = {f"customer_field_number_{i}": float(i) for i in range(8)}
    wide = pa.table({"record": pa.array([fields] * 5), "v": [1.0, 2.0, 3.0, 4.0, 5.0]})
    saved = profile(wide)
    assert len(saved.column("record").dtype) > 200
    with store.read() as conn:
        loaded = load_profile(conn, save(store, saved))
    assert loaded.column("record").dtype == saved.column("record").dtype
