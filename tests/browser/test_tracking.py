"""Experiments, their runs and runs compared, in a real browser: filter, sort, page and
choose columns with htmx (the address follows), pick runs, compare them, draw the charts;
at desktop and phone size."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from plinth.config import load_settings
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import open_store
from plinth.tracking.service import TrackingService
from tests.backends import running_server
from tests.ui.pages.test_tracking import seed

pytestmark = pytest.mark.browser

RUNS = 53  # two pages


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TrackingService]]:
    home = tmp_path_factory.mktemp("tracking") / "server"
    with running_server(home) as url:
        settings = load_settings(home=home)
        tracking = TrackingService(
            open_store(settings.resolved_store_uri), ArtifactStore(settings.resolved_artifact_uri)
        )
        seed(tracking, RUNS)
        yield url, tracking


@pytest.fixture
def server(served: tuple[str, TrackingService]) -> str:
    return served[0]


def rows_of(page: Any) -> Any:
    return page.get_by_role("region", name="Runs of churn").locator("tbody tr")


def run_names(page: Any) -> list[str]:
    return [name.strip() for name in rows_of(page).locator("td:nth-child(2)").all_inner_texts()]


def test_filter_sort_page_and_choose_columns(server: str, page_for: Any) -> None:
    browser = page_for(server)
    page = browser.page
    browser.goto("/ui/experiments")
    page.get_by_role("link", name="churn").click()
    page.wait_for_url("**/ui/experiments/churn")
    assert page.get_by_role("heading", level=1).inner_text() == "churn"
    assert len(run_names(page)) == 50 and run_names(page)[0] == "run-52"
    browser.check_accessible()
    browser.shot("runs-table")

    page.get_by_label("Filter").fill("metrics.acc > 0.75")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"filter=metrics\.acc"))
    expect(rows_of(page)).to_have_count(2)
    assert run_names(page) == ["run-52", "run-51"]
    assert "page=" not in page.url

    page.get_by_role("link", name="Name", exact=True).click()
    page.wait_for_url(re.compile(r"sort=name&order=asc"))
    header = page.get_by_role("columnheader", name="Name")
    expect(header).to_have_attribute("aria-sort", "ascending")
    assert run_names(page) == ["run-51", "run-52"]  # the filter stays
    page.go_back()  # to the filtered address htmx pushed: the whole page again
    page.wait_for_url(re.compile(r"filter=metrics\.acc[^&]*&sort=start_time"))
    expect(page.get_by_role("heading", level=1)).to_have_text("churn")
    expect(page.get_by_role("columnheader", name="Started")).to_have_attribute(
        "aria-sort", "descending"
    )
    assert run_names(page) == ["run-52", "run-51"]
    page.go_forward()
    expect(page.get_by_role("columnheader", name="Name")).to_have_attribute(
        "aria-sort", "ascending"
    )

    page.get_by_label("Filter").fill("metrics.acc >")
    page.get_by_role("button", name="Apply").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "expected a value" in alert.inner_text()

    page.get_by_label("Filter").fill("")
    page.get_by_role("button", name="Apply").click()
    expect(rows_of(page)).to_have_count(50)
    page.get_by_role("link", name="Next →").click()
    page.wait_for_url(re.compile(r"page=2"))
    expect(rows_of(page)).to_have_count(3)
    assert run_names(page) == ["run-50", "run-51", "run-52"]

    page.get_by_text("Columns", exact=True).click()
    page.get_by_role("checkbox", name="acc", exact=True).uncheck()
    page.get_by_role("checkbox", name="model.kind", exact=True).uncheck()
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"columns=chosen"))
    expect(page.get_by_role("columnheader", name="acc (last)")).to_have_count(0)
    headers = page.get_by_role("columnheader").all_inner_texts()
    assert not any("acc" in h or "model.kind" in h for h in headers)
    page.reload()  # the address holds the whole state
    assert page.get_by_role("columnheader", name="loss (last)").is_visible()
    assert page.get_by_role("columnheader", name="acc (last)").count() == 0
    browser.check_accessible()
    # the browser logs the 422 of the malformed filter's answer (an expected one)
    browser.errors[:] = [e for e in browser.errors if "status of 422" not in e]


def test_pick_two_runs_and_compare_them(server: str, page_for: Any) -> None:
    browser = page_for(server)
    page = browser.page
    browser.goto("/ui/experiments/churn")
    page.get_by_role("checkbox", name="Select run-52").check()
    page.get_by_role("checkbox", name="Select run-50").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url(re.compile(r"/ui/compare\?runs=\w+&runs=\w+$"))
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", level=1).inner_text() == "Compare 2 runs"
    page.wait_for_selector("[data-drawn=true] >> nth=2")  # acc, loss and the scatter
    plots = page.locator(".plot")
    assert plots.count() == 3
    assert page.locator(".plot canvas").count() == 3  # drawn, not an error message
    differing = page.locator("tr.differs th").all_inner_texts()
    assert [" ".join(d.replace("≠", "").split()) for d in differing] == [
        "differs: hyper.depth",
        "differs: hyper.lr",
    ]
    browser.check_accessible()
    browser.shot("compare", full_page=True)

    page.get_by_role("link", name="Show only differences").click()
    page.wait_for_url(re.compile(r"only=1"))
    rows = page.get_by_role("region", name="Params of the runs").locator("tbody tr")
    assert rows.count() == 2

    page.get_by_label("Param (x)").select_option("model.kind")
    page.get_by_role("button", name="Plot").click()
    page.wait_for_url(re.compile(r"x=model\.kind"))
    assert "is not a number in these runs" in page.get_by_role("status").inner_text()


@pytest.mark.parametrize("path", ["/ui/experiments/churn", "/ui/compare"])
def test_the_pages_fit_a_phone(server: str, page_for: Any, path: str) -> None:
    browser = page_for(server)
    if path == "/ui/compare":
        browser.goto("/ui/experiments/churn")
        ids = browser.page.locator("input[name=runs]").evaluate_all(
            "boxes => boxes.slice(0, 3).map(b => b.value)"
        )
        path += "?" + "&".join(f"runs={i}" for i in ids)
    browser.phone()
    browser.goto(path)
    browser.fits()
    if path.startswith("/ui/compare"):
        browser.page.wait_for_selector("[data-drawn=true] >> nth=2")
        browser.fits()
        browser.shot("compare-phone")
    else:
        browser.shot("runs-table-phone")


def test_the_table_follows_a_running_run_until_it_ends(
    served: tuple[str, TrackingService], page_for: Any
) -> None:
    url, tracking = served
    [run_id] = seed(tracking, 1, "live", running=1)
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/experiments/live")
    status = page.get_by_role("region", name="Runs of live").locator("tbody td:nth-child(3)")
    expect(status).to_have_text("RUNNING")
    page.get_by_role("checkbox", name="Select run-00").check()
    tracking.end_run(run_id)
    expect(status).to_have_text("FINISHED", timeout=15_000)  # the next refresh, within 5 s
    assert page.get_by_role("checkbox", name="Select run-00").is_checked()  # kept
    assert page.locator("[hx-trigger]").count() == 0  # and no more refreshes
