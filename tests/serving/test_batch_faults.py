"""Score jobs whose run was killed (a real SIGKILL, at a crash point): the checks judged
before the commit survive a kill after it, and a job left RUNNING is ended by a reconcile,
DELIVERED when its commit is in the output, FAILED when its process is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from plinth.client import Client
from plinth.faults import CRASH_ENV
from plinth.serving.batch import score
from plinth.serving.reconcile import reconcile_job
from tests.serving.test_batch import churn_model, entity_input

# these tests score with pyfunc models, which load only where pickles are trusted
pytestmark = pytest.mark.usefixtures("trust_pickles")

_RUN = """
import sys
from plinth.serving.batch import score
from tests.backends import local_client
score(local_client(sys.argv[1], sys.argv[2]), "models:/churn/1", sys.argv[3], sys.argv[4])
"""


def score_and_die(tmp_path: Path, at: str, source: str, output: str) -> None:
    env = {**os.environ, CRASH_ENV: at, "PYTHONPATH": os.pathsep.join(sys.path)}
    store_uri, artifacts = f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts")
    done = subprocess.run(
        [sys.executable, "-c", _RUN, store_uri, artifacts, source, output],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def test_a_job_killed_after_its_commit_is_delivered_with_its_checks(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    churn_model(client)
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    expected = score(client, "models:/churn/1", source, str(tmp_path / "reference")).checks
    score_and_die(tmp_path, "score-commit", source, output)
    [job] = [j for j in client.score_jobs.list_score_jobs() if j.output == output]
    assert (job.status, job.output_version) == ("RUNNING", None)  # as the kill left it

    monkeypatch.setenv("PLINTH_STORE_URI", f"sqlite:///{tmp_path / 'plinth.db'}")
    monkeypatch.setenv("PLINTH_ARTIFACT_URI", str(tmp_path / "artifacts"))
    from plinth.cli import app

    shown = CliRunner().invoke(app, ["score-jobs", "--job", job.job_key, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["status"] == "DELIVERED"
    job = client.score_jobs.get_score_job(job.job_key)
    assert (job.status, job.output_version, job.rows) == ("DELIVERED", 1, 100)
    assert [(c.name, c.passed) for c in job.checks] == [(c.name, c.passed) for c in expected]
    again = score(client, "models:/churn/1", source, output)
    assert again.already_delivered and again.checks == job.checks


def test_a_job_killed_before_its_commit_ends_failed_then_runs_again(
    client: Client, tmp_path: Path
) -> None:
    churn_model(client)
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    score_and_die(tmp_path, "score-stream", source, output)
    [job] = client.score_jobs.list_score_jobs()
    assert job.status == "RUNNING" and job.pid is not None and job.pid != os.getpid()
    assert reconcile_job(client.score_jobs, job).status == "FAILED"
    assert client.score_jobs.get_score_job(job.job_key).status == "FAILED"
    result = score(client, "models:/churn/1", source, output)
    assert (result.status, result.rows, result.already_delivered) == ("DELIVERED", 100, False)


def test_a_running_job_of_a_live_process_is_left_running(client: Client, tmp_path: Path) -> None:
    import socket

    jobs = client.score_jobs
    jobs.start_score_job(
        "k", "churn", 1, "in", str(tmp_path / "out"), socket.gethostname(), os.getpid()
    )
    assert reconcile_job(jobs, jobs.get_score_job("k")).status == "RUNNING"
    jobs.start_score_job("j", "churn", 1, "in", str(tmp_path / "out"), "another-host", 1)
    assert reconcile_job(jobs, jobs.get_score_job("j")).status == "RUNNING"  # cannot tell


def test_a_failed_first_job_does_not_hold_the_next_to_its_columns(
    client: Client, tmp_path: Path
) -> None:
    from plinth.errors import InvalidArgument
    from tests.serving.test_batch import Uneven, direct_input

    churn_model(client, linked=False, model=Uneven(fail_at=10.0 + 47))
    source, output = direct_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    with pytest.raises(InvalidArgument, match="a spend it cannot take"):
        score(client, "models:/churn/1", source, output, chunk_rows=30, probabilities=True)
    # the failed job left an empty table laid out for its scores (with probabilities) ...
    assert "proba_0" in DeltaTable(output).schema().to_arrow().names
    fine = direct_input(tmp_path / "fine.parquet", avg_spend=[1.0] * 100)
    result = score(client, "models:/churn/1", fine, output, chunk_rows=30)
    # ... which the next job, without probabilities, lays out again
    assert result.rows == 100
    assert DeltaTable(output).to_pandas().columns.tolist() == [
        "customer_id",
        "scored_at",
        "score",
        "model_name",
        "model_version",
        "job_key",
    ]


def test_a_plain_model_keeps_entity_keys_unless_the_table_numbers_rows(
    client: Client, tmp_path: Path
) -> None:
    from tests.serving.test_batch import direct_input

    churn_model(client, linked=False)
    source = direct_input(tmp_path / "in.parquet")
    keyed = score(client, "models:/churn/1", source, str(tmp_path / "keyed"))
    assert DeltaTable(keyed.output).to_pandas().columns[0] == "customer_id"
    # an output table that numbers its rows keeps numbering them
    numbered = str(tmp_path / "numbered")
    frame = pd.read_parquet(source).rename(columns={"customer_id": "cid"})
    frame.to_parquet(tmp_path / "other.parquet")
    score(client, "models:/churn/1", str(tmp_path / "other.parquet"), numbered)
    score(client, "models:/churn/1", source, numbered)
    rows = DeltaTable(numbered).to_pandas()
    assert rows.columns[0] == "row" and len(rows) == 200
