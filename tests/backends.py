"""Real backends for tests: SQLite files, a PostgreSQL database, a Plinth server on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from plinth.auth.types import Role
from plinth.client import Client, connect
from plinth.config import load_settings
from plinth.store.engine import Store
from plinth.store.schema import metadata

POSTGRES_ADMIN = os.environ.get(
    "PLINTH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
FAST_FLUSH = {"flush_interval": 0.05, "heartbeat_interval": 0.2}


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test session; dropped afterwards."""
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"plinth_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))  # a generated identifier, not input
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL at {POSTGRES_ADMIN} is not available: {exc}")
    uri = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield uri
    finally:
        from plinth.store import engine as store_engine

        store = store_engine._stores.pop(uri, None)
        if store is not None:
            store.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def empty_tables(store: Store) -> None:
    with store.write() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(home: Path, **settings: object) -> Iterator[str]:
    """A real Plinth server (uvicorn, in a thread) on a free loopback port."""
    import uvicorn

    from plinth.server.app import create_app

    port = free_port()
    resolved = load_settings(home=home, port=port, **settings)
    server = uvicorn.Server(
        uvicorn.Config(create_app(resolved), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not become healthy")
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def local_client(store_uri: str, artifact_uri: str) -> Client:
    return connect(store_uri=store_uri, artifact_uri=artifact_uri, **FAST_FLUSH)  # type: ignore[arg-type]


class AuthServer:
    """A Plinth app with authentication on and resources private by default, in process
    (``http``: its TestClient), and the auth service of its store to make users."""

    def __init__(self, home: Path) -> None:
        from fastapi.testclient import TestClient

        from plinth.auth.service import AuthService
        from plinth.server.app import create_app
        from plinth.store.engine import open_store

        settings = load_settings(home=home, auth=True, private_by_default=True)
        self.http = TestClient(create_app(settings))
        self.store = open_store(settings.resolved_store_uri)
        self.auth = AuthService(self.store)

    def user(self, name: str, role: Role) -> dict[str, str]:
        """A new user with ``role``; the headers of a token of theirs."""
        self.auth.create_user(name, role=role)
        return {"authorization": f"Bearer {self.auth.create_token('t', user=name).secret}"}
