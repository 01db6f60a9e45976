"""A registered version's files are read-only through every route and Python call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import plinth
from plinth.client import Client, connect
from plinth.registry.package import MANIFEST_FILE
from tests.backends import FAST_FLUSH, running_server

Data = tuple[pd.DataFrame, pd.Series]
API = "/api/v1"


def logged_version(client: Client, model: Any, data: Data) -> tuple[str, Any]:
    with client.start_run(experiment="churn") as run:
        mv = run.log_model(model, input_example=data[0][:5], registered_model="churn")
    return run.id, mv


def package_file(mv: Any) -> str:
    """One of the version's files, as a path under its run's artifacts."""
    model_file = next(f for f in sorted(mv.manifest.files) if f.startswith("model/"))
    return f"model/{model_file}"  # log_model's default artifact name is "model"


class TestRunArtifactsOfAVersion:
    def test_every_write_into_the_package_is_a_conflict(
        self, client: Client, churn_model: Any, churn_data: Data, tmp_path: Path
    ) -> None:
        local = tmp_path / "evil.pkl"
        local.write_bytes(b"not a model")
        with client.start_run(experiment="churn") as run:
            mv = run.log_model(
                churn_model, input_example=churn_data[0][:5], registered_model="churn"
            )
            target = package_file(mv)
            with pytest.raises(plinth.Conflict, match=r"models:/churn/1"):
                run.log_artifact(local, target)
            with pytest.raises(plinth.Conflict, match=r"models:/churn/1"):
                run.log_model(churn_model, input_example=churn_data[0][:5])
        run_id = run.id
        original = client.read_artifact(run_id, target)
        writes = {
            "upload_artifact_bytes": lambda: client.upload_artifact_bytes(run_id, b"x", target),
            "upload_artifact": lambda: client.upload_artifact(run_id, local, target),
            "a new file in it": lambda: client.upload_artifact_bytes(run_id, b"x", "model/new"),
            "the manifest": lambda: client.upload_artifact_bytes(
                run_id, b"{}", f"model/{MANIFEST_FILE}"
            ),
        }
        for what, write in writes.items():
            with pytest.raises(plinth.Conflict, match=r"models:/churn/1"):
                write()
                pytest.fail(f"{what} overwrote a registered version's package")
        assert client.read_artifact(run_id, target) == original
        assert "new" not in [e.path for e in client.list_artifacts(run_id, "model")]
        predicted = client.load_model("models:/churn/1").predict(churn_data[0][:3])
        assert len(predicted) == 3

    def test_other_paths_of_the_run_stay_writable(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        run_id, _ = logged_version(client, churn_model, churn_data)
        client.upload_artifact_bytes(run_id, b"notes", "notes.txt")
        client.upload_artifact_bytes(run_id, b"other", "model-2/weights.bin")  # not "model/"
        assert client.read_artifact(run_id, "model-2/weights.bin") == b"other"
        with client.start_run(experiment="churn") as run:
            run.log_model(churn_model, input_example=churn_data[0][:5], registered_model="churn")
            assert run.log_model(churn_model, "challenger") is None
            run.log_artifact(Path(__file__), "notes/test.py")
        assert client.list_artifacts(run.id, "challenger")

    def test_a_write_opened_before_registering_is_not_published(
        self, tmp_path: Path, churn_model: Any, churn_data: Data
    ) -> None:
        from tests.backends import local_client

        client = local_client(f"sqlite:///{tmp_path / 'p.db'}", str(tmp_path / "artifacts"))
        with client.start_run(experiment="churn") as run:
            run.log_model(churn_model, input_example=churn_data[0][:5])
        mv = client.registry.create_model_version(
            "churn", f"{run.experiment_id}/{run.id}/artifacts/model", run.id
        )
        target = package_file(mv)
        before = client.read_artifact(run.id, target)
        client.registry.delete_model_version("churn", mv.version)  # writable again
        writer = client.tracking.open_artifact_writer(run.id, target)
        writer.write(b"late bytes")
        again = client.registry.create_model_version(
            "churn", f"{run.experiment_id}/{run.id}/artifacts/model", run.id
        )
        with pytest.raises(plinth.Conflict, match=rf"models:/churn/{again.version}"):
            writer.close()
        assert client.read_artifact(run.id, target) == before
        assert client.load_model(again.uri).version == again.version


def test_raw_http_writes_into_a_version_are_409(
    tmp_path: Path, churn_model: Any, churn_data: Data
) -> None:
    with running_server(tmp_path / "home") as url:
        with connect(url, **FAST_FLUSH) as client:  # type: ignore[arg-type]
            run_id, mv = logged_version(client, churn_model, churn_data)
            direct = client.register_model(churn_model, "direct", input_example=churn_data[0][:5])
        run_put = httpx.put(
            f"{url}{API}/runs/{run_id}/artifacts/content",
            params={"path": package_file(mv)},
            content=b"overwritten",
        )
        assert run_put.status_code == 409, run_put.text
        body = run_put.json()
        assert body["error_code"] == "CONFLICT" and "models:/churn/1" in body["message"]
        staged = f"{direct.package_uri}/model/extra.bin"
        package_put = httpx.put(
            f"{url}{API}/packages/content", params={"path": staged}, content=b"x"
        )
        assert package_put.status_code == 409, package_put.text
        assert "models:/direct/1" in package_put.json()["message"]
        loaded = httpx.get(
            f"{url}{API}/models/churn/versions/1/content",
            params={"path": package_file(mv).removeprefix("model/")},
        )
        assert loaded.status_code == 200 and loaded.content != b"overwritten"
