"""MLflow's artifact proxy: run artifacts, logged-model files and registered versions'
packages, streamed both ways, with Plinth's permissions and path rules."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plinth.auth.types import Kind, Role
from plinth.config import Settings, load_settings
from plinth.server.app import create_app
from plinth.store.artifacts import ArtifactStore
from tests.backends import AuthServer, local_client, running_server

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

PROXY = "/api/2.0/mlflow-artifacts/artifacts"
MLFLOW = "/api/2.0/mlflow"
LIMIT = 64 * 1024  # the JSON body limit of these servers


def settings_for(home: Path, **more: Any) -> Settings:
    return load_settings(home=home, max_request_bytes=LIMIT, **more)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path / "server")


@pytest.fixture
def api(settings: Settings) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings)) as client:
        yield client


def new_run(api: Any, headers: dict[str, str] | None = None) -> tuple[str, str]:
    made = api.post("/api/v1/runs", json={"experiment": "churn"}, headers=headers)
    assert made.status_code == 200, made.text
    return made.json()["experiment_id"], made.json()["id"]


def assert_mlflow_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code
    return str(response.json()["message"])


# -- run artifacts ---------------------------------------------------------------------------


def test_a_run_artifact_goes_up_and_down_and_is_a_plinth_artifact(api: Any) -> None:
    experiment, run = new_run(api)
    base = f"{PROXY}/{experiment}/{run}/artifacts"
    put = api.put(f"{base}/model/MLmodel", content=b"flavors: {}\n")
    assert put.status_code == 200, put.text
    assert api.put(f"{base}/notes.txt", content=b"hello").status_code == 200

    got = api.get(f"{base}/model/MLmodel")
    assert got.status_code == 200 and got.content == b"flavors: {}\n"
    # the same file through Plinth's own API
    plinth = api.get(f"/api/v1/runs/{run}/artifacts/content", params={"path": "model/MLmodel"})
    assert plinth.content == b"flavors: {}\n"

    root = api.get(PROXY, params={"path": f"{experiment}/{run}/artifacts"}).json()["files"]
    assert root == [
        {"path": "model", "is_dir": True},  # no file_size for a folder (MLflow's shape)
        {"path": "notes.txt", "is_dir": False, "file_size": 5},
    ]
    inner = api.get(PROXY, params={"path": f"{experiment}/{run}/artifacts/model"}).json()
    assert inner["files"] == [{"path": "MLmodel", "is_dir": False, "file_size": 12}]

    listed = api.get(f"{MLFLOW}/artifacts/list", params={"run_id": run, "path": "model"}).json()
    assert listed == {
        "root_uri": f"mlflow-artifacts:/{experiment}/{run}/artifacts",
        "files": [{"path": "model/MLmodel", "is_dir": False, "file_size": 12}],
    }

    assert api.delete(f"{base}/model").status_code == 200
    assert_mlflow_error(api.get(f"{base}/model/MLmodel"), 404, "RESOURCE_DOES_NOT_EXIST")
    left = api.get(PROXY, params={"path": f"{experiment}/{run}/artifacts"}).json()["files"]
    assert [f["path"] for f in left] == ["notes.txt"]


def test_a_large_upload_is_streamed_past_the_json_limit(api: Any) -> None:
    experiment, run = new_run(api)
    block = bytes(range(256)) * 4096  # 1 MiB
    blocks = 5

    def body() -> Iterator[bytes]:  # chunked: the server never sees a length up front
        for _ in range(blocks):
            yield block

    url = f"{PROXY}/{experiment}/{run}/artifacts/weights.bin"
    assert api.put(url, content=body()).status_code == 200
    got = api.get(url)
    assert len(got.content) == blocks * len(block) > 10 * LIMIT
    assert got.content == block * blocks
    # the JSON routes keep their limit
    too_big = api.post(f"{MLFLOW}/logged-models", content=b"x" * (LIMIT + 1))
    assert too_big.status_code in (400, 413)


def test_an_upload_that_breaks_off_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "server"
    with running_server(home, max_request_bytes=LIMIT) as url:
        made = httpx.post(f"{url}/api/v1/runs", json={"experiment": "churn"}).json()
        experiment, run = made["experiment_id"], made["id"]
        folder = home / "artifacts" / experiment / run / "artifacts"
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(
                f"PUT {PROXY}/{experiment}/{run}/artifacts/big.bin HTTP/1.1\r\n"
                f"Host: {host}\r\nContent-Length: 1000000\r\n\r\n".encode()
                + b"x" * 100_000
            )
            wait_for(lambda: any(folder.glob(".big.bin.*")), "the upload to start")
        wait_for(lambda: not any(folder.glob(".big.bin.*")), "the broken upload to be dropped")
        assert not (folder / "big.bin").exists()
        listed = httpx.get(f"{url}{PROXY}", params={"path": f"{experiment}/{run}/artifacts"})
        assert listed.json()["files"] == []


def wait_for(condition: Any, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.01)


LEAVING = (
    "{e}/{r}/artifacts/%2E%2E/%2E%2E/other/x",
    "{e}/{r}/artifacts/a/%2e%2e/b",
    "{e}/{r}/artifacts//x",
    "{e}/{r}/artifacts/%2E/x",
    "%2F{e}/{r}/artifacts/x",
    "{e}/{r}/artifacts/a%5Cb",
)


def test_a_path_that_leaves_its_place_is_refused(api: Any, settings: Settings) -> None:
    experiment, run = new_run(api)
    for path in LEAVING:
        url = f"{PROXY}/" + path.format(e=experiment, r=run)
        for method in ("GET", "PUT", "DELETE"):
            answer = api.request(method, url, content=b"x" if method == "PUT" else None)
            assert_mlflow_error(answer, 400, "INVALID_PARAMETER_VALUE")
    for listed in (f"{experiment}/{run}/artifacts/../../x", f"/{experiment}/{run}/artifacts"):
        answer = api.get(PROXY, params={"path": listed})
        assert_mlflow_error(answer, 400, "INVALID_PARAMETER_VALUE")
    written = [p for p in Path(settings.resolved_artifact_uri).rglob("*") if p.is_file()]
    assert written == []


def test_unknown_runs_models_and_layouts_do_not_exist(api: Any) -> None:
    experiment, run = new_run(api)
    other = new_run(api)[1]
    api.post("/api/v1/experiments", json={"name": "elsewhere"})
    elsewhere = api.get("/api/v1/experiments/elsewhere").json()["id"]
    for path in (
        f"{experiment}/{'0' * 32}/artifacts/x",  # no such run
        f"{elsewhere}/{run}/artifacts/x",  # the run is in another experiment
        f"{experiment}/models/m-{'0' * 32}/artifacts/x",  # no such logged model
        f"{experiment}/models/not-an-id/artifacts/x",
        f"{experiment}/{run}/x",  # not a layout the proxy serves
    ):
        assert_mlflow_error(api.get(f"{PROXY}/{path}"), 404, "RESOURCE_DOES_NOT_EXIST")
        put = api.put(f"{PROXY}/{path}", content=b"x")
        assert_mlflow_error(put, 404, "RESOURCE_DOES_NOT_EXIST")
        listed = api.get(PROXY, params={"path": path.rsplit("/", 1)[0]})
        assert_mlflow_error(listed, 404, "RESOURCE_DOES_NOT_EXIST")
    version = f"{PROXY}/registered-models/nope/versions/1/model.pkl"
    assert_mlflow_error(api.get(version), 404, "RESOURCE_DOES_NOT_EXIST")
    # that layout is read-only, whatever the model
    assert_mlflow_error(api.put(version, content=b"x"), 400, "INVALID_STATE")
    assert other != run


# -- logged models' files ------------------------------------------------------------------


def test_a_logged_models_files_go_to_its_artifact_uri(api: Any) -> None:
    experiment, run = new_run(api)
    made = api.post(
        f"{MLFLOW}/logged-models",
        json={"experiment_id": experiment, "name": "clf", "source_run_id": run},
    ).json()["model"]["info"]
    uri = made["artifact_uri"]
    assert uri == f"mlflow-artifacts:/{experiment}/models/{made['model_id']}/artifacts"
    base = f"{PROXY}/{uri.removeprefix('mlflow-artifacts:/')}"
    assert api.put(f"{base}/MLmodel", content=b"artifact_path: clf\n").status_code == 200
    assert api.put(f"{base}/data/model.pkl", content=b"\x80\x04").status_code == 200
    assert api.get(f"{base}/data/model.pkl").content == b"\x80\x04"
    files = api.get(PROXY, params={"path": uri.removeprefix("mlflow-artifacts:/")}).json()
    assert files["files"] == [
        {"path": "MLmodel", "is_dir": False, "file_size": 19},
        {"path": "data", "is_dir": True},
    ]
    assert api.delete(f"{base}/data").status_code == 200
    assert_mlflow_error(api.get(f"{base}/data/model.pkl"), 404, "RESOURCE_DOES_NOT_EXIST")
    # a deleted model's files are gone from the proxy too
    assert api.delete(f"{MLFLOW}/logged-models/{made['model_id']}").status_code == 200
    assert_mlflow_error(api.get(f"{base}/MLmodel"), 404, "RESOURCE_DOES_NOT_EXIST")


# -- registered versions' packages -----------------------------------------------------------


def test_a_registered_versions_package_is_read_only(api: Any, settings: Settings) -> None:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    client = local_client(settings.resolved_store_uri, settings.resolved_artifact_uri)
    with client.start_run(experiment="churn") as run:
        version = run.log_model(model, "pkg/model", registered_model="churn")
    assert version is not None
    base = f"{PROXY}/registered-models/churn/versions/{version.version}"
    listed = api.get(PROXY, params={"path": base.removeprefix(f"{PROXY}/")}).json()["files"]
    tops = {f.split("/")[0] for f in version.manifest.files}
    assert tops <= {f["path"] for f in listed}
    first = sorted(version.manifest.files)[0]
    got = api.get(f"{base}/{first}")
    assert got.status_code == 200
    assert got.content == ArtifactStore(settings.resolved_artifact_uri).read_bytes(
        f"{version.package_uri}/{first}"
    )
    for method in ("PUT", "DELETE"):
        answer = api.request(method, f"{base}/{first}", content=b"x" if method == "PUT" else None)
        assert "read-only" in assert_mlflow_error(answer, 400, "INVALID_STATE")
    # nor through the run's artifacts it was registered from, or a folder holding them
    run_files = f"{PROXY}/{run.experiment_id}/{run.id}/artifacts"
    for inside in ("pkg", "pkg/model", f"pkg/model/{first}"):
        refused = api.delete(f"{run_files}/{inside}")
        assert "read-only" in assert_mlflow_error(refused, 400, "INVALID_STATE")
    assert api.get(f"{base}/{first}").content == got.content


# -- permissions -----------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AuthServer]:
    made = AuthServer(tmp_path / "server")
    with made.http:
        yield made


def test_a_viewer_reads_but_cannot_write_and_a_stranger_sees_nothing(server: AuthServer) -> None:
    alice = server.user("alice", Role.EDITOR)
    victor = server.user("victor", Role.VIEWER)
    mallory = server.user("mallory", Role.EDITOR)
    http = server.http
    experiment, run = new_run(http, alice)
    base = f"{PROXY}/{experiment}/{run}/artifacts"
    assert http.put(f"{base}/a.txt", content=b"alice's", headers=alice).status_code == 200
    model = http.post(
        f"{MLFLOW}/logged-models", json={"experiment_id": experiment}, headers=alice
    ).json()["model"]["info"]
    model_base = f"{PROXY}/{experiment}/models/{model['model_id']}/artifacts"
    assert http.put(f"{model_base}/MLmodel", content=b"m", headers=alice).status_code == 200

    # without any grant: nothing is there
    for url in (f"{base}/a.txt", f"{model_base}/MLmodel"):
        assert_mlflow_error(http.get(url, headers=mallory), 404, "RESOURCE_DOES_NOT_EXIST")
        put = http.put(url, content=b"mallory's", headers=mallory)
        assert_mlflow_error(put, 404, "RESOURCE_DOES_NOT_EXIST")
    listed = http.get(PROXY, params={"path": f"{experiment}/{run}/artifacts"}, headers=mallory)
    assert_mlflow_error(listed, 404, "RESOURCE_DOES_NOT_EXIST")
    # no token at all
    assert http.get(f"{base}/a.txt").status_code == 401

    server.auth.grant(Kind.EXPERIMENT, experiment, "user", "victor", "viewer")
    assert http.get(f"{base}/a.txt", headers=victor).content == b"alice's"
    assert http.get(f"{model_base}/MLmodel", headers=victor).content == b"m"
    for url in (f"{base}/a.txt", f"{base}/new.txt", f"{model_base}/MLmodel"):
        put = http.put(url, content=b"victor's", headers=victor)
        assert_mlflow_error(put, 403, "PERMISSION_DENIED")
        assert_mlflow_error(http.delete(url, headers=victor), 403, "PERMISSION_DENIED")
    assert http.get(f"{base}/a.txt", headers=alice).content == b"alice's"


# -- an S3 artifact root ---------------------------------------------------------------------


@pytest.mark.integration
def test_the_proxy_works_on_an_s3_artifact_root(tmp_path: Path, s3_bucket: str) -> None:
    from fastapi.testclient import TestClient

    settings = settings_for(tmp_path / "server", artifact_uri=f"{s3_bucket}/root")
    with TestClient(create_app(settings)) as api:
        experiment, run = new_run(api)
        base = f"{PROXY}/{experiment}/{run}/artifacts"
        payload = bytes(range(256)) * 40_000  # 10 MB: a multipart upload
        assert api.put(f"{base}/model/weights.bin", content=iter([payload])).status_code == 200
        assert api.get(f"{base}/model/weights.bin").content == payload
        listed = api.get(PROXY, params={"path": f"{experiment}/{run}/artifacts"}).json()
        assert listed["files"] == [{"path": "model", "is_dir": True}]
        assert api.delete(f"{base}/model").status_code == 200
        assert_mlflow_error(api.get(f"{base}/model/weights.bin"), 404, "RESOURCE_DOES_NOT_EXIST")
