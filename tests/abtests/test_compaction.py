"""Compaction of the exposure and event logs: many small files become few, no row is lost
or doubled (appends that commit meanwhile included), and files are deleted from storage
only once they left the table ``keep_hours`` ago."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from plinth.abtests import compaction
from plinth.abtests.compaction import compact, compact_logs, lease_name
from plinth.abtests.events import events_uri
from plinth.abtests.traffic import SCHEMA, exposures_uri
from plinth.errors import Conflict
from plinth.store import lease
from plinth.store.engine import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'plinth.db'}")


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


def test_small_files_become_one_and_keep_every_row(tmp_path: Path, store: Store) -> None:
    uri = exposures_uri(str(tmp_path), "churn")
    for i in range(30):
        append(uri, i * 3)
    before = rows_of(uri)
    assert compact(uri, store, min_files=31) is None  # not enough files yet
    done = compact(uri, store, min_files=30)
    assert done is not None and (done.files_before, done.files_after) == (30, 1)
    assert rows_of(uri) == before == list(range(90))
    # the replaced files stay on disk for an hour (a reader may have listed them) ...
    assert parquet_files(uri) == 31 and done.deleted == 0
    # ... and go once they left the table longer ago than keep_hours
    append(uri, 90)
    again = compact(uri, store, min_files=2, keep_hours=0)
    assert again is not None and again.files_after == 1 and again.deleted == 32
    assert parquet_files(uri) == 1 and rows_of(uri) == list(range(93))


def test_appends_during_a_compaction_are_kept(tmp_path: Path, store: Store) -> None:
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
            compact(uri, store, min_files=2)
    finally:
        stop.set()
        thread.join()
    assert rows_of(uri) == list(range(written[0]))  # none lost, none doubled


def test_compact_logs_takes_both_tables_and_skips_missing_ones(
    tmp_path: Path, store: Store
) -> None:
    root = str(tmp_path)
    assert compact_logs(root, "nothing-yet", store, min_files=1) == []
    uri = exposures_uri(root, "churn")
    for i in range(5):
        append(uri, i * 3)
    events = pa.table({"event_id": ["e1"], "name": ["buy"], "value": [1.0]})
    for _ in range(5):
        write_deltalake(events_uri(root, "churn"), events, mode="append")
    done = compact_logs(root, "churn", store, min_files=5)
    assert [(d.uri, d.files_after) for d in done] == [(uri, 1), (events_uri(root, "churn"), 1)]
    assert DeltaTable(events_uri(root, "churn")).to_pyarrow_table().num_rows == 5


def test_two_compactors_and_three_appenders_never_double_a_row(
    tmp_path: Path, store: Store
) -> None:
    """Two OPTIMIZE runs over the same files both commit in deltalake 1.6.6 (each row of
    them then twice): the table's lease lets one compact at a time."""
    uri = exposures_uri(str(tmp_path), "churn")
    for i in range(20):
        append(uri, i * 3)
    stop = threading.Event()
    starts = iter(range(60, 10**9, 3))
    lock = threading.Lock()
    written: list[int] = []
    errors: list[BaseException] = []

    def appender() -> None:
        while not stop.is_set():
            with lock:
                start = next(starts)
            append(uri, start)
            with lock:
                written.append(start)

    def compactor() -> None:
        try:
            for _ in range(4):
                compact(uri, store, min_files=2)
        except BaseException as e:  # reported below
            errors.append(e)

    appenders = [threading.Thread(target=appender) for _ in range(3)]
    compactors = [threading.Thread(target=compactor) for _ in range(2)]
    for t in appenders + compactors:
        t.start()
    for t in compactors:
        t.join()
    stop.set()
    for t in appenders:
        t.join()
    assert errors == []
    expected = sorted([*range(60), *(v for s in written for v in range(s, s + 3))])
    assert rows_of(uri) == expected  # exactly once each


def test_a_table_whose_lease_another_holds_is_skipped(tmp_path: Path, store: Store) -> None:
    uri = exposures_uri(str(tmp_path), "churn")
    for i in range(5):
        append(uri, i * 3)
    assert lease.acquire(store, lease_name(uri), "someone-else", 60)
    assert compact(uri, store, min_files=2) is None
    assert len(DeltaTable(uri).file_uris()) == 5
    lease.release(store, lease_name(uri), "someone-else")
    done = compact(uri, store, min_files=2)
    assert done is not None and done.files_after == 1
    assert lease.current(store, lease_name(uri)) is None  # given up after the compaction


def test_another_optimize_during_ours_is_a_conflict_not_silence(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction that lost its lease (a stalled process) and overlapped another: the
    doubled rows are reported, not passed over."""
    uri = exposures_uri(str(tmp_path), "churn")
    for i in range(5):
        append(uri, i * 3)
    real = compaction.CommitProperties

    def other_optimize_first(**kwargs: dict[str, str]) -> object:
        # another process's OPTIMIZE commits after ours read the table, before ours commits
        DeltaTable(uri).optimize.compact()
        return real(**kwargs)

    monkeypatch.setattr(compaction, "CommitProperties", other_optimize_first)
    with pytest.raises(Conflict, match="another OPTIMIZE committed at version"):
        compact(uri, store, min_files=2)
    assert lease.current(store, lease_name(uri)) is None
    monkeypatch.setattr(compaction, "CommitProperties", real)
    append(uri, 15)
    assert compact(uri, store, min_files=2) is not None  # alone: no conflict


def test_orphan_files_older_than_keep_hours_are_removed_young_ones_kept(
    tmp_path: Path, store: Store
) -> None:
    """A file no version references (an append or an OPTIMIZE killed before its commit)
    goes once older than keep_hours; a younger one may be a write in progress."""
    uri = exposures_uri(str(tmp_path), "churn")
    for i in range(3):
        append(uri, i * 3)
    data = next(Path(uri).glob("*.parquet")).read_bytes()
    old = Path(uri) / "part-00000-killed-old.parquet"
    young = Path(uri) / "part-00000-in-progress.parquet"
    old.write_bytes(data)
    young.write_bytes(data)
    two_hours_ago = time.time() - 2 * 3600
    os.utime(old, (two_hours_ago, two_hours_ago))
    done = compact(uri, store, min_files=2, keep_hours=1)
    assert done is not None
    assert not old.exists()
    assert young.exists()
    assert rows_of(uri) == list(range(9))
