"""MLflow's registry routes, called as the ``mlflow`` client calls them: register a model
logged in a run, resolve its alias, download it; versions, stages, tags, search, errors."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from plinth.auth.types import Role
from plinth.config import load_settings
from plinth.registry.package import verify_package
from plinth.registry.service import RegistryService
from plinth.registry.types import ColumnSpec, Signature, Stage
from plinth.server.app import create_app
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import Store, open_store
from plinth.store.schema import logged_models, model_versions
from plinth.tracking.logged_models import LoggedModelStatus
from plinth.tracking.service import TrackingService
from tests.backends import AuthServer

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

API = "/api/2.0/mlflow"
MLMODEL = b"""artifact_path: model
flavors:
  python_function:
    env:
      virtualenv: python_env.yaml
    loader_module: mlflow.sklearn
    model_path: model.pkl
    python_version: 3.12.4
  sklearn:
    pickled_model: model.pkl
    serialization_format: cloudpickle
    sklearn_version: 1.5.1
mlflow_version: 3.1.0
model_uuid: 0b1c2d3e
signature:
  inputs: '[{"type": "long", "name": "age", "required": true}, {"type": "double", "name":
    "spend", "required": true}]'
  outputs: '[{"type": "long", "required": true}]'
  params: null
"""
REQUIREMENTS = b"mlflow==3.1.0\ncloudpickle==3.0.0\n# pinned by mlflow\nscikit-learn==1.5.1\n"


@dataclass
class Server:
    http: Any
    tracking: TrackingService
    registry: RegistryService
    artifacts: ArtifactStore
    root: Path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    from fastapi.testclient import TestClient

    settings = load_settings(home=tmp_path / "server")
    artifacts = ArtifactStore(settings.resolved_artifact_uri)
    tracking = TrackingService(open_store(settings.resolved_store_uri), artifacts)
    registry = RegistryService(tracking.store, artifacts, tracking)
    with TestClient(create_app(settings, tracking=tracking, registry=registry)) as http:
        yield Server(http, tracking, registry, artifacts, Path(settings.resolved_artifact_uri))


def model_files(weights: object = "w") -> dict[str, bytes]:
    return {
        "MLmodel": MLMODEL,
        "requirements.txt": REQUIREMENTS,
        "model.pkl": pickle.dumps({"weights": weights}),
        "extras/notes.txt": b"trained on churn",
    }


def log_model(server: Server, path: str = "model", run_name: str = "lgbm") -> tuple[str, str]:
    """A run with an MLflow model folder at ``path``; its id and experiment's id."""
    run = server.tracking.create_run("churn", name=run_name)
    for rel, data in model_files().items():
        with server.tracking.open_artifact_writer(run.id, f"{path}/{rel}") as out:
            out.write(data)
    return run.id, run.experiment_id


def add_logged_model(store: Store, model_id: str, experiment_id: str, run_id: str | None) -> None:
    """A logged model's row (its files go to ``EXP/models/ID/artifacts``)."""
    with store.write() as conn:
        conn.execute(
            insert(logged_models).values(
                id=model_id,
                experiment_id=experiment_id,
                source_run_id=run_id,
                name="model",
                model_type="",
                status=LoggedModelStatus.READY.value,
                status_message="",
                artifact_path=f"{experiment_id}/models/{model_id}/artifacts",
                owner="",
                created_at=1,
                updated_at=1,
                params="{}",
                tags="{}",
            )
        )


def register(server: Server, name: str, source: str, **extra: Any) -> httpx.Response:
    created = server.http.post(f"{API}/registered-models/create", json={"name": name})
    assert created.status_code in (200, 400), created.text
    return server.http.post(  # type: ignore[no-any-return]
        f"{API}/model-versions/create", json={"name": name, "source": source, **extra}
    )


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]


