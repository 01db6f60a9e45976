"""The API's documentation page renders in a real browser with no internet."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from plinth.api import API_PREFIX
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


# Methods an OpenAPI path item may hold operations under.
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Each drawn operation as "METHOD path", read from the page.
_DRAWN_OPERATIONS = """() => Array.from(document.querySelectorAll(".opblock"), (block) =>
  block.querySelector(".opblock-summary-method").textContent.trim() + " "
  + block.querySelector(".opblock-summary-path").getAttribute("data-path"))"""


def test_every_operation_of_the_document_is_in_the_docs_page(tmp_path: Path, page_for: Any) -> None:
    # Swagger UI >= 5.33 only puts on-screen operations in the page past 150 tags plus
    # operations (swagger-api/swagger-ui#11056); our copy is patched not to (VERSION.txt),
    # so every operation can be found with the browser's find-in-page.
    with running_server(tmp_path / "server") as url:
        with urlopen(f"{url}{API_PREFIX}/openapi.json") as response:
            document = json.load(response)
        expected = sorted(
            f"{method.upper()} {path}"
            for path, item in document["paths"].items()
            for method in item
            if method in _METHODS
        )
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        browser = page_for(url)
        browser.goto("/docs")
        page = browser.page
        page.locator(".opblock").first.wait_for(timeout=20_000)
        with contextlib.suppress(PlaywrightTimeout):  # the assertion below says what is missing
            page.wait_for_function(
                "n => document.querySelectorAll('.opblock').length >= n",
                arg=len(expected),
                timeout=20_000,
            )
        assert sorted(page.evaluate(_DRAWN_OPERATIONS)) == expected
