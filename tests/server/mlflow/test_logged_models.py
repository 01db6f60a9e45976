"""MLflow's logged-model routes, driven the way MLflow 3's ``log_model`` calls them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.auth.types import Kind, Role
from plinth.config import load_settings
from plinth.server.app import create_app
from tests.backends import AuthServer

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

MLFLOW = "/api/2.0/mlflow"
MODELS = f"{MLFLOW}/logged-models"
PROXY = "/api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(load_settings(home=tmp_path / "server"))) as client:
        yield client


def new_run(api: Any, headers: dict[str, str] | None = None) -> tuple[str, str]:
    made = api.post("/api/v1/runs", json={"experiment": "churn"}, headers=headers).json()
    return made["experiment_id"], made["id"]


def error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code
    return str(response.json()["message"])


def test_log_model_as_mlflow_3_calls_it(api: Any) -> None:
    experiment, run = new_run(api)
    created = api.post(
        MODELS,
        json={
            "experiment_id": experiment,
            "name": "model",
            "model_type": "",
            "source_run_id": run,
            "params": [{"key": "C", "value": "1.0"}, {"key": "empty"}],
            "tags": [{"key": "mlflow.user", "value": "alice"}],
        },
    )
    assert created.status_code == 200, created.text
    info = created.json()["model"]["info"]
    model_id = info["model_id"]
    assert info["status"] == "LOGGED_MODEL_PENDING"
    assert info["experiment_id"] == experiment and info["source_run_id"] == run
    assert info["artifact_uri"] == f"mlflow-artifacts:/{experiment}/models/{model_id}/artifacts"
    assert info["tags"] == [{"key": "mlflow.user", "value": "alice"}]
    assert isinstance(info["creation_timestamp_ms"], int)
    assert created.json()["model"]["data"]["params"] == [
        {"key": "C", "value": "1.0"},
        {"key": "empty", "value": ""},
    ]

    outputs = {"run_id": run, "models": [{"model_id": model_id, "step": "0"}]}
    assert api.post(f"{MLFLOW}/runs/outputs", json=outputs).json() == {}
    files = info["artifact_uri"].removeprefix("mlflow-artifacts:/")
    for name, content in (("MLmodel", b"artifact_path: model\n"), ("model.pkl", b"\x80\x05.")):
        assert api.put(f"{PROXY}/{files}/{name}", content=content).status_code == 200

    done = api.patch(
        f"{MODELS}/{model_id}", json={"model_id": model_id, "status": "LOGGED_MODEL_READY"}
    )
    assert done.status_code == 200, done.text
    assert done.json()["model"]["info"]["status"] == "LOGGED_MODEL_READY"
    got = api.get(f"{MODELS}/{model_id}").json()["model"]
    assert got["info"]["status"] == "LOGGED_MODEL_READY"
    assert got == done.json()["model"]
    # and the number form of the enum
    assert (
        api.patch(f"{MODELS}/{model_id}", json={"status": 3}).json()["model"]["info"]["status"]
        == "LOGGED_MODEL_UPLOAD_FAILED"
    )


def test_tags_params_search_and_delete(api: Any) -> None:
    experiment, _ = new_run(api)
    ids = []
    for name, kind in (("a", "sklearn"), ("b", "xgboost")):
        body = {"experiment_id": experiment, "name": name, "model_type": kind}
        ids.append(api.post(MODELS, json=body).json()["model"]["info"]["model_id"])
    tagged = api.patch(
        f"{MODELS}/{ids[0]}/tags", json={"tags": [{"key": "team", "value": "growth"}]}
    ).json()["model"]["info"]["tags"]
    assert tagged == [{"key": "team", "value": "growth"}]
    assert (
        api.post(f"{MODELS}/{ids[0]}/params", json={"params": [{"key": "C", "value": "1"}]}).json()
        == {}
    )
    changed = api.post(f"{MODELS}/{ids[0]}/params", json={"params": [{"key": "C", "value": "2"}]})
    assert "immutable" in error(changed, 400, "INVALID_PARAMETER_VALUE")

    def search(**body: Any) -> list[str]:
        found = api.post(f"{MODELS}/search", json={"experiment_ids": [experiment], **body})
        assert found.status_code == 200, found.text
        return [m["info"]["name"] for m in found.json()["models"]]

    assert search(filter="tags.team = 'growth'") == ["a"]
    assert search(filter="model_type = 'xgboost'") == ["b"]
    assert search(order_by=[{"field_name": "name", "ascending": True}]) == ["a", "b"]
    assert search(order_by=[{"field_name": "name", "ascending": False}]) == ["b", "a"]
    page = api.post(
        f"{MODELS}/search",
        json={
            "experiment_ids": [experiment],
            "max_results": 1,
            "order_by": [{"field_name": "name"}],
        },
    ).json()
    assert [m["info"]["name"] for m in page["models"]] == ["a"] and page["next_page_token"]
    assert search(order_by=[{"field_name": "name"}], page_token=page["next_page_token"]) == ["b"]
    bad = api.post(
        f"{MODELS}/search", json={"experiment_ids": [experiment], "filter": "metrics.auc > 1"}
    )
    error(bad, 400, "INVALID_PARAMETER_VALUE")
    with_datasets = {"experiment_ids": [experiment], "datasets": [{"dataset_name": "test"}]}
    error(api.post(f"{MODELS}/search", json=with_datasets), 400, "INVALID_PARAMETER_VALUE")

    assert api.delete(f"{MODELS}/{ids[0]}/tags/team").json() == {}
    error(api.delete(f"{MODELS}/{ids[0]}/tags/team"), 404, "RESOURCE_DOES_NOT_EXIST")
    deleted = api.request("DELETE", f"{MODELS}/{ids[1]}", json={"model_id": ids[1]})
    assert deleted.status_code == 200 and deleted.json() == {}
    error(api.get(f"{MODELS}/{ids[1]}"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert search() == ["a"]


def test_mlflows_default_experiment_is_plinths_default(api: Any) -> None:
    made = api.post(MODELS, json={"experiment_id": 0, "name": "first"}).json()["model"]["info"]
    default = api.get("/api/v1/experiments/Default").json()["id"]
    assert made["experiment_id"] == default
    again = api.post(MODELS, json={"experiment_id": "0"}).json()["model"]["info"]
    assert again["experiment_id"] == default
    found = api.post(f"{MODELS}/search", json={"experiment_ids": ["0"]}).json()["models"]
    assert {m["info"]["model_id"] for m in found} == {made["model_id"], again["model_id"]}


def test_bad_requests_have_mlflow_codes(api: Any) -> None:
    experiment, run = new_run(api)
    missing = f"m-{'0' * 32}"
    error(api.get(f"{MODELS}/{missing}"), 404, "RESOURCE_DOES_NOT_EXIST")
    error(api.get(f"{MODELS}/not-a-model"), 400, "INVALID_PARAMETER_VALUE")
    error(api.post(MODELS, json={"name": "no experiment"}), 400, "INVALID_PARAMETER_VALUE")
    error(api.post(MODELS, json={"experiment_id": "f" * 32}), 404, "RESOURCE_DOES_NOT_EXIST")
    model_id = api.post(MODELS, json={"experiment_id": experiment}).json()["model"]["info"][
        "model_id"
    ]
    for status in ("LOGGED_MODEL_PENDING", "READY", "7"):
        error(
            api.patch(f"{MODELS}/{model_id}", json={"status": status}),
            400,
            "INVALID_PARAMETER_VALUE",
        )
    outputs = {"run_id": "f" * 32, "models": [{"model_id": model_id}]}
    error(api.post(f"{MLFLOW}/runs/outputs", json=outputs), 404, "RESOURCE_DOES_NOT_EXIST")
    error(api.get(f"{MLFLOW}/artifacts/list"), 400, "INVALID_PARAMETER_VALUE")
    listed = api.get(f"{MLFLOW}/artifacts/list", params={"run_uuid": run}).json()
    assert listed == {"root_uri": f"mlflow-artifacts:/{experiment}/{run}/artifacts", "files": []}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AuthServer]:
    made = AuthServer(tmp_path / "server")
    with made.http:
        yield made


def test_a_viewer_sees_models_but_does_not_change_them(server: AuthServer) -> None:
    alice = server.user("alice", Role.EDITOR)
    victor = server.user("victor", Role.VIEWER)
    mallory = server.user("mallory", Role.EDITOR)
    http = server.http
    experiment, run = new_run(http, alice)
    made = http.post(
        MODELS, json={"experiment_id": experiment, "source_run_id": run}, headers=alice
    )
    assert made.status_code == 200, made.text
    model_id = made.json()["model"]["info"]["model_id"]
    assert made.json()["model"]["info"]["tags"] == []

    error(http.get(f"{MODELS}/{model_id}", headers=mallory), 404, "RESOURCE_DOES_NOT_EXIST")
    error(
        http.post(MODELS, json={"experiment_id": experiment}, headers=mallory),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    server.auth.grant(Kind.EXPERIMENT, experiment, "user", "victor", "viewer")
    assert http.get(f"{MODELS}/{model_id}", headers=victor).status_code == 200
    found = http.post(f"{MODELS}/search", json={"experiment_ids": [experiment]}, headers=victor)
    assert [m["info"]["model_id"] for m in found.json()["models"]] == [model_id]
    for method, path, body in (
        ("POST", MODELS, {"experiment_id": experiment}),
        ("PATCH", f"{MODELS}/{model_id}", {"status": "LOGGED_MODEL_READY"}),
        ("PATCH", f"{MODELS}/{model_id}/tags", {"tags": [{"key": "k", "value": "v"}]}),
        ("POST", f"{MODELS}/{model_id}/params", {"params": [{"key": "k", "value": "v"}]}),
        ("DELETE", f"{MODELS}/{model_id}", None),
        ("POST", f"{MLFLOW}/runs/outputs", {"run_id": run, "models": [{"model_id": model_id}]}),
    ):
        answer = http.request(method, path, json=body, headers=victor)
        error(answer, 403, "PERMISSION_DENIED")


def test_a_search_names_at_most_1000_experiments(api: Any) -> None:
    experiment, _ = new_run(api)
    many = {"experiment_ids": [experiment] * 1001}
    message = error(api.post(f"{MODELS}/search", json=many), 400, "INVALID_PARAMETER_VALUE")
    assert "1,001" in message and "at most 1,000" in message
    found = api.post(f"{MODELS}/search", json={"experiment_ids": [experiment] * 1000})
    assert found.status_code == 200, found.text
    # an id, never a name; and "0" is not created by a search
    for ref in ("churn", "0"):
        body = {"experiment_ids": [experiment, ref]}
        error(api.post(f"{MODELS}/search", json=body), 404, "RESOURCE_DOES_NOT_EXIST")


def test_another_users_private_run_reads_as_a_missing_one(server: AuthServer) -> None:
    alice = server.user("alice", Role.EDITOR)
    mallory = server.user("mallory", Role.EDITOR)
    http = server.http
    _, hidden = new_run(http, alice)
    own = http.post("/api/v1/runs", json={"experiment": "mine"}, headers=mallory).json()
    messages = []
    for source in (hidden, "f" * 32):
        body = {"experiment_id": own["experiment_id"], "source_run_id": source}
        answer = http.post(MODELS, json=body, headers=mallory)
        messages.append(error(answer, 404, "RESOURCE_DOES_NOT_EXIST").replace(source, "ID"))
    assert messages[0] == messages[1]
