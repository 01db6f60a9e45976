"""A server with the dashboard, driven through its HTML routes (no browser)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.auth.service import AuthService
from plinth.auth.types import Role
from plinth.config import load_settings
from plinth.server.app import create_app
from plinth.store.engine import open_store
from tests.backends import empty_tables

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Dashboard:
    """The dashboard of a server with its own store; ``auth`` acts as the local admin."""

    def __init__(self, home: Path, **settings: Any) -> None:
        from fastapi.testclient import TestClient

        self.settings = load_settings(home=home, **settings)
        self.app = create_app(self.settings)
        self.store = open_store(self.settings.resolved_store_uri)
        self.auth = AuthService(self.store)
        self.http = TestClient(self.app, follow_redirects=False)

    def user(self, name: str, role: Role = Role.EDITOR, password: str = "s3cret-passw0rd") -> str:
        self.auth.create_user(name, role=role, password=password)
        return password

    def csrf(self, path: str = "/ui/sign-in") -> str:
        """The CSRF token of a page's forms (and of the browser's cookie)."""
        page = self.http.get(path)
        found = _CSRF.search(page.text)
        assert found, f"no CSRF field on {path}"
        return found.group(1)

    def sign_in(self, user: str, password: str = "s3cret-passw0rd") -> Any:
        form = {"user": user, "password": password, "csrf": self.csrf(), "next": "/ui/"}
        answer = self.http.post("/ui/sign-in", data=form)
        assert answer.status_code == 303, answer.text
        return answer

    def post(self, path: str, data: dict[str, Any], csrf_from: str) -> Any:
        """Submit a form as the page at ``csrf_from`` would."""
        return self.http.post(path, data={**data, "csrf": self.csrf(csrf_from)})


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    """Authentication off: the embedded default, everyone the local admin."""
    made = Dashboard(tmp_path / "server")
    with made.http:
        yield made


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def any_dashboard(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dashboard]:
    """The dashboard (authentication off) on each metadata store: SQLite and PostgreSQL."""
    settings: dict[str, Any] = {}
    if request.param == "postgres":
        uri = request.getfixturevalue("postgres_uri")
        empty_tables(open_store(uri))
        settings["store_uri"] = uri
    made = Dashboard(tmp_path / "server", **settings)
    with made.http:
        yield made


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Dashboard]:
    """Authentication on: pages need a signed-in user."""
    made = Dashboard(tmp_path / "server", auth=True)
    with made.http:
        yield made
