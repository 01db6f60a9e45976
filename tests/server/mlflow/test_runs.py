"""MLflow's runs routes: runs logged this way are ordinary Plinth runs; MLflow's shapes,
limits, error codes, search syntax and paging."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from plinth.auth.types import Role
from plinth.store.schema import logged_models
from plinth.store.sql import now_ms
from plinth.tracking.service import TrackingService
from plinth.tracking.types import DatasetInput, MetricBatch, RunStatus
from tests.backends import AuthServer

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

API = "/api/2.0/mlflow"


@pytest.fixture
def experiment_id(api: Any) -> str:
    response = api.post(f"{API}/experiments/create", json={"name": "churn"})
    assert response.status_code == 200, response.text
    return str(response.json()["experiment_id"])


@pytest.fixture
def run_id(api: Any, experiment_id: str) -> str:
    return str(create_run(api, experiment_id, "lgbm")["info"]["run_id"])


def create_run(api: Any, experiment_id: str | None, name: str | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"run_name": name, **extra}
    if experiment_id is not None:
        body["experiment_id"] = experiment_id
    response = api.post(f"{API}/runs/create", json=body)
    assert response.status_code == 200, response.text
    return response.json()["run"]


def post(api: Any, path: str, body: dict[str, Any]) -> Any:
    response = api.post(f"{API}{path}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def get_run(api: Any, run_id: str) -> Any:
    response = api.get(f"{API}/runs/get", params={"run_id": run_id})
    assert response.status_code == 200, response.text
    return response.json()["run"]


def assert_error(response: httpx.Response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"}
    assert body["error_code"] == code
    for fragment in fragments:
        assert fragment in body["message"], body["message"]


def tags_of(run: Any) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"]["tags"]}


# -- create, get: an ordinary Plinth run -----------------------------------------------


def test_create_answers_mlflows_run_and_makes_an_ordinary_plinth_run(
    api: Any, tracking: TrackingService, experiment_id: str
) -> None:
    tags = [
        {"key": "team", "value": "risk"},
        {"key": "mlflow.user", "value": "mallory"},  # a client's claim: not who ran it
        {"key": "mlflow.source.type", "value": "LOCAL"},
    ]
    run = create_run(
        api, experiment_id, "lgbm", user_id="mallory", tags=tags, start_time="1700000000000"
    )
    info = run["info"]
    plinth = tracking.get_run(info["run_id"])
    assert info == {
        "run_id": plinth.id,
        "run_uuid": plinth.id,
        "run_name": "lgbm",
        "experiment_id": experiment_id,
        "user_id": plinth.owner,
        "status": "RUNNING",
        "start_time": int(plinth.start_time.timestamp() * 1000),
        "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{plinth.id}/artifacts",
        "lifecycle_stage": "active",
    }
    assert plinth.owner != "mallory"
    assert plinth.name == "lgbm"
    assert plinth.tags == {"team": "risk", "mlflow.source.type": "LOCAL"}
    assert tags_of(run) == {
        "team": "risk",
        "mlflow.source.type": "LOCAL",
        "mlflow.runName": "lgbm",
        "mlflow.user": plinth.owner,
    }
    assert run["data"]["metrics"] == [] and run["data"]["params"] == []
    assert run["inputs"] == {"dataset_inputs": []}
    assert run["outputs"] == {"model_outputs": []}
    assert get_run(api, plinth.id) == run
    assert api.get(f"{API}/runs/get", params={"run_uuid": plinth.id}).json()["run"] == run


def test_a_run_without_an_experiment_goes_to_default_and_gets_a_name(
    api: Any, tracking: TrackingService
) -> None:
    run = create_run(api, None)
    default = tracking.get_experiment("Default")
    assert run["info"]["experiment_id"] == default.id
    assert run["info"]["run_name"] == tracking.get_run(run["info"]["run_id"]).name
    assert create_run(api, "0")["info"]["experiment_id"] == default.id


def test_the_run_name_tag_names_the_run(api: Any, experiment_id: str) -> None:
    run = create_run(api, experiment_id, tags=[{"key": "mlflow.runName", "value": "xgb"}])
    assert run["info"]["run_name"] == "xgb"


def test_runs_may_share_a_name_as_in_mlflow(api: Any, experiment_id: str) -> None:
    first = create_run(api, experiment_id, "train")["info"]
    second = create_run(api, experiment_id, "train")["info"]
    assert first["run_name"] == "train"
    assert second["run_name"].startswith("train-") and second["run_id"] != first["run_id"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/runs/get?run_id=nope", None),
        ("POST", "/runs/update", {"run_id": "nope", "status": "FINISHED"}),
        ("POST", "/runs/log-metric", {"run_id": "nope", "key": "a", "value": 1, "timestamp": 1}),
        ("POST", "/runs/log-parameter", {"run_id": "nope", "key": "a", "value": "1"}),
        ("POST", "/runs/log-batch", {"run_id": "nope", "params": [{"key": "a", "value": "1"}]}),
        ("POST", "/runs/log-batch", {"run_id": "nope"}),
        ("POST", "/runs/set-tag", {"run_id": "nope", "key": "a", "value": "1"}),
        ("POST", "/runs/delete-tag", {"run_id": "nope", "key": "a"}),
        ("POST", "/runs/log-inputs", {"run_id": "nope"}),
        ("GET", "/metrics/get-history?run_id=nope&metric_key=a", None),
    ],
)
def test_an_unknown_run_is_404_resource_does_not_exist(
    api: Any, method: str, path: str, body: Any
) -> None:
    response = api.request(method, f"{API}{path}", json=body)
    assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST", "run 'nope' does not exist")


def test_an_unknown_experiment_is_404(api: Any) -> None:
    response = api.post(f"{API}/runs/create", json={"experiment_id": "a" * 32})
    assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST")
    response = api.post(f"{API}/runs/create", json={"experiment_id": "churn"})  # a name
    assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST", "experiment id 'churn'")


@pytest.mark.parametrize("body", [{}, {"run_id": ""}, {"run_id": "x", "key": "a"}])
def test_a_missing_field_is_400_invalid_parameter_value(api: Any, body: dict[str, Any]) -> None:
    response = api.post(f"{API}/runs/log-parameter", json=body)
    assert_error(response, 400, "INVALID_PARAMETER_VALUE")


# -- params, metrics, tags -------------------------------------------------------------


def test_logged_values_land_in_plinth(api: Any, tracking: TrackingService, run_id: str) -> None:
    post(api, "/runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"})
    post(
        api,
        "/runs/log-metric",
        {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": "1700000000001", "step": "3"},
    )
    post(
        api,
        "/runs/log-batch",
        {
            "run_id": run_id,
            "metrics": [
                {"key": "loss", "value": 0.25, "timestamp": 1700000000002, "step": 4},
                {"key": "acc", "value": "NaN", "timestamp": 1700000000003},
            ],
            "params": [{"key": "depth", "value": "6"}, {"key": "lr", "value": "0.1"}],
            "tags": [{"key": "team", "value": "risk"}],
        },
    )
    post(api, "/runs/set-tag", {"run_id": run_id, "key": "stage", "value": "dev"})
    plinth = tracking.get_run(run_id)
    assert plinth.params == {"default": {"lr": "0.1", "depth": "6"}}
    assert plinth.tags == {"team": "risk", "stage": "dev"}
    assert [(p.step, p.value) for p in tracking.get_metric_history(run_id, "loss")] == [
        (3, 0.5),
        (4, 0.25),
    ]
    assert plinth.metrics["loss"].last == 0.25
    run = get_run(api, run_id)
    metrics = {m["key"]: (m["value"], m["step"], m["timestamp"]) for m in run["data"]["metrics"]}
    # each metric with the time of its latest point, as the client gave it
    assert metrics == {"loss": (0.25, 4, 1700000000002), "acc": ("NaN", 0, 1700000000003)}
    assert sorted((p["key"], p["value"]) for p in run["data"]["params"]) == [
        ("depth", "6"),
        ("lr", "0.1"),
    ]
    assert tags_of(run)["stage"] == "dev"


def test_a_plinth_runs_params_show_as_text_and_other_groups_as_group_key(
    api: Any, tracking: TrackingService, experiment_id: str
) -> None:
    run = tracking.create_run(experiment_id, "native")
    tracking.log_params(run.id, {"lr": 0.1, "depth": 6, "early": True, "layers": [64, 32]})
    tracking.log_params(run.id, {"lr": 0.2}, group="hyper")
    params = {p["key"]: p["value"] for p in get_run(api, run.id)["data"]["params"]}
    assert params == {
        "lr": "0.1",
        "depth": "6",
        "early": "true",
        "layers": "[64, 32]",
        "hyper.lr": "0.2",
    }


def test_changing_a_param_is_400_invalid_parameter_value(api: Any, run_id: str) -> None:
    post(api, "/runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"})
    post(api, "/runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"})  # again
    response = api.post(
        f"{API}/runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.2"}
    )
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "'lr'", "'0.1'", "'0.2'")
    response = api.post(
        f"{API}/runs/log-batch",
        json={"run_id": run_id, "params": [{"key": "lr", "value": "0.3"}]},
    )
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "'lr'")
    twice = [{"key": "x", "value": "1"}, {"key": "x", "value": "2"}]
    response = api.post(f"{API}/runs/log-batch", json={"run_id": run_id, "params": twice})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "'x' is given twice")


def metric(key: str) -> dict[str, Any]:
    return {"key": key, "value": 1.0, "timestamp": 1}


def pair(key: str, value: str = "v") -> dict[str, str]:
    return {"key": key, "value": value}


@pytest.mark.parametrize(
    ("batch", "fragment"),
    [
        ({"metrics": [metric(f"m{i}") for i in range(1001)]}, "1001 metrics; MLflow allows 1000"),
        ({"params": [pair(f"p{i}") for i in range(101)]}, "101 params; MLflow allows 100"),
        ({"tags": [pair(f"t{i}") for i in range(101)]}, "101 tags; MLflow allows 100"),
        (
            {
                "metrics": [metric(f"m{i}") for i in range(901)],
                "params": [pair(f"p{i}") for i in range(50)],
                "tags": [pair(f"t{i}") for i in range(50)],
            },
            "1001 metrics, params and tags in all; MLflow allows 1000",
        ),
        ({"params": [pair("p", "x" * 6001)]}, "param 'p': its value is 6001 characters"),
        ({"tags": [pair("t", "x" * 8001)]}, "tag 't': its value is 8001 characters"),
        ({"metrics": [metric("m" * 251)]}, "is 251 characters; MLflow allows 250"),
        ({"params": [pair("p" * 251)]}, "is 251 characters"),
        ({"tags": [pair("t" * 251)]}, "is 251 characters"),
        ({"params": [pair("a;b")]}, "param name 'a;b' may only contain"),
        ({"tags": [pair("")]}, "tag name must not be empty"),
        ({"metrics": [{"key": "m", "value": "high", "timestamp": 1}]}, "value"),
        ({"metrics": [{"key": "m", "value": 1, "timestamp": 1.5}]}, "timestamp"),
    ],
)
def test_mlflows_batch_limits_are_400_invalid_parameter_value(
    api: Any, tracking: TrackingService, run_id: str, batch: dict[str, Any], fragment: str
) -> None:
    response = api.post(f"{API}/runs/log-batch", json={"run_id": run_id, **batch})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", fragment)
    run = tracking.get_run(run_id)  # nothing was written
    assert (run.params, run.metrics, run.tags) == ({}, {}, {})


def test_a_batch_at_mlflows_limits_is_taken(
    api: Any, tracking: TrackingService, run_id: str
) -> None:
    batch = {
        "metrics": [metric(f"m{i}") for i in range(800)],
        "params": [pair(f"p{i}", "x" * 6000) for i in range(100)],
        "tags": [pair(f"t{i}" + "k" * 240, "x" * 8000) for i in range(100)],
    }
    post(api, "/runs/log-batch", {"run_id": run_id, **batch})
    run = tracking.get_run(run_id)
    assert (len(run.metrics), len(run.params["default"]), len(run.tags)) == (800, 100, 100)


def test_single_calls_have_the_same_limits(api: Any, run_id: str) -> None:
    body: dict[str, Any] = {"run_id": run_id, "key": "p", "value": "x" * 6001}
    assert_error(api.post(f"{API}/runs/log-parameter", json=body), 400, "INVALID_PARAMETER_VALUE")
    body = {"run_id": run_id, "key": "t", "value": "x" * 8001}
    assert_error(api.post(f"{API}/runs/set-tag", json=body), 400, "INVALID_PARAMETER_VALUE")
    body = {"run_id": run_id, "key": "m" * 251, "value": 1, "timestamp": 1}
    assert_error(api.post(f"{API}/runs/log-metric", json=body), 400, "INVALID_PARAMETER_VALUE")


def test_delete_tag(api: Any, tracking: TrackingService, run_id: str) -> None:
    post(api, "/runs/set-tag", {"run_id": run_id, "key": "a", "value": "1"})
    post(api, "/runs/delete-tag", {"run_id": run_id, "key": "a"})
    assert tracking.get_run(run_id).tags == {}
    response = api.post(f"{API}/runs/delete-tag", json={"run_id": run_id, "key": "a"})
    assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST", "no tag 'a'")
    response = api.post(f"{API}/runs/delete-tag", json={"run_id": run_id, "key": "mlflow.runName"})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "cannot be deleted")


def test_setting_mlflow_user_changes_nothing(
    api: Any, tracking: TrackingService, run_id: str
) -> None:
    post(api, "/runs/set-tag", {"run_id": run_id, "key": "mlflow.user", "value": "mallory"})
    owner = tracking.get_run(run_id).owner
    assert tags_of(get_run(api, run_id))["mlflow.user"] == owner != "mallory"


def test_the_run_name_tag_renames_the_run(
    api: Any, tracking: TrackingService, experiment_id: str, run_id: str
) -> None:
    post(api, "/runs/set-tag", {"run_id": run_id, "key": "mlflow.runName", "value": "renamed"})
    assert tracking.get_run(run_id).name == "renamed"
    batch = {"run_id": run_id, "tags": [pair("mlflow.runName", "again")]}
    post(api, "/runs/log-batch", batch)
    assert tracking.get_run(run_id).name == "again"
    post(api, "/runs/update", {"run_id": run_id, "run_name": "third"})
    assert get_run(api, run_id)["info"]["run_name"] == "third"


# -- update: status --------------------------------------------------------------------


def test_update_ends_the_run(api: Any, tracking: TrackingService, run_id: str) -> None:
    answer = post(api, "/runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": 5})
    run = tracking.get_run(run_id)
    assert run.status is RunStatus.FINISHED and run.end_time is not None
    assert answer["run_info"]["status"] == "FINISHED"
    assert answer["run_info"]["end_time"] == int(run.end_time.timestamp() * 1000)
    post(api, "/runs/update", {"run_id": run_id, "status": 3})  # the same again: no change
    response = api.post(f"{API}/runs/update", json={"run_id": run_id, "status": "FAILED"})
    assert_error(response, 400, "INVALID_STATE", "already ended as FINISHED")
    # Plinth's rule: an ended run's metrics are final
    body = {"run_id": run_id, "key": "late", "value": 1, "timestamp": 1}
    assert_error(api.post(f"{API}/runs/log-metric", json=body), 400, "INVALID_STATE")
    # mlflow.start_run(run_id=...) of an ended run: it runs again, and takes metrics again
    answer = post(api, "/runs/update", {"run_id": run_id, "status": "RUNNING"})
    assert answer["run_info"]["status"] == "RUNNING" and "end_time" not in answer["run_info"]
    assert tracking.get_run(run_id).status is RunStatus.RUNNING
    post(api, "/runs/log-metric", body)
    post(api, "/runs/update", {"run_id": run_id, "status": "KILLED"})
    assert tracking.get_run(run_id).status is RunStatus.KILLED
    tracking.delete_run(run_id)
    response = api.post(f"{API}/runs/update", json={"run_id": run_id, "status": "RUNNING"})
    assert_error(response, 400, "INVALID_STATE", "is deleted")


@pytest.mark.parametrize(
    ("status", "fragment"), [("SCHEDULED", "SCHEDULED"), ("DONE", "'DONE'"), (9, "9")]
)
def test_an_unknown_status_is_400(api: Any, run_id: str, status: Any, fragment: str) -> None:
    response = api.post(f"{API}/runs/update", json={"run_id": run_id, "status": status})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", fragment)


# -- inputs, outputs -------------------------------------------------------------------


def test_log_inputs(api: Any, tracking: TrackingService, run_id: str) -> None:
    dataset = {
        "name": "churn-train",
        "digest": "abc123",
        "source_type": "s3",
        "source": '{"uri": "s3://bucket/train.parquet"}',
        "schema": "{}",
        "profile": '{"num_rows": 1000}',
    }
    body = {
        "run_id": run_id,
        "datasets": [{"tags": [pair("mlflow.data.context", "train")], "dataset": dataset}],
    }
    post(api, "/runs/log-inputs", body)
    (logged,) = tracking.get_run(run_id).inputs
    assert (logged.name, logged.uri, logged.digest, logged.rows) == (
        "churn-train",
        dataset["source"],
        "abc123",
        1000,
    )
    assert (logged.context, logged.source_type, logged.schema, logged.profile) == (
        "train",
        "s3",
        "{}",
        '{"num_rows": 1000}',
    )
    # what the client sent comes back as it was (the source type is not guessed)
    assert get_run(api, run_id)["inputs"]["dataset_inputs"] == [
        {"tags": [pair("mlflow.data.context", "train")], "dataset": dataset}
    ]
    # a Plinth input: its source type guessed from its URI, its rows as profile, no context
    tracking.log_input(run_id, DatasetInput("native", "gs://b/x.csv", "d", rows=3))
    assert get_run(api, run_id)["inputs"]["dataset_inputs"][1] == {
        "tags": [],
        "dataset": {
            "name": "native",
            "digest": "d",
            "source_type": "gs",
            "source": "gs://b/x.csv",
            "profile": '{"num_rows": 3}',
        },
    }
    no_source = {"run_id": run_id, "datasets": [{"dataset": {"name": "x", "digest": "d"}}]}
    assert_error(
        api.post(f"{API}/runs/log-inputs", json=no_source), 400, "INVALID_PARAMETER_VALUE", "source"
    )


def log_model_row(
    tracking: TrackingService, experiment_id: str, run_id: str, model_id: str, deleted: bool = False
) -> None:
    """A logged model of the run, as the logged-models routes store one."""
    now = now_ms()
    row = {
        "id": model_id,
        "experiment_id": experiment_id,
        "source_run_id": run_id,
        "name": "model",
        "model_type": "",
        "status": "READY",
        "status_message": "",
        "artifact_path": f"{experiment_id}/models/{model_id}/artifacts",
        "owner": "",
        "created_at": now,
        "updated_at": now,
        "params": "{}",
        "tags": "{}",
        "deleted_at": now if deleted else None,
    }
    with tracking.store.write() as conn:
        conn.execute(logged_models.insert(), [row])


def test_a_runs_logged_models_are_its_outputs(
    api: Any, tracking: TrackingService, experiment_id: str, run_id: str
) -> None:
    for c in "abc":
        log_model_row(tracking, experiment_id, run_id, f"m-{c * 32}", deleted=c == "c")
    expected = [{"model_id": f"m-{c * 32}", "step": 0} for c in "ab"]
    assert get_run(api, run_id)["outputs"] == {"model_outputs": expected}


def test_log_model_keeps_mlflows_record_in_a_tag(
    api: Any, tracking: TrackingService, run_id: str
) -> None:
    first = {"artifact_path": "model", "flavors": {"python_function": {}}, "run_id": run_id}
    second = {**first, "artifact_path": "model-2"}
    for model in (first, second):
        post(api, "/runs/log-model", {"run_id": run_id, "model_json": json.dumps(model)})
    history = json.loads(tracking.get_run(run_id).tags["mlflow.log-model.history"])
    assert history == [first, second]
    bad = {"run_id": run_id, "model_json": "[1]"}
    assert_error(
        api.post(f"{API}/runs/log-model", json=bad), 400, "INVALID_PARAMETER_VALUE", "model_json"
    )


# -- metric history --------------------------------------------------------------------


def test_metric_history_pages(api: Any, tracking: TrackingService, run_id: str) -> None:
    tracking.log_metric_batch(
        run_id,
        MetricBatch(
            ["loss"] * 5,
            [5.0, 4.0, 3.0, 2.0, 1.0],
            [0, 1, 2, 3, 4],
            [10, 11, 12, 13, 14],
            [None] * 5,
        ),
    )
    url = f"{API}/metrics/get-history"
    whole = api.get(url, params={"run_id": run_id, "metric_key": "loss"}).json()
    assert whole == {
        "metrics": [
            {"key": "loss", "value": 5.0 - i, "timestamp": 10 + i, "step": i} for i in range(5)
        ]
    }
    pages, token = [], None
    while True:
        params = {"run_id": run_id, "metric_key": "loss", "max_results": 2}
        if token:
            params["page_token"] = token
        page = api.get(url, params=params).json()
        pages.append([m["step"] for m in page["metrics"]])
        token = page.get("next_page_token")
        if token is None:
            break
    assert pages == [[0, 1], [2, 3], [4]]
    missing = api.get(url, params={"run_id": run_id, "metric_key": "nope"})
    assert missing.json() == {"metrics": []}
    bad = api.get(url, params={"run_id": run_id, "metric_key": "loss", "page_token": "zz"})
    assert_error(bad, 400, "INVALID_PARAMETER_VALUE", "page_token")


# -- search ----------------------------------------------------------------------------


def search(api: Any, **request: Any) -> Any:
    return post(api, "/runs/search", request)


def names(answer: Any) -> list[str]:
    return [r["info"]["run_name"] for r in answer.get("runs", [])]


@pytest.fixture
def three_runs(api: Any, experiment_id: str) -> list[str]:
    ids = []
    for name, lr, score, team in (
        ("a", "0.1", 0.7, "risk"),
        ("b", "0.2", 0.9, "growth"),
        ("c", "0.3", 0.8, "risk"),
    ):
        run_id = create_run(api, experiment_id, name)["info"]["run_id"]
        post(
            api,
            "/runs/log-batch",
            {
                "run_id": run_id,
                "params": [pair("lr", lr)],
                "metrics": [{"key": "f1", "value": score, "timestamp": 1}],
                "tags": [pair("team", team)],
            },
        )
        ids.append(run_id)
    return ids


def test_search_filters_and_orders(api: Any, experiment_id: str, three_runs: list[str]) -> None:
    everyone = search(api, experiment_ids=[experiment_id])
    assert names(everyone) == ["c", "b", "a"]  # newest first
    assert "next_page_token" not in everyone
    run = everyone["runs"][0]
    assert run == get_run(api, run["info"]["run_id"])
    ids = [experiment_id]
    assert names(
        search(api, experiment_ids=ids, filter="metrics.f1 > 0.75", order_by=["metrics.f1"])
    ) == ["c", "b"]
    assert names(search(api, experiment_ids=ids, filter="params.lr = '0.2'")) == ["b"]
    assert names(
        search(api, experiment_ids=ids, filter="tags.team = 'risk'", order_by=["run_name"])
    ) == ["a", "c"]
    assert names(search(api, experiment_ids=ids, filter="attributes.run_name LIKE 'a%'")) == ["a"]
    assert names(
        search(api, experiment_ids=ids, filter="status = 'RUNNING' and params.lr != '0.1'")
    ) == ["c", "b"]
    found = search(
        api, experiment_ids=ids, filter=f"run_id IN ('{three_runs[0]}', '{three_runs[2]}')"
    )
    assert names(found) == ["c", "a"]
    assert names(search(api, experiment_ids=ids, order_by=["params.lr DESC"])) == ["c", "b", "a"]


def test_search_without_experiments_or_in_unknown_ones_finds_nothing(
    api: Any, three_runs: list[str]
) -> None:
    assert search(api) == {"runs": []}
    assert search(api, experiment_ids=["f" * 32, "nope"]) == {"runs": []}


def test_search_pages(api: Any, experiment_id: str, three_runs: list[str]) -> None:
    pages, token = [], None
    while True:
        request: dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": 2}
        if token:
            request["page_token"] = token
        page = search(api, **request)
        pages.append(names(page))
        token = page.get("next_page_token")
        if token is None:
            break
    assert pages == [["c", "b"], ["a"]]


def test_search_reads_plinths_smaller_pages_until_mlflows_is_full(
    api: Any,
    tracking: TrackingService,
    experiment_id: str,
    three_runs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plinth.server.mlflow import runs

    more = [create_run(api, experiment_id, f"d{i}")["info"]["run_id"] for i in range(3)]
    monkeypatch.setattr(runs, "MAX_PAGE", 2)  # Plinth's pages hold 2 runs
    first = search(api, experiment_ids=[experiment_id], max_results=5, order_by=["run_name"])
    assert names(first) == ["a", "b", "c", "d0", "d1"]
    rest = search(
        api,
        experiment_ids=[experiment_id],
        max_results=5,
        order_by=["run_name"],
        page_token=first["next_page_token"],
    )
    assert names(rest) == ["d2"]
    assert "next_page_token" not in rest
    # the outputs of many runs are read in slices of a page too
    log_model_row(tracking, experiment_id, more[1], "m-" + "d" * 32)
    again = search(api, experiment_ids=[experiment_id], max_results=5, order_by=["run_name"])
    outputs = [r["outputs"]["model_outputs"] for r in again["runs"]]
    assert outputs == [[], [], [], [], [{"model_id": "m-" + "d" * 32, "step": 0}]]


def test_search_finds_a_hostile_tag_value_exactly(api: Any, experiment_id: str) -> None:
    values = ["it's", "a\\'b", "' or '1'='1", "x') or (id is not null", 'q"uote', "back`tick", "%"]
    for i, value in enumerate(values):
        run_id = create_run(api, experiment_id, f"r{i}")["info"]["run_id"]
        post(api, "/runs/set-tag", {"run_id": run_id, "key": "note", "value": value})
    for i, value in enumerate(values):
        escaped = value.replace("\\", "\\\\").replace("'", "''")
        found = search(api, experiment_ids=[experiment_id], filter=f"tags.note = '{escaped}'")
        assert names(found) == [f"r{i}"], value


def test_search_finds_plinth_runs_params_as_mlflow_shows_them(
    api: Any, tracking: TrackingService, experiment_id: str
) -> None:
    run = tracking.create_run(experiment_id, "native")
    tracking.log_params(run.id, {"lr": 0.1})
    tracking.log_params(run.id, {"depth": 6}, group="hyper")
    ids = [experiment_id]
    assert names(search(api, experiment_ids=ids, filter="params.lr = '0.1'")) == ["native"]
    assert names(search(api, experiment_ids=ids, filter="params.hyper.depth = '6'")) == ["native"]
    assert names(search(api, experiment_ids=ids, filter="params.lr = '0.10'")) == []


def test_search_by_dataset(api: Any, experiment_id: str, three_runs: list[str]) -> None:
    dataset = {"name": "train-v1", "digest": "d1", "source_type": "local", "source": "/data/t.csv"}
    post(api, "/runs/log-inputs", {"run_id": three_runs[1], "datasets": [{"dataset": dataset}]})
    found = search(
        api,
        experiment_ids=[experiment_id],
        filter="dataset.name LIKE 'train%' and dataset.digest = 'd1'",
    )
    assert names(found) == ["b"]
    training = {"tags": [pair("mlflow.data.context", "training")], "dataset": dataset}
    post(api, "/runs/log-inputs", {"run_id": three_runs[2], "datasets": [training]})
    found = search(api, experiment_ids=[experiment_id], filter="dataset.context = 'training'")
    assert names(found) == ["c"]


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        ({"max_results": 50_001}, "max_results must be between 1 and 50,000"),
        ({"max_results": 0}, "max_results"),
        ({"filter": "metrics.a > 1 or metrics.b > 1"}, "AND only"),
        ({"filter": "params.a = 1"}, "quoted string"),
        ({"filter": "attributes.lifecycle_stage = 'active'"}, "lifecycle_stage"),
        ({"order_by": ["metrics.a SIDEWAYS"]}, "order_by term 1"),
        ({"run_view_type": "SOME"}, "view type"),
        ({"page_token": "@@@"}, "page_token"),
    ],
)
def test_a_bad_search_is_400_invalid_parameter_value(
    api: Any, experiment_id: str, request_: dict[str, Any], fragment: str
) -> None:
    response = api.post(f"{API}/runs/search", json={"experiment_ids": [experiment_id], **request_})
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", fragment)


def test_delete_restore_and_run_view_type(
    api: Any, tracking: TrackingService, experiment_id: str, three_runs: list[str]
) -> None:
    post(api, "/runs/delete", {"run_id": three_runs[0]})
    assert get_run(api, three_runs[0])["info"]["lifecycle_stage"] == "deleted"
    ids = [experiment_id]
    assert names(search(api, experiment_ids=ids)) == ["c", "b"]
    assert names(search(api, experiment_ids=ids, run_view_type="DELETED_ONLY")) == ["a"]
    assert names(search(api, experiment_ids=ids, run_view_type="ALL")) == ["c", "b", "a"]
    post(api, "/runs/restore", {"run_id": three_runs[0]})
    assert get_run(api, three_runs[0])["info"]["lifecycle_stage"] == "active"
    assert getattr(tracking.get_run(three_runs[0]), "deleted_at", 0) is None


# -- identity and permissions: the service's ------------------------------------------


def test_identity_comes_from_the_token_and_permissions_apply(tmp_path: Any) -> None:
    server = AuthServer(tmp_path / "auth")
    ann = server.user("ann", Role.EDITOR)
    bob = server.user("bob", Role.EDITOR)
    http = server.http
    assert http.post(f"{API}/runs/search", json={}).status_code == 401
    created = http.post(f"{API}/experiments/create", json={"name": "secret"}, headers=ann)
    experiment_id = created.json()["experiment_id"]
    body = {"experiment_id": experiment_id, "user_id": "bob", "tags": [pair("mlflow.user", "bob")]}
    run = http.post(f"{API}/runs/create", json=body, headers=ann).json()["run"]
    assert run["info"]["user_id"] == "ann"
    assert tags_of(run)["mlflow.user"] == "ann"
    run_id = run["info"]["run_id"]
    # private to ann: bob neither sees nor writes it
    response = http.get(f"{API}/runs/get", params={"run_id": run_id}, headers=bob)
    assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST")
    metric_body = {"run_id": run_id, "key": "a", "value": 1, "timestamp": 1}
    response = http.post(f"{API}/runs/log-metric", json=metric_body, headers=bob)
    assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST")
    search_body = {"experiment_ids": [experiment_id]}
    assert http.post(f"{API}/runs/search", json=search_body, headers=bob).json() == {"runs": []}
    assert http.post(f"{API}/experiments/search", json={}, headers=bob).json() == {
        "experiments": []
    }
    found = http.post(f"{API}/runs/search", json=search_body, headers=ann).json()
    assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]


# -- review fixes: batched search, all-or-nothing batches, shared names, model history --


def test_search_names_up_to_1000_experiments_read_in_a_few_statements(
    api: Any, tracking: TrackingService, experiment_id: str, three_runs: list[str]
) -> None:
    from sqlalchemy import event

    too_many = {"experiment_ids": [f"{i:032x}" for i in range(1001)]}
    response = api.post(f"{API}/runs/search", json=too_many)
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "1,001 given", "up to 1,000")
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    ids = [f"{i:032x}" for i in range(997)] + ["nope", "0", experiment_id]
    engine = tracking.store.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        found = search(api, experiment_ids=ids)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert sorted(names(found)) == ["a", "b", "c"]
    assert len(statements) < 20  # not one (or more) a named experiment


def test_a_failed_log_batch_writes_nothing(
    api: Any, tracking: TrackingService, experiment_id: str, run_id: str
) -> None:
    post(api, "/runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"})
    batch = {
        "run_id": run_id,
        "params": [pair("depth", "3"), pair("lr", "0.2")],
        "metrics": [metric("loss")],
        "tags": [pair("team", "risk"), pair("mlflow.runName", "other")],
    }
    response = api.post(f"{API}/runs/log-batch", json=batch)
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "'lr'")
    run = tracking.get_run(run_id)
    assert (run.params["default"], run.metrics, run.name) == ({"lr": "0.1"}, {}, "lgbm")
    assert "team" not in run.tags
    batch["params"] = [pair("depth", "3"), pair("lr", "0.1")]  # the retry, fixed
    post(api, "/runs/log-batch", batch)
    run = tracking.get_run(run_id)
    assert run.params["default"] == {"lr": "0.1", "depth": "3"}
    assert (run.metrics["loss"].count, run.tags["team"], run.name) == (1, "risk", "other")
    # an ended run takes no points: the batch's params and tags are not kept either
    tracking.end_run(run_id)
    late = {"run_id": run_id, "params": [pair("late", "1")], "metrics": [metric("loss")]}
    assert api.post(f"{API}/runs/log-batch", json=late).status_code >= 400
    assert "late" not in tracking.get_run(run_id).params["default"]


def test_renaming_to_a_taken_name_adds_a_suffix_as_runs_may_share_names(
    api: Any, tracking: TrackingService, experiment_id: str, run_id: str
) -> None:
    from plinth.errors import AlreadyExists

    create_run(api, experiment_id, "taken")
    renames = [
        ("/runs/set-tag", {"key": "mlflow.runName", "value": "taken"}),
        ("/runs/log-batch", {"tags": [pair("mlflow.runName", "taken")]}),
        ("/runs/update", {"run_name": "taken"}),
    ]
    for path, body in renames:
        tracking.rename_run(run_id, "lgbm")
        post(api, path, {"run_id": run_id, **body})
        name = get_run(api, run_id)["info"]["run_name"]
        assert name.startswith("taken-") and len(name) == len("taken-") + 6, path
    with pytest.raises(AlreadyExists):  # Plinth's own rename still refuses it
        tracking.rename_run(run_id, "taken")


def test_concurrent_log_models_keep_every_entry_and_mlflows_limit(
    api: Any, tracking: TrackingService, run_id: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def log(n: int) -> int:
        model = {"artifact_path": f"model-{n}", "run_id": run_id}
        body = {"run_id": run_id, "model_json": json.dumps(model)}
        return int(api.post(f"{API}/runs/log-model", json=body).status_code)

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(log, range(20))) == {200}
    history = json.loads(tracking.get_run(run_id).tags["mlflow.log-model.history"])
    assert sorted(m["artifact_path"] for m in history) == sorted(f"model-{n}" for n in range(20))
    big = {"artifact_path": "big", "run_id": run_id, "notes": "x" * 7000}
    response = api.post(
        f"{API}/runs/log-model", json={"run_id": run_id, "model_json": json.dumps(big)}
    )
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", "8,000")
    assert json.loads(tracking.get_run(run_id).tags["mlflow.log-model.history"]) == history


def test_a_logged_models_link_does_not_log_the_runs_points_again(api: Any, run_id: str) -> None:
    """MLflow 3's log_model sends the run's points at the model's step again, with the
    model's id: they are the same points, stored once; a new linked point is stored."""
    point = {"key": "auc", "value": 0.8, "timestamp": 1_000, "step": 0}
    post(api, "/runs/log-metric", {"run_id": run_id, **point})
    model = "m-" + "0" * 32
    linked = [
        {**point, "model_id": model},
        {"key": "auc", "value": 0.9, "timestamp": 2_000, "step": 0, "model_id": model},
        {"key": "loss", "value": "NaN", "timestamp": 3_000, "step": 0, "model_id": model},
    ]
    for _ in range(2):  # sent twice: still once
        post(api, "/runs/log-batch", {"run_id": run_id, "metrics": linked})

    def history(key: str) -> list[tuple[Any, int]]:
        answer = api.get(f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": key})
        assert answer.status_code == 200, answer.text
        return [(m["value"], m["timestamp"]) for m in answer.json()["metrics"]]

    assert history("auc") == [(0.8, 1_000), (0.9, 2_000)]
    assert len(history("loss")) == 1
