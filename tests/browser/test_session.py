"""Signing in and out of the dashboard in a real browser, at desktop and phone size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plinth.auth.service import AuthService
from plinth.auth.types import Role
from plinth.config import load_settings
from plinth.store.engine import open_store
from tests.backends import running_server

pytestmark = pytest.mark.browser

PASSWORD = "s3cret-passw0rd"


def test_sign_in_opens_the_page_asked_for_and_sign_out_ends_it(
    tmp_path: Path, page_for: Any
) -> None:
    home = tmp_path / "server"
    with running_server(home, auth=True) as url:
        AuthService(open_store(load_settings(home=home).resolved_store_uri)).create_user(
            "bob", role=Role.EDITOR, password=PASSWORD
        )
        browser = page_for(url)
        page = browser.page
        browser.goto("/ui/experiments")
        assert "/ui/sign-in" in page.url
        page.get_by_label("User name").fill("bob")
        page.get_by_label("Password", exact=True).fill("not-the-password")
        page.get_by_role("button", name="Sign in", exact=True).click()
        assert page.get_by_role("alert").inner_text().endswith("wrong user name or password")
        browser.errors.clear()  # the browser logs the 401 of that answer
        assert page.get_by_label("User name").input_value() == "bob"  # kept for the retry
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url("**/ui/experiments")
        assert page.get_by_role("heading", level=1).inner_text() == "Experiments"
        browser.check_accessible()
        browser.shot("sign-in-done")
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/ui/sign-in")
        browser.goto("/ui/")
        assert "/ui/sign-in?next=%2Fui%2F" in page.url


def test_the_home_page_fits_a_phone(tmp_path: Path, page_for: Any) -> None:
    with running_server(tmp_path / "server") as url:
        browser = page_for(url)
        browser.phone()
        browser.goto("/ui/")
        browser.fits()
        links = browser.page.get_by_role("navigation", name="Sections").get_by_role("link")
        assert "Experiments" in links.all_inner_texts()
