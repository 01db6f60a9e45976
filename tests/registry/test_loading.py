"""Loading models: which URIs name a model (a bare name does not), runs:/ URIs for a
package logged in a run, and input a predictor refuses."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import plinth
from plinth.client import Client

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
