"""``plinth score`` as people run it: JSON and tables, failed checks and bad input exit 1,
and a job killed halfway (SIGKILL) then run again delivers each row exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from plinth.cli import app, main
from plinth.client import Client, default_client, set_default_client
from tests.serving.test_batch import N, churn_model, direct_input, entity_input, expected_scores

ROOT = Path(__file__).parents[2]  # where a subprocess imports the test's pyfunc model from
runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich reads COLUMNS once, when the console is made (maybe before CliRunner's env)
    from plinth import cli

    monkeypatch.setattr(cli.out, "width", 200)


@pytest.fixture
def client() -> Client:
    made = default_client()  # the client the CLI uses: the same PLINTH_HOME
    churn_model(made)
    return made


def invoke(*args: str) -> Any:
    # the model these tests score with is a pyfunc (pickled) one: it loads only when trusted
    result = runner.invoke(app, ["score", *args, "--trust-pickle"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def fails(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    command: str = "score",
    trust_pickle: bool = True,
) -> str:
    """The one-line error of a refused command (exit 1, nothing on stdout)."""
    trust = ["--trust-pickle"] if trust_pickle and command == "score" else []
    monkeypatch.setattr(sys, "argv", ["plinth", command, *args, *trust])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    return captured.err


def test_score_prints_json_and_tables(client: Client, tmp_path: Path) -> None:
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    done = json.loads(
        invoke(
            "models:/churn/1", "--input", source, "--output", output, "--threads", "2", "--json"
        ).stdout
    )
    assert (done["rows"], done["output_version"], done["already_delivered"]) == (N, 1, False)
    assert [c["passed"] for c in done["checks"]] == [True] * 4
    assert DeltaTable(output).to_pandas().sort_values(
        "customer_id"
    ).score.tolist() == expected_scores(range(N))

    again = invoke("models:/churn/1", "-i", source, "-o", output).stdout
    assert f"job {done['job_key']} was already delivered to {output} (Delta version 1)" in again
    assert "nothing scored again" in again and "prediction_distribution" in again

    sql = ["--sql-uri", f"sqlite:///{tmp_path / 'scores.db'}", "--sql-table", "churn"]
    named = invoke("models:/churn/1", "-i", source, "-o", output, "--job-key", "feb", *sql).stdout
    assert f"copied {N} row(s) to SQL table churn" in named
    assert (
        f"scored {N} row(s) of {source} with churn v1 into {output} (Delta version 2), job feb"
        in named
    )


def test_failed_checks_exit_1_unless_allowed(
    client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = direct_input(tmp_path / "in.parquet", plan=["gold"] * N)
    output = str(tmp_path / "out")
    error = fails(monkeypatch, capsys, "models:/churn/1", "--input", source, "--output", output)
    assert "not delivered: check(s) failed: unseen_categories" in error
    assert DeltaTable(output).to_pandas().empty

    allowed = runner.invoke(
        app,
        [
            "score",
            "models:/churn/1",
            "-i",
            source,
            "-o",
            output,
            "--allow-failed-checks",
            "--trust-pickle",
        ],
    )
    assert allowed.exit_code == 0, allowed.output
    assert "warning: delivered although checks failed: unseen_categories" in allowed.stderr
    assert len(DeltaTable(output).to_pandas()) == N

    relaxed = ["--threshold", "max_unseen_share=1", "--job-key", "relaxed"]
    assert "FAILED" not in invoke("models:/churn/1", "-i", source, "-o", output, *relaxed).stdout

    # the jobs and their checks, as recorded
    listed = runner.invoke(app, ["score-jobs", "--model", "churn", "--json"])
    jobs = json.loads(listed.stdout)
    assert (jobs[0]["job_key"], jobs[0]["status"]) == ("relaxed", "DELIVERED")
    assert [j["status"] for j in jobs][1:] == ["DELIVERED"]  # the blocked run, then allowed
    shown = runner.invoke(app, ["score-jobs", "--job", jobs[1]["job_key"]]).stdout
    assert "unseen_categories" in shown and "FAILED" in shown
    missing = fails(monkeypatch, capsys, "--job", "nope", command="score-jobs")
    assert "score job 'nope' not found" in missing


def test_a_pickled_model_is_scored_only_with_trust_pickle(
    client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    error = fails(
        monkeypatch, capsys, "models:/churn/1", "-i", source, "-o", output, trust_pickle=False
    )
    assert "models:/churn/1 is a pickled model package (pyfunc flavor" in error
    assert "runs code chosen by whoever saved and registered it" in error
    assert "--trust-pickle" in error and "PLINTH_TRUST_PICKLE" in error
    assert not os.path.exists(os.path.join(output, "_delta_log"))  # nothing scored
    assert (
        json.loads(invoke("models:/churn/1", "-i", source, "-o", output, "--json").stdout)["rows"]
        == N
    )
    # the store's policy trusts them too (a client made after the setting changed)
    monkeypatch.setenv("PLINTH_TRUST_PICKLE", "true")
    set_default_client(None)
    trusted = runner.invoke(app, ["score", "models:/churn/1", "-i", source, "-o", output])
    assert trusted.exit_code == 0, trusted.output
    assert "already delivered" in trusted.stdout


def test_bad_input_exits_1(
    client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    assert "registered model 'nope'" in fails(
        monkeypatch, capsys, "models:/nope@production", "-i", source, "-o", output
    )
    assert "does not exist" in fails(
        monkeypatch, capsys, "models:/churn/1", "-i", str(tmp_path / "no"), "-o", output
    )
    (tmp_path / "bad.parquet").write_text("not parquet")
    bad = str(tmp_path / "bad.parquet")
    assert "is not Parquet or a Delta table" in fails(
        monkeypatch, capsys, "models:/churn/1", "-i", bad, "-o", output
    )
    keys_only = tmp_path / "keys.parquet"
    pd.DataFrame({"customer_id": [1, 2]}).to_parquet(keys_only)
    error = fails(monkeypatch, capsys, "models:/churn/1", "-i", str(keys_only), "-o", output)
    assert "has no column 'event_timestamp'" in error
    assert "exactly one of --input" in fails(monkeypatch, capsys, "models:/churn/1", "-o", output)
    error = fails(
        monkeypatch, capsys, "models:/churn/1", "-i", source, "-o", output, "--threshold", "x=1"
    )
    assert "threshold 'x=1' is not NAME=VALUE" in error
    assert "engine must be one of" in fails(
        monkeypatch, capsys, "models:/churn/1", "-i", source, "-o", output, "--engine", "x"
    )


def plinth_process(home: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "PLINTH_HOME": str(home), **env}
    for name in ("PLINTH_STORE_URI", "PLINTH_ARTIFACT_URI", "PLINTH_URI"):
        environment.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "plinth", *args],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition: Any, process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"plinth exited before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_job_killed_halfway_then_run_again_delivers_each_row_once(
    client: Client, tmp_path: Path
) -> None:
    home = Path(os.environ["PLINTH_HOME"])
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    command = [
        "score",
        "models:/churn/1",
        "-i",
        source,
        "-o",
        output,
        "--chunk-rows",
        "10",
        "--json",
        "--trust-pickle",
    ]
    trace = tmp_path / "trace"
    slow = plinth_process(home, *command, PLINTH_TEST_TRACE=str(trace), PLINTH_TEST_SLOW="0.2")
    # ten chunks of ten rows: kill it once five have been scored
    wait_for(lambda: trace.exists() and len(trace.read_text().split()) >= 5, slow, "half the job")
    os.killpg(slow.pid, signal.SIGKILL)
    slow.communicate(timeout=30)
    assert slow.returncode == -signal.SIGKILL
    assert len(trace.read_text().split()) < N // 10  # it did not finish
    gone = not os.path.exists(os.path.join(output, "_delta_log"))
    assert gone or DeltaTable(output).to_pandas().empty  # nothing visible

    again = plinth_process(home, *command)  # the same command
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    done = json.loads(stdout)
    assert (done["rows"], done["already_delivered"]) == (N, False)
    rows = DeltaTable(output).to_pandas()
    assert sorted(rows.customer_id) == list(range(N))  # each row exactly once
    job = client.score_jobs.get_score_job(done["job_key"])
    assert job is not None and (job.status, job.rows) == ("DELIVERED", N)

    third = json.loads(invoke(*command[1:]).stdout)
    assert third["already_delivered"] and len(DeltaTable(output).to_pandas()) == N
