"""The feature store's pages in a real browser: search the catalog, a group, a commit's
statistics drawn (histograms, most frequent values), its validation report, a view and its training datasets; phone size."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from plinth.config import load_settings
from tests.backends import local_client, running_server
from tests.ui.pages.test_features import seed

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, int]]]:
    """One server for the module, seeded once through a local client of its home."""
    home = tmp_path_factory.mktemp("features") / "server"
    with running_server(home) as url:
        settings = load_settings(home=home)
        with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
            seeded = seed(client.feature_store())
        yield url, seeded


def test_search_the_catalog_open_a_group_and_its_statistics(
    served: tuple[str, dict[str, int]], page_for: Any
) -> None:
    url, seeded = served
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/features")
    page.get_by_label("Search", exact=True).fill("growth")  # a feature's tag
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/ui/features?q=growth**")
    results = page.get_by_role("region", name="Feature groups")
    assert results.get_by_role("link", name="customer_stats").is_visible()
    assert page.get_by_role("region", name="Feature views").count() == 0
    browser.check_accessible()

    results.get_by_role("link", name="customer_stats").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", level=1).inner_text() == "Feature group customer_stats v1"
    schema = page.get_by_role("region", name="Schema")
    assert "orders in the last 30 days" in schema.inner_text()
    browser.check_accessible()
    browser.shot("features-group", full_page=True)

    third = seeded["third"]
    page.get_by_role("link", name=f"Commit {third} statistics").click()
    page.wait_for_load_state("networkidle")
    page.wait_for_selector("[data-drawn=true] canvas")
    assert page.locator("[data-drawn=true]").count() == 2  # orders_30d and avg_spend
    assert page.get_by_role("img", name="Histogram of avg_spend").count() == 1
    assert page.get_by_role("img", name="Histogram of orders_30d").count() == 1
    top = page.get_by_role("region", name="Most frequent values of segment")
    cells = top.get_by_role("row").nth(1).get_by_role("cell").all_inner_texts()
    assert cells == ["<script>alert(1)</script>", "7", "70.0 %"]
    report = page.get_by_role("region", name="Validation report")
    assert "allowed_values" in report.inner_text() and "failed" in report.inner_text()
    browser.check_accessible()
    browser.shot("features-statistics", full_page=True)

    page.get_by_role("link", name="customer_stats:v1").click()
    page.get_by_role("link", name="Validation", exact=True).click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", level=1).inner_text() == "Validation of customer_stats v1"
    assert page.get_by_role("region", name="Validation report").count() == 3
    browser.check_accessible()


def test_an_entity_a_view_and_its_training_datasets(
    served: tuple[str, dict[str, int]], page_for: Any
) -> None:
    url, seeded = served
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/features?kind=entities")
    page.get_by_role("link", name="customer", exact=True).click()
    page.wait_for_load_state("networkidle")
    assert "a buying customer" in page.get_by_role("main").inner_text()
    browser.check_accessible()

    browser.goto("/ui/features?q=churn")
    page.get_by_role("region", name="Feature views").get_by_role("link", name="churn").click()
    page.wait_for_load_state("networkidle")
    source = page.get_by_label("Source of amount_over_avg")
    assert "<b>escaped</b>" in source.inner_text()  # shown as text, not markup
    browser.check_accessible()

    page.get_by_role("link", name="Training datasets (1)").click()
    page.wait_for_load_state("networkidle")
    browser.check_accessible()
    page.get_by_role("link", name=f"#{seeded['dataset']}").click()
    page.wait_for_load_state("networkidle")
    main = page.get_by_role("main").inner_text()
    assert "2026-01-04 00:00:00 … 2026-01-06 00:00:00" in main and "january churn" in main
    browser.check_accessible()


def test_the_feature_pages_fit_a_phone(served: tuple[str, dict[str, int]], page_for: Any) -> None:
    url, seeded = served
    browser = page_for(url)
    browser.phone()
    for path in (
        "/ui/features",
        "/ui/features/groups/customer_stats",
        f"/ui/features/groups/customer_stats/commits/{seeded['third']}",
        "/ui/features/groups/customer_stats/validation",
        "/ui/features/views/churn",
        "/ui/features/views/churn/datasets",
        f"/ui/features/datasets/{seeded['dataset']}",
    ):
        browser.goto(path)
        browser.fits()
