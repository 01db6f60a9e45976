"""The columnar answer of an online lookup and its column helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from plinth.errors import InvalidArgument
from plinth.features.lookup import (
    NOT_FOUND,
    OUTSIDE_TTL,
    PRESENT,
    OnlineResponse,
    entity_columns,
    first_problem,
    key_rows,
    statuses_of,
)

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def response() -> OnlineResponse:
    return OnlineResponse(
        {"customer_id": [1, 2], "x": [1.5, None], "y": ["a", None]},
        {"x": (PRESENT, NOT_FOUND), "y": (PRESENT, NOT_FOUND)},
        2,
    )


def test_rows_and_statuses_are_made_from_the_columns_on_first_use() -> None:
    found = response()

    assert found.rows == [
        {"customer_id": 1, "x": 1.5, "y": "a"},
        {"customer_id": 2, "x": None, "y": None},
    ]
    assert found.statuses == [
        {"x": PRESENT, "y": PRESENT},
        {"x": NOT_FOUND, "y": NOT_FOUND},
    ]
    assert found.rows is found.rows  # made once


def test_to_dict_gives_fresh_lists() -> None:
    found = response()
    columns = found.to_dict()
    assert columns == {"customer_id": [1, 2], "x": [1.5, None], "y": ["a", None]}

    columns["x"].append(3.0)

    assert found.to_dict()["x"] == [1.5, None]


def test_to_arrow_and_to_pandas() -> None:
    table = response().to_arrow()
    assert table.schema.field("x").type == pa.float64()
    assert table.column("y").to_pylist() == ["a", None]
    assert response().to_pandas()["customer_id"].tolist() == [1, 2]
    assert OnlineResponse({}, {}, 0).to_arrow().num_rows == 0


def test_a_response_from_rows_equals_the_same_response_from_columns() -> None:
    rows = [{"customer_id": 1, "x": 1.5, "y": "a"}, {"customer_id": 2, "x": None, "y": None}]
    statuses = [{"x": PRESENT, "y": PRESENT}, {"x": NOT_FOUND, "y": NOT_FOUND}]

    assert OnlineResponse.from_rows(rows, statuses) == response()
    assert OnlineResponse.from_rows(rows, [*statuses[:1], {"x": NOT_FOUND}]) != response()


def test_rows_without_columns_are_distinct_empty_dicts() -> None:
    found = OnlineResponse({}, {}, 2)
    assert found.rows == [{}, {}]
    found.rows[0]["a"] = 1
    assert found.rows[1] == {}


def test_entity_columns_of_rows_with_the_same_or_different_keys() -> None:
    assert entity_columns([{"a": 1, "b": "x"}, {"b": "y", "a": 2}]) == {
        "a": [1, 2],
        "b": ["x", "y"],
    }
    # same number of keys, different names; one more key; one fewer
    assert entity_columns([{"a": 1}, {"b": 2}]) == {"a": [1, None], "b": [None, 2]}
    assert entity_columns([{"a": 1}, {"a": 2, "c": 3}]) == {"a": [1, 2], "c": [None, 3]}
    assert entity_columns([{"a": 1, "c": 3}, {"a": 2}]) == {"a": [1, 2], "c": [3, None]}


def test_key_rows_of_one_and_several_keys() -> None:
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert key_rows(rows, ["a"], "g:v1") == [(1,), (2,)]
    assert key_rows(rows, ["b", "a"], "g:v1") == [("x", 1), ("y", 2)]
    with pytest.raises(InvalidArgument, match="one lacks 'c'"):
        key_rows(rows, ["a", "c"], "g:v1")


def test_statuses_of_event_times() -> None:
    assert statuses_of([5, 7], None) == (PRESENT, PRESENT)
    assert statuses_of([5, 7], 5) == (PRESENT, PRESENT)
    assert statuses_of([5, None, 4], 5) == (PRESENT, NOT_FOUND, OUTSIDE_TTL)
    assert statuses_of([None, 1], None) == (NOT_FOUND, PRESENT)


def test_first_problem_among_input_statuses() -> None:
    fine = (PRESENT, PRESENT, PRESENT)
    stale = (PRESENT, OUTSIDE_TTL, PRESENT)
    missing = (NOT_FOUND, NOT_FOUND, PRESENT)

    assert first_problem([fine, fine], 3) == fine
    assert first_problem([], 3) == fine
    assert first_problem([fine, stale], 3) == stale
    assert first_problem([stale, missing], 3) == (NOT_FOUND, OUTSIDE_TTL, PRESENT)
    assert first_problem([missing, stale], 3) == (NOT_FOUND, NOT_FOUND, PRESENT)
