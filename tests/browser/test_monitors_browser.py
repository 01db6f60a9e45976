"""The monitoring pages in a real browser: the monitors and their alerts, a drift
monitor's charts drawn (inline SVG: no script needed), an alert acknowledged through its
button, a performance monitor's chart; at phone size too; and the report of ``plinth
monitors report`` opened from a file, without a server or a network."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.config import load_settings
from plinth.ui.monitor_report import write_monitor_report
from tests.backends import local_client, running_server
from tests.ui.monitors_data import Seeded, seed_drift, seed_models, services_of

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    home = tmp_path_factory.mktemp("monitors") / "server"
    with running_server(home) as url:
        settings = load_settings(home=home)
        with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
            fs = client.feature_store()
            seeded = services_of(client.tracking.store, client.registry, fs.service)
            seed_drift(fs, seeded)
            seed_models(client, seeded, int(time.time() * 1000))
            yield url, seeded


def heading(browser: Any) -> str:
    text: str = browser.page.get_by_role("heading", level=1).inner_text()
    return text


def chart(browser: Any, name: str, min_height: float = 80) -> Any:
    """A chart by its text alternative; it must be drawn at a readable size."""
    found = browser.page.get_by_role("img", name=re.compile(re.escape(name)))
    found.first.wait_for(state="visible")
    box = found.first.bounding_box()
    assert box is not None and box["width"] > 250 and box["height"] > min_height, (name, box)
    return found


def test_a_drift_monitors_charts_are_drawn(server: Any, page_for: Any) -> None:
    url, _ = server
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/monitors")
    assert heading(browser) == "Monitoring"
    page.get_by_role("link", name="spend-drift").first.click()
    page.wait_for_url("**/ui/monitors/spend-drift")
    page.wait_for_load_state("networkidle")
    browser.check_accessible()
    assert heading(browser) == "spend-drift"
    chart(browser, "Evaluations over time", min_height=25)  # a strip
    chart(browser, "per column over time")
    spend = chart(browser, "avg_spend: reference vs current")
    assert spend.first.locator("rect.ref-bar").count() > 5
    chart(browser, "segment: reference vs current")
    table = page.get_by_role("region", name="Columns tested")
    assert "avg_spend" in table.inner_text() and "yes" in table.inner_text()
    browser.shot("monitor-drift", full_page=True)


def test_an_alert_is_acknowledged_through_its_button(server: Any, page_for: Any) -> None:
    from playwright.sync_api import expect

    url, seeded = server
    [alert] = seeded.monitors.list_alerts(status="open", monitor="spend-drift").items
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/monitors")
    button = page.get_by_role("button", name=f"Acknowledge alert {alert.id} of spend-drift")
    expect(button).to_be_visible()
    button.click()
    page.wait_for_url("**/ui/monitors?*done=ack*")
    browser.check_accessible()
    expect(page.get_by_role("status")).to_contain_text("alert acknowledged")
    expect(button).to_have_count(0)
    [seen] = [a for a in seeded.monitors.list_alerts().items if a.id == alert.id]
    assert seen.status == "acknowledged"
    browser.goto("/ui/monitors?alerts=acknowledged")
    expect(page.get_by_role("region", name="Alerts", exact=True)).to_contain_text(alert.message)


def test_a_models_monitors_charts(server: Any, page_for: Any) -> None:
    url, _ = server
    browser = page_for(url)
    browser.goto("/ui/monitors/churn-auc")
    found = chart(browser, "auc per window")
    assert found.first.locator("polyline.series").count() == 2  # measured, estimated
    assert found.first.locator("polygon.band").count() >= 1
    browser.shot("monitor-performance", full_page=True)
    browser.goto("/ui/monitors/churn-inputs")
    chart(browser, "age: reference vs current")
    browser.shot("monitor-inputs", full_page=True)


def test_the_pages_fit_a_phone(server: Any, page_for: Any) -> None:
    url, _ = server
    browser = page_for(url)
    browser.phone()
    for path in (
        "/ui/monitors",
        "/ui/monitors/spend-drift",
        "/ui/monitors/churn-auc",
        "/ui/monitors/churn-inputs",
    ):
        browser.goto(path)
        browser.fits()
    browser.shot("monitors-phone", full_page=True)


def test_the_report_opens_from_a_file_without_a_network(
    server: Any, page_for: Any, tmp_path: Path
) -> None:
    _, seeded = server
    out = tmp_path / "spend-drift.html"
    write_monitor_report(seeded.monitors, seeded.data, "spend-drift", out)
    browser = page_for("file://")  # any request to a host is recorded as foreign
    page = browser.page
    for phone in (False, True):
        if phone:
            browser.phone()
        page.goto(out.as_uri())
        page.wait_for_load_state("networkidle")
        browser.check_accessible()
        browser.fits()
        assert heading(browser) == "Monitor spend-drift"
        chart(browser, "avg_spend: reference vs current")
        chart(browser, "per column over time")
    browser.shot("monitor-report")