def delete(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return server.http.request("DELETE", f"{API}/{path}", json=body)  # type: ignore[no-any-return]


# -- register_model, then load_model("models:/name@alias") ---------------------------------


def test_register_model_as_the_client_does(server: Server) -> None:
    run_id, experiment_id = log_model(server)
    source = f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/model"

    first = ok(server.http.post(f"{API}/registered-models/create", json={"name": "churn"}))
    assert first["registered_model"]["name"] == "churn"
    assert first["registered_model"]["latest_versions"] == []
    again = server.http.post(f"{API}/registered-models/create", json={"name": "churn"})
    assert_error(again, 400, "RESOURCE_ALREADY_EXISTS", "churn")

    created = ok(
        server.http.post(
            f"{API}/model-versions/create",
            json={
                "name": "churn",
                "source": source,
                "run_id": run_id,
                "tags": [{"key": "team", "value": "growth"}],
            },
        )
    )["model_version"]
    assert created["version"] == "1"
    assert created["status"] == "READY"
    assert created["current_stage"] == "None"
    assert created["source"] == source
    assert created["run_id"] == run_id
    assert created["tags"] == [{"key": "team", "value": "growth"}]
    polled = ok(
        server.http.get(f"{API}/model-versions/get", params={"name": "churn", "version": "1"})
    )
    assert polled["model_version"] == created

    # load_model("models:/churn@champion"): the alias, then the download URI
    ok(
        server.http.post(
            f"{API}/registered-models/alias",
            json={"name": "churn", "alias": "champion", "version": "1"},
        )
    )
    by_alias = ok(
        server.http.get(
            f"{API}/registered-models/alias", params={"name": "churn", "alias": "champion"}
        )
    )
    assert by_alias["model_version"]["version"] == "1"
    assert by_alias["model_version"]["aliases"] == ["champion"]
    uri = ok(
        server.http.get(
            f"{API}/model-versions/get-download-uri", params={"name": "churn", "version": 1}
        )
    )
    assert uri == {"artifact_uri": "mlflow-artifacts:/registered-models/churn/versions/1/model"}
    # the path behind that URI (the artifact proxy's registered-models/... area) holds the files
    for rel, data in model_files().items():
        with server.registry.open_package_file("churn", 1, f"model/{rel}") as f:
            assert f.read() == data


def test_the_version_is_an_ordinary_plinth_version_whose_package_verifies(server: Server) -> None:
    run_id, experiment_id = log_model(server)
    ok(
        register(
            server,
            "churn",
            f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/model",
            run_id=run_id,
        )
    )
    version = server.registry.get_model_version("churn", 1)
    assert version.run_id == run_id
    with server.tracking.store.read() as conn:  # the stored milliseconds, exactly
        stored = conn.execute(select(model_versions.c.created_at)).scalar_one()
    shown = ok(server.http.get(f"{API}/model-versions/get", params={"name": "churn", "version": 1}))
    assert shown["model_version"]["creation_timestamp"] == stored
    assert version.stage is Stage.DEVELOPMENT
    assert version.package_uri.startswith("models/churn/packages/")
    manifest = version.manifest
    assert manifest.flavor == "mlflow"
    assert manifest.model_class == "mlflow.sklearn"
    assert manifest.python_version == "3.12.4"
    assert manifest.signature == Signature(
        [ColumnSpec("age", "int64"), ColumnSpec("spend", "float64")],
        [ColumnSpec("prediction", "int64")],
    )
    assert manifest.requirements == {
        "mlflow": "3.1.0",
        "cloudpickle": "3.0.0",
        "scikit-learn": "1.5.1",
    }
    expected = {
        f"model/{rel}": hashlib.sha256(data).hexdigest() for rel, data in model_files().items()
    }
    assert manifest.files == expected
    assert verify_package(server.root / version.package_uri, manifest) == manifest
    assert version.lineage["run_id"] == run_id  # the run's lineage, as for any version
    # the package is a copy: the run's files stay writable and the version keeps its own
    with server.tracking.open_artifact_writer(run_id, "model/model.pkl") as out:
        out.write(b"retrained")
    verify_package(server.root / version.package_uri, manifest)


@pytest.mark.parametrize(
    "source",
    [
        "runs:/{run}/model",
        "mlflow-artifacts:/{experiment}/{run}/artifacts/model/",
        "mlflow-artifacts://host:5000/{experiment}/{run}/artifacts/model",
    ],
)
def test_sources_naming_a_run_folder(server: Server, source: str) -> None:
    run_id, experiment_id = log_model(server)
    created = ok(register(server, "churn", source.format(run=run_id, experiment=experiment_id)))
    assert created["model_version"]["run_id"] == run_id  # taken from the source
    assert server.registry.get_model_version("churn", 1).manifest.files.keys() >= {"model/MLmodel"}


def test_a_logged_model_and_another_version_as_sources(server: Server) -> None:
    run_id, experiment_id = log_model(server)
    model_id = "m-" + "a" * 32
    folder = f"{experiment_id}/models/{model_id}/artifacts"
    for rel, data in model_files().items():
        server.artifacts.write_bytes(f"{folder}/{rel}", data)
    add_logged_model(server.tracking.store, model_id, experiment_id, run_id)
    created = ok(register(server, "churn", f"models:/{model_id}", model_id=model_id))[
        "model_version"
    ]
    assert created["model_id"] == model_id
    assert created["source"] == f"models:/{model_id}"
    assert created["run_id"] == run_id  # the logged model's run
    # the same files, through the proxy's path of the logged model
    ok(register(server, "churn", f"mlflow-artifacts:/{folder}"))
    # copy_model_version: another version's files
    copied = ok(register(server, "churn-copy", "models:/churn/1"))["model_version"]
    assert copied["source"] == "models:/churn/1"
    files = [
        server.registry.get_model_version(n, v).manifest.files
        for n, v in [("churn", 1), ("churn", 2), ("churn-copy", 1)]
    ]
    assert files[0] == files[1] == files[2]
    assert_error(
        register(server, "churn", "models:/m-" + "b" * 32),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "logged model",
    )


@pytest.mark.parametrize(
    ("source", "status", "code", "fragment"),
    [
        (
            "file:///etc/passwd",
            400,
            "INVALID_PARAMETER_VALUE",
            "not a place under this server's artifact root",
        ),
        ("/tmp/model", 400, "INVALID_PARAMETER_VALUE", "not a place under"),
        ("s3://bucket/model", 400, "INVALID_PARAMETER_VALUE", "runs:/RUN_ID/PATH"),
        (
            "mlflow-artifacts:/{experiment}/{run}/artifacts/../../../etc",
            400,
            "INVALID_PARAMETER_VALUE",
            "'..'",
        ),
        ("runs:/{run}/../other", 400, "INVALID_PARAMETER_VALUE", "'..'"),
        ("runs:/{run}/nothing-here", 404, "RESOURCE_DOES_NOT_EXIST", "holds no files"),
        ("runs:/{run}/model/extras", 400, "INVALID_PARAMETER_VALUE", "no MLmodel file"),
        ("runs:/" + "f" * 32 + "/model", 404, "RESOURCE_DOES_NOT_EXIST", "does not exist"),
        (
            "mlflow-artifacts:/" + "e" * 32 + "/{run}/artifacts/model",
            404,
            "RESOURCE_DOES_NOT_EXIST",
            "has no run",
        ),
        (
            "mlflow-artifacts:/{experiment}/elsewhere",
            400,
            "INVALID_PARAMETER_VALUE",
            "not a place under",
        ),
        ("", 400, "INVALID_PARAMETER_VALUE", "source is required"),
    ],
)
def test_sources_that_are_refused(
    server: Server, source: str, status: int, code: str, fragment: str
) -> None:
    run_id, experiment_id = log_model(server)
    response = register(server, "churn", source.format(run=run_id, experiment=experiment_id))
    assert_error(response, status, code, fragment)
    assert server.registry.get_registered_model("churn").latest_version is None
    assert server.artifacts.list("models/churn/packages") == []  # nothing left behind


def test_a_run_id_that_is_not_the_sources_run_is_refused(server: Server) -> None:
    run_id, _ = log_model(server)
    other, _ = log_model(server, run_name="other")
    response = register(server, "churn", f"runs:/{run_id}/model", run_id=other)
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", f"belongs to run {run_id}")


# -- registered models ------------------------------------------------------------------


def test_registered_model_get_update_tags_and_errors(server: Server) -> None:
    created = ok(
        server.http.post(
            f"{API}/registered-models/create",
            json={
                "name": "churn",
                "description": "who leaves",
                "tags": [{"key": "team", "value": "growth"}],
            },
        )
    )["registered_model"]
    assert created["description"] == "who leaves"
    assert created["tags"] == [{"key": "team", "value": "growth"}]
    assert isinstance(created["creation_timestamp"], int)
    updated = ok(
        server.http.patch(
            f"{API}/registered-models/update",
            json={"name": "churn", "description": "churn in 30 days"},
        )
    )
    assert updated["registered_model"]["description"] == "churn in 30 days"
    ok(
        server.http.post(
            f"{API}/registered-models/set-tag", json={"name": "churn", "key": "tier", "value": "1"}
        )
    )
    ok(delete(server, "registered-models/delete-tag", {"name": "churn", "key": "team"}))
    got = ok(server.http.get(f"{API}/registered-models/get", params={"name": "churn"}))
    assert got["registered_model"]["tags"] == [{"key": "tier", "value": "1"}]
    assert server.registry.get_registered_model("churn").tags == {"tier": "1"}
    history = [h.action for h in server.registry.model_history("churn")]
    assert history.count("tags") == 2

    assert_error(
        delete(server, "registered-models/delete-tag", {"name": "churn", "key": "team"}),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "no tag 'team'",
    )
    assert_error(
        server.http.get(f"{API}/registered-models/get", params={"name": "nope"}),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "'nope'",
    )
    assert_error(
        server.http.get(f"{API}/registered-models/get"), 400, "INVALID_PARAMETER_VALUE", "name"
    )
    assert_error(
        server.http.post(f"{API}/registered-models/create", json={"name": "has space"}),
        400,
        "INVALID_PARAMETER_VALUE",
        "not valid",
    )
    assert_error(
        server.http.post(
            f"{API}/registered-models/rename", json={"name": "churn", "new_name": "c2"}
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "renaming",
    )
    assert_error(
        server.http.post(
            f"{API}/registered-models/set-tag",
            json={"name": "churn", "key": "mlflow.source", "value": "x"},
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "reserved",
    )


def test_delete_registered_model(server: Server) -> None:
    run_id, _ = log_model(server)
    ok(register(server, "churn", f"runs:/{run_id}/model"))
    ok(delete(server, "registered-models/delete", {"name": "churn"}))
    assert_error(
        server.http.get(f"{API}/registered-models/get", params={"name": "churn"}),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )


# -- versions: tags, stages, aliases, deletion ------------------------------------------


def test_version_update_tags_and_delete(server: Server) -> None:
    run_id, _ = log_model(server)
    ok(register(server, "churn", f"runs:/{run_id}/model"))
    ok(register(server, "churn", f"runs:/{run_id}/model"))
    updated = ok(
        server.http.patch(
            f"{API}/model-versions/update",
            json={"name": "churn", "version": "2", "description": "better"},
        )
    )
    assert updated["model_version"]["description"] == "better"
    ok(
        server.http.post(
            f"{API}/model-versions/set-tag",
            json={"name": "churn", "version": "2", "key": "validated", "value": "yes"},
        )
    )
    ok(
        server.http.post(
            f"{API}/model-versions/set-tag",
            json={"name": "churn", "version": "2", "key": "gone", "value": "soon"},
        )
    )
    ok(
        delete(
            server, "model-versions/delete-tag", {"name": "churn", "version": "2", "key": "gone"}
        )
    )
    assert server.registry.get_model_version("churn", 2).tags == {
        "validated": "yes",
        "mlflow.source": f"runs:/{run_id}/model",
    }
    got = ok(server.http.get(f"{API}/model-versions/get", params={"name": "churn", "version": "2"}))
    assert got["model_version"]["tags"] == [{"key": "validated", "value": "yes"}]

    ok(
        server.http.post(
            f"{API}/registered-models/alias",
            json={"name": "churn", "alias": "champion", "version": "1"},
        )
    )
    refused = delete(server, "model-versions/delete", {"name": "churn", "version": "1"})
    assert_error(refused, 400, "INVALID_STATE", "aliases")
    missing = server.http.delete(f"{API}/registered-models/alias", params={"name": "churn"})
    assert_error(missing, 400, "INVALID_PARAMETER_VALUE", "alias is required")
    # DELETE takes its arguments in a JSON body (as the client sends them) or the query
    query = {"name": "churn", "alias": "champion"}
    ok(server.http.delete(f"{API}/registered-models/alias", params=query))
    assert_error(
        server.http.get(
            f"{API}/registered-models/alias", params={"name": "churn", "alias": "champion"}
        ),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    package = server.registry.get_model_version("churn", 1).package_uri
    ok(delete(server, "model-versions/delete", {"name": "churn", "version": "1"}))
    assert not server.artifacts.exists(f"{package}/plinth-model.json")
    assert_error(
        server.http.get(f"{API}/model-versions/get", params={"name": "churn", "version": "1"}),
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "no version 1",
    )
    assert_error(
        server.http.get(f"{API}/model-versions/get", params={"name": "churn", "version": "one"}),
        400,
        "INVALID_PARAMETER_VALUE",
        "positive integer",
    )
    assert_error(
        server.http.post(
            f"{API}/registered-models/alias",
            json={"name": "churn", "alias": "champion", "version": "9"},
        ),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )


def test_stages_and_latest_versions(server: Server) -> None:
    run_id, _ = log_model(server)
    for _ in range(3):
        ok(register(server, "churn", f"runs:/{run_id}/model"))

    def transition(version: int, stage: str, archive: bool = False) -> httpx.Response:
        return server.http.post(  # type: ignore[no-any-return]
            f"{API}/model-versions/transition-stage",
            json={
                "name": "churn",
                "version": str(version),
                "stage": stage,
                "archive_existing_versions": archive,
            },
        )

    assert ok(transition(1, "Production"))["model_version"]["current_stage"] == "Production"
    assert ok(transition(2, "staging"))["model_version"]["current_stage"] == "Staging"
    assert ok(transition(3, "Staging", archive=True))["model_version"]["current_stage"] == "Staging"
    assert server.registry.get_model_version("churn", 2).stage is Stage.ARCHIVED
    # PRODUCTION holds one version in Plinth: the previous one is archived either way
    ok(transition(3, "Production"))
    assert server.registry.get_model_version("churn", 1).stage is Stage.ARCHIVED

    latest = ok(
        server.http.post(f"{API}/registered-models/get-latest-versions", json={"name": "churn"})
    )
    assert [(v["version"], v["current_stage"]) for v in latest["model_versions"]] == [
        ("2", "Archived"),
        ("3", "Production"),
    ]
    only = ok(
        server.http.get(
            f"{API}/registered-models/get-latest-versions",
            params={"name": "churn", "stages": ["Production", "None"]},
        )
    )
    assert [v["version"] for v in only["model_versions"]] == ["3"]
    model = ok(server.http.get(f"{API}/registered-models/get", params={"name": "churn"}))[
        "registered_model"
    ]
    assert [v["version"] for v in model["latest_versions"]] == ["2", "3"]
    # an archived version comes back (MLflow allows it) and SHADOW shows as "None"
    assert ok(transition(1, "None"))["model_version"]["current_stage"] == "None"
    server.registry.set_stage("churn", 1, Stage.SHADOW)
    got = ok(server.http.get(f"{API}/model-versions/get", params={"name": "churn", "version": "1"}))
    assert got["model_version"]["current_stage"] == "None"

    assert_error(
        transition(1, "Shadow"),
        400,
        "INVALID_PARAMETER_VALUE",
        "None, Staging, Production, Archived",
    )
    assert_error(
        transition(1, "None", archive=True),
        400,
        "INVALID_PARAMETER_VALUE",
        "archive_existing_versions",
    )


# -- search -----------------------------------------------------------------------------


def names(response: httpx.Response) -> list[str]:
    return [m["name"] for m in ok(response)["registered_models"]]


def test_search_registered_models(server: Server) -> None:
    for name, tier in [("churn", "1"), ("churn-eu", "2"), ("Fraud", "1")]:
        ok(
            server.http.post(
                f"{API}/registered-models/create",
                json={
                    "name": name,
                    "tags": [
                        {"key": "tier", "value": tier},
                        {"key": "the team", "value": "growth"},
                    ],
                },
            )
        )
    search = f"{API}/registered-models/search"
    assert names(server.http.get(search)) == ["Fraud", "churn", "churn-eu"]
    assert names(server.http.get(search, params={"filter": "name = 'churn'"})) == ["churn"]
    assert names(server.http.get(search, params={"filter": "name LIKE 'churn%'"})) == [
        "churn",
        "churn-eu",
    ]
    assert names(server.http.get(search, params={"filter": "name ILIKE 'f%'"})) == ["Fraud"]
    assert names(server.http.get(search, params={"filter": "name LIKE 'f%'"})) == []
    assert names(
        server.http.get(search, params={"filter": "tags.tier = '1' AND name != 'Fraud'"})
    ) == ["churn"]
    assert names(
        server.http.get(search, params={"filter": "tags.`the team` = 'growth' and tags.tier = '2'"})
    ) == ["churn-eu"]
    # what MLflow 3 clients add to every search: models are not prompts
    prompt = "tags.`mlflow.prompt.is_prompt` != 'true'"
    assert names(server.http.get(search, params={"filter": f"name LIKE 'c%' AND {prompt}"})) == [
        "churn",
        "churn-eu",
    ]
    assert names(server.http.get(search, params={"order_by": ["name DESC"]})) == [
        "churn-eu",
        "churn",
        "Fraud",
    ]

    first = ok(server.http.get(search, params={"max_results": 2}))
    assert [m["name"] for m in first["registered_models"]] == ["Fraud", "churn"]
    rest = ok(
        server.http.get(search, params={"max_results": 2, "page_token": first["next_page_token"]})
    )
    assert [m["name"] for m in rest["registered_models"]] == ["churn-eu"]
    assert "next_page_token" not in rest

    for bad, fragment in [
        ("name = churn", "expected a 'string' or a number"),
        ("name = 'a' OR name = 'b'", "AND only"),
        ("owner = 'me'", "no attribute 'owner'"),
        ("name > 'a'", "does not take '>'"),
        ("name = 'a' AND", "got the end of the filter"),
        ("params.x = '1'", "prefixes"),
    ]:
        assert_error(
            server.http.get(search, params={"filter": bad}),
            400,
            "INVALID_PARAMETER_VALUE",
            fragment,
        )
    assert_error(
        server.http.get(search, params={"order_by": ["owner"]}),
        400,
        "INVALID_PARAMETER_VALUE",
        "order_by",
    )
    assert_error(
        server.http.get(search, params={"max_results": 5000}),
        400,
        "INVALID_PARAMETER_VALUE",
        "max_results",
    )


def test_search_model_versions(server: Server) -> None:
    first, _ = log_model(server)
    second, _ = log_model(server, run_name="second")
    for name, run in [("churn", first), ("churn", second), ("churn", second), ("fraud", first)]:
        ok(register(server, name, f"runs:/{run}/model", tags=[{"key": "by", "value": run[:4]}]))
    search = f"{API}/model-versions/search"

    def found(**params: Any) -> list[tuple[str, str]]:
        body = ok(server.http.get(search, params=params))
        return [(v["name"], v["version"]) for v in body["model_versions"]]

    assert found() == [("churn", "3"), ("churn", "2"), ("churn", "1"), ("fraud", "1")]
    assert found(filter="name = 'churn' AND version_number > 1") == [("churn", "3"), ("churn", "2")]
    assert found(filter=f"run_id = '{first}'") == [("churn", "1"), ("fraud", "1")]
    assert found(filter=f"run_id IN ('{second}', 'nope')") == [("churn", "3"), ("churn", "2")]
    assert found(filter=f"tags.by = '{first[:4]}' AND name ILIKE 'FR%'") == [("fraud", "1")]
    assert found(filter=f"source_path = 'runs:/{second}/model'") == [("churn", "3"), ("churn", "2")]
    assert found(filter="name = 'churn'", order_by=["version_number ASC"]) == [
        ("churn", "1"),
        ("churn", "2"),
        ("churn", "3"),
    ]
    assert found(filter="name = 'churn'", max_results=2) == [("churn", "3"), ("churn", "2")]
    assert_error(
        server.http.get(search, params={"filter": "version_number = 'x'"}),
        400,
        "INVALID_PARAMETER_VALUE",
        "whole number",
    )
    assert_error(
        server.http.get(search, params={"filter": "run_id IN 'x'"}),
        400,
        "INVALID_PARAMETER_VALUE",
        "expected '(' after IN",
    )


# -- permissions ------------------------------------------------------------------------


def test_registering_takes_read_access_to_the_source(tmp_path: Path) -> None:
    server = AuthServer(tmp_path / "server")
    alice, bob = server.user("alice", Role.EDITOR), server.user("bob", Role.EDITOR)
    run = server.http.post(
        "/api/v1/runs", json={"experiment": "private", "name": "r"}, headers=alice
    )
    run_id = ok(run)["id"]
    for rel, data in model_files().items():
        put = server.http.put(
            f"/api/v1/runs/{run_id}/artifacts/content",
            params={"path": f"model/{rel}"},
            content=data,
            headers=alice,
        )
        assert put.status_code == 204, put.text
    refused = server.http.post(
        f"{API}/model-versions/create",
        json={"name": "stolen", "source": f"runs:/{run_id}/model"},
        headers=bob,
    )
    assert_error(refused, 404, "RESOURCE_DOES_NOT_EXIST", run_id)
    assert (
        server.http.get(
            f"{API}/registered-models/get", params={"name": "stolen"}, headers=bob
        ).status_code
        == 404
    )
    # a logged model in alice's experiment is as private as her run
    model_id = "m-" + "d" * 32
    experiment_id = ok(run)["experiment_id"]
    add_logged_model(server.store, model_id, experiment_id, None)  # no run to check
    artifacts = ArtifactStore(load_settings(home=tmp_path / "server").resolved_artifact_uri)
    for rel, data in model_files().items():
        artifacts.write_bytes(f"{experiment_id}/models/{model_id}/artifacts/{rel}", data)
    refused = server.http.post(
        f"{API}/model-versions/create",
        json={"name": "stolen", "source": f"models:/{model_id}"},
        headers=bob,
    )
    assert_error(
        refused, 404, "RESOURCE_DOES_NOT_EXIST", f"logged model {model_id!r} does not exist"
    )
    mine = server.http.post(
        f"{API}/model-versions/create",
        json={"name": "mine", "source": f"runs:/{run_id}/model"},
        headers=alice,
    )
    assert ok(mine)["model_version"]["user_id"] == "alice"
    assert_error(
        server.http.get(
            f"{API}/model-versions/get", params={"name": "mine", "version": "1"}, headers=bob
        ),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
