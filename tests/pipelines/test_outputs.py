"""Step outputs stored with a tracking run and read back, each kind as itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from plinth.client import Client
from plinth.errors import InvalidArgument
from plinth.pipelines import outputs
from plinth.tracking.run import ActiveRun
from tests.backends import local_client


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))


@pytest.fixture
def run(client: Client) -> Iterator[ActiveRun]:
    with client.start_run("outputs", capture_environment=False) as started:
        yield started


def roundtrip(
    client: Client, run: ActiveRun, value: Any, **kwargs: Any
) -> tuple[dict[str, Any], Any]:
    stored = outputs.store_output(client, run.id, "s", value)
    return stored, outputs.load_value(client, stored, **kwargs)


def test_an_arrow_table_is_parquet(client: Client, run: ActiveRun) -> None:
    table = pa.table({"x": [1, 2, 3], "y": ["a", "b", None]})
    stored, back = roundtrip(client, run, table)
    assert stored["kind"] == "arrow"
    assert stored["path"] == "pipeline/s/output.parquet"
    assert stored["run_id"] == run.id
    assert stored["summary"] == {"rows": 3, "columns": ["x", "y"]}
    assert back.equals(table)


def test_a_dataframe_comes_back_a_dataframe(client: Client, run: ActiveRun) -> None:
    frame = pd.DataFrame({"x": [1.5, 2.5]}, index=[10, 20])
    stored, back = roundtrip(client, run, frame)
    assert stored["kind"] == "pandas"
    pd.testing.assert_frame_equal(back, frame)


def test_json_values_keep_their_types(client: Client, run: ActiveRun) -> None:
    value = {"n": 3, "rate": 0.5, "names": ["a"], "ok": True, "none": None}
    stored, back = roundtrip(client, run, value)
    assert (stored["kind"], stored["path"]) == ("json", "pipeline/s/output.json")
    assert back == value


@pytest.mark.parametrize("value", [(1, 2), {1: "a"}, {"x": float("nan")}, {"s": {1, 2}}])
def test_what_json_would_change_is_pickled(client: Client, run: ActiveRun, value: Any) -> None:
    stored, back = roundtrip(client, run, value, trust_pickle=True)
    assert stored["kind"] == "pickle"
    assert repr(back) == repr(value)


def test_a_pickle_is_read_only_when_trusted(client: Client, run: ActiveRun) -> None:
    stored = outputs.store_output(client, run.id, "s", Path("/x"))
    assert stored["summary"]["type"].endswith("Path")
    with pytest.raises(InvalidArgument, match="trust_pickle=True"):
        outputs.load_value(client, stored)
    assert outputs.load_value(client, stored, trust_pickle=True) == Path("/x")


def test_none_stores_nothing(client: Client, run: ActiveRun) -> None:
    stored, back = roundtrip(client, run, None)
    assert (stored["kind"], stored["path"], back) == ("none", None, None)
    assert client.list_artifacts(run.id) == []


def test_the_digest_follows_the_data(client: Client, run: ActiveRun) -> None:
    first = outputs.store_output(client, run.id, "a", pa.table({"x": [1]}))
    same = outputs.store_output(client, run.id, "b", pa.table({"x": [1]}))
    other = outputs.store_output(client, run.id, "c", pa.table({"x": [2]}))
    assert first["sha256"] == same["sha256"] != other["sha256"]


def test_a_model_version_is_a_reference(client: Client, run: ActiveRun) -> None:
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0], [1]], [0, 1])
    version = run.log_model(model, registered_model="churn")
    assert version is not None
    stored, back = roundtrip(client, run, version)
    assert stored["kind"] == "model_version"
    assert (stored["path"], stored["ref"]) == (None, {"model": "churn", "version": 1})
    assert (back.model_name, back.version, back.run_id) == ("churn", 1, run.id)


def test_an_unknown_kind_is_refused(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="unknown output kind 'xml'"):
        outputs.load_value(client, {"kind": "xml", "run_id": "r", "path": "p"})


def test_feature_store_objects_are_references(client: Client, run: ActiveRun) -> None:
    from plinth.features.types import FeatureView, TrainingDataset

    view = FeatureView(name="churn", version=2, features=["a"], keys=["id"])
    stored = outputs.store_output(client, run.id, "v", view)
    assert (stored["kind"], stored["ref"], stored["path"]) == (
        "feature_view", {"name": "churn", "version": 2}, None
    )  # fmt: skip
    dataset = TrainingDataset(id=7, view="churn", view_version=2, uri="u", entity_uri="e",
                              rows=10, group_commits={}, timestamp_column="ts")  # fmt: skip
    assert outputs.store_output(client, run.id, "d", dataset)["ref"] == {"id": 7}
    assert client.list_artifacts(run.id) == []  # references store nothing


def test_a_dataframe_arrow_cannot_hold_is_pickled(client: Client, run: ActiveRun) -> None:
    frame = pd.DataFrame({"a": [1, "x", 2.5]})  # a column of mixed types
    stored, back = roundtrip(client, run, frame, trust_pickle=True)
    assert stored["kind"] == "pickle"
    pd.testing.assert_frame_equal(back, frame)
