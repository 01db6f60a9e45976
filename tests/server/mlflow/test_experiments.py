"""MLflow's experiments routes: shapes, MLflow's error codes, search, the default "0"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Role
from plinth.config import load_settings
from plinth.errors import NotFound
from plinth.server.app import create_app
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import open_store
from plinth.tracking.service import TrackingService
from tests.backends import AuthServer

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

API = "/api/2.0/mlflow"


def assert_error(response: httpx.Response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"}
    assert body["error_code"] == code
    for fragment in fragments:
        assert fragment in body["message"]


def create(api: Any, name: str, **extra: Any) -> str:
    response = api.post(f"{API}/experiments/create", json={"name": name, **extra})
    assert response.status_code == 200, response.text
    return str(response.json()["experiment_id"])


def get(api: Any, experiment_id: str) -> dict[str, Any]:
    response = api.get(f"{API}/experiments/get", params={"experiment_id": experiment_id})
    assert response.status_code == 200, response.text
    return dict(response.json()["experiment"])


def test_create_and_get_answer_mlflows_shape(api: Any, tracking: TrackingService) -> None:
    tags = [{"key": "team", "value": "risk"}, {"key": "mlflow.note.content", "value": "churn"}]
    experiment_id = create(api, "churn", tags=tags, artifact_location="s3://ignored")
    found = get(api, experiment_id)
    created = found.pop("creation_time")
    assert isinstance(created, int)
    assert found == {
        "experiment_id": experiment_id,
        "name": "churn",
        "artifact_location": f"mlflow-artifacts:/{experiment_id}",
        "lifecycle_stage": "active",
        "last_update_time": created,
        "tags": [  # by key
            {"key": "mlflow.note.content", "value": "churn"},
            {"key": "team", "value": "risk"},
        ],
    }
    # an ordinary Plinth experiment: MLflow's note is its description
    plinth = tracking.get_experiment(experiment_id)
    assert (plinth.name, plinth.description, plinth.tags) == ("churn", "churn", {"team": "risk"})
    by_name = api.get(f"{API}/experiments/get-by-name", params={"experiment_name": "churn"})
    assert by_name.json() == {"experiment": {**found, "creation_time": created}}


def test_a_taken_name_is_400_resource_already_exists(api: Any) -> None:
    create(api, "churn")
    response = api.post(f"{API}/experiments/create", json={"name": "churn"})
    assert_error(response, 400, "RESOURCE_ALREADY_EXISTS", "'churn' already exists")


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": 3}, {"name": "x", "tags": [{"key": "k"}]}]
)
def test_a_bad_create_is_400_invalid_parameter_value(api: Any, body: dict[str, Any]) -> None:
    response = api.post(f"{API}/experiments/create", json=body)
    assert_error(response, 400, "INVALID_PARAMETER_VALUE")


def test_an_unknown_experiment_is_404_resource_does_not_exist(api: Any) -> None:
    experiment_id = create(api, "churn")
    for ref in ("0" * 32, "churn", "1", experiment_id.upper()):  # never by name
        response = api.get(f"{API}/experiments/get", params={"experiment_id": ref})
        assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST", "does not exist")
    for name in ("nope", experiment_id):  # never by id
        response = api.get(f"{API}/experiments/get-by-name", params={"experiment_name": name})
        assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST", repr(name))
    response = api.post(
        f"{API}/experiments/set-experiment-tag",
        json={"experiment_id": "f" * 32, "key": "a", "value": "b"},
    )
    assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST")


def test_the_default_experiment_0_is_made_by_a_write_never_by_a_read(
    api: Any, tracking: TrackingService
) -> None:
    unwritten = get(api, "0")  # MLflow's clients expect "0" to exist: an empty answer
    assert (unwritten["experiment_id"], unwritten["name"], unwritten["tags"]) == (
        "0",
        "Default",
        [],
    )
    by_name = api.get(f"{API}/experiments/get-by-name", params={"experiment_name": "Default"})
    assert by_name.json()["experiment"] == unwritten
    tag = {"experiment_id": "0", "key": "k", "value": "v"}
    for refused in (
        api.post(f"{API}/experiments/update", json={"experiment_id": "0", "new_name": "x"}),
        api.post(f"{API}/experiments/delete", json={"experiment_id": "0"}),
        api.post(f"{API}/experiments/delete-experiment-tag", json=tag),
    ):
        assert_error(refused, 404, "RESOURCE_DOES_NOT_EXIST", "'0'", "first run")
    with pytest.raises(NotFound):
        tracking.get_experiment("Default")  # nothing created by any of these
    assert search(api)["experiments"] == []

    made = api.post(f"{API}/runs/create", json={"experiment_id": "0"})
    assert made.status_code == 200, made.text
    first = get(api, "0")
    assert first["name"] == "Default"
    assert first["experiment_id"] == tracking.get_experiment("Default").id
    assert made.json()["run"]["info"]["experiment_id"] == first["experiment_id"]
    assert api.post(f"{API}/experiments/set-experiment-tag", json=tag).json() == {}
    assert get(api, "0")["experiment_id"] == first["experiment_id"]  # created once


def test_set_experiment_tag(api: Any, tracking: TrackingService) -> None:
    experiment_id = create(api, "churn")
    body = {"experiment_id": experiment_id, "key": "stage", "value": "dev"}
    assert api.post(f"{API}/experiments/set-experiment-tag", json=body).json() == {}
    body["value"] = "prod"
    api.post(f"{API}/experiments/set-experiment-tag", json=body)
    assert tracking.get_experiment(experiment_id).tags == {"stage": "prod"}
    assert get(api, experiment_id)["tags"] == [{"key": "stage", "value": "prod"}]


def search(api: Any, method: str = "POST", **request: Any) -> dict[str, Any]:
    if method == "POST":
        response = api.post(f"{API}/experiments/search", json=request)
    else:
        response = api.get(f"{API}/experiments/search", params=request)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_search_filters_orders_and_pages(api: Any, method: str) -> None:
    ids = {name: create(api, name) for name in ("b-churn", "a-churn", "fraud", "c-churn")}
    api.post(
        f"{API}/experiments/set-experiment-tag",
        json={"experiment_id": ids["a-churn"], "key": "team", "value": "risk"},
    )
    everything = search(api, method)
    # newest first, as in MLflow
    assert [e["name"] for e in everything["experiments"]] == [
        "c-churn",
        "fraud",
        "a-churn",
        "b-churn",
    ]
    assert "next_page_token" not in everything
    found = search(api, method, filter="name LIKE '%churn'", order_by=["name DESC"])
    assert [e["name"] for e in found["experiments"]] == ["c-churn", "b-churn", "a-churn"]
    tagged = search(api, method, filter="tags.team = 'risk'")
    assert [e["experiment_id"] for e in tagged["experiments"]] == [ids["a-churn"]]
    pages, token = [], None
    while True:
        request: dict[str, Any] = {"max_results": 3, "order_by": ["name"]}
        if token:
            request["page_token"] = token
        page = search(api, method, **request)
        pages.append([e["name"] for e in page["experiments"]])
        token = page.get("next_page_token")
        if token is None:
            break
    assert pages == [["a-churn", "b-churn", "c-churn"], ["fraud"]]


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        ({"max_results": 50_001}, "max_results must be between 1 and 50,000"),
        ({"max_results": 0}, "max_results"),
        ({"filter": "name = 'a' OR name = 'b'"}, "AND only"),
        ({"filter": "metrics.a > 1"}, "experiments are searched by"),
        ({"order_by": ["tags.x"]}, "cannot order experiments"),
        ({"view_type": "SOME"}, "view type 'SOME'"),
        ({"page_token": "not-a-token"}, "page_token"),
    ],
)
def test_a_bad_search_is_400_invalid_parameter_value(
    api: Any, request_: dict[str, Any], fragment: str
) -> None:
    response = api.post(f"{API}/experiments/search", json=request_)
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", fragment)


def test_search_answers_only_what_the_caller_may_see_by_going_through_the_service(
    api: Any,
) -> None:
    # the route lists through TrackingService.list_experiments: with authentication off
    # every experiment is visible, and the view it passes is the service's own default
    create(api, "churn")
    assert [e["name"] for e in search(api, view_type="ACTIVE_ONLY")["experiments"]] == ["churn"]
    assert [e["name"] for e in search(api, view_type=1)["experiments"]] == ["churn"]


def test_update_renames(api: Any, tracking: TrackingService) -> None:
    experiment_id = create(api, "churn")
    create(api, "taken")
    body = {"experiment_id": experiment_id, "new_name": "churn-v2"}
    assert api.post(f"{API}/experiments/update", json=body).json() == {}
    assert tracking.get_experiment(experiment_id).name == "churn-v2"
    response = api.post(
        f"{API}/experiments/update", json={"experiment_id": experiment_id, "new_name": "taken"}
    )
    assert_error(response, 400, "RESOURCE_ALREADY_EXISTS")


def test_delete_and_restore(api: Any) -> None:
    experiment_id = create(api, "churn")
    create(api, "fraud")
    body = {"experiment_id": experiment_id}
    assert api.post(f"{API}/experiments/delete", json=body).json() == {}
    assert get(api, experiment_id)["lifecycle_stage"] == "deleted"
    assert [e["name"] for e in search(api)["experiments"]] == ["fraud"]
    deleted = search(api, view_type="DELETED_ONLY")["experiments"]
    assert [e["name"] for e in deleted] == ["churn"]
    assert len(search(api, view_type="ALL")["experiments"]) == 2
    assert api.post(f"{API}/experiments/restore", json=body).json() == {}
    assert get(api, experiment_id)["lifecycle_stage"] == "active"
    response = api.post(f"{API}/experiments/delete", json={"experiment_id": "e" * 32})
    assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST")


def test_delete_experiment_tag(api: Any, tracking: TrackingService) -> None:
    experiment_id = create(api, "churn", tags=[{"key": "a", "value": "1"}])
    body = {"experiment_id": experiment_id, "key": "a"}
    assert api.post(f"{API}/experiments/delete-experiment-tag", json=body).json() == {}
    assert tracking.get_experiment(experiment_id).tags == {}


class _Server(AuthServer):
    """``AuthServer`` with new resources private or not."""

    def __init__(self, home: Path, private: bool) -> None:
        from fastapi.testclient import TestClient

        settings = load_settings(home=home, auth=True, private_by_default=private)
        self.http = TestClient(create_app(settings))
        self.store = open_store(settings.resolved_store_uri)
        self.auth = AuthService(self.store)


@pytest.mark.parametrize("private", [True, False], ids=["private", "public"])
def test_every_editor_logs_runs_to_the_shared_default(tmp_path: Path, private: bool) -> None:
    server = _Server(tmp_path / "server", private)
    with server.http as http:
        alice = server.user("alice", Role.EDITOR)
        bob = server.user("bob", Role.EDITOR)
        victor = server.user("victor", Role.VIEWER)

        def run_in_default(headers: dict[str, str]) -> httpx.Response:
            return http.post(f"{API}/runs/create", json={"experiment_id": "0"}, headers=headers)

        def read_default(headers: dict[str, str]) -> dict[str, Any]:
            answer = http.get(f"{API}/experiments/get?experiment_id=0", headers=headers)
            assert answer.status_code == 200, answer.text
            return dict(answer.json()["experiment"])

        assert read_default(alice)["experiment_id"] == "0"  # a read creates nothing
        error = run_in_default(victor)  # nor does a viewer's write
        assert_error(error, 403, "PERMISSION_DENIED", "editor role")
        tracking = TrackingService(server.store, ArtifactStore(str(tmp_path / "artifacts")))
        with pytest.raises(NotFound):
            tracking.get_experiment("Default")

        runs = {}
        for name, headers in (("alice", alice), ("bob", bob), ("alice", alice)):
            made = run_in_default(headers)
            assert made.status_code == 200, made.text
            runs[name] = made.json()["run"]["info"]
        default = read_default(bob)
        assert default["experiment_id"] == runs["alice"]["experiment_id"]
        assert runs["bob"]["experiment_id"] == default["experiment_id"]
        assert read_default(victor) == default
        for who in (alice, bob):  # each reads the other's run
            for info in runs.values():
                found = http.get(f"{API}/runs/get?run_id={info['run_id']}", headers=who)
                assert found.status_code == 200, found.text
        tag = {"experiment_id": "0", "key": "k", "value": "v"}
        ok = http.post(f"{API}/experiments/set-experiment-tag", json=tag, headers=bob)
        assert ok.status_code == 200, ok.text
        # the platform owns it: no user deletes it or changes its grants
        deleted = http.post(f"{API}/experiments/delete", json={"experiment_id": "0"}, headers=bob)
        assert_error(deleted, 403, "PERMISSION_DENIED")
        assert tracking.get_experiment("Default").owner == "plinth"
        assert everyone(server, default["experiment_id"]) == "editor"

        # a grant lost (the first writer stopped between creating and granting) is repaired
        server.auth.revoke_grant(Kind.EXPERIMENT, default["experiment_id"], "everyone", "*")
        made = run_in_default(bob)  # the repair needs no grant of the caller's
        assert made.status_code == 200, made.text
        assert made.json()["run"]["info"]["experiment_id"] == default["experiment_id"]
        assert everyone(server, default["experiment_id"]) == "editor"
    server.store.dispose()


def everyone(server: AuthServer, experiment_id: str) -> str | None:
    found = server.auth.list_grants(Kind.EXPERIMENT, experiment_id)
    return next((g.level for g in found if g.grantee_type == "everyone"), None)
