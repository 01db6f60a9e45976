"""Loading models: which URIs name a model (a bare name does not), runs:/ URIs for a
package logged in a run, and input a predictor refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import plinth
from plinth.client import Client
from plinth.registry.types import ModelVersion
from tests.backends import local_client
from tests.serving.conftest import Rule

Data = tuple[pd.DataFrame, pd.Series]


def test_a_bare_name_is_refused_with_the_uri_forms(
    client: Client, churn_model: Any, churn_data: Data
) -> None:
    client.register_model(churn_model, "churn", input_example=churn_data[0][:5])
    for call in (client.load_model, client.get_model_version):
        with pytest.raises(plinth.InvalidArgument) as refused:
            call("churn")
        for form in ("models:/churn@production", "models:/churn/3", "@latest", "runs:/RUN_ID/PATH"):
            assert form in refused.value.message
    assert client.get_model_version("churn", 1).version == 1  # a name with a number is fine
    assert client.load_model("models:/churn@latest").version == 1


def test_runs_uris_load_a_package_logged_in_a_run(
    client: Client, churn_model: Any, churn_data: Data
) -> None:
    frame, _ = churn_data
    with client.start_run(experiment="churn") as run:
        assert run.log_model(churn_model, "candidate", input_example=frame[:5]) is None
    predictor = client.load_model(f"runs:/{run.id}/candidate")
    assert predictor.predict(frame[:10]).tolist() == churn_model.predict(frame[:10]).tolist()
    assert predictor.version is None and predictor.signature is not None
    with pytest.raises(plinth.InvalidArgument, match="spend"):  # its signature is enforced
        predictor.predict(frame[:3].drop(columns=["spend"]))
    assert client.load_model(f"runs:/{run.id}/candidate/").manifest == predictor.manifest
    with pytest.raises(plinth.NotFound, match=f"no model package at runs:/{run.id}/nothing"):
        client.load_model(f"runs:/{run.id}/nothing")
    with pytest.raises(plinth.NotFound, match="run 'nope' does not exist"):
        client.load_model("runs:/nope/candidate")
    for bad in ("runs:/", f"runs:/{run.id}", f"runs:/{run.id}/"):
        with pytest.raises(plinth.InvalidArgument, match="runs:/RUN_ID/PATH"):
            client.load_model(bad)
    with pytest.raises(plinth.InvalidArgument, match="not a registered version"):
        client.get_model_version(f"runs:/{run.id}/candidate")


def test_a_changed_run_package_fails_its_checksum(
    client: Client, churn_model: Any, churn_data: Data
) -> None:
    with client.start_run(experiment="churn") as run:
        run.log_model(churn_model, "candidate", input_example=churn_data[0][:5])
    model_file = next(
        e.path for e in client.list_artifacts(run.id, "candidate/model") if not e.is_dir
    )
    original = client.read_artifact(run.id, model_file)
    client.upload_artifact_bytes(run.id, original[:-10], model_file)  # not registered: writable
    with pytest.raises(plinth.InvalidArgument, match="sha256"):
        client.load_model(f"runs:/{run.id}/candidate")


def test_predicting_no_rows_is_refused(client: Client, churn_model: Any, churn_data: Data) -> None:
    frame, _ = churn_data
    with client.start_run(experiment="churn") as run:
        run.log_model(churn_model, input_example=frame[:5], registered_model="churn")
    for uri in ("models:/churn/1", f"runs:/{run.id}/model"):
        predictor = client.load_model(uri)
        with pytest.raises(plinth.InvalidArgument, match="no rows to predict"):
            predictor.predict(frame.iloc[:0])
        with pytest.raises(plinth.InvalidArgument, match="no rows to predict"):
            predictor.predict_proba(frame.iloc[:0])
        assert len(predictor.predict(frame.iloc[:1])) == 1


# -- pickles and the recorded manifest ---------------------------------------------------


def test_a_pickled_version_loads_only_when_trusted(
    client: Client, churn_data: Data, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    mv = client.register_model(Rule(str(marker)), "rule", input_example=churn_data[0][:5])
    assert mv.manifest.pickled
    with pytest.raises(plinth.PermissionDenied) as refused:
        client.load_model(mv.uri)
    assert refused.value.message.startswith("models:/rule/1 is a pickled model package")
    assert not marker.exists()  # refused before anything was unpickled
    assert client.load_model(mv.uri, trust_pickle=True).predict(churn_data[0][:3]).tolist() == [
        1,
        1,
        1,
    ]
    assert marker.exists()
    # the store's policy: trust_pickle=False cannot take it away
    marker.unlink()
    client.settings.trust_pickle = True
    client.load_model(mv.uri, trust_pickle=False)
    assert marker.exists()


def test_a_pickled_run_package_loads_only_when_trusted(
    client: Client, churn_data: Data, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    with client.start_run(experiment="rules") as run:
        run.log_model(Rule(str(marker)), "candidate", input_example=churn_data[0][:5])
    with pytest.raises(plinth.PermissionDenied, match=f"runs:/{run.id}/candidate is a pickled"):
        client.load_model(f"runs:/{run.id}/candidate")
    assert not marker.exists()
    client.load_model(f"runs:/{run.id}/candidate", trust_pickle=True)
    assert marker.exists()


def test_the_manifest_recorded_at_registration_is_exposed(
    client: Client, churn_model: Any, churn_data: Data, tmp_path: Path
) -> None:
    from plinth.registry.package import manifest_sha256, save_package

    save_package(churn_model, tmp_path / "package", input_example=churn_data[0][:5])
    mv = client.register_model(tmp_path / "package", "churn")
    assert mv.manifest_sha256 == manifest_sha256(tmp_path / "package")
    assert client.get_model_version("models:/churn@latest").manifest_sha256 == mv.manifest_sha256
    assert mv.manifest.pickled is False


def _swap_manifest(
    client: Client, mv: ModelVersion, other: Any, churn_data: Data, tmp: Path
) -> None:
    """Replace a stored package with another model's package, consistent with itself:
    every file matches the new manifest."""
    from plinth.registry.package import save_package

    save_package(other, tmp, input_example=churn_data[0][:5])
    for file in tmp.rglob("*"):
        if file.is_file():
            target = f"{mv.package_uri}/{file.relative_to(tmp).as_posix()}"
            client.registry.artifacts.put_file(file, target)


def test_a_replaced_manifest_is_refused_naming_the_version(
    sqlite_uri: str, tmp_path: Path, churn_model: Any, weak_model: Any, churn_data: Data
) -> None:
    client = local_client(sqlite_uri, str(tmp_path / "artifacts"))
    mv = client.register_model(churn_model, "churn", input_example=churn_data[0][:5])
    _swap_manifest(client, mv, weak_model, churn_data, tmp_path / "other")
    with pytest.raises(
        plinth.PermissionDenied,
        match=r"^models:/churn/1: the package's plinth-model\.json .* is not the manifest recorded",
    ):
        client.load_model(mv.uri)


def test_the_manifest_file_must_be_byte_for_byte_the_registered_one(
    sqlite_uri: str, tmp_path: Path, churn_model: Any, churn_data: Data
) -> None:
    import json

    client = local_client(sqlite_uri, str(tmp_path / "artifacts"))
    mv = client.register_model(churn_model, "churn", input_example=churn_data[0][:5])
    stored = f"{mv.package_uri}/plinth-model.json"
    same_content = tmp_path / "plinth-model.json"
    same_content.write_text(json.dumps(json.loads(client.registry.artifacts.read_bytes(stored))))
    client.registry.artifacts.put_file(same_content, stored)
    with pytest.raises(plinth.PermissionDenied, match="is not the manifest recorded"):
        client.load_model(mv.uri)


def test_a_version_from_before_the_recorded_sha256_compares_the_manifest(
    sqlite_uri: str, tmp_path: Path, churn_model: Any, weak_model: Any, churn_data: Data
) -> None:
    from sqlalchemy import update

    from plinth.store.schema import model_versions

    client = local_client(sqlite_uri, str(tmp_path / "artifacts"))
    kept = client.register_model(churn_model, "kept", input_example=churn_data[0][:5])
    swapped = client.register_model(churn_model, "swapped", input_example=churn_data[0][:5])
    with client.registry.store.write() as conn:  # as a version registered before 0010 is
        conn.execute(update(model_versions).values(manifest_sha256=None))
    assert client.get_model_version(kept.uri).manifest_sha256 is None
    assert client.load_model(kept.uri).version == 1
    _swap_manifest(client, swapped, weak_model, churn_data, tmp_path / "other")
    with pytest.raises(plinth.PermissionDenied, match=r"^models:/swapped/1: the package's"):
        client.load_model(swapped.uri)
