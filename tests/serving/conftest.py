"""A registered model and a running model service (uvicorn on loopback, in a thread)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from plinth.client import Client
from plinth.serving.app import ServeConfig, create_service
from tests.backends import free_port, local_client

EXAMPLE = pd.DataFrame({"age": [20, 30, 40, 50], "spend": [1.0, 2.0, 3.0, 4.0]})


@pytest.fixture
def client(tmp_path: Path) -> Client:
    made = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    made.settings.online_uri = f"sqlite:///{tmp_path / 'online.db'}"
    return made


@pytest.fixture
def trust_pickles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's policy trusts pickled packages: for tests that score with a pyfunc model
    (set before their client is made; subprocesses inherit it)."""
    monkeypatch.setenv("PLINTH_TRUST_PICKLE", "true")


def logistic() -> LogisticRegression:
    return LogisticRegression().fit(EXAMPLE, [0, 0, 1, 1])


def constant(value: int) -> DummyClassifier:
    """A model whose every answer is ``value``: a response shows which version made it."""
    return DummyClassifier(strategy="constant", constant=value).fit(EXAMPLE, [0, 1, 0, 1])


@contextlib.contextmanager
def running_service(app: Any) -> Iterator[httpx.Client]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the model service did not start")
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def service(client: Client, uri: str, **options: Any) -> Iterator[httpx.Client]:
    app = create_service(ServeConfig(uri, **options), client)
    with running_service(app) as http:
        http.app = app  # type: ignore[attr-defined]  # for the tests' look inside
        yield http


def _armed(marker: str) -> Rule:
    Path(marker).touch()
    return Rule(marker)


class Rule:
    """A pyfunc model (spend above 2 churns) whose unpickling creates ``marker``: a
    harmless payload that shows whether a pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def predict(self, frame: pd.DataFrame) -> Any:
        return (frame["spend"] > 2).astype("int64").to_numpy()

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _armed, (self.marker,)
