"""A real browser (Debian's Chromium, driven by Playwright) for the pages the server serves.

Each page fails its test on a request to any host but the server's own (no CDN, no
tracking) and on any console error or uncaught script error.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# Per module, not per session: Playwright's sync API keeps an event loop running in the
# thread while it is open, and other tests of the same worker call asyncio.run.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:  # scripts/test installs it; a developer without it is told so
        pytest.skip("Chromium is not installed: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # tests run as root, where Chromium's sandbox cannot start
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class Page:
    """A browser page that records what the server's pages must never do."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.foreign: list[str] = []
        self.errors: list[str] = []
        host = urlsplit(base_url).netloc
        self.page.on(
            "request",
            lambda r: None if urlsplit(r.url).netloc == host else self.foreign.append(r.url),
        )
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base_url + path)

    def check(self) -> None:
        assert self.foreign == [], f"requests to other hosts: {self.foreign}"
        assert self.errors == [], f"console errors: {self.errors}"


@pytest.fixture
def page_for(browser: Any) -> Iterator[Any]:
    opened: list[Page] = []

    def open_page(base_url: str) -> Page:
        made = Page(browser, base_url)
        opened.append(made)
        return made

    yield open_page
    for made in opened:
        made.check()
        made.context.close()
