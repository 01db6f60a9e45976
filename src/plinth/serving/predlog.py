"""The prediction log: every prediction a service makes (request id, time, the inputs as the
model used them, the output, model version, latency), written to the central store's
``predictions`` table in batches by a background thread, never on the request's path.

One table row per request: its inputs as JSON columns (``{"age": [41, 35]}``), its outputs
as a JSON list (one per row) and its row count, so a 100-row request costs one small
encoding (orjson, numpy columns in C) and one insert, not a hundred of each;
``read_predictions`` gives them back one row per prediction.

``record`` never blocks: past half of ``capacity`` it keeps a shrinking share of requests
(a random sample, so what is kept stays representative), and at capacity it keeps none;
what it does not keep is counted in ``dropped``. A database that fails costs the batch it
was writing (counted in ``failed``), not the service.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from plinth.serving.logged import LoggedRequest, PredictionLogReads
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
    # the input columns when ``inputs`` is known to be one numeric block (encoded faster)
    block: tuple[str, ...] | None = None


class PredictionLog:
    def __init__(
        self,
        store: Store,
        *,
        capacity: int = 100_000,
        batch_rows: int = 5_000,
        batch_entries: int = 32,
        flush_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.capacity = capacity  # in rows
        self.batch_rows = batch_rows
        # Requests per write: the writer shares the interpreter with the model, so it works
        # in small slices as requests come (a second's worth at once would hold up the
        # predictions running meanwhile by milliseconds)
        self.batch_entries = batch_entries
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
            if self._held >= self.batch_rows or len(self._queue) >= self.batch_entries:
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
                    more = bool(self._queue)
                if more:
                    time.sleep(0.001)  # a backlog: let the predictions in between

    def _take(self) -> list[Entry]:
        batch: list[Entry] = []
        rows = 0
        while self._queue and rows < self.batch_rows and len(batch) < self.batch_entries:
            entry = self._queue.popleft()
            batch.append(entry)
            rows += len(entry.inputs)
        self._held -= rows
        return batch

    def _write(self, batch: list[Entry]) -> None:
        from sqlalchemy import insert

        from plinth.store.schema import predictions

        rows = sum(len(entry.inputs) for entry in batch)
        try:
            values = [_row(entry) for entry in batch]
            with self.store.write() as conn:
                conn.execute(insert(predictions), values)
            self.written += rows
        except Exception as e:  # the log must never take the service down
            self.failed += rows
            log.warning("prediction log: could not write %d rows: %s", rows, e)


def read_predictions(
    store: Store, model: str, *, version: int | None = None, since_ms: int | None = None
) -> pd.DataFrame:
    """The logged predictions of ``model`` (one version, or all), oldest first, one row
    per prediction: ``request_id``, ``at`` (UTC), ``model_version``, ``latency_ms`` (of
    the whole request), the input columns and ``prediction``."""
    from plinth.serving.logged import PredictionLogReads

    return predictions_frame(PredictionLogReads(store), model, version, since_ms)


def predictions_frame(
    reads: PredictionLogReads, model: str, version: int | None, since_ms: int | None
) -> pd.DataFrame:
    """``read_predictions`` through the service that reads the log (local or remote)."""
    from plinth.serving.logged import MAX_PAGE

    frames: list[pd.DataFrame] = []
    after = 0
    while True:
        page = reads.list_logged_requests(model, version, since_ms, after, MAX_PAGE)
        frames.extend(_frame(request) for request in page)
        if len(page) < MAX_PAGE:
            break
        after = page[-1].id
    if not frames:
        return pd.DataFrame(
            columns=["request_id", "at", "model_version", "latency_ms", "prediction"]
        )
    return pd.concat(frames, ignore_index=True)


def _frame(request: LoggedRequest) -> pd.DataFrame:
    frame = pd.DataFrame(orjson.loads(request.inputs))
    frame["prediction"] = orjson.loads(request.outputs)
    frame.insert(0, "latency_ms", request.latency_ms)
    frame.insert(0, "model_version", request.model_version)
    frame.insert(0, "at", pd.Timestamp(request.at, unit="ms", tz="UTC"))
    frame.insert(0, "request_id", request.request_id)
    return frame


def _row(entry: Entry) -> dict[str, Any]:
    return {
        "model_name": entry.model,
        "model_version": entry.version,
        "request_id": entry.request_id,
        "at": entry.at_ms,
        "inputs": _dumps(_columns(entry.inputs, entry.block)),
        "outputs": _dumps(_outputs(entry.outputs)),
        "rows": len(entry.inputs),
        "latency_ms": entry.latency_ms,
    }


def _columns(frame: pd.DataFrame, block: tuple[str, ...] | None) -> dict[str, Any]:
    if block is not None:
        # one numeric block: one transposed copy, each row of it a column orjson writes
        # in C; no pandas Series made per column (this runs beside the model's predictions)
        return dict(zip(block, np.ascontiguousarray(frame.to_numpy().T), strict=True))
    names = [str(name) for name in frame.columns.tolist()]
    return {name: _column(frame.iloc[:, i]) for i, name in enumerate(names)}


def _column(column: pd.Series) -> Any:
    values = column.to_numpy()
    if values.dtype.kind in "fiubM":  # numbers, bools and times: orjson writes them in C
        return np.ascontiguousarray(values)
    return column.tolist()


def _outputs(outputs: Any) -> Any:
    if isinstance(outputs, pd.DataFrame):
        return outputs.to_dict(orient="records")
    if isinstance(outputs, pd.Series):
        return _column(outputs)
    if isinstance(outputs, np.ndarray):
        return np.ascontiguousarray(outputs) if outputs.dtype.kind in "fiubM" else outputs.tolist()
    return list(outputs)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()
