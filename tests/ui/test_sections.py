"""A part adds its pages by adding one module to plinth.ui.pages: nothing else changes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import plinth.ui.pages as pages
from plinth.config import load_settings
from plinth.server.app import create_app
from plinth.ui.sections import discover

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

_MODULE = """
from fastapi import APIRouter, Request
from fastapi.responses import Response

from plinth.ui.sections import Section
from plinth.ui.web import HtmlRoute, render

router = APIRouter(route_class=HtmlRoute)
section = Section("example", "Example", "/example", router, summary="Examples online.", order=90)


@router.get("/example")
def example(request: Request) -> Response:
    return render(request, "home.html")
"""


def test_a_new_module_adds_a_section_to_the_navigation_and_its_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    extra = tmp_path / "more_pages"
    extra.mkdir()
    (extra / "example.py").write_text(_MODULE)
    monkeypatch.setattr(pages, "__path__", [*pages.__path__, str(extra)])
    monkeypatch.delitem(sys.modules, "plinth.ui.pages.example", raising=False)
    assert "example" in [s.name for s in discover()]
    app = create_app(load_settings(home=tmp_path / "home"))
    with TestClient(app) as http:
        page = http.get("/ui/example")
        assert page.status_code == 200
        assert '<a href="/ui/example" aria-current="page">Example</a>' in page.text
        assert "Examples online." in http.get("/ui/").text
    sys.modules.pop("plinth.ui.pages.example", None)


def test_sections_come_in_their_order() -> None:
    found = discover()
    assert [s.order for s in found] == sorted(s.order for s in found)
    assert found[0].name == "tracking"
