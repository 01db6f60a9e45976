"""The prediction log: every prediction a service makes (request id, time, the inputs as the
model used them, the output, model version, latency), written to the central store's
``predictions`` table in batches by a background thread, never on the request's path.

``record`` never blocks: past half of ``capacity`` it keeps a shrinking share of requests
(a random sample, so what is kept stays representative), and at capacity it keeps none;
what it does not keep is counted in ``dropped``. A database that fails costs the batch it
was writing (counted in ``failed``), not the service.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

    from plinth.store.engine import Store

log = logging.getLogger("plinth.serving")


@dataclass(frozen=True)
class Entry:
    model: str
    version: int
    request_id: str
    at_ms: int
    inputs: pd.DataFrame
    outputs: Any  # one value (or row of values) per input row
    latency_ms: float


class PredictionLog:
    def __init__(
        self,
        store: Store,
        *,
        capacity: int = 100_000,
        batch_rows: int = 5_000,
        flush_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.capacity = capacity  # in rows
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.dropped = 0  # rows not kept (sampled out or full)
        self.failed = 0  # rows whose write failed
        self.written = 0
        self._queue: deque[Entry] = deque()
        self._held = 0  # rows queued
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plinth-predlog", daemon=True)
        self._thread.start()

    def record(self, entry: Entry) -> bool:
        """Queue ``entry``; False when it was dropped (sampled out or the log is full)."""
        rows = len(entry.inputs)
        with self._lock:
            fill = self._held / self.capacity
            if self._held + rows > self.capacity or (
                fill > 0.5 and random.random() > 2 * (1 - fill)
            ):
                self.dropped += rows
                return False
            self._queue.append(entry)
            self._held += rows
            if self._held >= self.batch_rows:
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

    _writing = False

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            while True:
                with self._lock:
                    batch = self._take()
                    self._writing = bool(batch)
                if not batch:
                    break
                self._write(batch)
                with self._lock:
                    self._writing = False

    def _take(self) -> list[Entry]:
        batch: list[Entry] = []
        rows = 0
        while self._queue and rows < self.batch_rows:
            entry = self._queue.popleft()
            batch.append(entry)
            rows += len(entry.inputs)
        self._held -= rows
        return batch

    def _write(self, batch: list[Entry]) -> None:
        from sqlalchemy import insert

        from plinth.store.schema import predictions

        rows = [row for entry in batch for row in _rows(entry)]
        try:
            with self.store.write() as conn:
                conn.execute(insert(predictions), rows)
            self.written += len(rows)
        except Exception as e:  # the log must never take the service down
            self.failed += len(rows)
            log.warning("prediction log: could not write %d rows: %s", len(rows), e)


def _rows(entry: Entry) -> list[dict[str, Any]]:
    inputs = json.loads(entry.inputs.to_json(orient="records", date_format="iso"))
    outputs = _plain(entry.outputs)
    return [
        {
            "model_name": entry.model,
            "model_version": entry.version,
            "request_id": entry.request_id,
            "at": entry.at_ms,
            "inputs": json.dumps(row, separators=(",", ":")),
            "outputs": json.dumps(out, separators=(",", ":")),
            "latency_ms": entry.latency_ms,
        }
        for row, out in zip(inputs, outputs, strict=True)
    ]


def _plain(outputs: Any) -> list[Any]:
    if hasattr(outputs, "to_json"):
        return list(json.loads(outputs.to_json(orient="values")))
    if hasattr(outputs, "tolist"):
        values: list[Any] = outputs.tolist()
        return values
    return list(outputs)
