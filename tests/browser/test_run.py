"""The run page in a real browser: charts drawn and zoomed (the zoomed range fetched from
the server), the live status, artifacts previewed and downloaded, lineage, a phone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.client import connect
from plinth.config import load_settings
from plinth.tracking.types import RunStatus
from tests.backends import running_server
from tests.ui.pages.test_run import log_metric, register, seeded_run

pytestmark = pytest.mark.browser


class Seeded:
    def __init__(self, url: str, client: Any, run_id: str) -> None:
        self.url, self.client, self.run_id = url, client, run_id


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    home = tmp_path_factory.mktemp("run") / "server"
    with running_server(home) as url:
        settings = load_settings(home=home)
        client = connect(
            store_uri=settings.resolved_store_uri, artifact_uri=settings.resolved_artifact_uri
        )
        run = seeded_run(client, end=False)
        log_metric(client, run.id, "val/auc", [((i * 7919) % 1000) / 1000 for i in range(5000)])
        register(client, run.id, "model")
        client.tracking.end_run(run.id, RunStatus.FINISHED)
        yield Seeded(url, client, run.id)


def chart_of(page: Any, key: str) -> Any:
    return page.get_by_role("img", name=f"Line chart of {key} by step")


def test_charts_are_drawn_and_zoom_fetches_the_range(server: Seeded, page_for: Any) -> None:
    browser = page_for(server.url)
    page = browser.page
    browser.goto(f"/ui/runs/{server.run_id}")
    assert page.get_by_role("heading", level=1).inner_text() == "baseline"
    for key in ("accuracy", "loss", "val/auc"):
        plot = chart_of(page, key)
        plot.and_(page.locator("[data-drawn=true]")).wait_for()
    assert (
        "2,000 of 5,000 points shown; zoom for detail"
        in page.get_by_text("points shown").inner_text()
    )
    page.get_by_text("Numbers of accuracy").click()
    numbers = page.get_by_role("row").filter(has_text="(step 3, max)")
    assert numbers.inner_text().split("\t")[:1] == ["4"]
    browser.shot("run-detail", full_page=True)

    plot = chart_of(page, "val/auc")
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    y = box["y"] + 100
    with page.expect_response(lambda r: "key=val%2Fauc&start=" in r.url) as zoomed:
        page.mouse.move(box["x"] + box["width"] * 0.4, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
        page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=5)
        page.mouse.up()
    answer = zoomed.value
    assert answer.status == 200
    start = float(re.search(r"start=([-0-9.e]+)", answer.url).group(1))  # type: ignore[union-attr]
    end = float(re.search(r"end=([-0-9.e]+)", answer.url).group(1))  # type: ignore[union-attr]
    assert 1000 < start < end < 4000
    line = answer.json()["series"][0]
    assert line["x"][0] >= start - 1 and line["x"][-1] <= end + 1
    assert len(line["x"]) >= int(end) - int(start) - 1  # every point of the range
    assert chart_of(page, "val/auc").get_attribute("data-error") is None


def test_the_status_refreshes_while_the_run_runs(server: Seeded, page_for: Any) -> None:
    running = server.client.tracking.create_run("churn", "still-going")
    browser = page_for(server.url)
    browser.goto(f"/ui/runs/{running.id}")
    assert browser.page.get_by_text("still running").is_visible()
    server.client.tracking.end_run(running.id, RunStatus.KILLED)
    browser.page.get_by_text("KILLED", exact=True).wait_for(timeout=15_000)  # the next poll
    assert browser.page.get_by_text("still running").count() == 0
    assert browser.page.get_by_text("No metrics logged.").is_visible()


def test_artifacts_are_browsed_previewed_and_downloaded(server: Seeded, page_for: Any) -> None:
    browser = page_for(server.url)
    page = browser.page
    browser.goto(f"/ui/runs/{server.run_id}")
    page.get_by_role("navigation", name="Run").get_by_role("link", name="Artifacts").click()
    page.wait_for_url("**/artifacts")
    browser.check_accessible()
    page.get_by_role("link", name="plots/").click()
    page.wait_for_url("**/artifacts?path=plots")
    page.get_by_role("link", name="curve.png", exact=True).click()
    image = page.get_by_role("img", name="Image artifact plots/curve.png")
    image.wait_for()
    page.wait_for_load_state("networkidle")
    assert image.evaluate("img => img.complete && img.naturalWidth") == 1
    browser.check_accessible()
    page.get_by_role("navigation", name="Folders").get_by_role("link", name="artifacts").click()
    page.get_by_role("link", name="notes.txt", exact=True).click()
    text = page.get_by_label("Text of notes.txt")
    assert text.inner_text() == "<script>alert(1)</script> fine"  # shown, not run
    browser.check_accessible()
    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download notes.txt").click()
    download = downloading.value
    assert download.suggested_filename == "notes.txt"
    assert Path(download.path()).read_bytes() == b"<script>alert(1)</script> fine"
    browser.shot("run-artifact-preview")


def test_lineage_links_the_model_versions(server: Seeded, page_for: Any) -> None:
    browser = page_for(server.url)
    page = browser.page
    browser.goto(f"/ui/runs/{server.run_id}")
    page.get_by_role("navigation", name="Run").get_by_role("link", name="Lineage").click()
    page.wait_for_url("**/lineage")
    browser.check_accessible()
    assert page.get_by_text("abc123def456").is_visible()
    page.get_by_text("2 packages").click()
    assert page.get_by_role("region", name="Packages").get_by_text("numpy").is_visible()
    version = page.get_by_role("link", name="churn-model v1")
    assert version.get_attribute("href") == "/ui/models/churn-model/versions/1"
    assert (
        page.get_by_role("region", name="Datasets read")
        .get_by_role("cell", name="customers", exact=True)
        .is_visible()
    )


def test_the_run_pages_fit_a_phone(server: Seeded, page_for: Any) -> None:
    browser = page_for(server.url)
    browser.phone()
    for path in ("", "/artifacts", "/artifacts/preview?path=notes.txt", "/lineage"):
        browser.goto(f"/ui/runs/{server.run_id}{path}")
        browser.fits()
    browser.goto(f"/ui/runs/{server.run_id}")
    chart_of(browser.page, "loss").and_(browser.page.locator("[data-drawn=true]")).wait_for()
    browser.fits()
    browser.shot("run-detail-phone")
