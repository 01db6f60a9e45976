"""``plinth.read_predictions``: the prediction log read back through the public client,
local or remote (the log's rows come through the server)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import plinth
from plinth.client import Client, set_default_client
from plinth.config import load_settings
from plinth.serving.predlog import Entry, PredictionLog
from plinth.store.engine import Store, open_store
from tests.serving.conftest import EXAMPLE, logistic


def backing_store(client: Client, tmp_path: Path) -> Store:
    """The central store behind ``client``: where a model service writes its log."""
    if client.remote:
        return open_store(load_settings(home=tmp_path / "server-home").resolved_store_uri)
    return client.tracking.store


def test_read_predictions_by_name_uri_version_and_time(client: Client, tmp_path: Path) -> None:
    for _ in range(2):
        client.register_model(logistic(), "churn", input_example=EXAMPLE)
    client.set_stage("churn", 2, "PRODUCTION")
    log = PredictionLog(backing_store(client, tmp_path), flush_seconds=60)
    rows = pd.DataFrame({"age": [41, 35], "spend": [2.5, 1.0]})
    log.record(Entry("churn", 1, "a", 1_000, rows, np.array([1, 0]), 2.0))
    log.record(Entry("churn", 2, "b", 2_000, rows[:1], np.array([1]), 1.0))
    log.record(Entry("other", 1, "c", 2_000, rows[:1], np.array([0]), 1.0))
    log.close()
    found = client.read_predictions("churn")
    assert found["request_id"].tolist() == ["a", "a", "b"]
    assert found["age"].tolist() == [41, 35, 41] and found["prediction"].tolist() == [1, 0, 1]
    assert found["at"][2] == pd.Timestamp(2_000, unit="ms", tz="UTC")
    assert client.read_predictions("churn", version=1)["request_id"].tolist() == ["a", "a"]
    assert client.read_predictions("models:/churn@production")["request_id"].tolist() == ["b"]
    later = datetime.fromtimestamp(1.5, UTC)
    assert client.read_predictions("churn", since=later)["request_id"].tolist() == ["b"]
    assert client.read_predictions("nobody").empty
    with pytest.raises(plinth.InvalidArgument, match="names its version already"):
        client.read_predictions("models:/churn/1", version=2)
    set_default_client(client)
    assert plinth.read_predictions("models:/churn/1")["request_id"].tolist() == ["a", "a"]
