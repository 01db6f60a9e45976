"""The offline table and the central store's record of it agree: concurrent writers are
told the versions Delta gave them, losers leave no files, and a writer killed between its
commit and its record is found and recorded later."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from deltalake import DeltaTable

from plinth.client import Client
from plinth.faults import CRASH_ENV
from plinth.features.types import Expectation
from tests.backends import local_client
from tests.features.conftest import day, define

WRITERS = 4
ROWS = 3


def rows_of(writer: int) -> pd.DataFrame:
    ids = [writer * 100 + j for j in range(ROWS)]
    return pd.DataFrame(
        {
            "customer_id": ids,
            "event_time": [day(1)] * ROWS,
            "orders_30d": [writer] * ROWS,
            "avg_spend": [float(i) for i in ids],
        }
    )


def _insert(store_uri: str, artifacts: str, writer: int, start: Any, answers: Any) -> None:
    client = local_client(store_uri, artifacts)
    fs = client.feature_store()
    start.wait()
    try:
        answers.put((writer, fs.insert("customer_stats", rows_of(writer)).commit_version))
    except Exception as e:  # reported to the test, which fails on it
        answers.put((writer, repr(e)))


def _data_files(folder: Path) -> set[str]:
    return {
        str(p.relative_to(folder)) for p in folder.rglob("*.parquet") if "_delta_log" not in p.parts
    }


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_first_inserts_are_told_the_versions_delta_gave_them(
    tmp_path: Path, trial: int
) -> None:
    store_uri, artifacts = f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts")
    client = local_client(store_uri, artifacts)
    fs = client.feature_store()
    define(fs)
    context = multiprocessing.get_context("spawn")  # deltalake's runtime does not survive fork
    start, answers = context.Barrier(WRITERS), context.Queue()
    workers = [
        context.Process(target=_insert, args=(store_uri, artifacts, w, start, answers))
        for w in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    told = dict(answers.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert all(isinstance(v, int) for v in told.values()), told
    assert sorted(told.values()) == list(range(WRITERS))  # each its own version

    group = fs.service.get_feature_group("customer_stats")
    log = sorted(int(c["version"]) for c in fs.offline.history(group))
    recorded = sorted(c.commit_version for c in fs.service.list_commits("customer_stats", 1))
    assert recorded == log == list(range(WRITERS))
    for writer, version in told.items():
        now = fs.offline.read(group, as_of=version).to_pandas()
        before = (
            set()
            if version == 0
            else set(fs.offline.read(group, as_of=version - 1)["customer_id"].to_pylist())
        )
        added = sorted(set(now["customer_id"]) - before)
        assert added == rows_of(writer)["customer_id"].tolist()
    folder = Path(group.table_uri)
    # no updates, so every file ever committed is in the latest version: nothing else
    committed = {str(Path(u).relative_to(folder)) for u in DeltaTable(str(folder)).file_uris()}
    assert _data_files(folder) == committed


_KILLED_WRITER = """
import sys
import pandas as pd
from tests.backends import local_client
from tests.features.test_integrity import rows_of
fs = local_client(sys.argv[1], sys.argv[2]).feature_store()
fs.insert("customer_stats", rows_of(int(sys.argv[3])))
"""


def insert_and_die(store_uri: str, artifacts: str, writer: int) -> None:
    """Insert from a process that SIGKILLs itself right after its Delta commit."""
    env = {**os.environ, CRASH_ENV: "feature-commit", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, store_uri, artifacts, str(writer)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


@pytest.fixture
def killed(tmp_path: Path) -> Client:
    """customer_stats with a warn-mode expectation and one commit (version 0) whose writer
    was killed before recording it."""
    store_uri, artifacts = f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts")
    client = local_client(store_uri, artifacts)
    fs = client.feature_store()
    define(fs)
    rule = Expectation("range", column="avg_spend", max=1.5)  # writer 0 has 0.0, 1.0, 2.0
    fs.service.set_expectations("customer_stats", 1, [rule], mode="warn")
    insert_and_die(store_uri, artifacts, 0)
    group = fs.service.get_feature_group("customer_stats")
    assert [c["version"] for c in fs.offline.history(group)] == [0]  # committed ...
    assert fs.service.list_commits("customer_stats", 1) == []  # ... and not recorded
    return client


def test_a_commit_whose_writer_was_killed_is_recorded_by_the_next_insert(killed: Client) -> None:
    fs = killed.feature_store()
    fs.insert("customer_stats", rows_of(1))
    commits = fs.service.list_commits("customer_stats", 1)
    # the lost commit is recorded before the new one (so it is the new one's previous)
    assert [(c.commit_version, c.rows) for c in commits] == [(0, ROWS), (1, ROWS)]
    lost = commits[0]
    assert lost.validation_passed is False
    assert {s.column: s.max for s in lost.statistics}["avg_spend"] == 2.0
    reports = {r.commit_version: r for r in fs.service.list_reports("customer_stats", 1)}
    assert (reports[0].passed, reports[0].rows) == (False, ROWS)
    assert reports[0].results[0].failed_rows == 1


def test_plinth_features_repair_records_a_killed_writers_commit(
    killed: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from plinth.cli import app

    monkeypatch.setenv("PLINTH_STORE_URI", f"sqlite:///{tmp_path / 'plinth.db'}")
    monkeypatch.setenv("PLINTH_ARTIFACT_URI", str(tmp_path / "artifacts"))
    result = CliRunner().invoke(app, ["features", "repair", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "commit_version" in result.stdout
    [commit] = killed.features.list_commits("customer_stats", 1)
    assert (commit.commit_version, commit.rows, commit.validation_passed) == (0, ROWS, False)
    again = CliRunner().invoke(app, ["features", "repair", "customer_stats"])
    assert again.exit_code == 0 and len(killed.features.list_commits("customer_stats", 1)) == 1


def test_repair_deletes_data_files_no_commit_refers_to(tmp_path: Path) -> None:
    fs = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "a")).feature_store()
    define(fs)
    fs.insert("customer_stats", rows_of(0))
    group = fs.service.get_feature_group("customer_stats")
    folder = Path(group.table_uri)
    before = _data_files(folder)
    orphan = folder / "part-00000-left-by-a-killed-writer-c000.snappy.parquet"
    orphan.write_bytes((next(iter(folder.glob("*.parquet")))).read_bytes())

    assert fs.repair("customer_stats").removed_files == [orphan.name]
    assert _data_files(folder) == before
    assert fs.offline.read(group).num_rows == ROWS


@pytest.mark.parametrize("trial", range(5))
def test_without_the_lock_each_commit_is_still_reported_at_its_own_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trial: int
) -> None:
    """As on S3, where writers do not queue: threads race to create one table; whoever
    commits is told the version its own commit got (a loser may fail, never mislead)."""
    import contextlib
    import threading

    from plinth.errors import Conflict
    from plinth.features import offline as offline_module
    from plinth.features.ingest import prepare

    monkeypatch.setattr(offline_module, "_locked", lambda local: contextlib.nullcontext(None))
    fs = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "a")).feature_store()
    define(fs)
    group = fs.service.get_feature_group("customer_stats")
    start, told = threading.Barrier(WRITERS), {}

    def write(writer: int) -> None:
        table = prepare(rows_of(writer), group)
        start.wait()
        with contextlib.suppress(Conflict):
            told[writer] = fs.offline.write(group, table)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert told and len(set(told.values())) == len(told)
    for writer, version in told.items():
        now = set(fs.offline.read(group, as_of=version)["customer_id"].to_pylist())
        before = set()
        if version > 0:
            before = set(fs.offline.read(group, as_of=version - 1)["customer_id"].to_pylist())
        assert sorted(now - before) == rows_of(writer)["customer_id"].tolist()
