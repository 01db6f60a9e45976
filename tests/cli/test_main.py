"""The ``plinth`` command against data logged through the Python API in the same PLINTH_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

import plinth
from plinth.cli import app, main
from plinth.client import Client, connect
from plinth.store.engine import SCHEMA_REVISION
from plinth.store.schema import runs
from tests.backends import FAST_FLUSH

runner = CliRunner()


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def invoke_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json").stdout)


@pytest.fixture
def home() -> Path:
    return Path(os.environ["PLINTH_HOME"])  # set per test by the autouse fixture in conftest


@pytest.fixture
def client(home: Path) -> Client:
    return connect(**FAST_FLUSH)  # type: ignore[arg-type]


@pytest.fixture
def data(client: Client) -> dict[str, str]:
    """Two finished runs in 'churn' and one RUNNING run in 'fraud' whose process died."""
    client.create_experiment("churn", "predict churn", {"team": "risk"})
    with client.start_run("churn", "lgbm-a", capture_environment=False) as a:
        a.log_params({"lr": 0.1, "depth": 6}, group="hyper")
        a.log_metric("val_f1", 0.7, step=0)
        a.log_metric("val_f1", 0.82, step=1)
    with client.start_run("churn", "lgbm-b", capture_environment=False) as b:
        b.log_params({"lr": 0.2, "depth": 6}, group="hyper")
        b.log_metric("val_f1", 0.75, step=0)
    stale = client.tracking.create_run("fraud", "stale")
    with client.tracking.store.write() as conn:  # its last heartbeat was an hour ago
        conn.execute(
            update(runs)
            .where(runs.c.id == stale.id)
            .values(heartbeat_at=int(stale.start_time.timestamp() * 1000) - 3_600_000)
        )
    return {"a": a.id, "b": b.id, "stale": stale.id}


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``plinth.cli.main`` as the console script runs it (error handling included)."""
    monkeypatch.setattr(sys, "argv", ["plinth", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


# -- db --------------------------------------------------------------------------------


def test_db_upgrade_creates_the_store_under_home(home: Path) -> None:
    result = invoke("db", "upgrade")
    assert (home / "plinth.db").is_file()
    assert f"revision {SCHEMA_REVISION}" in result.stdout
    assert f"revision {SCHEMA_REVISION}" in invoke("db", "upgrade").stdout  # idempotent
    assert invoke_json("db", "upgrade")["revision"] == SCHEMA_REVISION


def test_every_command_but_the_services_takes_json() -> None:
    import typer.main

    def commands(group: Any, path: str) -> Iterator[tuple[str, Any]]:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, f"{path}{name} ")
            else:
                yield f"{path}{name}", command

    without = [
        name
        for name, command in commands(typer.main.get_command(app), "")
        if not any("--json" in getattr(p, "opts", ()) for p in command.params)
    ]
    assert without == ["server", "serve", "router", "scheduler"]  # they run until stopped


# -- experiments -----------------------------------------------------------------------


def test_experiments_list(data: dict[str, str]) -> None:
    found = invoke_json("experiments", "list")
    assert [e["name"] for e in found] == ["churn", "fraud"]
    churn = found[0]
    assert churn["description"] == "predict churn"
    assert churn["tags"] == {"team": "risk"}
    assert len(churn["id"]) == 32
    table = invoke("experiments", "list").stdout
    assert "churn" in table and "fraud" in table and "predict churn" in table
    assert [e["name"] for e in invoke_json("experiments", "list", "--like", "fr%")] == ["fraud"]


def test_experiments_show(data: dict[str, str]) -> None:
    shown = invoke_json("experiments", "show", "churn")
    assert shown["experiment"]["name"] == "churn"
    assert {r["id"] for r in shown["runs"]} == {data["a"], data["b"]}
    by_id = invoke_json("experiments", "show", shown["experiment"]["id"])
    assert by_id["experiment"] == shown["experiment"]
    text = invoke("experiments", "show", "churn").stdout
    assert "churn" in text and "team=risk" in text and "lgbm-a" in text and "lgbm-b" in text


def test_experiments_delete_restore_and_rename(
    data: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    deleted = invoke_json("experiments", "delete", "churn")
    assert deleted["name"] == "churn" and deleted["deleted_at"] is not None
    assert [e["name"] for e in invoke_json("experiments", "list")] == ["fraud"]
    assert [e["name"] for e in invoke_json("experiments", "list", "--view", "deleted")] == ["churn"]
    assert [r["id"] for r in invoke_json("runs", "list")] == [data["stale"]]
    shown = invoke("experiments", "show", "churn").stdout
    assert "deleted" in shown and "lgbm-a" in shown  # its runs, deleted with it
    assert run_main(monkeypatch, "runs", "restore", data["a"]) == 1
    assert "restore the experiment first" in capsys.readouterr().err
    assert "restored experiment churn" in invoke("experiments", "restore", "churn").stdout
    assert {r["id"] for r in invoke_json("runs", "list", "-e", "churn")} == {data["a"], data["b"]}
    renamed = invoke_json("experiments", "rename", "churn", "churn-2026")
    assert renamed["name"] == "churn-2026" and renamed["id"] == deleted["id"]
    assert (
        "renamed experiment fraud to fraud-2"
        in invoke("experiments", "rename", "fraud", "fraud-2").stdout
    )
    assert run_main(monkeypatch, "experiments", "rename", "churn-2026", "fraud-2") == 1
    assert capsys.readouterr().err == "error: experiment 'fraud-2' already exists\n"
    assert run_main(monkeypatch, "experiments", "delete", "nope") == 1
    assert capsys.readouterr().err == "error: experiment 'nope' does not exist\n"


# -- runs ------------------------------------------------------------------------------


def test_runs_list(data: dict[str, str]) -> None:
    listed = invoke_json("runs", "list")
    assert [r["id"] for r in listed] == [data["stale"], data["b"], data["a"]]  # newest first
    assert [r["name"] for r in invoke_json("runs", "list", "-e", "churn", "--max", "1")] == [
        "lgbm-b"
    ]
    table = invoke("runs", "list").stdout
    assert "lgbm-a" in table and "stale" in table and "val_f1" in table


def test_runs_show(data: dict[str, str], client: Client) -> None:
    shown = invoke_json("runs", "show", data["a"])
    expected = client.get_run(data["a"])
    assert shown["id"] == expected.id
    assert shown["name"] == "lgbm-a"
    assert shown["experiment_name"] == "churn"
    assert shown["status"] == "FINISHED"
    assert shown["params"] == {"hyper": {"lr": 0.1, "depth": 6}}
    assert shown["metrics"]["val_f1"]["last"] == 0.82
    assert shown["metrics"]["val_f1"]["count"] == 2
    assert shown["start_time"] == expected.start_time.isoformat()
    text = invoke("runs", "show", data["a"]).stdout
    assert "lgbm-a" in text and "FINISHED" in text and "0.82" in text and "lr" in text


def test_runs_search(data: dict[str, str]) -> None:
    found = invoke_json("runs", "search", "metrics.val_f1 > 0.8 and params.hyper.depth = 6")
    assert [r["id"] for r in found] == [data["a"]]
    ordered = invoke_json("runs", "search", "params.hyper.depth = 6", "-o", "metrics.val_f1 ASC")
    assert [r["id"] for r in ordered] == [data["b"], data["a"]]
    assert [r["id"] for r in invoke_json("runs", "search", "-e", "fraud")] == [data["stale"]]
    assert invoke_json("runs", "search", "status = 'FAILED'") == []
    assert "lgbm-a" in invoke("runs", "search", "metrics.val_f1 > 0.8").stdout


def test_runs_compare(data: dict[str, str]) -> None:
    compared = invoke_json("runs", "compare", data["a"], data["b"])
    assert compared["run_ids"] == [data["a"], data["b"]]
    assert compared["run_names"] == ["lgbm-a", "lgbm-b"]
    assert compared["params"] == {"hyper.depth": [6, 6], "hyper.lr": [0.1, 0.2]}
    assert compared["params_differing"] == ["hyper.lr"]
    assert [s["last"] for s in compared["metrics"]["val_f1"]] == [0.82, 0.75]
    table = invoke("runs", "compare", data["a"], data["b"]).stdout
    assert "params.hyper.lr" in table and "params.hyper.depth" not in table
    assert "params.hyper.depth" in invoke("runs", "compare", "--all", data["a"], data["b"]).stdout


def test_runs_recover_replays_what_a_killed_process_spooled(home: Path) -> None:
    from plinth.tracking.run import _open_runs

    client = connect(flush_interval=3600, heartbeat_interval=3600)  # nothing flushes
    run = client.start_run("churn", "killed", capture_environment=False)
    for step in range(500):
        run.log_metric("loss", 1.0 / (step + 1), step=step)
    # The process "dies": its flusher stops, its spool's lock is released, nothing is written.
    run._buffer._closed = True
    run._spool.close(remove=False)
    _open_runs.discard(run)
    assert client.get_run(run.id).metrics == {}
    assert invoke_json("runs", "recover") == {run.id: 500}
    assert client.get_run(run.id).metrics["loss"].count == 500
    assert "replayed 0 spooled metric point(s) into 0 run(s)" in invoke("runs", "recover").stdout


def test_runs_delete_and_restore(
    data: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert f"deleted run {data['a']}" in invoke("runs", "delete", data["a"]).stdout
    assert [r["id"] for r in invoke_json("runs", "list")] == [data["stale"], data["b"]]
    assert [r["id"] for r in invoke_json("runs", "list", "--view", "deleted")] == [data["a"]]
    assert [r["id"] for r in invoke_json("runs", "search", "--view", "all", "-e", "churn")] == [
        data["b"],
        data["a"],
    ]
    assert "deleted" in invoke("runs", "show", data["a"]).stdout
    restored = invoke_json("runs", "restore", data["a"])
    assert restored["id"] == data["a"] and restored["deleted_at"] is None
    assert len(invoke_json("runs", "list")) == 3
    assert run_main(monkeypatch, "runs", "delete", "no-such-run") == 1
    assert capsys.readouterr().err == "error: run 'no-such-run' does not exist\n"
    assert run_main(monkeypatch, "runs", "list", "--view", "gone") == 1
    assert "view must be one of active, deleted, all" in capsys.readouterr().err


def test_runs_close_stale(data: dict[str, str], client: Client) -> None:
    assert invoke_json("runs", "close-stale", "--timeout", "600", "-e", "churn") == []
    assert invoke_json("runs", "close-stale", "--timeout", "600") == [data["stale"]]
    assert client.get_run(data["stale"]).status.value == "KILLED"
    assert client.get_run(data["a"]).status.value == "FINISHED"
    assert "closed 0 stale run(s)" in invoke("runs", "close-stale").stdout


# -- errors ----------------------------------------------------------------------------


def test_an_unknown_run_is_a_one_line_error(
    data: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "runs", "show", "no-such-run") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: run 'no-such-run' does not exist\n"


def test_a_malformed_filter_names_the_position_on_one_line(
    data: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "runs", "search", "metrics.val_f1 >") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: filter: at position 17:")
    assert err.count("\n") == 1  # longer than the terminal, still not wrapped


def test_an_error_message_is_not_read_as_markup(
    data: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "runs", "show", "[/bold]") == 1
    assert capsys.readouterr().err == "error: run '[/bold]' does not exist\n"


def test_a_usage_error_exits_2_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "runs", "list", "--max", "many") == 2
    err = capsys.readouterr().err
    assert "--max" in err
    assert "Traceback" not in err


# -- as a real process -----------------------------------------------------------------


def plinth_process(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "40"}  # a narrow terminal: errors still fit one line
    return subprocess.run(
        [sys.executable, "-m", "plinth", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_the_command_runs_as_a_process(data: dict[str, str]) -> None:
    done = plinth_process("runs", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in json.loads(done.stdout)] == [data["stale"], data["b"], data["a"]]


def test_errors_of_the_process_are_one_line_on_stderr(data: dict[str, str]) -> None:
    unknown = plinth_process("runs", "show", "no-such-run")
    assert unknown.returncode == 1
    assert (unknown.stdout, unknown.stderr) == ("", "error: run 'no-such-run' does not exist\n")
    malformed = plinth_process("runs", "search", "metrics.val_f1 > and")
    assert malformed.returncode == 1
    assert malformed.stderr.startswith("error: filter: at position 18:")
    assert malformed.stderr.count("\n") == 1
    assert "Traceback" not in malformed.stderr


def test_names_that_look_like_markup_print_as_they_are(tmp_path: Path) -> None:
    with plinth.start_run(experiment="churn [/oops]", name="[bold]run[/bold]") as run:
        run.log_params({"[red]p": "[/x]"}, group="hyper")
    runner = CliRunner()
    for args in (
        ["experiments", "list"],
        ["experiments", "show", "churn [/oops]"],
        ["runs", "show", run.id],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert "[bold]run[/bold]" in runner.invoke(app, ["runs", "show", run.id]).output
