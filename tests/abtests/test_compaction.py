"""Compaction of the exposure and event logs: many small files become few, no row is lost
or doubled (appends that commit meanwhile included), and files are deleted from storage
only once they left the table ``keep_hours`` ago."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from plinth.abtests.compaction import compact, compact_logs
from plinth.abtests.events import events_uri
from plinth.abtests.traffic import SCHEMA, exposures_uri


def append(uri: str, start: int, n: int = 3) -> None:
    rows = {
        "at_ms": list(range(start, start + n)),
        "unit": [f"u{i}" for i in range(start, start + n)],
        "arm": ["a"] * n,
        "request_id": [f"r{i}" for i in range(start, start + n)],
        "model_version": [None] * n,
        "latency_ms": [1.5] * n,
        "outcome": ["ok"] * n,
    }
    write_deltalake(uri, pa.table(rows, schema=SCHEMA), mode="append")


def parquet_files(uri: str) -> int:
    return sum(1 for p in Path(uri).glob("*.parquet"))


def rows_of(uri: str) -> list[int]:
    return sorted(DeltaTable(uri).to_pyarrow_table()["at_ms"].to_pylist())


def test_small_files_become_one_and_keep_every_row(tmp_path: Path) -> None:
    uri = exposures_uri(str(tmp_path), "churn")
    for i in range(30):
        append(uri, i * 3)
    before = rows_of(uri)
    assert compact(uri, min_files=31) is None  # not enough files yet
    done = compact(uri, min_files=30)
    assert done is not None and (done.files_before, done.files_after) == (30, 1)
    assert rows_of(uri) == before == list(range(90))
    # the replaced files stay on disk for an hour (a reader may have listed them) ...
    assert parquet_files(uri) == 31 and done.deleted == 0
    # ... and go once they left the table longer ago than keep_hours
    append(uri, 90)
    again = compact(uri, min_files=2, keep_hours=0)
    assert again is not None and again.files_after == 1 and again.deleted == 32
    assert parquet_files(uri) == 1 and rows_of(uri) == list(range(93))


def test_appends_during_a_compaction_are_kept(tmp_path: Path) -> None:
    uri = exposures_uri(str(tmp_path), "churn")
    for i in range(20):
        append(uri, i * 3)
    stop = threading.Event()
    written = [60]

    def writer() -> None:
        while not stop.is_set():
            append(uri, written[0])
            written[0] += 3

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            compact(uri, min_files=2)
    finally:
        stop.set()
        thread.join()
    assert rows_of(uri) == list(range(written[0]))  # none lost, none doubled


def test_compact_logs_takes_both_tables_and_skips_missing_ones(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert compact_logs(root, "nothing-yet", min_files=1) == []
    uri = exposures_uri(root, "churn")
    for i in range(5):
        append(uri, i * 3)
    events = pa.table({"event_id": ["e1"], "name": ["buy"], "value": [1.0]})
    for _ in range(5):
        write_deltalake(events_uri(root, "churn"), events, mode="append")
    done = compact_logs(root, "churn", min_files=5)
    assert [(d.uri, d.files_after) for d in done] == [(uri, 1), (events_uri(root, "churn"), 1)]
    assert DeltaTable(events_uri(root, "churn")).to_pyarrow_table().num_rows == 5
