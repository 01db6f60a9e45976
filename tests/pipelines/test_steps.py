"""The ready-made steps (plinth.pipelines.steps) in pipelines run in-process on the
embedded store: training data from a feature view, data and model validation, train,
register, champion/challenger, batch scoring and delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from plinth.client import Client
from plinth.features.types import Expectation
from plinth.pipelines import steps
from plinth.pipelines.pipeline import Pipeline
from plinth.pipelines.step import step
from plinth.registry.types import Stage
from tests.backends import local_client

T0 = datetime(2026, 1, 1, tzinfo=UTC)
N = 240


def customers(seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(N, dtype="int64"),
            "spend": rng.normal(100 + shift, 30, N),
            "visits": rng.normal(5, 2, N),
        }
    )


def labelled(frame: pd.DataFrame, seed: int) -> pd.Series:
    noise = np.random.default_rng(seed + 100).normal(0, 0.5, len(frame))
    return ((frame.spend / 30 - frame.visits / 2 + noise) > 1.0).astype("int64")


def spine(frame: pd.DataFrame, when: datetime, seed: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": frame.customer_id,
            "event_timestamp": pd.Series([when] * len(frame)).astype("datetime64[us, UTC]"),
            "churned": labelled(frame, seed),
        }
    )


def holdout(seed: int = 9) -> pd.DataFrame:
    frame = customers(seed).drop(columns=["customer_id"])
    frame["churned"] = labelled(frame, seed)
    frame["segment"] = np.where(np.arange(len(frame)) % 3 == 0, "small", "large")
    return frame


@pytest.fixture
def client(tmp_path: Path) -> Client:
    made = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    made.settings.online_uri = f"sqlite:///{tmp_path / 'online.db'}"
    fs = made.feature_store()
    fs.create_entity("customer", join_keys=["customer_id"])
    first = customers(1).assign(event_time=T0)
    group = fs.create_feature_group("customer_stats", "customer", "event_time", first.dtypes)
    group.insert(first)
    fs.create_feature_view(
        "churn", ["customer_stats:spend", "customer_stats:visits"], label="churned"
    )
    return made


def fresh_data(client: Client, shift: float, days: int) -> pd.DataFrame:
    """New feature values ``days`` after T0 and a spine reading them."""
    later = customers(days, shift).assign(event_time=T0 + timedelta(days=days))
    client.feature_store().insert("customer_stats", later)
    return spine(later, T0 + timedelta(days=days, hours=1), days)


def retraining(
    fit: Any, data: pd.DataFrame, *, name: str = "churn-retrain", **validation: Any
) -> Pipeline:
    return Pipeline(
        name,
        [
            steps.training_data("churn", data),
            steps.validate_data(
                expectations=[
                    Expectation("not_null", column="spend"),
                    Expectation("range", column="visits", min=-20, max=40),
                ],
                **validation,
            ),
            steps.train(fit),
            steps.validate_model("auc", holdout=holdout(), min_value=0.5, slices=["segment"]),
            steps.register("churn"),
            steps.champion_challenger("churn", "auc", holdout=holdout()),
        ],
    )


def statuses(run: Any) -> dict[str, str]:
    return {s.name: s.status for s in run.steps}


def test_the_common_path_records_each_step_and_promotes(client: Client) -> None:
    data = spine(customers(1), T0 + timedelta(hours=1), 1)
    run = retraining(LogisticRegression(max_iter=500), data).run(client=client)
    assert set(statuses(run).values()) == {"succeeded"}
    tracked = client.get_run(run.run_id or "")
    dataset = client.features.list_training_datasets(view="churn")[0]
    assert [i.uri for i in tracked.inputs] == [dataset.uri]
    assert tracked.params["train"]["estimator"] == "LogisticRegression"
    assert tracked.params["training_data"]["dataset"] == dataset.id
    assert tracked.metrics["training_data/rows"].last == N
    assert tracked.metrics["validate_data/failed_expectations"].last == 0
    auc = tracked.metrics["validate_model/auc"].last
    assert auc > 0.8
    assert {"validate_model/auc/segment=small", "validate_model/auc/segment=large"} <= set(
        tracked.metrics
    )
    version = client.get_model_version("models:/churn@production")
    assert version.version == 1 and version.lineage["training_datasets"] == [dataset.id]
    assert version.tags["plinth.pipeline_run"] == str(run.id)
    (decision,) = client.list_decisions(name="churn").items
    assert (decision.outcome, decision.challenger_version, decision.pipeline_run) == (
        "promoted",
        1,
        run.id,
    )
    assert decision.key == f"pipeline-run:{run.id}:champion_challenger"
    assert decision.challenger_score == pytest.approx(auc)  # the same holdout
    assert tracked.tags["plinth.decision"] == "promoted"
    assert [v.version for v in client.registry.list_model_versions("churn").items] == [1]


def test_a_gate_on_a_metric_an_earlier_step_logged_sees_it(client: Client) -> None:
    from plinth.registry.gates import Gate

    # a run's metrics reach the store when its buffer flushes: here not before an hour;
    # the version registered by champion_challenger must still hold validate_model's auc
    client.settings.flush_interval = 3_600.0
    client.registry.create_registered_model("churn")
    client.registry.set_gates("churn", [Gate("metric", expression="validate_model/auc >= 0.5")])
    data = spine(customers(1), T0 + timedelta(hours=1), 1)
    pipeline = Pipeline(
        "churn-retrain",
        [
            steps.training_data("churn", data),
            steps.train(LogisticRegression(max_iter=500)),
            steps.validate_model("auc", holdout=holdout()),
            steps.champion_challenger("churn", "auc", holdout=holdout()),
        ],
    )
    run = pipeline.run(client=client)
    (decision,) = client.list_decisions(name="churn").items
    assert (decision.outcome, decision.challenger_version) == ("promoted", 1), decision.reason
    assert client.get_model_version("churn", 1).stage == Stage.PRODUCTION
    assert set(statuses(run).values()) == {"succeeded"}


def test_a_worse_challenger_is_registered_and_kept(client: Client) -> None:
    data = spine(customers(1), T0 + timedelta(hours=1), 1)
    retraining(LogisticRegression(max_iter=500), data).run(client=client)
    run = retraining(DummyClassifier(strategy="prior"), fresh_data(client, 0.0, 3)).run(
        client=client
    )
    assert set(statuses(run).values()) == {"succeeded"}
    latest = client.list_decisions(name="churn").items[0]
    assert (latest.outcome, latest.challenger_version, latest.champion_version) == ("kept", 2, 1)
    assert latest.champion_score is not None and latest.challenger_score is not None
    assert latest.challenger_score < latest.champion_score
    assert client.get_model_version("churn", 2).stage is Stage.DEVELOPMENT
    assert client.get_model_version("models:/churn@production").version == 1


def test_failed_expectations_fail_the_step_and_nothing_after_runs(client: Client) -> None:
    data = spine(customers(1), T0 + timedelta(hours=1), 1)
    pipeline = Pipeline(
        "strict",
        [
            steps.training_data("churn", data),
            steps.validate_data(expectations=[Expectation("range", column="spend", max=50)]),
            steps.train(LogisticRegression()),
            steps.register("churn"),
        ],
    )
    run = pipeline.run(client=client, raise_on_failure=False)
    assert statuses(run) == {
        "training_data": "succeeded",
        "validate_data": "failed",
        "train": "skipped",
        "register": "skipped",
    }
    failed = next(s for s in run.steps if s.name == "validate_data")
    assert failed.error is not None and "ValidationFailed" in failed.error
    assert "range spend" in failed.error
    assert client.registry.search_model_versions(name="churn") == []
    report = client.read_artifact(run.run_id, "reports/validate_data.json")  # type: ignore[attr-defined]
    assert b'"failures"' in report


def test_drift_against_the_champions_training_data(client: Client) -> None:
    data = spine(customers(1), T0 + timedelta(hours=1), 1)
    retraining(LogisticRegression(max_iter=500), data).run(client=client)
    same = Pipeline(
        "drift-check",
        [
            steps.training_data("churn", fresh_data(client, 0.0, 2)),
            steps.validate_data(model="churn", max_drifted_share=0.5),
        ],
    ).run(client=client)
    tracked = client.get_run(same.run_id or "")
    assert tracked.metrics["validate_data/drifted_share"].last == 0.0
    shifted = Pipeline(
        "drift-check",
        [
            steps.training_data("churn", fresh_data(client, 80.0, 4)),
            steps.validate_data(model="churn", max_drifted_share=0.5),
        ],
    ).run(client=client, raise_on_failure=False)
    failed = next(s for s in shifted.steps if s.name == "validate_data")
    assert failed.status == "failed" and failed.error is not None
    assert "drift against the training data of models:/churn/1" in failed.error
    assert "spend" in failed.error


def test_drift_against_the_previous_training_dataset_without_a_model(client: Client) -> None:
    def check(data: pd.DataFrame) -> Any:
        return Pipeline(
            "drift-check",
            [steps.training_data("churn", data), steps.validate_data(max_drifted_share=0.5)],
        ).run(client=client, raise_on_failure=False)

    first = check(spine(customers(1), T0 + timedelta(hours=1), 1))
    assert statuses(first)["validate_data"] == "succeeded"  # nothing earlier: reported only
    report = client.read_artifact(first.run_id, "reports/validate_data.json")  # type: ignore[attr-defined]
    assert b"no earlier training data" in report
    second = check(fresh_data(client, 80.0, 4))
    error = next(s for s in second.steps if s.name == "validate_data").error or ""
    assert "drift against training dataset 1 (churn:v1)" in error

    given = Pipeline(
        "given-reference",
        [
            steps.training_data("churn", spine(customers(1), T0 + timedelta(hours=1), 1)),
            steps.validate_data(
                reference=lambda context: customers(7, shift=80.0), max_drifted_share=0.5
            ),
        ],
    ).run(client=client, raise_on_failure=False)
    error = next(s for s in given.steps if s.name == "validate_data").error or ""
    assert "drift against reference" in error and "(spend)" in error


def test_model_gates_and_slices(client: Client) -> None:
    data = spine(customers(1), T0 + timedelta(hours=1), 1)

    def model_check(**gates: Any) -> Any:
        return Pipeline(
            "gated",
            [
                steps.training_data("churn", data),
                steps.train(LogisticRegression(max_iter=500)),
                steps.validate_model("auc", holdout=holdout(), slices=["segment"], **gates),
                steps.register("churn"),
            ],
        ).run(client=client, raise_on_failure=False)

    too_high = model_check(min_value=0.999)
    assert statuses(too_high)["validate_model"] == "failed"
    assert statuses(too_high)["register"] == "skipped"
    assert "is below 0.999" in (too_high.steps[2].error or "")
    gap = model_check(max_slice_gap=0.0)
    assert "slice gap" in (gap.steps[2].error or "") and "worst: segment=" in (
        gap.steps[2].error or ""
    )
    passed = model_check(min_value=0.6, max_slice_gap=0.5)
    assert statuses(passed)["register"] == "succeeded"
    assert client.registry.search_model_versions(name="churn")[0].version == 1


def test_user_steps_slot_in_and_a_callable_fits(client: Client) -> None:
    frame = holdout(3)

    @step
    def table() -> pd.DataFrame:
        return frame

    @step
    def held_out() -> pd.DataFrame:
        return holdout(11)

    def fit(X: pd.DataFrame, y: pd.Series) -> LogisticRegression:
        return LogisticRegression(max_iter=500).fit(X, y)

    run = Pipeline(
        "own-steps",
        [
            table,
            held_out,
            # a plain DataFrame (its ``info`` is a method, not a training dataset's record)
            steps.validate_data("table", expectations=[Expectation("not_null", column="spend")]),
            steps.train(fit, label="churned", data="table", features=["spend", "visits"]),
            steps.validate_model("accuracy", holdout="held_out", min_value=0.6),
            steps.champion_challenger("churn", "accuracy", holdout="held_out"),
        ],
    ).run(client=client)
    decision = client.registry.get_decision(f"pipeline-run:{run.id}:champion_challenger")
    assert (decision.outcome, decision.challenger_version) == ("promoted", 1)
    tracked = client.get_run(run.run_id or "")
    assert tracked.metrics["validate_data/failed_expectations"].last == 0
    assert tracked.params["train"]["estimator"] == "LogisticRegression"
    assert tracked.metrics["validate_model/accuracy"].last == pytest.approx(
        decision.challenger_score
    )


def test_bad_step_definitions() -> None:
    import plinth

    with pytest.raises(plinth.InvalidArgument, match="engine"):
        steps.training_data("churn", "spine", engine="pandas")
    with pytest.raises(plinth.InvalidArgument, match="unknown expectation kind"):
        steps.validate_data(expectations=[Expectation("sometimes")])
    with pytest.raises(plinth.InvalidArgument, match="cannot score 'speed'"):
        steps.validate_model("speed", holdout="h")
    with pytest.raises(plinth.InvalidArgument, match="'max' or 'min'"):
        steps.champion_challenger("churn", "auc", direction="up")
    with pytest.raises(plinth.InvalidArgument, match="either sql_uri and sql_table, or to"):
        steps.deliver()
    with pytest.raises(plinth.InvalidArgument, match="names no step"):
        steps.train(LogisticRegression(), data="not a name")
    with pytest.raises(plinth.InvalidArgument, match="takes 'training_data'"):
        Pipeline("p", [steps.train(LogisticRegression())])  # no step gives its data


def test_the_new_champion_scores_a_batch_with_checks_then_delivers(
    client: Client, tmp_path: Path
) -> None:
    source = tmp_path / "to-score.parquet"
    customers(5).to_parquet(source)
    database = f"sqlite:///{tmp_path / 'scores.db'}"
    got: list[tuple[int, str]] = []
    data = spine(customers(1), T0 + timedelta(hours=1), 1)
    pipeline = retraining(LogisticRegression(max_iter=500), data)
    run = Pipeline(
        "retrain-and-score",
        [
            *pipeline.steps,
            steps.register("churn", name="register_again"),  # the same run: the same version
            steps.batch_score(str(source), str(tmp_path / "scores"), model="champion_challenger"),
            steps.deliver(sql_uri=database, sql_table="churn_scores"),
            steps.deliver(to=lambda rows, key: got.append((rows.num_rows, key)), name="notify"),
        ],
    ).run(client=client)
    assert [v.version for v in client.registry.list_model_versions("churn").items] == [1]
    key = f"pipeline-run:{run.id}:batch_score"
    job = client.score_jobs.get_score_job(key)
    assert (job.status, job.rows, job.model_version) == ("DELIVERED", N, 1)
    assert got == [(N, key)]
    import sqlalchemy as sa

    with sa.create_engine(database).connect() as conn:
        assert conn.execute(sa.text("select count(*) from churn_scores")).scalar() == N
    tracked = client.get_run(run.run_id or "")
    assert tracked.tags["plinth.score_job"] == key
    assert tracked.metrics["deliver/rows"].last == N
    assert tracked.metrics["batch_score/checks_failed"].last == 0


def test_failed_score_checks_deliver_nothing(client: Client, tmp_path: Path) -> None:
    from plinth.serving.checks import Thresholds

    data = spine(customers(1), T0 + timedelta(hours=1), 1)
    retraining(LogisticRegression(max_iter=500), data).run(client=client)
    source = tmp_path / "shifted.parquet"
    customers(5, shift=300.0).to_parquet(source)  # far outside the training ranges
    got: list[Any] = []
    run = Pipeline(
        "scores",
        [
            steps.batch_score(
                str(source),
                str(tmp_path / "scores"),
                model="models:/churn@production",
                thresholds=Thresholds(max_out_of_range_share=0.0),
            ),
            steps.deliver(to=lambda rows, key: got.append(key)),
        ],
    ).run(client=client, raise_on_failure=False)
    assert statuses(run) == {"batch_score": "failed", "deliver": "skipped"}
    assert "ChecksFailed" in (run.steps[0].error or "") and got == []
    job = client.score_jobs.get_score_job(f"pipeline-run:{run.id}:batch_score")
    assert (job.status, job.output_version) == ("BLOCKED", None)
    assert any(not c.passed and "range" in c.name for c in job.checks)


@pytest.mark.slow
def test_training_data_on_spark_equals_duckdb(client: Client) -> None:
    pytest.importorskip("pyspark")
    data = spine(customers(1), T0 + timedelta(hours=1), 1)
    run = Pipeline(
        "both-engines",
        [
            steps.training_data("churn", data, name="on_duckdb"),
            steps.training_data("churn", data, name="on_spark", engine="spark"),
        ],
    ).run(client=client)
    tracked = client.get_run(run.run_id or "")
    duck, spark = (
        client.feature_store().get_training_dataset(tracked.params[s]["dataset"]).to_pandas()
        for s in ("on_duckdb", "on_spark")
    )
    key = ["customer_id"]
    pd.testing.assert_frame_equal(
        duck.sort_values(key).reset_index(drop=True),
        spark.sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )


def queued(client: Client, pipeline: Pipeline, **row: Any) -> int:
    from plinth.pipelines import records

    with client.tracking.store.write() as conn:
        made = records.insert_run(conn, pipeline=pipeline.name, created_by="test", **row)
    assert made is not None
    return made


def test_a_retry_after_a_promotion_that_was_not_recorded_promotes_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.pipelines.runner import execute

    data = spine(customers(1), T0 + timedelta(hours=1), 1)
    retraining(DummyClassifier(strategy="prior"), data).run(client=client)  # a weak champion
    pipeline = retraining(LogisticRegression(max_iter=500), fresh_data(client, 0.0, 3))
    first = queued(client, pipeline, trigger="alert", alert_id=42)

    def killed(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker killed before recording the decision")

    with monkeypatch.context() as patch:
        patch.setattr(client.registry, "record_decision", killed)
        failed = execute(client, pipeline, first)
    assert failed.status == "failed" and "worker killed" in (failed.error or "")
    assert client.get_model_version("models:/churn@production").version == 2

    retry = queued(client, pipeline, trigger="retry", attempt=2, retry_of=first, alert_id=42)
    again = execute(client, pipeline, retry)
    assert again.status == "succeeded", again.error
    assert statuses(again)["train"] == "reused"
    assert statuses(again)["champion_challenger"] == "succeeded"
    decision = client.registry.get_decision(f"pipeline-run:{first}:champion_challenger")
    assert (decision.outcome, decision.version, decision.alert_id) == ("promoted", 2, 42)
    assert decision.pipeline_run == retry and "by an earlier attempt" in decision.reason
    promotions = [h.version for h in client.model_history("churn") if h.to_value == "PRODUCTION"]
    assert promotions == [1, 2]
    assert len(client.list_decisions(name="churn").items) == 2


def test_a_holdout_label_series_is_taken_by_position_not_index() -> None:
    from plinth.errors import InvalidArgument
    from plinth.pipelines.steps.models import _holdout

    frame = customers(3).drop(columns=["customer_id"]).iloc[200:]  # indexed 200..239
    labels = labelled(frame, 3).reset_index(drop=True)  # indexed 0..39
    X, y = _holdout((frame, labels), {})
    assert X is frame and list(y.index) == list(frame.index)
    assert y.tolist() == labels.tolist()  # no label lost to index alignment
    with pytest.raises(InvalidArgument, match=r"one label per row of X \(40 rows\)"):
        _holdout((frame, labels[:30]), {})


def test_a_metric_that_cannot_be_measured_fails_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.pipelines.steps import models

    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    monkeypatch.setattr(models, "_score", lambda *args: float("nan"))
    data = holdout().drop(columns=["segment"])
    run = Pipeline(
        "gated",
        [
            steps.train(DummyClassifier(), data=data, label="churned"),
            steps.validate_model("rmse", holdout=data, max_value=0.5),  # NaN > 0.5 is False
        ],
    ).run(client=client, raise_on_failure=False)
    assert statuses(run) == {"train": "succeeded", "validate_model": "failed"}
    assert "rmse is nan: it could not be measured" in (run.steps[1].error or "")
