"""The pipelines pages in a real browser: from the list to a pipeline, its step-duration
chart drawn (inline SVG), a schedule paused and resumed through its buttons, a failed run's
traceback and its steps' logs (collapsed until opened), the decisions' chart; at phone
size too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from plinth.config import load_settings
from tests.backends import local_client, running_server
from tests.ui.pipelines_data import FAILURE, MODEL, NAME, Seeded, seed

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded, Any]]:
    home = tmp_path_factory.mktemp("pipelines") / "server"
    with running_server(home) as url:
        settings = load_settings(home=home)
        with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
            yield url, seed(client), client


def heading(browser: Any) -> str:
    text: str = browser.page.get_by_role("heading", level=1).inner_text()
    return text


def chart(browser: Any, name: str) -> Any:
    """A chart by its text alternative, drawn at a readable size."""
    found = browser.page.get_by_role("img", name=re.compile(re.escape(name)))
    found.first.wait_for(state="visible")
    box = found.first.bounding_box()
    assert box is not None and box["width"] > 250 and box["height"] > 80, (name, box)
    return found


def test_from_the_list_to_a_pipeline_and_its_chart(server: Any, page_for: Any) -> None:
    url, seeded, _ = server
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/")
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Pipelines").click()
    page.wait_for_url("**/ui/pipelines")
    browser.check_accessible()
    assert heading(browser) == "Pipelines"
    page.get_by_role("region", name="Table of pipelines").get_by_role("link", name=NAME).click()
    page.wait_for_url(f"**/ui/pipelines/{NAME}")
    page.wait_for_load_state("networkidle")
    browser.check_accessible()
    assert heading(browser) == NAME
    found = chart(browser, "Step durations over recent runs")
    assert found.first.locator("circle").count() == 4  # 2 steps x 2 runs
    runs = page.get_by_role("region", name="Table of runs")
    assert f"run {seeded.failed.id}" in runs.inner_text()
    browser.shot("pipeline", full_page=True)


def test_a_schedule_is_paused_and_resumed_by_clicking(server: Any, page_for: Any) -> None:
    from playwright.sync_api import expect

    url, seeded, client = server
    nightly = seeded.nightly.id
    browser = page_for(url)
    page = browser.page
    browser.goto(f"/ui/pipelines/{NAME}")
    page.get_by_role("button", name=f"Pause schedule {nightly}").click()
    page.wait_for_url("**done=paused*")
    browser.check_accessible()
    expect(page.get_by_role("status")).to_contain_text(f"{NAME}: schedule paused")
    resume = page.get_by_role("button", name=f"Resume schedule {nightly}")
    expect(resume).to_be_visible()
    assert [s.paused for s in client.pipelines.list_schedules(NAME) if s.id == nightly] == [True]
    resume.click()
    page.wait_for_url("**done=resumed*")
    expect(page.get_by_role("status")).to_contain_text(f"{NAME}: schedule resumed")
    expect(page.get_by_role("button", name=f"Pause schedule {nightly}")).to_be_visible()
    assert [s.paused for s in client.pipelines.list_schedules(NAME) if s.id == nightly] == [False]


def test_a_failed_runs_traceback_and_logs(server: Any, page_for: Any) -> None:
    from playwright.sync_api import expect

    url, seeded, _ = server
    browser = page_for(url)
    page = browser.page
    browser.goto(f"/ui/pipelines/{NAME}")
    page.get_by_role("region", name="Table of runs").get_by_role(
        "link", name=f"run {seeded.failed.id}"
    ).click()
    page.wait_for_url(f"**/ui/pipeline-runs/{seeded.failed.id}")
    page.wait_for_load_state("networkidle")
    browser.check_accessible()
    assert heading(browser) == f"Run {seeded.failed.id} of {NAME}"
    traceback = page.get_by_role("region", name="Traceback of step fit")
    expect(traceback).to_be_visible()
    expect(traceback).to_contain_text(f"ValueError: {FAILURE}")
    # the failed step's log is open; the others' are collapsed until their summary is clicked
    expect(page.get_by_role("region", name="Log of step fit")).to_be_visible()
    load_log = page.get_by_role("region", name="Log of step load")
    expect(load_log).to_be_hidden()
    page.get_by_text("Log of step load", exact=True).click()
    expect(load_log).to_be_visible()
    expect(load_log).to_contain_text("loaded 12 rows of customers")
    browser.shot("pipeline-run-failed", full_page=True)


def test_the_decisions_chart(server: Any, page_for: Any) -> None:
    url, _, _ = server
    browser = page_for(url)
    browser.goto("/ui/model-decisions")
    assert heading(browser) == "Retraining decisions"
    found = chart(browser, f"{MODEL}: auc of challenger vs champion")
    assert found.first.locator("polyline.series").count() == 2
    browser.shot("model-decisions", full_page=True)


def test_the_pages_fit_a_phone(server: Any, page_for: Any) -> None:
    url, seeded, _ = server
    browser = page_for(url)
    browser.phone()
    for path in (
        "/ui/pipelines",
        f"/ui/pipelines/{NAME}",
        f"/ui/pipeline-runs/{seeded.failed.id}",
        f"/ui/pipeline-runs/{seeded.ok.id}",
        "/ui/model-decisions",
    ):
        browser.goto(path)
        browser.fits()
    browser.shot("pipelines-phone", full_page=True)
