"""Metric buffering: ``log_metric`` appends to the spool and a deque; a background thread
writes batches.

The training loop never waits on the store, except when the buffer is full (backpressure
keeps memory bounded) and at ``close()``, which hands back everything still buffered.
What it acknowledged is in the local spool already (see ``spool.py``), so a process killed
before the flusher wrote a batch loses nothing: the next process replays the spool.

Every batch carries a spool mark (the spool's id and the batch's first position), so the
store takes a batch sent twice (a retry after a lost answer) once. Without a local spool
(a read-only home) the buffer still marks its batches, with an id of its own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

from plinth.errors import Conflict, Unavailable
from plinth.tracking.spool import Point, Spool
from plinth.tracking.types import MetricBatch


class MetricBuffer:
    def __init__(
        self,
        write: Callable[[MetricBatch], None],
        heartbeat: Callable[[], None],
        goals: dict[str, str],
        *,
        interval: float = 1.0,
        max_points: int = 50_000,
        heartbeat_interval: float = 10.0,
        spool: Spool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._heartbeat = heartbeat
        self._goals = goals
        self._interval = interval
        self._max_points = max_points
        self._heartbeat_interval = heartbeat_interval
        self.spool = spool
        self.mark = spool.id if spool is not None else uuid.uuid4().hex
        self.clock = clock
        self.points: deque[Point] = deque()
        self._head = 0  # the spool position of points[0]
        self._last_beat = clock()
        self._wake = threading.Event()
        self._drained = threading.Condition()
        self._write_lock = threading.Lock()
        self._closed = False
        self.error: BaseException | None = None
        # The store refused the points for good (the run has ended): they are dropped and
        # the next log_metric raises this.
        self.refused: Conflict | None = None
        self._thread = threading.Thread(
            target=self._loop, name="plinth-metric-flusher", daemon=True
        )
        self._thread.start()

    def wait_for_room(self) -> None:
        """Called by the logger when the buffer is full: wake the flusher and wait for it."""
        self._wake.set()
        with self._drained:
            drained = self._drained.wait_for(
                lambda: len(self.points) < self._max_points or self._closed, timeout=60
            )
        if not drained:
            if self.error is not None:
                raise self.error
            raise Unavailable(
                "metric points could not be written for 60 s; the buffer is full",
                "the metadata store",
            )

    @property
    def full(self) -> bool:
        return len(self.points) >= self._max_points

    def flush(self) -> None:
        """Write what is buffered now; raises if the store refuses it (points are kept).

        Points logged meanwhile wait for the next flush, so a busy training loop cannot keep
        the flusher writing forever (and its heartbeats from going out)."""
        with self._write_lock:
            for _ in range(-(-len(self.points) // self._max_points)):
                self._write_some()

    def tick(self, *, flush: bool = True) -> None:
        """One round of the flusher: write what is buffered (if ``flush``), then beat if
        one is due."""
        if flush and self.points:
            self.flush()
        if self.clock() - self._last_beat >= self._heartbeat_interval and not self._closed:
            self._heartbeat()
            self._last_beat = self.clock()

    def close(self) -> MetricBatch | None:
        """Stop the flusher and hand back what it had not written yet (the caller writes it)."""
        self._closed = True
        self._wake.set()
        with self._write_lock:  # wait for a write in progress
            taken = list(self.points)
            self.points.clear()
            first = self._head
            self._head += len(taken)
        return self._batch_of(taken, first) if taken else None

    def restore(self, batch: MetricBatch) -> None:
        """Put back points ``close`` handed out when writing them failed (for a retry)."""
        rows = zip(
            batch.keys, batch.values, batch.steps, batch.timestamps, batch.is_best, strict=True
        )
        with self._write_lock:
            self.points.extendleft(reversed(list(rows)))
            self._head -= len(batch)

    def written(self) -> None:
        """Everything handed out was stored: the spool can go."""
        if self.spool is not None:
            self.spool.close(remove=not self.points)
            self.spool = None

    def _batch_of(self, taken: list[Point], first: int) -> MetricBatch:
        keys, values, steps, stamps, best = (list(c) for c in zip(*taken, strict=True))
        return MetricBatch(keys, values, steps, stamps, best, dict(self._goals), self.mark, first)

    def _write_some(self) -> None:
        n = min(len(self.points), self._max_points)
        taken = [self.points.popleft() for _ in range(n)]
        try:
            self._write(self._batch_of(taken, self._head))
        except Conflict as exc:
            self._head += n  # the store will never take them: drop them, say so once
            self.points.clear()
            self.refused = exc
            raise
        except BaseException:
            self.points.extendleft(reversed(taken))  # keep them for the next attempt
            raise
        self._head += n
        if self.spool is not None:
            self.spool.written(self._head)
        with self._drained:
            self._drained.notify_all()

    def _loop(self) -> None:
        last_flush = self.clock()
        while not self._closed and self.refused is None:
            woken = self._wake.wait(min(self._interval, self._heartbeat_interval))
            self._wake.clear()
            if self._closed:
                break
            try:
                due = woken or self.clock() - last_flush >= self._interval
                if due:
                    last_flush = self.clock()
                self.tick(flush=due)
                self.error = None
            except Exception as exc:  # the points stay buffered and are retried
                self.error = exc
                with self._drained:
                    self._drained.notify_all()
