"""The exposure log: rows land in each experiment's Delta table in the pinned format,
drops are counted at capacity, a store that cannot be written counts failures."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from plinth.abtests.traffic import Exposure, ExposureLog, exposures_uri


def exposure(experiment: str, n: int, version: str | None = "3") -> Exposure:
    return Exposure(experiment, "a" if n % 2 else "b", f"u{n}", f"r{n}", version, 1_000 + n)


COLUMNS = ["at_ms", "unit", "arm", "request_id", "model_version", "latency_ms", "outcome"]


def test_written_rows_read_back_per_experiment(tmp_path: Path) -> None:
    log = ExposureLog(str(tmp_path), flush_seconds=0.05)
    for n in range(10):
        assert log.record(exposure("churn", n, None if n == 0 else "3"))
    assert log.record(exposure("price", 99))
    log.close()
    assert (log.written, log.dropped, log.failed) == (11, 0, 0)
    uri = exposures_uri(str(tmp_path), "churn")
    assert uri == str(tmp_path / "abtests" / "churn" / "exposures")
    table = DeltaTable(uri).to_pyarrow_table()
    assert table.schema.names == COLUMNS
    assert [f.type for f in table.schema] == [
        pa.int64(),
        *[pa.string()] * 4,
        pa.float64(),
        pa.string(),
    ]
    rows = sorted(table.to_pylist(), key=lambda r: r["at_ms"])
    assert rows[0] == {
        "at_ms": 1000,
        "unit": "u0",
        "arm": "b",
        "request_id": "r0",
        "model_version": None,
        "latency_ms": None,
        "outcome": "ok",
    }
    assert len(rows) == 10 and rows[1]["model_version"] == "3"
    price = DeltaTable(exposures_uri(str(tmp_path), "price")).to_pyarrow_dataset()
    con = duckdb.connect()
    con.register("price", price)
    found = con.execute("select unit, arm from price").fetchall()
    assert found == [("u99", "a")]


def test_appends_add_to_the_table(tmp_path: Path) -> None:
    log = ExposureLog(str(tmp_path), flush_seconds=0.05)
    log.record(exposure("churn", 1))
    log.flush()
    log.record(exposure("churn", 2))
    log.close()
    table = DeltaTable(exposures_uri(f"file://{tmp_path}", "churn"))
    assert table.version() == 1 and table.to_pyarrow_table().num_rows == 2


def test_drops_are_counted_at_capacity(tmp_path: Path) -> None:
    log = ExposureLog(str(tmp_path), capacity=3, flush_seconds=60)
    kept = [log.record(exposure("churn", n)) for n in range(5)]
    assert kept == [True, True, True, False, False]
    assert log.dropped == 2
    log.close()
    assert log.written == 3


def test_a_store_that_fails_costs_the_batch_not_the_caller(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    log = ExposureLog(str(blocker / "root"), flush_seconds=0.05)
    for n in range(4):
        assert log.record(exposure("churn", n))
    log.close()
    assert (log.written, log.failed, log.dropped) == (0, 4, 0)


def test_latency_and_outcome_are_kept(tmp_path: Path) -> None:
    log = ExposureLog(str(tmp_path), flush_seconds=0.05)
    log.record(Exposure("churn", "b", "u1", "r1", "1", 5, 1.25))
    log.record(Exposure("churn", "b", "u2", "r2", "1", 6, 1000.5, "fallback:timeout"))
    log.close()
    rows = DeltaTable(exposures_uri(str(tmp_path), "churn")).to_pyarrow_table().to_pylist()
    assert sorted((r["unit"], r["latency_ms"], r["outcome"]) for r in rows) == [
        ("u1", 1.25, "ok"),
        ("u2", 1000.5, "fallback:timeout"),
    ]


def test_a_table_written_before_the_new_columns_takes_rows(tmp_path: Path) -> None:
    uri = exposures_uri(str(tmp_path), "churn")
    old = pa.table(
        {
            "at_ms": [1],
            "unit": ["u0"],
            "arm": ["a"],
            "request_id": ["r0"],
            "model_version": ["1"],
        }
    )
    write_deltalake(uri, old)
    log = ExposureLog(str(tmp_path), flush_seconds=0.05)
    log.record(Exposure("churn", "b", "u1", "r1", "2", 2, 3.5, "fallback:server_error"))
    log.close()
    assert (log.written, log.failed) == (1, 0)
    table = DeltaTable(uri).to_pyarrow_table()
    assert table.schema.names == COLUMNS
    rows = sorted(table.to_pylist(), key=lambda r: r["at_ms"])
    assert [(r["unit"], r["latency_ms"], r["outcome"]) for r in rows] == [
        ("u0", None, None),
        ("u1", 3.5, "fallback:server_error"),
    ]


class SlowStore(ExposureLog):
    """Traffic keeps arriving while a batch is written."""

    def __init__(self, root: str) -> None:
        # its thread waits an hour between ticks: the test runs the ticks
        super().__init__(root, flush_seconds=3600)
        self.batches: list[int] = []
        self.traffic = True

    def _write(self, batch: list[Exposure]) -> None:
        self.batches.append(len(batch))
        for n in range(3 if self.traffic else 0):
            self.record(exposure("churn", 1_000 * len(self.batches) + n))
        super()._write(batch)


def test_rows_that_arrive_during_a_write_wait_for_the_next_tick(tmp_path: Path) -> None:
    log = SlowStore(str(tmp_path))
    for n in range(5):
        log.record(exposure("churn", n))
    log._drain()  # a tick
    assert log.batches == [5] and len(log._queue) == 3
    log._drain()
    assert log.batches == [5, 3] and len(log._queue) == 3
    log.traffic = False
    log.close()
    assert log.batches == [5, 3, 3] and log.written == 11


def test_one_bad_exposure_costs_only_itself(tmp_path: Path) -> None:
    log = ExposureLog(str(tmp_path), flush_seconds=0.05)
    for n in range(5):
        log.record(exposure("churn", n))
    log.record(Exposure("churn", "a", 12345, "r-bad", None, 2_000))  # type: ignore[arg-type]
    log.record(Exposure("churn", "a", "u-bad", "r\ud800", None, 2_001))  # not encodable
    for n in range(5, 8):
        log.record(exposure("churn", n))
    log.close()
    assert (log.written, log.failed, log.dropped) == (8, 2, 0)
    table = DeltaTable(exposures_uri(str(tmp_path), "churn")).to_pyarrow_table()
    assert sorted(table["unit"].to_pylist()) == sorted(f"u{n}" for n in range(8))


def test_closing_while_the_sink_hangs_counts_what_it_could_not_write() -> None:
    entered = threading.Event()
    release = threading.Event()

    def hanging(experiment: str, table: pa.Table) -> None:
        entered.set()
        release.wait()

    log = ExposureLog(sink=hanging, flush_seconds=60, batch_rows=200)  # a full batch wakes it
    for n in range(500):
        log.record(exposure("churn", n))
    assert entered.wait(10)  # a batch of 200 is in the hanging write, 300 queued
    with caplog_of("plinth.abtests") as said:
        log.close(timeout=0.2)
    assert (log.written, log.failed, log.dropped) == (0, 200, 300)
    assert "closed with 500 exposures unwritten" in said.getvalue()
    release.set()  # the write ends after all: not counted twice
    log._thread.join(10)
    assert (log.written, log.failed, log.dropped) == (0, 200, 300)
    assert not log.record(exposure("churn", 1)) and log.dropped == 301


@contextlib.contextmanager
def caplog_of(name: str) -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
