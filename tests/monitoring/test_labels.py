"""Late labels: checked whole and stored in one transaction, unknown request ids named, and
joined to the logged predictions by request id or by entity keys."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from plinth.errors import InvalidArgument
from plinth.monitoring.labels import (
    LABEL,
    LABEL_AT,
    MAX_LABELS,
    LabelIn,
    check_labels,
    entity_key,
    join_labels,
    read_labels,
    store_labels,
)
from plinth.monitoring.windows import read_window
from plinth.serving.predlog import Entry, PredictionLog
from plinth.store.engine import Store
from plinth.store.schema import labels

NOW = 1_800_000_000_000
T = 1_700_000_000_000  # the predictions' times: T + 1 s, T + 2 s, T + 3 s


@pytest.fixture
def store(tmp_path: Path) -> Store:
    made = Store(f"sqlite:///{tmp_path / 'p.db'}")
    writer = PredictionLog(made, flush_seconds=60)
    frames = [
        ("r1", T + 1_000, pd.DataFrame({"customer_id": [1, 2], "age": [30, 40]})),
        ("r2", T + 2_000, pd.DataFrame({"customer_id": [1], "age": [31]})),
        ("r3", T + 3_000, pd.DataFrame({"customer_id": [2], "age": [41]})),
    ]
    for request_id, at, frame in frames:
        writer.record(Entry("churn", 1, request_id, at, frame, np.arange(len(frame)) / 4, 1.0))
    writer.close()
    return made


def stored(store: Store, items: list[Any]) -> Any:
    with store.write() as conn:
        return store_labels(conn, "churn", check_labels(items, NOW), "ann", NOW)


def count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(labels)).scalar_one())


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"label": 1}, r"labels\[0\]: give exactly one of request_id and entity"),
        (
            {"label": 1, "request_id": "r1", "entity": {"customer_id": 1}},
            "exactly one of request_id and entity",
        ),
        ({"label": None, "request_id": "r1"}, r"labels\[0\].label must be a number"),
        ({"label": [1], "request_id": "r1"}, r"labels\[0\].label must be a number"),
        ({"label": float("nan"), "request_id": "r1"}, "finite number"),
        ({"label": 1, "request_id": "r1", "row": -1}, r"labels\[0\].row must be a row number"),
        ({"label": 1, "request_id": "r1", "row": 2**31}, r"labels\[0\].row must be .* 2147483647"),
        ({"label": 1, "entity": {}}, r"labels\[0\].entity must be a dict of key columns"),
        ({"label": 1, "entity": {"id": [1]}}, r"labels\[0\].entity.id must be a number"),
        ({"label": 1, "request_id": "r1", "at": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"label": 1, "request_id": "r1", "at": NOW + 3_600_000}, "in the future"),
        ({"label": 2**64, "request_id": "r1"}, r"labels\[0\].label: Integer exceeds 64-bit"),
        ({"label": 1, "entity": {"id": 2**64}}, r"labels\[0\].entity.id = \d+ does not fit"),
        ({"label": 1, "request_id": "r1", "at": 1}, r"labels\[0\].at = 1 is .* before 2000"),
        (
            {"label": 1, "request_id": "r1", "at": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)},
            r"labels\[0\].at = .* before 2000-01-01",
        ),
        ({"label": 1, "request_id": "r1", "colour": "red"}, r"unknown field\(s\) \['colour'\]"),
    ],
)
def test_a_bad_label_refuses_the_batch_naming_it(store: Store, item: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        stored(store, [item])
    assert count(store) == 0


def test_the_batch_is_bounded_and_not_empty() -> None:
    with pytest.raises(InvalidArgument, match=f"at most {MAX_LABELS}"):
        check_labels([{"label": 1, "request_id": "r"}] * (MAX_LABELS + 1), NOW)
    with pytest.raises(InvalidArgument, match="labels is empty"):
        check_labels([], NOW)


def test_one_bad_label_among_good_ones_stores_nothing(store: Store) -> None:
    good = [{"label": 1, "request_id": "r1"}] * 5
    with pytest.raises(InvalidArgument, match=r"labels\[5\]"):
        stored(store, [*good, {"label": 1}])
    assert count(store) == 0


def test_unknown_request_ids_are_stored_and_named(store: Store) -> None:
    receipt = stored(
        store,
        [
            LabelIn(1, request_id="r1"),
            LabelIn(0, request_id="r1", row=1),
            LabelIn(0, request_id="r1", row=5),  # r1 has two rows
            LabelIn(1, request_id="typo"),
            LabelIn(1, request_id="typo"),
            LabelIn(True, entity={"customer_id": 2}, at=datetime(2026, 1, 1, tzinfo=UTC)),
        ],
    )
    assert (receipt.accepted, receipt.by_request, receipt.by_entity) == (6, 5, 1)
    assert receipt.unmatched == 2
    assert receipt.unmatched_request_ids == ["r1 row 5", "typo"]
    assert "2 name no logged prediction (e.g. r1 row 5, typo)" in receipt.summary
    assert count(store) == 6


def test_labels_join_by_request_row_and_by_the_newest_entity_prediction(store: Store) -> None:
    stored(
        store,
        [
            {"label": 1, "request_id": "r1", "row": 1, "at": T + 1_500},
            {"label": 0, "request_id": "r1", "row": 1, "at": T + 1_600},  # a correction: kept
            {"label": 1, "entity": {"customer_id": 1.0}, "at": T + 2_500},  # r2, not r1 row 0
            {"label": 1, "entity": {"customer_id": 9}, "at": T + 2_500},  # no such entity
            {"label": 1, "entity": {"store": 3}, "at": T + 2_500},  # not a logged input
        ],
    )
    window = read_window(store, "churn", 1, T, T + 10_000, meta=True)
    with store.read() as conn:
        found = read_labels(conn, "churn", 0).table
    joined = join_labels(window.table, found)
    by_request = dict(
        zip(
            zip(joined["__request_id"].to_pylist(), joined["__row"].to_pylist(), strict=True),
            zip(joined[LABEL].to_pylist(), joined[LABEL_AT].to_pylist(), strict=True),
            strict=True,
        )
    )
    assert by_request == {
        ("r3", 0): (None, None),
        ("r2", 0): (1, T + 2_500),
        ("r1", 0): (None, None),
        ("r1", 1): (0, T + 1_600),
    }


def test_an_entity_label_before_any_prediction_joins_nothing(store: Store) -> None:
    stored(store, [{"label": 1, "entity": {"customer_id": 2}, "at": T + 500}])
    window = read_window(store, "churn", 1, T, T + 10_000, meta=True)
    with store.read() as conn:
        joined = join_labels(window.table, read_labels(conn, "churn", 0).table)
    assert joined[LABEL].null_count == joined.num_rows == 4


def test_entity_keys_are_canonical() -> None:
    assert entity_key({"b": 2.0, "a": "x"}) == entity_key({"a": "x", "b": 2}) == '{"a":"x","b":2}'


def test_a_label_stored_with_a_huge_row_does_not_break_the_join(store: Store) -> None:
    """A row past 32 bits (stored before rows were bounded) is read, and joins nothing."""
    with store.write() as conn:
        conn.execute(
            labels.insert().values(
                model_name="churn", request_id="r1", row=3_000_000_000, label="1", at=T + 1_500,
                logged_at=NOW, logged_by="ann",
            )
        )  # fmt: skip
    window = read_window(store, "churn", 1, T, T + 10_000, meta=True)
    with store.read() as conn:
        found = read_labels(conn, "churn", 0).table
    assert found["row"].to_pylist() == [3_000_000_000]
    assert join_labels(window.table, found)[LABEL].null_count == 4


def test_the_labels_read_are_capped_keeping_the_ones_logged_last(store: Store) -> None:
    stored(store, [{"label": i, "request_id": "r1", "at": T + i} for i in range(4)])
    with store.read() as conn:
        everything = read_labels(conn, "churn", 0)
        some = read_labels(conn, "churn", 0, max_rows=2)
    assert (everything.capped, everything.table["label"].to_pylist()) == (
        False,
        ["0", "1", "2", "3"],
    )
    assert (some.capped, some.table["label"].to_pylist()) == (True, ["2", "3"])
    assert some.note() == "only the 2 labels logged last were read"
