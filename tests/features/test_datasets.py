"""Training datasets (snapshots with the group commits they read), their links into the
model registry, "where used", and refusing to delete what production depends on."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from plinth.client import Client
from plinth.errors import Conflict, InvalidArgument, NotFound
from plinth.features.store import FeatureStore
from tests.features.conftest import day, define, transactions
from tests.features.test_views import churn_view, entity_rows


def features() -> pd.DataFrame:
    return pd.DataFrame({"orders_30d": [1, 5, 2, 8], "avg_spend": [10.0, 50.0, 20.0, 80.0]})


def model() -> LogisticRegression:
    return LogisticRegression().fit(features(), [0, 1, 0, 1])


def test_a_training_dataset_records_what_it_read_and_rebuilds(fs: FeatureStore) -> None:
    stats = define(fs)
    stats.insert(transactions())  # type: ignore[attr-defined]
    view = churn_view(fs)
    dataset = view.create_training_dataset(entity_rows(), description="january churn")
    assert (dataset.rows, dataset.group_commits) == (4, {"customer_stats:v1": 0})
    assert (dataset.view, dataset.view_version, dataset.label) == ("churn", 1, "churned")
    stored = dataset.to_pandas()
    assert stored.columns.tolist() == [*entity_rows().columns, *view.output_names]
    assert stored.amount_over_avg.iloc[0] == pytest.approx(2.5)
    assert dataset.entities().to_pandas().equals(entity_rows())

    # a later insert changes what a fresh join sees, not what the snapshot read
    late = pd.DataFrame(
        {"customer_id": [1], "event_time": [day(1)], "orders_30d": [40], "avg_spend": [1.0]}
    )
    stats.insert(late)  # type: ignore[attr-defined]
    assert view.get_historical_features(entity_rows()).to_pandas().orders_30d.iloc[0] == 40
    assert dataset.rebuild().equals(dataset.to_arrow())
    again = fs.get_training_dataset(dataset.id)
    assert again.info == dataset.info
    assert [d.id for d in fs.service.list_training_datasets(view="churn")] == [dataset.id]


def test_bad_training_datasets(fs: FeatureStore) -> None:
    define(fs)
    view = churn_view(fs)
    with pytest.raises(NotFound, match="has no offline data yet"):
        view.create_training_dataset(entity_rows())
    with pytest.raises(InvalidArgument, match="no label column 'churned'"):
        view.create_training_dataset(entity_rows().drop(columns=["churned"]))
    with pytest.raises(NotFound, match="training dataset 99 does not exist"):
        fs.get_training_dataset(99)
    assert fs.service.list_training_datasets() == []


@pytest.fixture
def trained(fs_client: Client) -> tuple[Client, FeatureStore, Any, Any]:
    """A model version trained (through a run) on a training dataset of the churn view."""
    fs = fs_client.feature_store()
    define(fs).insert(transactions())  # type: ignore[attr-defined]
    dataset = churn_view(fs).create_training_dataset(entity_rows())
    with fs_client.start_run("churn") as run:
        run.log_input(dataset)
        version = run.log_model(model(), registered_model="churn", input_example=features())
    assert version is not None
    return fs_client, fs, dataset, version


def test_model_versions_point_at_their_training_data(trained: Any) -> None:
    client, fs, dataset, version = trained
    assert version.lineage["training_datasets"] == [dataset.id]
    again = client.register_model(model(), "churn", training_dataset=dataset)
    assert again.lineage["training_datasets"] == [dataset.id]
    with pytest.raises(NotFound, match="training dataset 77"):
        client.register_model(model(), "churn", training_dataset=77)
    with pytest.raises(InvalidArgument, match="training_dataset must be"):
        client.register_model(model(), "churn", training_dataset="latest")

    usage = fs.where_used("customer_stats")
    assert usage.feature_views == ["churn:v1"] and usage.training_datasets == [dataset.id]
    assert [(m.model, m.version, m.stage) for m in usage.model_versions] == [
        ("churn", 1, "DEVELOPMENT"),
        ("churn", 2, "DEVELOPMENT"),
    ]
    assert fs.where_used("customer_stats:avg_spend").feature_views == ["churn:v1"]
    unused = fs.create_feature_view("orders_only", ["customer_stats:orders_30d"])
    assert fs.where_used("customer_stats:avg_spend").feature_views == ["churn:v1"]
    assert fs.where_used("customer_stats:orders_30d").feature_views == [
        "churn:v1",
        unused.ref,
    ]
    with pytest.raises(NotFound, match="feature group 'nope'"):
        fs.where_used("nope")


def test_a_group_production_uses_cannot_be_deleted(trained: Any) -> None:
    client, fs, dataset, version = trained
    table_uri = fs.service.get_feature_group("customer_stats").table_uri
    fs.materialize("customer_stats")
    client.set_stage("churn", version.version, "production")
    with pytest.raises(Conflict, match="used by churn v1, which is in PRODUCTION"):
        fs.delete_feature_group("customer_stats", force=True)
    assert fs.get_feature_group("customer_stats").read().num_rows == 3  # nothing removed

    client.set_stage("churn", version.version, "archived")
    with pytest.raises(Conflict, match=r"read by the feature views \['churn:v1'\]"):
        fs.delete_feature_group("customer_stats")
    removed = fs.delete_feature_group("customer_stats", force=True)
    assert [g.ref for g in removed] == ["customer_stats:v1"]
    with pytest.raises(NotFound):
        fs.get_feature_group("customer_stats")
    with pytest.raises(NotFound):
        fs.get_feature_view("churn")
    if "://" not in table_uri:
        assert not os.path.exists(table_uri)
    assert fs.get_training_dataset(dataset.id).to_pandas().shape[0] == 4  # snapshots stay


def test_deleting_an_unused_group_removes_its_data(fs: FeatureStore) -> None:
    define(fs).insert(transactions())  # type: ignore[attr-defined]
    fs.materialize("customer_stats")
    group = fs.service.get_feature_group("customer_stats")
    fs.delete_feature_group("customer_stats")
    # a new group of the same name starts empty: offline and online
    define(fs)
    assert fs.offline.version(group) is None
    found = fs.online.read("customer_stats__v1", [(1,)], ["orders_30d"])
    assert found[0].values is None
    with pytest.raises(NotFound, match="feature group 'customer_stats' v3"):
        fs.delete_feature_group("customer_stats", version=3)
