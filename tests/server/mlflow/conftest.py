"""The app the MLflow route tests share: one per test module (building one takes seconds),
its store emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from plinth.config import load_settings
from plinth.server.app import create_app
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import open_store
from plinth.tracking.service import TrackingService
from tests.backends import empty_tables


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, TrackingService]]:
    from fastapi.testclient import TestClient

    home = tmp_path_factory.mktemp("mlflow-routes")
    store = open_store(f"sqlite:///{home / 'plinth.db'}")
    tracking = TrackingService(store, ArtifactStore(str(home / "artifacts")))
    app = create_app(load_settings(home=home / "server"), tracking=tracking)
    with TestClient(app) as client:
        yield client, tracking
    store.dispose()


@pytest.fixture
def tracking(server: tuple[Any, TrackingService]) -> TrackingService:
    empty_tables(server[1].store)
    return server[1]


@pytest.fixture
def api(server: tuple[Any, TrackingService], tracking: TrackingService) -> Any:
    return server[0]
