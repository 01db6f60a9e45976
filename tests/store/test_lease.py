"""Leases on SQLite and PostgreSQL: one holder at a time, expiry, takeover, compare-and-set."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from plinth.errors import InvalidArgument
from plinth.store import lease
from plinth.store.engine import Store, open_store
from tests.backends import empty_tables

T0 = 1_800_000_000_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        found = open_store(f"sqlite:///{tmp_path / 'plinth.db'}")
    else:
        found = open_store(request.getfixturevalue("postgres_uri"))
        empty_tables(found)
    yield found


def test_one_holder_until_it_expires(store: Store) -> None:
    assert lease.current(store, "job", now=T0) is None
    assert lease.acquire(store, "job", "a", 10, now=T0)
    assert lease.current(store, "job", now=T0) == lease.LeaseState("job", "a", T0 + 10_000)
    assert not lease.acquire(store, "job", "b", 10, now=T0 + 9_999)
    assert lease.acquire(store, "job", "a", 10, now=T0 + 5_000)  # its own: extended
    assert lease.current(store, "job", now=T0 + 5_000).expires_at_ms == T0 + 15_000  # type: ignore[union-attr]
    assert not lease.acquire(store, "job", "b", 10, now=T0 + 14_999)
    assert lease.current(store, "job", now=T0 + 15_000) is None  # expired
    assert lease.acquire(store, "job", "b", 10, now=T0 + 15_000)  # taken over
    assert lease.current(store, "job", now=T0 + 15_000).holder == "b"  # type: ignore[union-attr]
    assert lease.acquire(store, "other", "a", 10, now=T0)  # leases are independent


def test_renew_only_while_held(store: Store) -> None:
    assert lease.acquire(store, "job", "a", 10, now=T0)
    assert lease.renew(store, "job", "a", 10, now=T0 + 9_000)
    assert not lease.renew(store, "job", "b", 10, now=T0 + 9_000)
    assert lease.current(store, "job", now=T0).expires_at_ms == T0 + 19_000  # type: ignore[union-attr]
    assert not lease.renew(store, "job", "a", 10, now=T0 + 19_000)  # lapsed: acquire again
    assert lease.acquire(store, "job", "b", 10, now=T0 + 19_000)
    assert not lease.renew(store, "job", "a", 10, now=T0 + 19_001)


def test_release_frees_it_for_the_next_holder(store: Store) -> None:
    assert lease.acquire(store, "job", "a", 60, now=T0)
    assert not lease.release(store, "job", "b")  # not b's to give up
    assert not lease.acquire(store, "job", "b", 60, now=T0 + 1)
    assert lease.release(store, "job", "a")
    assert lease.current(store, "job", now=T0 + 1) is None
    assert lease.acquire(store, "job", "b", 60, now=T0 + 1)
    assert not lease.release(store, "job", "a")


def _race(store: Store, holders: list[str], at: int) -> list[str]:
    start = threading.Barrier(len(holders))
    won: list[str] = []

    def take(holder: str) -> None:
        start.wait(timeout=30)
        if lease.acquire(store, "job", holder, 60, now=at):
            won.append(holder)

    threads = [threading.Thread(target=take, args=(h,)) for h in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return won


def test_racing_holders_exactly_one_wins(store: Store) -> None:
    for round_, at in enumerate((T0, T0 + 100_000)):  # a free lease, then an expired one
        won = _race(store, [f"h{round_}-{i}" for i in range(8)], at)
        assert len(won) == 1
        assert lease.current(store, "job", now=at).holder == won[0]  # type: ignore[union-attr]


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf"), True])
def test_a_bad_length_is_refused(store: Store, seconds: float) -> None:
    with pytest.raises(InvalidArgument, match="seconds: a lease lasts more than 0 seconds"):
        lease.acquire(store, "job", "a", seconds, now=T0)
    assert lease.current(store, "job", now=T0) is None


def test_new_holders_differ() -> None:
    assert lease.new_holder() != lease.new_holder()
