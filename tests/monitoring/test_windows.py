"""Reading a window of the prediction log as one Arrow table: the inputs decoded into
columns, the prediction (and the positive class's probability when the outputs hold one),
newest first, bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plinth.monitoring.windows import (
    AT,
    PREDICTION,
    REQUEST_ID,
    ROW,
    SCORE,
    iso,
    prediction_columns,
    read_window,
    read_windows,
)
from plinth.serving.predlog import Entry, PredictionLog
from plinth.store.engine import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'p.db'}")


def log(store: Store, *entries: Entry) -> None:
    writer = PredictionLog(store, flush_seconds=60)
    for entry in entries:
        assert writer.record(entry)
    writer.close()


def test_a_window_is_one_row_per_prediction_newest_first(store: Store) -> None:
    log(
        store,
        Entry("churn", 1, "a", 1_000, pd.DataFrame({"age": [41, 35], "plan": ["pro", None]}),
              np.array([0.25, 0.75]), 1.0),
        Entry("churn", 1, "b", 2_000, pd.DataFrame({"age": [7], "plan": ["free"]}),
              np.array([0.5]), 1.0),
        Entry("churn", 2, "c", 2_500, pd.DataFrame({"age": [9], "plan": ["free"]}),
              np.array([0.5]), 1.0),
        Entry("other", 1, "d", 2_000, pd.DataFrame({"age": [1]}), np.array([1.0]), 1.0),
        Entry("churn", 1, "e", 3_000, pd.DataFrame({"age": [1]}), np.array([1.0]), 1.0),
    )  # fmt: skip
    window = read_window(store, "churn", 1, 1_000, 3_000, meta=True)
    table = window.table
    assert (window.rows, window.requests, window.capped) == (3, 2, False)
    assert window.inputs == ["age", "plan"]
    assert table["age"].to_pylist() == [7, 41, 35]
    assert table["plan"].to_pylist() == ["free", "pro", None]
    assert table[PREDICTION].to_pylist() == [0.5, 0.25, 0.75]
    assert table[SCORE].to_pylist() == [0.5, 0.25, 0.75]  # floats in [0, 1]: probabilities
    assert table[REQUEST_ID].to_pylist() == ["b", "a", "a"]
    assert table[ROW].to_pylist() == [0, 0, 1]
    assert table[AT].to_pylist() == [2_000, 1_000, 1_000]
    assert read_window(store, "churn", None, 0, 10_000).rows == 5  # every version
    assert read_window(store, "churn", 3, 0, 10_000).rows == 0


def test_columns_a_request_lacks_are_null(store: Store) -> None:
    log(
        store,
        Entry("m", 1, "a", 1, pd.DataFrame({"x": [1.5]}), np.array([1]), 1.0),
        Entry("m", 1, "b", 2, pd.DataFrame({"y": ["u", "v"]}), np.array([0, 1]), 1.0),
    )
    table = read_window(store, "m", 1, 0, 10).table
    assert table["x"].to_pylist() == [None, None, 1.5]
    assert table["y"].to_pylist() == ["u", "v", None]
    assert table[PREDICTION].to_pylist() == [0, 1, 1]
    assert SCORE not in table.column_names  # class labels are not probabilities


def test_a_busy_window_keeps_the_newest_predictions_and_says_so(store: Store) -> None:
    entries = [
        Entry("m", 1, f"r{i}", 100 + i, pd.DataFrame({"x": [float(i)] * 10}), np.zeros(10), 1.0)
        for i in range(10)
    ]
    log(store, *entries)
    window = read_window(store, "m", 1, 0, 1_000, max_rows=35)
    assert (window.rows, window.requests, window.capped) == (30, 3, True)
    assert sorted(set(window.table["x"].to_pylist())) == [7.0, 8.0, 9.0]
    assert window.note() == "only the newest 30 predictions of the window were read"
    assert not read_window(store, "m", 1, 0, 1_000, max_rows=100).capped


def test_each_window_of_a_span_is_bounded_on_its_own(store: Store) -> None:
    busy = [
        Entry("m", 1, f"b{i}", 1_000 + i, pd.DataFrame({"x": [1.0] * 10}), np.zeros(10), 1.0)
        for i in range(10)
    ]
    calm = [Entry("m", 1, "c", 500, pd.DataFrame({"x": [0.0] * 10}), np.zeros(10), 1.0)]
    log(store, *busy, *calm)
    assert read_window(store, "m", 1, 0, 2_000, max_rows=40).table["x"].to_pylist() == [1.0] * 40
    both = read_windows(store, "m", 1, 0, 2_000, 2, max_rows=40, meta=True)
    assert both.capped and both.rows == 30  # 20 of the busy window, all 10 of the calm one
    assert both.table["x"].to_pylist() == [1.0] * 20 + [0.0] * 10
    assert both.table["__at"].to_pylist()[-1] == 500


def test_an_empty_window_is_an_empty_table(store: Store) -> None:
    window = read_window(store, "nobody", 1, 0, 1_000)
    assert (window.rows, window.requests, window.capped, window.inputs) == (0, 0, False, [])


def test_probabilities_are_found_in_the_shapes_models_return() -> None:
    labels, scores = prediction_columns([[0.8, 0.2], [0.1, 0.9], None])
    assert labels.to_pylist() == [0, 1, None]
    assert scores is not None and scores.to_pylist() == [0.2, 0.9, None]

    labels, scores = prediction_columns(
        [
            {"label": "yes", "probabilities": [0.3, 0.7]},
            {"label": "no", "probabilities": [0.6, 0.4]},
        ]
    )
    assert labels.to_pylist() == ["yes", "no"]
    assert scores is not None and scores.to_pylist() == [0.7, 0.4]

    labels, scores = prediction_columns([{"probability": 0.25}, {"probability": 0.75}])
    assert labels.to_pylist() == [0, 1]
    assert scores is not None and scores.to_pylist() == [0.25, 0.75]

    labels, scores = prediction_columns([0.0, 1.0, 1.0])  # 0/1 floats are classes
    assert scores is None and labels.to_pylist() == [0.0, 1.0, 1.0]
    labels, scores = prediction_columns([12.5, 3.0])  # a regressor's values
    assert scores is None
    labels, scores = prediction_columns([{"other": 1}])  # nothing known: kept as text
    assert scores is None and labels.to_pylist() == ['{"other":1}']


def test_times_out_of_datetime_range_are_written_as_ms() -> None:
    assert iso(1_780_000_000_000) == "2026-05-28T20:26:40Z"
    assert iso(-10_000_000_000_000_000) == "-10000000000000000 ms since the epoch"
