"""MLflow model folders into Plinth packages: what is read from MLmodel and
requirements.txt, where sources resolve, and that a failed copy leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert

from plinth.errors import InvalidArgument, NotFound
from plinth.registry.service import RegistryService
from plinth.registry.types import ColumnSpec
from plinth.server.mlflow import mlflow_package as packages
from plinth.server.mlflow.common import Services
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import open_store
from plinth.store.schema import logged_models
from plinth.tracking.service import TrackingService


@pytest.fixture
def services(tmp_path: Path) -> Services:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    tracking = TrackingService(open_store(f"sqlite:///{tmp_path / 'plinth.db'}"), artifacts)
    return Services(tracking, RegistryService(tracking.store, artifacts, tracking), artifacts)


def test_requirements_keep_pins_and_specifiers() -> None:
    text = b"""# written by mlflow
mlflow==3.1.0
scikit-learn == 1.5.1
numpy>=1.26,<3
pandas
-r other.txt
--extra-index-url https://example.org
torch==2.3.0 ; platform_system == "Linux"
"""
    assert packages.parse_requirements(text) == {
        "mlflow": "3.1.0",
        "scikit-learn": "1.5.1",
        "numpy": ">=1.26,<3",
        "pandas": "",
        "torch": "2.3.0",
    }


def test_mlmodel_signatures_by_column_only() -> None:
    columns = packages.read_mlmodel(
        b"signature:\n"
        b'  inputs: \'[{"type": "string", "name": "plan"}, {"type": "boolean", "name": "eu"}]\'\n'
        b'  outputs: \'[{"type": "double"}, {"type": "double"}]\'\n'
    )
    signature = packages.mlmodel_signature(columns)
    assert signature is not None
    assert signature.inputs == [ColumnSpec("plan", "string"), ColumnSpec("eu", "bool")]
    assert [c.name for c in signature.outputs] == ["prediction", "prediction_1"]
    tensor = (
        b'signature:\n  inputs: \'[{"type": "tensor", "tensor-spec": {"dtype": "float32"}}]\'\n'
    )
    assert packages.mlmodel_signature(packages.read_mlmodel(tensor)) is None
    assert packages.mlmodel_signature(packages.read_mlmodel(b"flavors: {}\n")) is None
    assert packages.read_mlmodel(b"signature: [unclosed") == {}
    assert packages.read_mlmodel(b"just text") == {}


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("runs:/", "runs:/RUN_ID/PATH"),
        ("ftp://host/model", "not a place under"),
        ("mlflow-artifacts:", "is empty"),
        ("mlflow-artifacts:/a\\b/run/artifacts", "backslash"),
        ("models:/churn", "needs a version number"),
        ("   ", "source is required"),
    ],
)
def test_sources_that_are_not_places_under_the_root(
    services: Services, source: str, fragment: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        packages.resolve_source(services, source)
    assert fragment in refused.value.message


def test_a_deleted_logged_model_is_not_a_source(services: Services) -> None:
    experiment_id = services.tracking.create_run("churn").experiment_id
    model_id = "m-" + "c" * 32
    folder = f"{experiment_id}/models/{model_id}/artifacts"
    services.artifacts.write_bytes(f"{folder}/MLmodel", b"flavors: {}\n")
    with services.store.write() as conn:
        conn.execute(
            insert(logged_models).values(
                id=model_id,
                experiment_id=experiment_id,
                name="model",
                model_type="",
                status="READY",
                status_message="",
                artifact_path=folder,
                owner="",
                created_at=1,
                updated_at=1,
                params="{}",
                tags="{}",
                deleted_at=2,
            )
        )
    with pytest.raises(NotFound, match="logged model"):
        packages.resolve_source(services, f"models:/{model_id}")


def test_a_copy_that_fails_leaves_no_package(services: Services) -> None:
    run = services.tracking.create_run("churn")
    for name in ("MLmodel", "model.pkl"):
        with services.tracking.open_artifact_writer(run.id, f"model/{name}") as out:
            out.write(b"x" * 10)
    source = packages.resolve_source(services, f"runs:/{run.id}/model")
    listed = packages.files_of(source)
    assert listed == ["MLmodel", "model.pkl"]
    # a file deleted between the listing and the copy (e.g. by a concurrent cleanup)
    gone = packages.Source(
        source.uri,
        source.root,
        lambda folder: [*source.list(folder), (f"{source.root}/zz-missing.bin", False)],
        source.open,
    )
    with pytest.raises(NotFound):
        packages.copy_to_package(services, gone, "churn")
    assert services.artifacts.list("models/churn/packages") == []
    package = packages.copy_to_package(services, source, "churn")
    assert [i.path for i in services.artifacts.list(package)] == [
        f"{package}/model",
        f"{package}/plinth-model.json",
    ]
