"""Leases on SQLite and PostgreSQL: one holder at a time, expiry, takeover, compare-and-set."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plinth.errors import InvalidArgument, Unavailable
from plinth.store import lease
from plinth.store.engine import Store, open_store
from plinth.store.sql import now_ms
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


# -- LeasedLoop ----------------------------------------------------------------------------


class Steps(lease.LeasedLoop):
    """A pass goes through ``steps``, asking ``still_held`` before each and calling
    ``during(step)``; ``changes`` records ``on_change``."""

    def __init__(self, store: Store) -> None:
        self.changes: list[bool] = []
        super().__init__(
            store,
            "steps",
            seconds=0.01,
            lease_seconds=60,
            logger=logging.getLogger("tests.store.lease"),
            on_change=self.changes.append,
        )
        self.did: list[str] = []
        self.during: Callable[[str], None] = lambda step: None

    def work(self) -> None:
        for step in ("a", "b"):
            if not self.still_held():
                return
            self.during(step)
            self.did.append(step)


def test_a_pass_renews_its_lease_before_each_step_and_ends_once_it_is_taken(
    store: Store,
) -> None:
    loop = Steps(store)
    assert loop.run_pass() and loop.did == ["a", "b"] and loop.changes == [True]
    assert lease.acquire(store, "steps", loop.holder, 1)  # its own: shortened to a second
    assert loop.still_held()
    assert lease.current(store, "steps").expires_at_ms > now_ms() + 30_000  # type: ignore[union-attr]

    def taken_over(step: str) -> None:  # the loop stalled, its lease lapsed and was taken
        assert lease.release(store, "steps", loop.holder)
        assert lease.acquire(store, "steps", "someone else", 60)

    loop.did, loop.during = [], taken_over
    assert not loop.run_pass()
    assert loop.did == ["a"] and loop.changes == [True, False]
    assert lease.current(store, "steps").holder == "someone else"  # type: ignore[union-attr]
    assert not loop.run_pass() and loop.state()["holds_lease"] is False


def test_a_stop_ends_the_pass_at_its_next_step_and_gives_the_lease_up(store: Store) -> None:
    loop = Steps(store)
    loop.during = lambda step: loop.stop()  # never started: stop waits for nothing
    assert not loop.run_pass()
    assert loop.did == ["a"] and loop.changes == [True, False]
    assert lease.current(store, "steps") is None and loop.released


def test_a_failed_pass_is_told_and_the_next_one_goes_on(store: Store) -> None:
    loop = Steps(store)

    def away(step: str) -> None:
        raise Unavailable("the store at sqlite:///x is unreachable")

    loop.during = away
    assert loop.run_pass()  # still holds: only the work failed
    state = loop.state()
    assert state["failure"] == "Unavailable: the store at sqlite:///x is unreachable"
    assert (state["passes"], state["last_pass_at"]) == (0, None)
    loop.during = lambda step: None
    assert loop.run_pass()
    state = loop.state()
    assert state["failure"] is None and state["passes"] == 1
    assert state["last_pass_at"] is not None and state["running"] is False


def test_a_started_loop_runs_until_stopped_and_gives_the_lease_up(store: Store) -> None:
    loop = Steps(store)
    assert not loop.alive
    loop.start()
    deadline = time.monotonic() + 60  # a bound on waiting, not what is tested
    while loop.state()["passes"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loop.state()["running"] is True and loop.state()["holds_lease"] is True
    assert lease.current(store, "steps").holder == loop.holder  # type: ignore[union-attr]
    loop.stop()
    assert not loop.alive and loop.state()["running"] is False
    assert lease.current(store, "steps") is None and loop.changes == [True, False]
