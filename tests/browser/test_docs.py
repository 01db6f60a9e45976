"""The API's documentation page renders in a real browser with no internet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.backends import running_server

pytestmark = pytest.mark.browser


def test_the_docs_page_renders_the_operations_offline(tmp_path: Path, page_for: Any) -> None:
    with running_server(tmp_path / "server") as url:
        browser = page_for(url)
        browser.goto("/docs")
        page = browser.page
        # the operations of the document, drawn by the server's own copy of Swagger UI
        page.get_by_text("/api/v1/runs/search", exact=True).first.wait_for(timeout=20_000)
        assert page.get_by_text("/api/v1/models/{name}/versions/{version}/stage").count() == 1
        assert page.title() == "Plinth API"
