"""Following a folder (each new Parquet file scored once, one commit per file) or a Delta
table (each new commit's rows scored once), the score table as the checkpoint across
restarts, and a follower stopped cleanly by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake

from plinth.client import Client, default_client
from plinth.errors import InvalidArgument, NotFound
from plinth.serving.batch import ScoreOptions
from plinth.serving.checks import ChecksFailed
from plinth.serving.follow import FollowEvent, follow
from tests.cli.test_score import plinth_process, wait_for
from tests.serving.test_batch import churn_model, day, entity_input, expected_scores

# these tests score with pyfunc models, which load only where pickles are trusted
pytestmark = pytest.mark.usefixtures("trust_pickles")


def commits(output: Path) -> list[dict[str, object]]:
    return [c for c in DeltaTable(str(output)).history() if "plinth.job_key" in c]


def test_each_file_is_scored_once_across_restarts(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    inbox, output = tmp_path / "inbox", tmp_path / "scores"
    inbox.mkdir()
    entity_input(inbox / "a.parquet", range(0, 40))
    entity_input(inbox / "b.parquet", range(40, 70))
    (inbox / ".c.parquet.part").write_bytes(b"still being written")

    events = follow(client, "models:/churn@latest", str(inbox), str(output), once=True)
    assert [(e.file, e.result.rows if e.result else None) for e in events] == [
        ("a.parquet", 40),
        ("b.parquet", 30),
    ]
    assert [c["plinth.input"] for c in reversed(commits(output))] == [
        str(inbox / "a.parquet"),
        str(inbox / "b.parquet"),
    ]
    fingerprint = commits(output)[0]["plinth.fingerprint"]
    assert isinstance(fingerprint, str) and fingerprint.startswith("sha256:")

    # a restart: nothing again; a new file and a rewritten one are scored
    assert follow(client, "models:/churn/1", str(inbox), str(output), once=True) == []
    entity_input(inbox / "c.parquet", range(70, 100))
    entity_input(inbox / "a.parquet", range(0, 5))  # new content under the same name
    events = follow(client, "models:/churn/1", str(inbox), str(output), once=True)
    assert [(e.file, e.result.rows if e.result else None) for e in events] == [
        ("a.parquet", 5),
        ("c.parquet", 30),
    ]
    rows = DeltaTable(str(output)).to_pandas()
    assert len(rows) == 105 and len(commits(output)) == 4
    assert sorted(rows.customer_id.unique()) == list(range(100))
    by_id = rows.drop_duplicates("customer_id").sort_values("customer_id")
    assert by_id.score.tolist() == expected_scores(range(100))


def test_a_file_that_fails_its_checks_is_reported_and_the_rest_go_on(
    client: Client, tmp_path: Path
) -> None:
    churn_model(client)
    inbox, output = tmp_path / "inbox", tmp_path / "scores"
    inbox.mkdir()
    entity_input(inbox / "bad.parquet", [i for i in range(100) if i % 10 < 3])  # all churn
    entity_input(inbox / "good.parquet")
    (inbox / "broken.parquet").write_text("not parquet")
    seen: list[FollowEvent] = []
    events = follow(
        client, "models:/churn/1", str(inbox), str(output), once=True, on_event=seen.append
    )
    assert events == seen
    assert [(e.file, type(e.error).__name__ if e.error else "delivered") for e in events] == [
        ("bad.parquet", "ChecksFailed"),
        ("broken.parquet", "InvalidArgument"),
        ("good.parquet", "delivered"),
    ]
    assert isinstance(events[0].error, ChecksFailed)
    assert "prediction_distribution" in events[0].error.message
    assert len(commits(output)) == 1

    lenient = ScoreOptions(allow_failed_checks=True)
    events = follow(client, "models:/churn/1", str(inbox), str(output), lenient, once=True)
    assert [e.file for e in events if e.result] == ["bad.parquet"]  # a restart tries it again


def arrivals(ids: range, region: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": list(ids),
            "event_timestamp": pd.to_datetime([day(2)] * len(ids), utc=True),
            "region": region,
        }
    )


@pytest.mark.parametrize("partitioned", [False, True], ids=["flat", "partitioned"])
def test_each_commit_of_a_delta_table_is_scored_once(
    client: Client, tmp_path: Path, partitioned: bool
) -> None:
    churn_model(client)
    table, output = str(tmp_path / "arrivals"), str(tmp_path / "scores")
    by = ["region"] if partitioned else None
    write_deltalake(table, arrivals(range(0, 40), "eu"), partition_by=by)  # version 0
    write_deltalake(table, arrivals(range(40, 50), "us"), mode="append", partition_by=by)

    events = follow(client, "models:/churn/1", table, output, once=True)
    assert [(e.file, e.result.rows if e.result else e.error) for e in events] == [
        ("version 0", 40),
        ("version 1", 10),
    ]
    # a restart after more arrived: only the new commit's rows; compaction adds none
    write_deltalake(table, arrivals(range(50, 100), "eu"), mode="append", partition_by=by)
    DeltaTable(table).optimize.compact()  # version 3 rewrites every file
    DeltaTable(table).delete("customer_id = 0")  # version 4 rewrites one file
    events = follow(client, "models:/churn/1", table, output, once=True)
    assert [(e.file, e.result.rows if e.result else e.error) for e in events] == [("version 2", 50)]
    assert [c["plinth.input_version"] for c in reversed(commits(Path(output)))] == ["0", "1", "2"]
    rows = DeltaTable(output).to_pandas().sort_values("customer_id")
    assert rows.customer_id.tolist() == list(range(100))  # each once
    assert rows.score.tolist() == expected_scores(range(100))
    assert follow(client, "models:/churn/1", table, output, once=True) == []
    with pytest.raises(InvalidArgument, match="cannot follow itself"):
        follow(client, "models:/churn/1", output, output, once=True)


def test_follow_refuses_what_it_cannot_follow(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    with pytest.raises(NotFound, match=r"folder .* to follow does not exist"):
        follow(client, "models:/churn/1", str(tmp_path / "nope"), str(tmp_path / "out"), once=True)
    (tmp_path / "inbox").mkdir()
    with pytest.raises(NotFound, match="registered model 'nope'"):
        follow(client, "models:/nope/1", str(tmp_path / "inbox"), str(tmp_path / "out"), once=True)


def test_a_follower_picks_up_files_until_stopped(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    inbox, output = tmp_path / "inbox", tmp_path / "scores"
    inbox.mkdir()
    stop = threading.Event()
    events: list[FollowEvent] = []
    thread = threading.Thread(
        target=follow,
        args=(client, "models:/churn/1", str(inbox), str(output)),
        kwargs={"poll_seconds": 0.05, "stop": stop, "on_event": events.append},
    )
    thread.start()
    try:
        entity_input(inbox / ".a.tmp")  # written under a hidden name, then renamed
        os.rename(inbox / ".a.tmp", inbox / "a.parquet")
        deadline = time.monotonic() + 30
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e.file for e in events] == ["a.parquet"]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_the_cli_follows_until_sigterm(tmp_path: Path) -> None:
    churn_model(default_client())
    home = Path(os.environ["PLINTH_HOME"])
    inbox, output = tmp_path / "inbox", tmp_path / "scores"
    inbox.mkdir()
    entity_input(inbox / "a.parquet", range(0, 50))
    once = plinth_process(
        home,
        "score",
        "models:/churn/1",
        "--follow",
        str(inbox),
        "-o",
        str(output),
        "--once",
        "--json",
    )
    stdout, stderr = once.communicate(timeout=120)
    assert once.returncode == 0, stderr
    assert [json.loads(line)["file"] for line in stdout.splitlines()] == ["a.parquet"]

    process = plinth_process(
        home,
        "score",
        "models:/churn/1",
        "--follow",
        str(inbox),
        "-o",
        str(output),
        "--poll-seconds",
        "0.05",
    )
    try:
        entity_input(inbox / "_b.tmp", range(50, 100))
        os.rename(inbox / "_b.tmp", inbox / "b.parquet")
        wait_for(lambda: len(commits(output)) == 2, process, "the second file's commit")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "scored b.parquet: 50 row(s) with churn v1 into Delta version 2" in stdout
    assert "a.parquet" not in stdout  # scored by the first run
    assert sorted(DeltaTable(str(output)).to_pandas().customer_id) == list(range(100))
