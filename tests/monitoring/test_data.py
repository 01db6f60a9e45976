"""The model side of monitoring end to end on the embedded default: input and prediction
drift of a serving window and of a batch score job against the version's training data,
late labels and performance per window (measured and estimated), and the stored profiles."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from plinth.client import Client
from plinth.errors import InvalidArgument, NotFound
from plinth.monitoring.data import MonitoringData
from plinth.monitoring.labels import LabelIn
from plinth.store.schema import profiles
from tests.monitoring.conftest import (
    BACKENDS,
    DAY,
    HOUR,
    NOW,
    VALIDATION_AUC,
    churn_model,
    customers,
    local_client_on,
    log_predictions,
    outcomes,
)


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Client:
    return local_client_on(request, tmp_path)


def stored(client: Client, kind: str) -> int:
    with client.tracking.store.read() as conn:
        query = select(func.count()).select_from(profiles).where(profiles.c.subject_kind == kind)
        return int(conn.execute(query).scalar_one())


# -- input and prediction drift --------------------------------------------------------------


def test_a_window_like_the_training_data_has_no_drift(client: Client, data: MonitoringData) -> None:
    churn_model(client)
    log_predictions(client, NOW - DAY, NOW, 2_000, seed=11)
    found = data.input_drift("churn", now_ms=NOW)
    assert found.status == "ok", found.summary
    assert found.drifted_columns == [] and found.rows == 2_000 and not found.capped
    assert found.report is not None and found.report["tested_columns"] == 3
    assert [c["column"] for c in found.report["columns"]] == ["age", "spend", "plan"]
    assert found.prediction is not None and not found.prediction["dataset_drifted"]
    assert found.summary.startswith("version 1 of churn, serving window ")
    # the training data was profiled once and is re-used; a look stores no window profile
    again = data.input_drift("churn", now_ms=NOW)
    assert again.reference_profile == found.reference_profile is not None
    assert (stored(client, "training_data"), stored(client, "serving_window")) == (1, 0)
    assert found.current_profile is None


def test_a_planted_shift_is_flagged_naming_the_columns(
    client: Client, data: MonitoringData
) -> None:
    churn_model(client)
    log_predictions(client, NOW - DAY, NOW, 2_000, seed=12, age_shift=15, pro=0.8)
    found = data.input_drift("churn", now_ms=NOW)
    assert found.status == "drift"
    assert found.drifted_columns == ["age", "plan"]
    assert "(age, plan)" in found.summary
    # older predictions are not in the window; the shifted ages raise the predicted churn
    assert found.prediction is not None and found.prediction["dataset_drifted"]
    mv = data.model_version("churn", None)
    kept = data.drift(
        mv, window_seconds=86_400, preset="plinth", columns=["age"], score_job=None,
        max_drifted_share=None, now_ms=NOW, save=True,
    )  # fmt: skip
    assert kept.drifted_columns == ["age"] and kept.current_profile is not None
    assert stored(client, "serving_window") == 1


def test_a_version_without_training_data_is_skipped(client: Client, data: MonitoringData) -> None:
    churn_model(client, linked=False)
    log_predictions(client, NOW - DAY, NOW, 200, seed=13)
    found = data.input_drift("churn", now_ms=NOW)
    assert (found.status, found.summary) == (
        "skipped",
        "skipped: version 1 of churn has no training data linked",
    )


def test_an_empty_window_is_skipped(client: Client, data: MonitoringData) -> None:
    churn_model(client)
    log_predictions(client, NOW - 3 * DAY, NOW - 2 * DAY, 200, seed=14)
    found = data.input_drift("churn", window_seconds=86_400, now_ms=NOW)
    assert found.status == "skipped" and found.rows == 0
    assert found.summary.startswith(
        "skipped: no predictions of version 1 of churn in the serving window"
    )


def test_unknown_columns_and_models_are_named(client: Client, data: MonitoringData) -> None:
    churn_model(client)
    log_predictions(client, NOW - DAY, NOW, 100, seed=15)
    with pytest.raises(InvalidArgument, match="column 'height' is not an input of version 1"):
        data.input_drift("churn", columns=["height"], now_ms=NOW)
    with pytest.raises(NotFound, match="nope"):
        data.input_drift("nope", now_ms=NOW)


def test_a_score_jobs_inputs_are_profiled_and_checked(
    client: Client, data: MonitoringData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.serving.batch import score

    churn_model(client)
    monkeypatch.setenv("PLINTH_TRUST_PICKLE", "true")
    path = tmp_path / "in.parquet"
    customers(1_500, seed=16, age_shift=20).drop(columns=["p", "customer_id"]).to_parquet(path)
    result = score(  # a constant model: its classes shift, so the checks are let pass
        client,
        "models:/churn/1",
        str(path),
        str(tmp_path / "scores"),
        trust_pickle=True,
        allow_failed_checks=True,
    )
    assert result.job_id is not None
    assert stored(client, "score_job") == 1
    found = data.input_drift("churn", score_job=result.job_id)
    assert found.subject == f"score job {result.job_id}" and found.rows == 1_500
    assert found.drifted_columns == ["age"] and found.current_profile is not None
    with pytest.raises(NotFound, match="score job 999"):
        data.input_drift("churn", score_job=999)


# -- labels and performance -----------------------------------------------------------------


def test_labels_for_unknown_requests_are_named(client: Client, data: MonitoringData) -> None:
    churn_model(client)
    logged = log_predictions(client, NOW - DAY, NOW, 100, seed=17, requests=5)
    receipt = data.log_labels(
        "churn",
        [LabelIn(1, request_id=logged.request_ids[0]), LabelIn(0, request_id="nobody")],
    )
    assert (receipt.accepted, receipt.unmatched, receipt.unmatched_request_ids) == (
        2,
        1,
        ["nobody"],
    )
    with pytest.raises(NotFound, match="nope"):
        data.log_labels("nope", [LabelIn(1, request_id="x")])


def test_late_labels_give_performance_per_window(client: Client, data: MonitoringData) -> None:
    """Three days of predictions: labels by request id on day 1, by entity key on day 2,
    none yet on day 3 (estimated only)."""
    churn_model(client)
    days = [
        log_predictions(client, NOW - (3 - d) * DAY, NOW - (2 - d) * DAY, 1_000, seed=20 + d, prefix=f"d{d}-")
        for d in range(3)
    ]  # fmt: skip
    first = days[0].frame
    y = outcomes(first["p"].to_numpy(), seed=30)
    data.log_labels(
        "churn",
        [
            LabelIn(int(label), request_id=rid, row=int(row), at=NOW - 2 * DAY + HOUR)
            for label, rid, row in zip(y, first["request_id"], first["row"], strict=True)
        ],
    )
    second = days[1].frame  # customer ids repeat across days: the entity's newest counts
    y2 = outcomes(second["p"].to_numpy(), seed=31)
    data.log_labels(
        "churn",
        [
            LabelIn(int(label), entity={"customer_id": int(cid)}, at=NOW - DAY - 1)
            for label, cid in zip(y2, second["customer_id"], strict=True)
        ],
    )
    perf = data.performance("churn", window_seconds=86_400, windows=3, now_ms=NOW)
    assert (perf.task, perf.scores, perf.metric) == ("binary", "probability", "auc")
    assert (perf.validation, perf.validation_key) == (VALIDATION_AUC, "val_auc")
    assert [w.predictions for w in perf.windows] == [1_000, 1_000, 1_000]
    assert [w.labelled for w in perf.windows] == [1_000, 1_000, 0]
    for window, labels, scores in (
        (perf.windows[0], y, first["p"]),
        (perf.windows[1], y2, second["p"]),
    ):
        auc = window.metrics["auc"]
        assert auc.lower is not None and auc.upper is not None
        assert auc.lower < auc.value < auc.upper and auc.n == 1_000 and not auc.estimated
        assert auc.value == pytest.approx(_auc(labels, scores.to_numpy()), abs=1e-9)
        assert set(window.metrics) == {"auc", "accuracy", "f1", "log_loss"}
    assert perf.windows[2].metrics == {}
    estimate = perf.windows[2].estimated["auc"]
    assert estimate.estimated and abs(estimate.value - perf.windows[1].metrics["auc"].value) < 0.05
    assert perf.estimator.startswith("CBPE fitted on the 2,000 oldest labelled predictions")


def test_before_any_label_the_estimate_is_skipped_saying_why(
    client: Client, data: MonitoringData
) -> None:
    churn_model(client)
    log_predictions(client, NOW - DAY, NOW, 500, seed=40)
    perf = data.performance("churn", windows=2, now_ms=NOW)
    assert all(w.metrics == {} and w.estimated == {} for w in perf.windows)
    assert perf.estimator.startswith("no reference to fit it on: 0 labelled prediction(s)")
    assert perf.skipped[0] == "no labels joined to the predictions of churn v1 read"
    with pytest.raises(InvalidArgument, match="rmse is a regression metric"):
        data.performance("churn", metric="rmse", now_ms=NOW)


# -- profiles for charts ---------------------------------------------------------------------


def test_profiles_are_listed_shown_and_tabled(client: Client, data: MonitoringData) -> None:
    churn_model(client)
    log_predictions(client, NOW - DAY, NOW, 1_000, seed=50)
    found = data.input_drift("churn", now_ms=NOW)
    listed = data.list_profiles(model_name="churn")
    assert [p.subject_kind for p in listed] == ["training_data"]
    assert listed[0].id == found.reference_profile and listed[0].rows == 2_000
    view = data.get_profile(listed[0].id, bins=30)
    age = next(c for c in view.columns if c.name == "age")
    assert len(age.edges) == 31 and len(age.counts) == 30
    assert sum(age.counts) == pytest.approx(2_000)
    assert len(age.deciles) == 11 and age.deciles[0] == pytest.approx(age.min)
    plan = next(c for c in view.columns if c.name == "plan")
    assert [v for v, _ in plan.top] == ["basic", "pro"] and plan.edges == []
    table = data.deciles(model_name="churn", column="age")
    assert [(r.model_version, r.subject_kind, r.column) for r in table] == [
        (1, "training_data", "age")
    ]
    assert table[0].deciles == age.deciles
    with pytest.raises(NotFound, match="profile 999 not found"):
        data.get_profile(999)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def test_the_endpoints_answers_go_over_json(client: Client, data: MonitoringData) -> None:
    from plinth.api import endpoints_of

    found = {e.name: e for e in endpoints_of(MonitoringData)}
    assert set(found) == {
        "log_labels", "performance", "input_drift", "list_profiles", "get_profile", "deciles"
    }  # fmt: skip
    body = found["log_labels"].body_model.model_validate(
        {"labels": [{"label": True, "request_id": "r", "at": "2026-01-01T00:00:00Z"}]}
    )
    assert body.labels[0].at == datetime(2026, 1, 1, tzinfo=UTC)  # type: ignore[attr-defined]
    churn_model(client)
    logged = log_predictions(client, NOW - DAY, NOW, 400, seed=90, requests=4)
    p = logged.frame
    data.log_labels(
        "churn",
        [
            LabelIn(int(v), request_id=r, row=int(i))
            for v, r, i in zip(
                outcomes(p["p"].to_numpy(), 91), p["request_id"], p["row"], strict=True
            )
        ],
    )
    perf = data.performance("churn", windows=2, now_ms=NOW)
    adapter = found["performance"].result
    again = adapter.validate_json(adapter.dump_json(perf))
    assert again.windows[1].metrics["auc"] == perf.windows[1].metrics["auc"]
    drift = data.input_drift("churn", now_ms=NOW)
    adapter = found["input_drift"].result
    assert adapter.validate_json(adapter.dump_json(drift)) == drift
    view = data.get_profile(data.list_profiles()[0].id)
    adapter = found["get_profile"].result
    assert adapter.validate_json(adapter.dump_json(view)) == view


def test_a_client_of_a_server_stores_a_jobs_input_profile_there(tmp_path: Path) -> None:
    from plinth.client import connect
    from plinth.stats.profile import profile
    from plinth.store.engine import Store
    from plinth.store.profiles import load_profile
    from tests.backends import running_server

    frame = customers(300, seed=95)[["age", "plan"]]
    with running_server(tmp_path / "server") as url, connect(url, home=tmp_path / "c") as remote:
        remote.score_jobs.start_score_job("job-1", "churn", 1, "in.parquet", "s3://b/out")
        stored_id = remote.score_jobs.record_score_profile("job-1", profile(frame).to_dict())
    store = Store(f"sqlite:///{(tmp_path / 'server' / 'plinth.db').resolve()}")
    with store.read() as conn:
        row = conn.execute(select(profiles).where(profiles.c.id == stored_id)).one()
        kept = load_profile(conn, stored_id)
    assert (row.subject_kind, row.subject, row.model_name, row.score_job_id) == (
        "score_job", "job-1", "churn", 1
    )  # fmt: skip
    assert kept.rows == 300 and kept.columns["plan"].values == profile(frame).columns["plan"].values


def test_an_input_whose_type_changed_is_named_not_flagged(
    client: Client, data: MonitoringData
) -> None:
    from plinth.serving.predlog import Entry, PredictionLog

    churn_model(client)
    frame = customers(500, seed=97)
    frame["plan"] = (frame["plan"] == "pro").astype("int64")  # now logged as numbers
    writer = PredictionLog(client.tracking.store, flush_seconds=60)
    writer.record(
        Entry(
            "churn", 1, "r", NOW - HOUR, frame[["age", "spend", "plan"]], frame["p"].to_numpy(), 1.0
        )
    )
    writer.close()
    found = data.input_drift("churn", now_ms=NOW)
    assert found.report is not None
    plan = next(c for c in found.report["columns"] if c["column"] == "plan")
    assert not plan["drifted"] and "plan" in plan["error"] and "changed type" in plan["error"]
    assert "plan" not in found.drifted_columns


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"window_seconds": 10_000_000_000_000}, "window_seconds must be from 60 to 31622400"),
        ({"window_seconds": 30}, "window_seconds must be from 60"),
        ({"now_ms": 5}, "now_ms must be ms since the epoch"),
        ({"now_ms": 10**17}, "now_ms must be ms since the epoch"),
    ],
)
def test_windows_out_of_range_are_refused_naming_the_parameter(
    data: MonitoringData, call: dict[str, int], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        data.input_drift("churn", **call)
    with pytest.raises(InvalidArgument, match=message):
        data.performance("churn", **call)
    with pytest.raises(InvalidArgument, match=r"windows x window_seconds must be at most"):
        data.performance("churn", window_seconds=366 * 86_400, windows=366, now_ms=NOW)


def test_the_labels_read_for_performance_are_capped_saying_so(
    client: Client, data: MonitoringData, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plinth.monitoring.labels as labels_module

    churn_model(client)
    p = log_predictions(client, NOW - DAY, NOW, 10, seed=60, requests=1).frame
    data.log_labels(
        "churn",
        [LabelIn(i % 2, request_id=r, row=int(n), at=NOW - HOUR) for i, (r, n) in
         enumerate(zip(p["request_id"], p["row"], strict=True))],
    )  # fmt: skip
    monkeypatch.setattr(labels_module, "MAX_LABELS_READ", 4)
    perf = data.performance("churn", windows=1, now_ms=NOW)
    assert perf.capped and perf.windows[0].labelled == 4
    assert perf.skipped[-1].startswith("only the 4 labels logged last were read")
