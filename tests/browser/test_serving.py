"""The serving pages in a real browser: score jobs to a job's checks, a running job's
status updating by itself, a model's predictions with their charts, at phone size too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.backends import running_server
from tests.ui.pages.serving_data import Seeded, seed, seeded_client

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    """One server for the module, with a delivered job, a blocked one and predictions."""
    home = tmp_path_factory.mktemp("serving") / "server"
    with running_server(home) as url:
        yield url, seed(seeded_client(home), home.parent / "data")


def test_from_the_jobs_to_a_job_and_its_checks(server: tuple[str, Seeded], page_for: Any) -> None:
    url, _ = server
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/serving")
    jobs = page.get_by_role("region", name="Score jobs")
    assert jobs.get_by_role("row").count() == 3  # the header and two jobs
    browser.shot("serving-jobs")
    page.get_by_label("Status").select_option("BLOCKED")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/ui/serving?*status=BLOCKED*")
    page.get_by_role("row").nth(2).wait_for(state="detached")
    assert jobs.get_by_role("row").count() == 2
    jobs.get_by_role("row").nth(1).get_by_role("link").first.click()
    page.wait_for_url("**/ui/serving/jobs/*")
    browser.check_accessible()
    assert page.get_by_role("heading", level=1).inner_text().startswith("Score job")
    assert "prediction_values failed" in page.get_by_role("alert").inner_text()
    failed = page.get_by_role("region", name="Checks").get_by_role("row", name="prediction_values")
    assert "failed" in failed.inner_text() and "nan=2" in failed.inner_text()
    assert page.get_by_role("link", name="models:/odd/1").get_attribute("href") == (
        "/ui/models/odd/versions/1"
    )
    browser.phone()
    browser.goto(page.url.removeprefix(url))
    browser.fits()
    browser.goto("/ui/serving")
    browser.fits()


def test_a_running_job_updates_itself(server: tuple[str, Seeded], page_for: Any) -> None:
    from playwright.sync_api import expect

    url, seeded = server
    jobs = seeded.client.score_jobs
    jobs.start_score_job("browser-live", "churn", 2, "in.parquet", "out")
    browser = page_for(url)
    browser.goto("/ui/serving?model=churn")
    row = browser.page.get_by_role("row", name="models:/churn/2")
    expect(row).to_contain_text("RUNNING")
    jobs.finish_score_job("browser-live", "DELIVERED", 7, [], 3)
    expect(row).to_contain_text("DELIVERED", timeout=10_000)  # the page asked again by itself
    expect(row).to_contain_text("(version 3)")


def test_the_predictions_of_a_model(server: tuple[str, Seeded], page_for: Any) -> None:
    url, _ = server
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/serving/predictions")
    page.get_by_role("link", name="churn", exact=True).click()
    page.wait_for_url("**/ui/serving/predictions?model=churn")
    page.wait_for_load_state("networkidle")
    browser.check_accessible()
    assert page.get_by_role("heading", level=1).inner_text() == "Predictions of churn"
    page.locator("[data-drawn=true]").nth(1).wait_for()  # both charts drawn
    table = page.get_by_role("region", name="Predictions")
    assert table.get_by_role("row").count() == 5  # the header and four requests
    assert "req-v2" in table.get_by_role("row").nth(1).inner_text()  # the newest first
    browser.shot("serving-predictions")
    page.get_by_label("Version").fill("1")
    page.get_by_label("Window").select_option("1h")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/ui/serving/predictions?model=churn&version=1&window=1h")
    assert table.get_by_role("row").count() == 4 and "req-v2" not in table.inner_text()
    browser.phone()
    browser.goto("/ui/serving/predictions?model=churn")
    page.locator("[data-drawn=true]").nth(1).wait_for()
    browser.fits()


def test_an_unknown_model_is_a_page_that_says_so(server: tuple[str, Seeded], page_for: Any) -> None:
    url, _ = server
    browser = page_for(url)
    answer = browser.goto("/ui/serving/predictions?model=nobody")
    assert answer.status == 404
    assert "nobody" in browser.page.get_by_role("alert").inner_text()
    browser.errors.clear()  # the browser logs the 404 of the page
