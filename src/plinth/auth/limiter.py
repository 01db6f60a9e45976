"""Repeated failures from one client are slowed down: after ``limit`` failed sign-ins or
refused tokens within ``window`` seconds, the client is refused without a check until the
window has passed. Kept per process: each replica limits what reaches it."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

MAX_CLIENTS = 100_000


class FailureLimiter:
    def __init__(
        self, limit: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            failures = self._recent(client)
            if failures is None or len(failures) < self.limit:
                return 0
            return max(1, math.ceil(failures[0] + self.window - self.clock()))

    def failed(self, client: str) -> None:
        with self._lock:
            failures = self._recent(client)
            if failures is None:
                if len(self._failures) >= MAX_CLIENTS:
                    self._forget_the_past()
                if len(self._failures) >= MAX_CLIENTS:
                    # a flood of addresses: the ones already counted stay limited; a new
                    # one is not counted until old ones age out (memory stays bounded)
                    return
                failures = self._failures[client] = deque()
            failures.append(self.clock())
            while len(failures) > self.limit:
                failures.popleft()

    def _forget_the_past(self) -> None:
        for client in list(self._failures):
            if not self._recent(client):
                del self._failures[client]

    def _recent(self, client: str) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        horizon = self.clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures
