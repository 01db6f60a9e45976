"""A real browser (Debian's Chromium, driven by Playwright) for the pages the server serves.

Each page fails its test on a request to any host but the server's own (no CDN, no
tracking) and on any console error or uncaught script error.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_ROOT = Path(__file__).resolve().parents[2]

# What a page of ours must never lack; run in the page, answers a list of problems.
_ACCESSIBILITY_PROBLEMS = """() => {
  const problems = [];
  for (const landmark of ["main", "header", "nav", "footer"]) {
    if (!document.querySelector(landmark)) problems.push("no <" + landmark + ">");
  }
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one <h1>");
  if (!document.documentElement.lang) problems.push("no lang on <html>");
  const named = (el) => (el.labels && el.labels.length) || el.getAttribute("aria-label")
    || el.getAttribute("aria-labelledby") || el.getAttribute("title");
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden" || el.type === "submit") continue;
    if (!named(el)) problems.push("unlabelled " + el.tagName.toLowerCase() + " " + (el.name || ""));
  }
  for (const el of document.querySelectorAll("button")) {
    if (!el.textContent.trim() && !named(el)) problems.push("a button without a name");
  }
  for (const el of document.querySelectorAll("img")) {
    if (!el.hasAttribute("alt")) problems.push("an image without alt: " + el.src);
  }
  for (const el of document.querySelectorAll("[role=img]")) {
    if (!el.getAttribute("aria-label")) problems.push("a chart without a text alternative");
  }
  for (const el of document.querySelectorAll("a")) {
    if (!el.textContent.trim() && !named(el)) problems.push("a link without text: " + el.href);
  }
  return problems;
}"""


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
        """Open a page, wait for its scripts and requests to settle, and check its markup
        (see ``check_accessible``; the dashboard's pages, not Swagger UI's)."""
        answer = self.page.goto(self.base_url + path)
        self.page.wait_for_load_state("networkidle")
        if path.startswith("/ui"):
            self.check_accessible()
        return answer

    def check_accessible(self) -> None:
        """Landmarks, one main heading, every control labelled, every chart described."""
        problems = self.page.evaluate(_ACCESSIBILITY_PROBLEMS)
        assert problems == [], f"{self.page.url}: {problems}"

    def phone(self) -> None:
        """A phone-sized viewport; the page must not scroll sideways."""
        self.page.set_viewport_size({"width": 390, "height": 844})

    def fits(self) -> None:
        wide = self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 1, f"{self.page.url} is {wide} px wider than the screen"

    def shot(self, name: str, full_page: bool = False) -> Path:
        """Save a screenshot under build/screenshots (or $PLINTH_SCREENSHOTS)."""
        folder = Path(os.environ.get("PLINTH_SCREENSHOTS", _ROOT / "build" / "screenshots"))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def sign_in(self, user: str, password: str) -> None:
        self.page.goto(self.base_url + "/ui/sign-in")
        self.page.get_by_label("User name").fill(user)
        self.page.get_by_label("Password", exact=True).fill(password)
        self.page.get_by_role("button", name="Sign in", exact=True).click()
        self.page.wait_for_load_state("networkidle")

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
