"""The prediction log: batched writes off the request path, sampling then dropping when
full, and a failing database costing only the batch."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from plinth.serving.predlog import Entry, PredictionLog, read_predictions
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
    assert count(store) == 7 and log.written == 21  # a table row per request
    with store.read() as conn:
        first = conn.execute(select(predictions).order_by(predictions.c.id)).first()
    assert first is not None
    assert (first.request_id, first.inputs, first.outputs, first.rows) == (
        "r0",
        '{"x":[0.0,1.0,2.0]}',
        "[0,1,2]",
        3,
    )
    log.close()


def test_predictions_read_back_one_row_per_prediction(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    log = PredictionLog(store, flush_seconds=60)
    times = pd.to_datetime(["2026-01-01T10:00:00Z", "2026-01-02T10:00:00Z"])
    first = pd.DataFrame({"age": [41, 35], "plan": ["pro", None], "seen": times})
    log.record(Entry("churn", 1, "a", 1_000, first, np.array([0.25, np.nan]), 2.0))
    second = pd.DataFrame({"age": [7], "plan": ["free"], "seen": times[:1]})
    log.record(Entry("churn", 2, "b", 2_000, second, pd.Series([0.75]), 1.0))
    log.record(Entry("other", 1, "c", 2_000, second, np.array([1.0]), 1.0))
    log.close()
    found = read_predictions(store, "churn")
    assert list(found.columns) == [
        "request_id", "at", "model_version", "latency_ms", "age", "plan", "seen", "prediction"
    ]  # fmt: skip
    assert found["request_id"].tolist() == ["a", "a", "b"]
    assert found["age"].tolist() == [41, 35, 7]
    assert found["plan"].tolist()[::2] == ["pro", "free"] and pd.isna(found["plan"][1])
    assert found["prediction"].tolist()[::2] == [0.25, 0.75] and pd.isna(found["prediction"][1])
    assert found["at"][2] == pd.Timestamp(2_000, unit="ms", tz="UTC")
    assert pd.to_datetime(found["seen"]).tolist() == [times[0], times[1], times[0]]
    assert read_predictions(store, "churn", version=2)["request_id"].tolist() == ["b"]
    assert read_predictions(store, "churn", since_ms=1_500)["request_id"].tolist() == ["b"]
    assert read_predictions(store, "nobody").empty


def test_a_full_log_samples_then_drops_and_counts(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    log = PredictionLog(
        store, capacity=100, batch_rows=10_000, batch_entries=10_000, flush_seconds=60
    )
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


def test_a_few_queued_requests_are_written_without_waiting_for_the_flush(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    log = PredictionLog(store, batch_entries=4, flush_seconds=3600)
    for i in range(4):
        log.record(entry(1, f"r{i}"))
    deadline = time.monotonic() + 30
    while count(store) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert count(store) == 4  # written in a slice as they came, not at the hourly flush
    log.close()
