"""The prediction log: batched writes off the request path, sampling then dropping when
full, and a failing database costing only the batch."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from plinth.serving.predlog import Entry, PredictionLog
from plinth.store.engine import Store
from plinth.store.schema import predictions


def entry(rows: int, request: str = "r") -> Entry:
    frame = pd.DataFrame({"x": np.arange(rows, dtype=float)})
    return Entry("m", 1, request, 0, frame, np.arange(rows), 1.5)


def count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(predictions)).scalar_one())


def test_entries_are_written_in_batches(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    log = PredictionLog(store, batch_rows=10, flush_seconds=60)
    for i in range(7):
        assert log.record(entry(3, f"r{i}"))
    log.flush()
    assert count(store) == 21 and log.written == 21
    with store.read() as conn:
        first = conn.execute(select(predictions).order_by(predictions.c.id)).first()
    assert first is not None
    assert (first.request_id, first.inputs, first.outputs) == ("r0", '{"x":0.0}', "0")
    log.close()


def test_a_full_log_samples_then_drops_and_counts(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    log = PredictionLog(store, capacity=100, batch_rows=10_000, flush_seconds=60)
    random.seed(3)
    kept = sum(log.record(entry(1)) for _ in range(200))
    assert 50 < kept < 100  # all of the first half, a shrinking share after
    assert log.dropped == 200 - kept
    assert not log.record(entry(101))  # more than fits is never queued
    log.close()
    assert count(store) == kept


def test_a_failing_database_costs_the_batch_not_the_service(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    log = PredictionLog(store, flush_seconds=60)
    store.engine.dispose()
    (tmp_path / "p.db").unlink()
    (tmp_path / "p.db").mkdir()  # the database file is now a folder: every write fails
    log.record(entry(4))
    log.flush()
    assert log.failed == 4 and log.written == 0
    assert log.record(entry(1))  # still taking entries
    log.close()
