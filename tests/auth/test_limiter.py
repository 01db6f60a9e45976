"""FailureLimiter: after ``limit`` failures within ``window`` seconds a client waits until
the oldest of them leaves the window (the clock is driven by the tests)."""

from __future__ import annotations

import pytest

from plinth.auth.limiter import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, limit: int = 3, window: float = 60.0) -> FailureLimiter:
    return FailureLimiter(limit=limit, window=window, clock=clock)


def test_a_client_under_the_limit_may_try_at_once() -> None:
    clock = Clock()
    limits = limiter(clock)
    assert limits.retry_after("10.0.0.1") == 0
    limits.failed("10.0.0.1")
    limits.failed("10.0.0.1")
    assert limits.retry_after("10.0.0.1") == 0


def test_at_the_limit_the_client_waits_for_the_oldest_failure_to_leave_the_window() -> None:
    clock = Clock()
    limits = limiter(clock)
    for step in (0.0, 10.0, 20.0):
        clock.now = 1000.0 + step
        limits.failed("10.0.0.1")
    assert limits.retry_after("10.0.0.1") == 40  # the first failure leaves at 1060
    clock.now = 1059.2
    assert limits.retry_after("10.0.0.1") == 1  # rounded up, never 0 while refused
    clock.now = 1060.0
    assert limits.retry_after("10.0.0.1") == 0
    limits.failed("10.0.0.1")  # three in the window again: 1010, 1020, 1060
    assert limits.retry_after("10.0.0.1") == 10


def test_failures_are_counted_per_client() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(3):
        limits.failed("10.0.0.1")
    assert limits.retry_after("10.0.0.1") == 60
    assert limits.retry_after("10.0.0.2") == 0
    limits.failed("10.0.0.2")
    assert limits.retry_after("10.0.0.2") == 0


def test_only_the_last_limit_failures_are_kept() -> None:
    clock = Clock()
    limits = limiter(clock)
    for second in range(100):
        clock.now = 1000.0 + second / 10
        limits.failed("10.0.0.1")
    assert len(limits._failures["10.0.0.1"]) == 3
    # the newest three (at 1009.7 .. 1009.9) decide the wait
    assert limits.retry_after("10.0.0.1") == 60
    clock.now = 1069.7
    assert limits.retry_after("10.0.0.1") == 0


def test_a_longer_window_holds_a_client_longer() -> None:
    clock = Clock()
    limits = limiter(clock, limit=1, window=300.0)
    limits.failed("::1")
    assert limits.retry_after("::1") == 300
    clock.now += 299.5
    assert limits.retry_after("::1") == 1
    clock.now += 0.5
    assert limits.retry_after("::1") == 0


def test_a_flood_of_addresses_does_not_lift_a_lockout(monkeypatch: pytest.MonkeyPatch) -> None:
    import plinth.auth.limiter as module

    monkeypatch.setattr(module, "MAX_CLIENTS", 3)
    clock = Clock()
    limits = limiter(clock)
    for _ in range(3):
        limits.failed("attacker")
    for i in range(10):
        limits.failed(f"10.0.0.{i}")
    assert limits.retry_after("attacker") > 0
    clock.now += 61  # once the old failures age out, new addresses are counted again
    limits.failed("10.0.1.1")
    assert limits.retry_after("attacker") == 0
    assert "10.0.1.1" in limits._failures
