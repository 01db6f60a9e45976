from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plinth.client import Client, connect, set_default_client
from plinth.store.engine import open_store
from plinth.tracking.run import _open_runs
from tests.backends import FAST_FLUSH, empty_tables, local_client, postgres_database, running_server
from tests.s3_endpoint import s3_bucket, s3_endpoint  # noqa: F401


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's Plinth settings or default client."""
    for name in (
        "PLINTH_URI",
        "PLINTH_STORE_URI",
        "PLINTH_ARTIFACT_URI",
        "PLINTH_CONFIG",
        "PLINTH_TRUST_PICKLE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLINTH_HOME", str(tmp_path / "home"))
    set_default_client(None)
    yield
    set_default_client(None)
    _close_stores_under(tmp_path)


def _close_stores_under(folder: Path) -> None:
    """A store is kept per URI for the process's life: one in this test's folder is not
    used again, and its pooled connections would add up to thousands of open files."""
    from plinth.store import engine

    with engine._stores_lock:
        stale = [uri for uri in engine._stores if str(folder) in uri]
        closing = [engine._stores.pop(uri) for uri in stale]
    for store in closing:
        store.dispose()


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    with postgres_database() as uri:
        yield uri


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'plinth.db'}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration), "remote"]
)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    """The same client API against each backend: SQLite, PostgreSQL, a server over HTTP."""
    backend = _backend_client(request, tmp_path)
    yield next(backend)
    for run in list(_open_runs):  # runs a test left open must not outlive their store
        run._buffer.close()
        _open_runs.discard(run)
    next(backend, None)


def _backend_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    artifacts = str(tmp_path / "artifacts")
    if request.param == "sqlite":
        yield local_client(f"sqlite:///{tmp_path / 'plinth.db'}", artifacts)
    elif request.param == "postgres":
        uri = request.getfixturevalue("postgres_uri")
        empty_tables(open_store(uri))
        yield local_client(uri, artifacts)
    else:
        with running_server(tmp_path / "server-home") as url, connect(url, **FAST_FLUSH) as remote:  # type: ignore[arg-type]
            yield remote
