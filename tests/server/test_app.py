"""The HTTP API: routes, the error shape and statuses, body limits, artifacts, NaN in JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import plinth
from plinth.api import endpoints_of
from plinth.config import load_settings
from plinth.server.app import create_app
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import open_store
from plinth.tracking.service import TrackingService
from tests.backends import running_server

# starlette.testclient warns once, on import, that it prefers httpx2 over httpx
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

API = "/api/v1"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(load_settings(home=tmp_path / "server"))) as client:
        yield client


@pytest.fixture
def run_id(api: Any) -> str:
    response = api.post(f"{API}/runs", json={"experiment": "churn", "name": "lgbm"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def assert_error(response: httpx.Response, status: int, code: str, *fragments: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error_code", "message"}
    assert body["error_code"] == code
    for fragment in fragments:
        assert fragment in body["message"]
    return str(body["message"])


# -- health and the OpenAPI document ---------------------------------------------------


@pytest.mark.parametrize("path", ["/health", f"{API}/health"])
def test_health(api: Any, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": plinth.__version__}


def test_the_openapi_document_lists_every_tracking_route(api: Any) -> None:
    document = api.get(f"{API}/openapi.json").json()
    assert document["info"]["version"] == plinth.__version__
    paths = document["paths"]
    declared = endpoints_of(TrackingService)
    assert len(declared) > 10
    for ep in declared:
        operation = paths[API + ep.path][ep.method.lower()]
        assert operation["tags"] == ["tracking"]
    content = paths[f"{API}/runs/{{run_id}}/artifacts/content"]
    assert {"get", "put"} <= set(content)


def test_a_required_query_parameter_is_required_in_the_document_and_the_route(
    api: Any, run_id: str
) -> None:
    document = api.get(f"{API}/openapi.json").json()
    parameters = document["paths"][f"{API}/runs/{{run_id}}/metric-history"]["get"]["parameters"]
    assert {p["name"]: p["required"] for p in parameters} == {"run_id": True, "key": True}
    assert_error(api.get(f"{API}/runs/{run_id}/metric-history"), 422, "INVALID_ARGUMENT", "key")
    assert_error(api.delete(f"{API}/runs/{run_id}/tags"), 422, "INVALID_ARGUMENT", "key")


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/runs/nope", None),
        ("POST", "/runs/nope/params", {"params": {"lr": 0.1}}),
        ("POST", "/runs/nope/tags", {"tags": {"a": "b"}}),
        ("POST", "/runs/nope/end", {}),
        ("GET", "/runs/nope/artifacts", None),
        ("GET", "/runs/nope/artifacts/content?path=model.pkl", None),
    ],
)
def test_an_unknown_run_is_404_not_found(api: Any, method: str, path: str, body: Any) -> None:
    response = api.request(method, API + path, json=body)
    assert_error(response, 404, "NOT_FOUND", "run 'nope' does not exist")


def test_an_unknown_experiment_is_404_not_found(api: Any) -> None:
    assert_error(api.get(f"{API}/experiments/nope"), 404, "NOT_FOUND", "experiment 'nope'")


def test_a_duplicate_experiment_is_409_already_exists(api: Any) -> None:
    assert api.post(f"{API}/experiments", json={"name": "churn"}).status_code == 200
    response = api.post(f"{API}/experiments", json={"name": "churn"})
    assert_error(response, 409, "ALREADY_EXISTS", "'churn' already exists")


def test_overwriting_a_param_is_409_conflict(api: Any, run_id: str) -> None:
    url = f"{API}/runs/{run_id}/params"
    assert api.post(url, json={"params": {"lr": 0.1}}).status_code == 200
    assert api.post(url, json={"params": {"lr": 0.1}}).status_code == 200  # the same value is fine
    assert_error(api.post(url, json={"params": {"lr": 0.2}}), 409, "CONFLICT", "default.lr", "0.2")


def test_a_malformed_filter_is_422_with_the_position(api: Any) -> None:
    response = api.post(f"{API}/runs/search", json={"filter": "metrics.f1 > 0.8 and"})
    assert_error(response, 422, "INVALID_ARGUMENT", "filter: at position 21")
    response = api.post(f"{API}/runs/search", json={"filter": "metrics.f1 > 0.8 # 1"})
    assert_error(response, 422, "INVALID_ARGUMENT", "position 18", "'#'")


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"name": 5}, ["body.name", "string"]),
        ({"name": "x", "tags": ["a"]}, ["body.tags"]),
        ({"description": "no name"}, ["body.name", "required"]),
        ({"name": "x", "colour": "blue"}, ["body.colour", "not permitted"]),
        ([1, 2], ["body"]),
    ],
    ids=["wrong-type", "wrong-container", "missing-field", "extra-field", "not-an-object"],
)
def test_an_invalid_body_is_422_invalid_argument(api: Any, body: Any, fragments: list[str]) -> None:
    response = api.post(f"{API}/experiments", json=body)
    assert_error(response, 422, "INVALID_ARGUMENT", "invalid request", *fragments)
    assert api.get(f"{API}/experiments").json()["items"] == []


def test_a_nested_body_is_validated_too(api: Any, run_id: str) -> None:
    batch = {
        "keys": ["f1"],
        "values": ["high"],
        "steps": [0],
        "timestamps": [0],
        "is_best": [False],
    }
    response = api.post(f"{API}/runs/{run_id}/metrics", json={"batch": batch})
    assert_error(response, 422, "INVALID_ARGUMENT", "body.batch.values.0")


def test_an_invalid_query_parameter_is_422(api: Any) -> None:
    response = api.get(f"{API}/experiments", params={"max_results": "many"})
    assert_error(response, 422, "INVALID_ARGUMENT", "query.max_results")


def test_invalid_json_is_422(api: Any) -> None:
    response = api.post(
        f"{API}/experiments", content=b'{"name": "x",', headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "INVALID_ARGUMENT", "JSON")


def test_an_unknown_route_is_a_json_404(api: Any) -> None:
    assert_error(api.get(f"{API}/nothing/here"), 404, "NOT_FOUND")
    assert_error(api.get("/nothing-here"), 404, "NOT_FOUND")


def test_a_wrong_method_is_a_json_405(api: Any) -> None:
    response = api.delete(f"{API}/experiments")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "allow" in response.headers


@pytest.mark.parametrize("path", [f"{API}/features/online", f"{API}/experiments"])
def test_json_nested_a_thousand_deep_is_422(api: Any, path: str) -> None:
    deep = "[" * 1000 + "]" * 1000
    body = f'{{"name": {deep}, "features": ["g:f"], "entity_rows": {deep}}}'
    response = api.post(path, content=body, headers={"content-type": "application/json"})
    assert_error(response, 422, "INVALID_ARGUMENT", "too deeply")


def test_a_body_that_is_not_utf8_is_422_invalid_argument(api: Any) -> None:
    response = api.post(
        f"{API}/experiments", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "INVALID_ARGUMENT", "not valid JSON", "UTF-8")


def test_every_error_code_is_in_the_readme() -> None:
    from plinth.errors import ERRORS_BY_CODE

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("| status | error_code |") :]
    for code, cls in ERRORS_BY_CODE.items():
        assert f"| {cls.http_status} | `{code}` |" in table, code


class _Unreachable(TrackingService):
    def get_experiment(self, experiment: str) -> Any:
        from plinth.errors import Unavailable

        uri = "postgresql+psycopg://plinth:***@db.internal:5432/plinth"
        raise Unavailable(f"metadata store {uri} is unavailable: timeout", "the metadata store")


def test_an_unavailable_dependency_is_named_and_its_address_kept_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    settings = load_settings(home=tmp_path)
    broken = _Unreachable(
        open_store(settings.resolved_store_uri), ArtifactStore(settings.resolved_artifact_uri)
    )
    with TestClient(create_app(settings, broken)) as client:
        response = client.get(f"{API}/experiments/churn")
    message = assert_error(response, 503, "UNAVAILABLE", "the metadata store is unavailable")
    assert "db.internal" not in message
    incident = message.rsplit(" ", 1)[1].rstrip(")")
    logged = [r.getMessage() for r in caplog.records if incident in r.getMessage()]
    assert logged and "db.internal" in logged[0]


def test_an_error_message_does_not_show_the_servers_folders(api: Any, run_id: str) -> None:
    response = api.get(f"{API}/runs/{run_id}/artifacts/content", params={"path": "model/x.bin"})
    message = assert_error(response, 404, "NOT_FOUND", "model/x.bin", "<artifact store>")
    assert "/server/" not in message and "file://" not in message


class _Broken(TrackingService):
    def get_experiment(self, experiment: str) -> Any:
        raise RuntimeError("the disk is on fire")


def test_an_unexpected_error_is_a_json_500_without_internals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    settings = load_settings(home=tmp_path)
    broken = _Broken(
        open_store(settings.resolved_store_uri), ArtifactStore(settings.resolved_artifact_uri)
    )
    with TestClient(create_app(settings, broken), raise_server_exceptions=False) as client:
        response = client.get(f"{API}/experiments/churn")
    assert_error(response, 500, "INTERNAL_ERROR", "see the server log")
    assert "RuntimeError" not in response.text  # details stay in the log, under the reference
    incident = response.json()["message"].split()[2].rstrip(":")
    assert any(incident in record.getMessage() for record in caplog.records)


# -- NaN and infinities ----------------------------------------------------------------


def test_non_finite_metric_values_travel_as_strings(api: Any, run_id: str) -> None:
    batch = {
        "keys": ["loss"] * 4,
        "values": ["NaN", "Infinity", "-Infinity", 0.5],
        "steps": [0, 1, 2, 3],
        "timestamps": [1_700_000_000_000 + i for i in range(4)],
        "is_best": [False] * 4,
    }
    assert api.post(f"{API}/runs/{run_id}/metrics", json={"batch": batch}).status_code == 200
    response = api.get(f"{API}/runs/{run_id}/metric-history", params={"key": "loss"})
    assert response.status_code == 200
    assert [p["value"] for p in response.json()] == ["NaN", "Infinity", "-Infinity", 0.5]
    assert "NaN" in response.text and "null" not in response.text  # valid JSON, nothing lost
    summary = api.get(f"{API}/runs/{run_id}").json()["metrics"]["loss"]
    assert (summary["min"], summary["max"], summary["last"]) == ("-Infinity", "Infinity", 0.5)


# -- over a real server: body limits and artifacts -------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with running_server(tmp_path / "server", max_request_bytes=1000) as url:
        yield url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server + API, timeout=30) as client:
        yield client


def _json_bytes(size: int) -> bytes:
    return json.dumps({"name": "big", "description": "d" * size}).encode()


def test_a_body_over_the_limit_is_413_by_its_content_length(http: httpx.Client) -> None:
    body = _json_bytes(2000)
    response = http.post("/experiments", content=body, headers={"content-type": "application/json"})
    assert "content-length" in response.request.headers
    assert_error(response, 413, "PAYLOAD_TOO_LARGE", "1000 bytes")
    assert http.get("/experiments").json()["items"] == []


def test_a_chunked_body_over_the_limit_is_413(http: httpx.Client) -> None:
    body = _json_bytes(2000)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    response = http.post(
        "/experiments", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "PAYLOAD_TOO_LARGE", "1000 bytes")
    assert http.get("/experiments").json()["items"] == []


def test_a_chunked_body_under_the_limit_is_served(http: httpx.Client) -> None:
    body = _json_bytes(500)
    response = http.post(
        "/experiments",
        content=iter([body[:10], body[10:]]),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "d" * 500


def test_an_artifact_round_trips_and_is_exempt_from_the_body_limit(http: httpx.Client) -> None:
    run_id = http.post("/runs", json={"experiment": "churn"}).json()["id"]
    content = bytes(range(256)) * 40  # 10 KiB, over the 1000-byte limit for JSON bodies
    url = f"/runs/{run_id}/artifacts/content"
    upload = http.put(url, params={"path": "model/weights.bin"}, content=content)
    assert upload.status_code == 204, upload.text
    download = http.get(url, params={"path": "model/weights.bin"})
    assert download.status_code == 200
    assert download.content == content
    listed = http.get(f"/runs/{run_id}/artifacts", params={"path": "model"}).json()
    assert listed == [{"path": "model/weights.bin", "is_dir": False, "size": len(content)}]
    assert_error(http.get(url, params={"path": "model/other.bin"}), 404, "NOT_FOUND")
    assert_error(
        http.put("/runs/nope/artifacts/content", params={"path": "x"}, content=b"x"),
        404,
        "NOT_FOUND",
    )


def test_only_the_file_routes_escape_the_body_limit(http: httpx.Client) -> None:
    big = b"x" * 5000  # over the 1000-byte limit
    for path in ("/models/content", "/experiments/content", "/runs/search/content"):
        assert_error(http.post(path, content=big), 413, "PAYLOAD_TOO_LARGE")


def test_an_artifact_a_file_and_a_folder_would_share_is_409_and_leaves_no_debris(
    http: httpx.Client, tmp_path: Path
) -> None:
    run_id = http.post("/runs", json={"experiment": "churn"}).json()["id"]
    url = f"/runs/{run_id}/artifacts/content"
    assert (
        http.put(url, params={"path": "model/weights.bin"}, content=b"weights").status_code == 204
    )
    for path in ("model", "model/weights.bin/inner"):
        response = http.put(url, params={"path": path}, content=b"clash")
        assert_error(response, 409, "CONFLICT", "share a name")
    assert http.get(url, params={"path": "model/weights.bin"}).content == b"weights"
    stored = [p.name for p in (tmp_path / "server" / "artifacts").rglob("*") if p.is_file()]
    assert stored == ["weights.bin"]


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "../../../../x",
        "a/../../x",
        "/etc/x",
        "a\\..\\x",
        "",
        "a/" + "é" * 101,
        "a/" + "x" * 300,
    ],
)
def test_an_artifact_path_outside_the_run_is_422_and_writes_nothing(
    http: httpx.Client, tmp_path: Path, path: str
) -> None:
    run_id = http.post("/runs", json={"experiment": "churn"}).json()["id"]
    before = sorted(p for p in tmp_path.rglob("*") if not p.name.startswith("plinth.db"))
    url = f"/runs/{run_id}/artifacts/content"
    assert_error(http.put(url, params={"path": path}, content=b"escaped"), 422, "INVALID_ARGUMENT")
    assert_error(http.get(url, params={"path": path}), 422, "INVALID_ARGUMENT")
    after = sorted(p for p in tmp_path.rglob("*") if not p.name.startswith("plinth.db"))
    assert after == before
