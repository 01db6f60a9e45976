"""Request bodies into columns, predictions into JSON."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd

from plinth.serving import payload


def test_records_become_columns_and_a_key_some_rows_lack_is_none() -> None:
    rows = [{"a": 1, "b": 2.5}, {"b": 1.0, "c": "x"}]
    assert payload.records(rows) == {"a": [1, None], "b": [2.5, 1.0], "c": [None, "x"]}
    assert payload.to_rows(payload.records(rows[:1])) == rows[:1]


def test_every_shape_gives_the_same_columns() -> None:
    expected = {"a": [1, 2], "b": [0.5, 1.5]}
    for body in (
        [{"a": 1, "b": 0.5}, {"a": 2, "b": 1.5}],
        {"columns": expected},
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 0.5], [2, 1.5]]}},
    ):
        assert payload.records(body) == expected


def test_predictions_are_json_with_null_for_nan_and_infinities() -> None:
    answer = orjson.loads(
        payload.dumps(
            {
                "array": payload.plain(np.array([0.5, np.nan, -np.inf])),
                "labels": payload.plain(np.array(["yes", "no"], dtype=object)),
                "frame": payload.plain(pd.DataFrame({"p": [np.nan, 1.0], "k": ["a", "b"]})),
            }
        )
    )
    assert answer["array"] == [0.5, None, None] and answer["labels"] == ["yes", "no"]
    assert answer["frame"] == [{"p": None, "k": "a"}, {"p": 1.0, "k": "b"}]
