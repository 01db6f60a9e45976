"""The exposure log: which unit saw which arm of which experiment, when, through which
request and model version. The router records an exposure per routed request; a background
thread appends them, grouped by experiment, to one Delta table per experiment::

    {root}/abtests/{experiment}/exposures
        at_ms int64 (ms since the epoch, UTC), unit string, arm string,
        request_id string, model_version string (null when the arm did not say)

``record`` never blocks: at ``capacity`` queued exposures it drops and counts
(``dropped``). A store that fails costs the batch it was writing (``failed``), never the
caller. The same writer pattern as the prediction log (``plinth.serving.predlog``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

import pyarrow as pa
from deltalake import write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from plinth.errors import Conflict, Unavailable
from plinth.features.offline import s3_storage_options

log = logging.getLogger("plinth.abtests")

SCHEMA = pa.schema(
    [
        pa.field("at_ms", pa.int64()),
        pa.field("unit", pa.string()),
        pa.field("arm", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("latency_ms", pa.float64()),
        pa.field("outcome", pa.string()),
    ]
)


@dataclass(frozen=True)
class Exposure:
    experiment: str
    arm: str
    unit: str
    request_id: str
    model_version: str | None
    at_ms: int
    latency_ms: float | None = None
    outcome: str = "ok"


def exposures_uri(root_uri: str, experiment: str) -> str:
    """Where ``experiment``'s exposures are (a local path or an object-store URI)."""
    if "://" in root_uri and not root_uri.startswith("file://"):
        return f"{root_uri.rstrip('/')}/abtests/{experiment}/exposures"
    local = os.path.abspath(os.path.expanduser(root_uri.removeprefix("file://")))
    return os.path.join(local, "abtests", experiment, "exposures")


class ExposureLog:
    def __init__(
        self,
        root_uri: str,
        capacity: int = 100_000,
        flush_seconds: float = 1.0,
        storage_options: dict[str, str] | None = None,
        batch_rows: int = 50_000,
    ) -> None:
        self.root_uri = root_uri
        self.capacity = capacity
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        remote = "://" in root_uri and not root_uri.startswith("file://")
        explicit = dict(storage_options or {})
        self.storage_options = s3_storage_options(explicit) if remote else explicit or None
        self.written = 0
        self.dropped = 0  # not kept: the log was full
        self.failed = 0  # kept, but their write failed
        self._queue: deque[Exposure] = deque()
        self._writing = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plinth-exposures", daemon=True)
        self._thread.start()

    def record(self, exposure: Exposure) -> bool:
        """Queue ``exposure``; False when the log is full (dropped and counted)."""
        with self._lock:
            if len(self._queue) >= self.capacity or self._stop.is_set():
                self.dropped += 1
                return False
            self._queue.append(exposure)
            if len(self._queue) >= self.batch_rows:
                self._wake.set()
        return True

    def flush(self, timeout: float = 10.0) -> None:
        """Write everything queued now (waits up to ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queue and not self._writing:
                    return
            self._wake.set()
            time.sleep(0.005)

    def close(self) -> None:
        self.flush()
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            while True:
                with self._lock:
                    batch = [
                        self._queue.popleft() for _ in range(min(len(self._queue), self.batch_rows))
                    ]
                    self._writing = bool(batch)
                if not batch:
                    break
                self._write(batch)
                with self._lock:
                    self._writing = False

    def _write(self, batch: list[Exposure]) -> None:
        groups: dict[str, list[Exposure]] = {}
        for exposure in batch:
            groups.setdefault(exposure.experiment, []).append(exposure)
        for experiment, rows in groups.items():
            try:
                uri = exposures_uri(self.root_uri, experiment)
                append(uri, _table(rows), self.storage_options, "the exposure log")
                self.written += len(rows)
            except Exception as e:  # the log must never take the router down
                self.failed += len(rows)
                log.warning(
                    "exposure log: could not write %d rows of %s: %s", len(rows), experiment, e
                )


COMMIT_ATTEMPTS = 8


def append(uri: str, table: pa.Table, options: dict[str, str] | None, what: str) -> None:
    """Append ``table`` to the Delta table at ``uri`` in one commit, made again when another
    writer committed first (several router workers, or event batches, creating a new
    experiment's table at once race for its first commit); Conflict when that keeps
    happening, Unavailable when the store fails."""
    import random

    for attempt in range(COMMIT_ATTEMPTS):
        try:
            write_deltalake(uri, table, mode="append", storage_options=options)
            return
        except CommitFailedError as e:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise Conflict(f"{what}: other writers kept committing first; retry: {e}") from e
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        except (DeltaError, OSError) as e:
            raise Unavailable(f"{what} could not be written: {e}", what) from e


def _table(rows: list[Exposure]) -> pa.Table:
    return pa.table(
        {
            "at_ms": [r.at_ms for r in rows],
            "unit": [r.unit for r in rows],
            "arm": [r.arm for r in rows],
            "request_id": [r.request_id for r in rows],
            "model_version": [r.model_version for r in rows],
            "latency_ms": [r.latency_ms for r in rows],
            "outcome": [r.outcome for r in rows],
        },
        schema=SCHEMA,
    )
