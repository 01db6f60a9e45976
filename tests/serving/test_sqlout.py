"""The SQL copy of a score table: each delivered job's rows once, in SQLite or PostgreSQL,
also when a run died between the Delta commit and the copy or two runs copy at once."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from sqlalchemy import create_engine, text

from plinth.client import Client
from plinth.errors import InvalidArgument
from plinth.serving.batch import score
from plinth.serving.sqlout import SqlScores
from tests.serving.test_batch import N, churn_model, entity_input, expected_scores

# these tests score with pyfunc models, which load only where pickles are trusted
pytestmark = pytest.mark.usefixtures("trust_pickles")


def sql_rows(uri: str, table: str) -> pd.DataFrame:
    engine = create_engine(uri)
    with engine.connect() as conn:
        found = pd.read_sql(text(f"SELECT * FROM {table} ORDER BY customer_id"), conn)
    engine.dispose()
    return found


def test_each_job_is_copied_once(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    uri = f"sqlite:///{tmp_path / 'scores.db'}"
    first = score(client, "models:/churn/1", source, output, sql_uri=uri, sql_table="churn")
    assert first.sql_rows == N
    copied = sql_rows(uri, "churn")
    assert copied.customer_id.tolist() == list(range(N))
    assert copied.score.tolist() == expected_scores(range(N))
    assert set(copied.job_key) == {first.job_key} and set(copied.model_version) == {1}
    delta = DeltaTable(output).to_pandas().sort_values("customer_id")
    assert copied.columns.tolist() == delta.columns.tolist()
    again = score(client, "models:/churn/1", source, output, sql_uri=uri, sql_table="churn")
    assert again.already_delivered and again.sql_rows == 0
    assert len(sql_rows(uri, "churn")) == N


def test_a_job_delivered_before_its_copy_is_copied_by_the_next_run(
    client: Client, tmp_path: Path
) -> None:
    churn_model(client)
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    score(client, "models:/churn/1", source, output)  # as if killed right after the commit
    uri = f"sqlite:///{tmp_path / 'scores.db'}"
    rerun = score(client, "models:/churn/1", source, output, sql_uri=uri, sql_table="churn")
    assert rerun.already_delivered and rerun.sql_rows == N
    assert len(sql_rows(uri, "churn")) == N


def test_bad_sql_targets_are_named(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    with pytest.raises(InvalidArgument, match="needs both a SQL URI and a table"):
        score(client, "models:/churn/1", source, output, sql_table="churn")
    with pytest.raises(InvalidArgument, match="SQL table name 'drop table;'"):
        score(
            client, "models:/churn/1", source, output, sql_uri="sqlite://", sql_table="drop table;"
        )
    uri = f"sqlite:///{tmp_path / 'scores.db'}"
    engine = create_engine(uri)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE churn (customer_id INTEGER)"))
    engine.dispose()
    with pytest.raises(
        InvalidArgument, match=r"SQL table 'churn' .* has no column 'event_timestamp'"
    ):
        score(client, "models:/churn/1", source, output, sql_uri=uri, sql_table="churn")


@pytest.mark.integration
def test_two_copies_at_once_into_postgres_copy_once(postgres_uri: str) -> None:
    table = f"scores_{uuid.uuid4().hex[:8]}"
    schema = pa.schema([("customer_id", pa.int64()), ("score", pa.float64())])
    rows = pa.record_batch([pa.array(range(50_000)), pa.array([0.5] * 50_000)], schema=schema)
    results: list[int] = []
    start = threading.Barrier(2)

    def copy() -> None:
        start.wait()
        results.append(SqlScores(postgres_uri, table).copy("job-1", schema, iter([rows])))

    threads = [threading.Thread(target=copy) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 50_000]
    assert len(sql_rows(postgres_uri, table)) == 50_000
    assert SqlScores(postgres_uri, table).copied("job-1")
    assert not SqlScores(postgres_uri, table).copied("job-2")
