"""Shared fixtures of the feature store tests: a store (local or behind a server) and a
small customer dataset."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

import plinth
from plinth.client import Client
from plinth.features.store import FeatureStore
from tests.backends import FAST_FLUSH, local_client, running_server

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


@pytest.fixture(params=["local", "remote"])
def fs_client(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Client]:
    """A client whose metadata lives in a local store or behind a server; a remote client's
    feature data goes to the server's Delta tables and SQLite online store through the
    server (tests/test_remote_data.py)."""
    artifacts, online = str(tmp_path / "artifacts"), f"sqlite:///{tmp_path / 'online.db'}"
    if request.param == "local":
        client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", artifacts)
        client.settings.online_uri = online
        yield client
        return
    monkeypatch.setenv("PLINTH_ARTIFACT_URI", artifacts)
    with (
        running_server(tmp_path / "server-home") as url,
        plinth.connect(url, artifact_uri=artifacts, online_uri=online, **FAST_FLUSH) as remote,  # type: ignore[arg-type]
    ):
        yield remote


@pytest.fixture
def fs(fs_client: Client) -> FeatureStore:
    return fs_client.feature_store()


def transactions() -> pd.DataFrame:
    # customer 1: aggregates on day 0 and day 10; customer 2: on day 5; customer 3: never
    return pd.DataFrame(
        {
            "customer_id": [1, 1, 2],
            "event_time": [day(0), day(10), day(5)],
            "orders_30d": [3, 5, 1],
            "avg_spend": [20.0, 25.0, 99.0],
        }
    )


def define(fs: FeatureStore, ttl: str = "30d") -> object:
    fs.create_entity("customer", join_keys=["customer_id"])
    df = transactions()
    return fs.create_feature_group(
        "customer_stats",
        entity="customer",
        event_time="event_time",
        schema=df.dtypes,
        online=True,
        ttl=ttl,
        description="30-day order aggregates",
    )
