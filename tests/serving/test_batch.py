"""Batch scoring into a score history Delta table: enrichment from the offline store, one
commit per job, exactly once, checks before delivery, and refusals that name the culprit."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake

from plinth.client import Client, connect
from plinth.errors import InvalidArgument, NotFound
from plinth.registry.types import ModelVersion
from plinth.serving.batch import ScoreOptions, score
from plinth.serving.checks import ChecksFailed, Thresholds
from plinth.serving.sources import delta_table
from tests.backends import running_server

# these tests score with pyfunc models, which load only where pickles are trusted
pytestmark = pytest.mark.usefixtures("trust_pickles")

T0 = datetime(2026, 1, 1, tzinfo=UTC)
N = 100
INPUTS = ["orders_30d", "avg_spend", "plan"]


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


class ChurnRule:
    """Churns with fewer than 3 orders: a pyfunc model (any object with ``predict``). Tests
    that must catch a job halfway set PLINTH_TEST_TRACE (a file that gets a line per call)
    and PLINTH_TEST_SLOW (seconds to sleep per call)."""

    classes_: ClassVar[list[int]] = [0, 1]

    def predict(self, frame: pd.DataFrame) -> Any:
        trace = os.environ.get("PLINTH_TEST_TRACE")
        if trace:
            with open(trace, "a") as out:
                out.write(f"{len(frame)}\n")
            time.sleep(float(os.environ.get("PLINTH_TEST_SLOW", "0")))
        return (frame["orders_30d"] < 3).astype("int64").to_numpy()

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        churn = (frame["orders_30d"] < 3).to_numpy(dtype=float)
        return np.column_stack([1 - churn, churn])


class Broken:
    """Fine on its input example (5 rows), fails on anything larger."""

    def predict(self, frame: pd.DataFrame) -> Any:
        if len(frame) > 5:
            raise ValueError("cannot handle this")
        return np.zeros(len(frame))


class Uneven(ChurnRule):
    """ChurnRule taking longer on chunks that start earlier, so parallel chunks finish in
    reverse order; fails on a chunk holding a spend of ``fail_at``."""

    def __init__(self, fail_at: float = -1.0) -> None:
        self.fail_at = fail_at

    def predict(self, frame: pd.DataFrame) -> Any:
        if (frame["avg_spend"] == self.fail_at).any():
            raise ValueError("a spend it cannot take")
        if len(frame) > 5:  # not the input example
            time.sleep(max(0.0, 0.1 - frame["avg_spend"].iloc[0] / 1000))
        return super().predict(frame)


def customers(n: int = N) -> pd.DataFrame:
    ids = np.arange(n)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "event_time": [day(0)] * n,
            "orders_30d": ids % 10,
            "avg_spend": 10.0 + ids,
            "plan": ["basic" if i % 2 else "pro" for i in ids],
        }
    )


def churn_model(client: Client, *, linked: bool = True, model: Any = None) -> ModelVersion:
    """customer_stats (orders, spend, plan of N customers on day 0), the view ``churn``
    over it, a training dataset on day 1 (30% churned) and ChurnRule trained on it."""
    fs = client.feature_store()
    fs.create_entity("customer", join_keys=["customer_id"])
    df = customers()
    group = fs.create_feature_group(
        "customer_stats", entity="customer", event_time="event_time", schema=df.dtypes
    )
    group.insert(df)  # type: ignore[attr-defined]
    view = fs.create_feature_view("churn", [f"customer_stats:{c}" for c in INPUTS], label="churned")
    entities = pd.DataFrame(
        {
            "customer_id": df.customer_id,
            "event_timestamp": pd.to_datetime([day(1)] * N, utc=True),
            "churned": (df.orders_30d < 3).astype("int64"),
        }
    )
    dataset = view.create_training_dataset(entities)
    return client.register_model(
        model or ChurnRule(),
        "churn",
        input_example=df[INPUTS].head(5),
        training_dataset=dataset if linked else None,
    )


def entity_input(path: Path, ids: Any = None, at: float = 2) -> str:
    ids = np.arange(N) if ids is None else np.asarray(ids)
    frame = pd.DataFrame(
        {"customer_id": ids, "event_timestamp": pd.to_datetime([day(at)] * len(ids), utc=True)}
    )
    frame.to_parquet(path)
    return str(path)


def direct_input(path: Path, **changes: Any) -> str:
    frame = customers().drop(columns=["event_time"])
    for name, values in changes.items():
        frame[name] = values
    frame.to_parquet(path)
    return str(path)


def expected_scores(ids: Any) -> list[int]:
    return [int(i % 10 < 3) for i in ids]


def test_scores_through_the_feature_view_in_one_commit(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    source = entity_input(tmp_path / "customers.parquet")
    seen: list[tuple[int, int | None]] = []
    result = score(
        client,
        "models:/churn/1",
        source,
        str(tmp_path / "scores"),
        chunk_rows=30,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert (result.rows, result.output_version, result.status) == (N, 1, "DELIVERED")
    assert (result.model_name, result.model_version, result.already_delivered) == (
        "churn",
        1,
        False,
    )
    assert seen == [(30, N), (60, N), (90, N), (N, N)]
    assert [c.name for c in result.checks] == [
        "prediction_distribution",
        "prediction_values",
        "input_ranges",
        "unseen_categories",
    ]
    assert result.checks_passed and not any(c.skipped for c in result.checks)
    assert result.checks[0].observed["predicted"] == {"0": 0.7, "1": 0.3}

    table = DeltaTable(str(tmp_path / "scores"))
    history = table.history()
    # version 0 made the table (its schema): a commit once per table, before any job's
    assert [c["operation"] for c in history] == ["WRITE", "CREATE TABLE"]
    assert history[0]["plinth.job_key"] == result.job_key
    assert history[0]["plinth.model"] == "churn/1"
    assert table.transaction_version(f"plinth.score.{result.job_key}") == 1
    rows = table.to_pandas().sort_values("customer_id")
    assert rows.columns.tolist() == [
        "customer_id",
        "event_timestamp",
        "scored_at",
        "score",
        "model_name",
        "model_version",
        "job_key",
    ]
    assert rows.score.tolist() == expected_scores(range(N))
    assert set(rows.model_name) == {"churn"} and set(rows.job_key) == {result.job_key}
    assert rows.scored_at.nunique() == 1

    job = client.score_jobs.get_score_job(result.job_key)
    assert job is not None
    assert (job.status, job.rows, job.output_version, job.id) == (
        "DELIVERED",
        N,
        1,
        result.job_id,
    )
    assert job.checks == result.checks


def test_features_are_read_as_of_each_rows_time(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    later = customers(1).assign(event_time=[day(5)], orders_30d=[9])  # customer 0 on day 5
    client.feature_store().get_feature_group("customer_stats").insert(later)  # type: ignore[attr-defined]
    frame = pd.DataFrame(
        {"customer_id": [0, 0], "event_timestamp": pd.to_datetime([day(2), day(6)], utc=True)}
    )
    frame.to_parquet(tmp_path / "in.parquet")
    score(client, "models:/churn/1", str(tmp_path / "in.parquet"), str(tmp_path / "out"))
    rows = DeltaTable(str(tmp_path / "out")).to_pandas().sort_values("event_timestamp")
    assert rows.score.tolist() == [1, 0]  # 0 orders on day 2, 9 from day 5


def test_a_job_is_delivered_once(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    first = score(client, "models:/churn@latest", source, output)
    again = score(client, "models:/churn/1", source, output, chunk_rows=7)  # same job
    assert again.already_delivered and again.job_key == first.job_key
    assert (again.rows, again.output_version, again.checks) == (N, 1, first.checks)
    assert DeltaTable(output).version() == 1

    named = score(client, "models:/churn/1", source, output, job_key="january")
    assert not named.already_delivered and named.output_version == 2
    assert score(client, "models:/churn/1", source, output, job_key="january").already_delivered
    os.utime(source, ns=(0, 0))  # the input changed (as far as its identity tells)
    changed = score(client, "models:/churn/1", source, output)
    assert changed.job_key != first.job_key and changed.output_version == 3
    assert len(DeltaTable(output).to_pandas()) == 3 * N


def test_a_run_killed_after_its_commit_is_completed_by_the_next(
    client: Client, tmp_path: Path
) -> None:
    churn_model(client)
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    first = score(client, "models:/churn/1", source, output)
    jobs = client.score_jobs
    jobs.start_score_job(first.job_key, "churn", 1, source, output)  # as a kill left it
    again = score(client, "models:/churn/1", source, output)
    assert again.already_delivered
    job = jobs.get_score_job(first.job_key)
    assert job is not None and (job.status, job.output_version) == ("DELIVERED", 1)


def test_a_jobs_profile_is_stored_before_its_commit_and_delivery(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drift monitor looks at a job once it is DELIVERED: its input profile is there by
    then, even when the run is killed after its commit (the next run completes it)."""
    from plinth.serving.delivery import ScoreTable

    churn_model(client)
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    jobs, calls = client.score_jobs, []
    for name in ("record_score_profile", "finish_score_job"):
        real = getattr(jobs, name)

        def spy(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            calls.append((_name, DeltaTable(output).version()))
            return _real(*args, **kwargs)

        monkeypatch.setattr(jobs, name, spy)
    delivered = score(client, "models:/churn/1", source, output)
    # the empty table is version 0, the job's commit version 1
    assert calls == [("record_score_profile", 0), ("finish_score_job", 1)]
    assert jobs.get_score_job(delivered.job_key).status == "DELIVERED"

    def killed(self: Any, *args: Any, **kwargs: Any) -> Any:
        real_append(self, *args, **kwargs)
        raise KeyboardInterrupt  # the run dies right after its commit

    real_append = ScoreTable.append
    monkeypatch.setattr(ScoreTable, "append", killed)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        score(client, "models:/churn/1", source, output, job_key="k")
    assert calls[0] == ("record_score_profile", 1)
    monkeypatch.setattr(ScoreTable, "append", real_append)
    assert score(client, "models:/churn/1", source, output, job_key="k").already_delivered
    from plinth.store.profiles import profile_rows

    with client.tracking.store.read() as conn:
        assert len(profile_rows(conn, subject_kind="score_job", subject="k", limit=5)) == 1


def test_inputs_that_hold_the_model_columns(client: Client, tmp_path: Path) -> None:
    churn_model(client, linked=False)
    source, output = direct_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    result = score(client, "models:/churn/1", source, output, chunk_rows=40, probabilities=True)
    rows = DeltaTable(output).to_pandas().sort_values("customer_id")
    # customer_id is the join key of an entity of the feature store: kept without --key
    assert rows.columns.tolist()[:4] == ["customer_id", "scored_at", "score", "proba_0"]
    assert rows.customer_id.tolist() == list(range(N))
    assert rows.score.tolist() == expected_scores(range(N))
    assert rows.proba_1.tolist() == [float(s) for s in expected_scores(range(N))]
    skipped = {c.name: c.detail for c in result.checks if c.skipped}
    assert skipped == {
        "prediction_distribution": "skipped: no training data is linked to the model version",
        "input_ranges": "skipped: no training data is linked",
        "unseen_categories": "skipped: no training data is linked",
    }
    keyed = score(client, "models:/churn/1", source, str(tmp_path / "keyed"), keys=["customer_id"])
    assert DeltaTable(keyed.output).to_pandas().columns[0] == "customer_id"


def test_chunks_scored_at_once_are_written_in_input_order(client: Client, tmp_path: Path) -> None:
    churn_model(client, linked=False, model=Uneven())
    source = direct_input(tmp_path / "in.parquet")
    output = str(tmp_path / "out")
    score(client, "models:/churn/1", source, output, chunk_rows=9, threads=4)
    rows = DeltaTable(output).to_pandas().sort_values("customer_id")  # the input's order
    assert rows.customer_id.tolist() == list(range(N))  # each once, with its own score
    assert rows.score.tolist() == expected_scores(range(N))


def test_chunks_are_scored_at_once_only_for_thread_safe_flavors() -> None:
    from plinth.features.duck import cores

    assert ScoreOptions().workers("sklearn") == cores()
    assert ScoreOptions().workers("pyfunc") == 1  # any object with predict: maybe not safe
    assert ScoreOptions(threads=3).workers("pyfunc") == 3  # unless told
    assert ScoreOptions(engine="spark", threads=3).workers("sklearn") == 1


def test_a_chunk_failing_among_parallel_ones_fails_the_job(client: Client, tmp_path: Path) -> None:
    churn_model(client, linked=False, model=Uneven(fail_at=10.0 + 47))
    source = direct_input(tmp_path / "in.parquet")
    with pytest.raises(
        InvalidArgument, match=r"model churn v1 failed on rows 45..53 of input .*: ValueError"
    ):
        score(client, "models:/churn/1", source, str(tmp_path / "out"), chunk_rows=9, threads=3)
    assert len(DeltaTable(str(tmp_path / "out")).to_pandas()) == 0  # made empty, nothing added
    with pytest.raises(InvalidArgument, match="threads must be 0"):
        score(client, "models:/churn/1", source, str(tmp_path / "out"), threads=-1)


def test_folders_and_delta_tables_are_inputs(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    folder = tmp_path / "folder"
    folder.mkdir()
    entity_input(folder / "a.parquet", range(0, 60))
    entity_input(folder / "b.parquet", range(60, N))
    (folder / ".partial.parquet").write_bytes(b"not yet")  # hidden: a file being written
    write_deltalake(str(tmp_path / "delta"), pd.read_parquet(folder))
    inputs = {
        "folder": str(tmp_path / "folder"),
        "delta": str(tmp_path / "delta"),
        "sql": f"sql:SELECT * FROM '{folder}/[ab].parquet' WHERE customer_id >= 0",
    }
    for name, source in inputs.items():
        result = score(client, "models:/churn/1", source, str(tmp_path / f"out-{name}"))
        rows = DeltaTable(result.output).to_pandas().sort_values("customer_id")
        assert rows.score.tolist() == expected_scores(range(N)), name


def test_failed_checks_block_delivery(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    odd = ["basic"] * (N - 3) + ["enterprise", "gold", "gold"]
    spend = [10.0] * (N - 2) + [500.0, 2000.0]
    source = direct_input(tmp_path / "in.parquet", plan=odd, avg_spend=spend)
    output = str(tmp_path / "out")
    with pytest.raises(ChecksFailed) as refused:
        score(client, "models:/churn/1", source, output)
    message = refused.value.message
    assert (
        "input_ranges: out of the training range: avg_spend (2 value(s) outside [10, 109])"
        in message
    )
    assert (
        "unseen_categories: values never seen in training: plan (3 value(s), e.g. ['enterprise', 'gold'])"
        in message
    )
    assert "--allow-failed-checks" in message
    assert DeltaTable(output).to_pandas().empty  # its first chunk made the table: no rows
    job = client.score_jobs.get_score_job(refused.value.job_key)
    assert job is not None and (job.status, job.output_version) == ("BLOCKED", None)
    assert [c.passed for c in job.checks] == [True, True, False, False]

    allowed = score(client, "models:/churn/1", source, output, allow_failed_checks=True)
    assert allowed.job_key == refused.value.job_key and allowed.output_version == 1
    assert not allowed.checks_passed
    job = client.score_jobs.get_score_job(allowed.job_key)
    assert job is not None and job.status == "DELIVERED"
    assert [c.passed for c in job.checks] == [True, True, False, False]


def test_a_shifted_prediction_distribution_blocks(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    source = direct_input(tmp_path / "in.parquet", orders_30d=[0] * N)  # everyone churns
    with pytest.raises(
        ChecksFailed,
        match=r"prediction_distribution: class '0' is 0.0% of predictions, 70.0% of training labels: shift 0.700 > 0.2",
    ):
        score(client, "models:/churn/1", source, str(tmp_path / "out"))
    lenient = Thresholds(max_class_shift=0.8)
    result = score(client, "models:/churn/1", source, str(tmp_path / "out"), thresholds=lenient)
    assert result.checks_passed and result.output_version == 1


def test_refusals_name_the_culprit(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    entities, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    with pytest.raises(NotFound, match="registered model 'nope'"):
        score(client, "models:/nope/1", entities, output)
    with pytest.raises(NotFound, match=r"input '.*missing.parquet' does not exist"):
        score(client, "models:/churn/1", str(tmp_path / "missing.parquet"), output)
    (tmp_path / "text.parquet").write_text("id,score\n1,2\n")
    with pytest.raises(InvalidArgument, match="is not Parquet or a Delta table"):
        score(client, "models:/churn/1", str(tmp_path / "text.parquet"), output)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgument, match=r"holds no \.parquet files"):
        score(client, "models:/churn/1", str(tmp_path / "empty"), output)
    no_time = tmp_path / "no_time.parquet"
    pd.read_parquet(entities).drop(columns=["event_timestamp"]).to_parquet(no_time)
    with pytest.raises(
        InvalidArgument, match=r"has no column 'event_timestamp'.*--timestamp-column"
    ):
        score(client, "models:/churn/1", str(no_time), output)
    with pytest.raises(InvalidArgument, match="key column 'id' is not in input"):
        score(client, "models:/churn/1", entities, output, keys=["id"])
    with pytest.raises(InvalidArgument, match="the query failed"):
        score(client, "models:/churn/1", "sql:SELECT * FROM nowhere", output)
    with pytest.raises(InvalidArgument, match="engine must be one of"):
        score(client, "models:/churn/1", entities, output, engine="pandas")
    assert not os.path.exists(output)


def test_missing_model_columns_are_named(client: Client, tmp_path: Path) -> None:
    churn_model(client, linked=False)
    source = tmp_path / "in.parquet"
    customers().drop(columns=["plan"]).to_parquet(source)
    with pytest.raises(InvalidArgument, match=r"has no column 'plan', which model churn v1 needs"):
        score(client, "models:/churn/1", str(source), str(tmp_path / "out"))


def test_a_corrupt_model_package_is_refused(client: Client, tmp_path: Path) -> None:
    churn_model(client, linked=False)
    packages = Path(client.settings.resolved_artifact_uri) / "models" / "churn" / "packages"
    pickled = next(packages.rglob("model.pkl"))
    pickled.write_bytes(pickled.read_bytes() + b"tampered")
    source = direct_input(tmp_path / "in.parquet")
    with pytest.raises(InvalidArgument, match=r"corrupt: file 'model/model\.pkl' was changed"):
        score(client, "models:/churn/1", source, str(tmp_path / "out"))


def test_a_failing_model_fails_the_job(client: Client, tmp_path: Path) -> None:
    churn_model(client, linked=False, model=Broken())
    source = direct_input(tmp_path / "in.parquet")
    with pytest.raises(
        InvalidArgument,
        match=r"model churn v1 failed on rows 0..29 of input .*: ValueError: cannot handle this",
    ):
        score(client, "models:/churn/1", source, str(tmp_path / "out"), chunk_rows=30, job_key="j")
    job = client.score_jobs.get_score_job("j")
    assert job is not None and job.status == "FAILED"
    assert not (tmp_path / "out" / "_delta_log").exists()


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")  # the "spark" extra
    from plinth.features.spark import local_spark

    # as plinth.serving.batch does: the Python workers run this interpreter
    python = os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = local_spark("plinth-tests")
    if session.sparkContext.pythonExec != python:  # started earlier by another module
        session.stop()
        session = local_spark("plinth-tests")
    yield session
    session.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_spark_gives_the_same_scores(spark: Any, client: Client, tmp_path: Path) -> None:
    churn_model(client)
    source = entity_input(tmp_path / "in.parquet")
    results = {
        engine: score(
            client,
            "models:/churn/1",
            source,
            str(tmp_path / engine),
            engine=engine,
            probabilities=True,
        )
        for engine in ("duckdb", "spark")
    }
    tables = {
        engine: DeltaTable(result.output)
        .to_pandas()
        .drop(columns=["scored_at", "job_key"])
        .sort_values("customer_id", ignore_index=True)
        for engine, result in results.items()
    }
    assert tables["spark"].equals(tables["duckdb"])
    assert tables["spark"].score.tolist() == expected_scores(range(N))
    assert results["spark"].checks == results["duckdb"].checks


def test_an_empty_input_delivers_nothing(client: Client, tmp_path: Path) -> None:
    churn_model(client)
    source = entity_input(tmp_path / "in.parquet", [])
    result = score(client, "models:/churn/1", source, str(tmp_path / "out"))
    assert (result.rows, result.output_version, result.checks_passed) == (0, None, True)
    assert not (tmp_path / "out").exists()
    job = client.score_jobs.get_score_job(result.job_key)
    assert job is not None and (job.status, job.rows) == ("DELIVERED", 0)


@pytest.mark.parametrize("table", ["new", "existing"])
def test_two_runs_of_one_job_deliver_it_once(client: Client, tmp_path: Path, table: str) -> None:
    churn_model(client)
    source, output = entity_input(tmp_path / "in.parquet"), str(tmp_path / "out")
    if table == "existing":
        score(client, "models:/churn/1", source, output, job_key="earlier")
    rival: list[Any] = []

    def race(done: int, total: int | None) -> None:
        # another run of the same job finishes while this one is still scoring
        if not rival:
            rival.append(score(client, "models:/churn/1", source, output, job_key="k"))

    late = score(
        client, "models:/churn/1", source, output, job_key="k", chunk_rows=30, progress=race
    )
    assert not rival[0].already_delivered and late.already_delivered
    assert late.output_version == rival[0].output_version
    rows = DeltaTable(output).to_pandas()
    assert (rows.job_key == "k").sum() == N
    job = client.score_jobs.get_score_job("k")
    assert job is not None and job.status == "DELIVERED"


def test_a_client_of_a_server_scores_too(tmp_path: Path, s3_bucket: str) -> None:
    """Into a score table every party can reach (tests/test_remote_data.py: never into one
    on the client's disk)."""
    with running_server(tmp_path / "server") as url, connect(url, home=tmp_path / "c") as remote:
        churn_model(remote)
        source, output = entity_input(tmp_path / "in.parquet"), f"{s3_bucket}/out"
        result = score(remote, "models:/churn/1", source, output)
        assert (result.rows, result.checks_passed) == (N, True)
        assert score(remote, "models:/churn/1", source, output).already_delivered
        # the job and its checks are recorded on the server
        job = remote.score_jobs.get_score_job(result.job_key)
        assert (job.id, job.status, job.rows, job.output_version) == (
            result.job_id,
            "DELIVERED",
            N,
            1,
        )
        assert [c.name for c in job.checks] == [c.name for c in result.checks]
        assert [j.job_key for j in remote.score_jobs.list_score_jobs("churn")] == [result.job_key]
        with pytest.raises(NotFound, match="score job 'nope' not found"):
            remote.score_jobs.get_score_job("nope")
        with pytest.raises(InvalidArgument, match="not 'DONE'"):
            remote.score_jobs.finish_score_job(result.job_key, "DONE")
    rows = delta_table(output).to_pandas().sort_values("customer_id")
    assert rows.score.tolist() == expected_scores(range(N))
