"""The A/B pages in a real browser: design an experiment through the form (its power
analysis updating as one types), start it, read its results with their charts drawn and
their warnings, watch them refresh while it runs, stop it after confirming; at phone size
too; and the report of ``plinth ab report`` opened from a file, without a server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.abtests.power import sample_size
from plinth.abtests.service import AbTestService
from plinth.config import load_settings
from plinth.ui.report import write_report
from tests.backends import local_client, running_server
from tests.ui.pages.abtests_data import design, guarded, traffic

pytestmark = pytest.mark.browser

_DRAWN = """() => {
  const charts = Array.from(document.querySelectorAll("[data-spec]"));
  return charts.length > 0 && charts.every((el) => el.dataset.drawn === "true");
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AbTestService]]:
    """One server; churn runs (control converts 10 %, b 15 %), skewed has a sample-ratio
    mismatch and a broken revenue guardrail, live and stoppable run for the tests that
    change them."""
    home = tmp_path_factory.mktemp("abtests") / "server"
    with running_server(home) as url:
        settings = load_settings(home=home)
        with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
            ab = client.abtests
            design(ab)
            ab.start_abtest("churn", reason="arms serving")
            traffic(ab, "churn", {"control": 1000, "b": 1000}, {"control": 100, "b": 150})
            design(ab, "skewed", guardrails=guarded("revenue", 0.05))
            ab.start_abtest("skewed")
            traffic(
                ab,
                "skewed",
                {"control": 1200, "b": 800},
                {"control": 120, "b": 80},
                revenue={"control": 20.0, "b": 10.0},
            )
            for name in ("live", "stoppable"):
                design(ab, name)
                ab.start_abtest(name)
            yield url, ab


def heading(browser: Any) -> str:
    text: str = browser.page.get_by_role("heading", level=1).inner_text()
    return text


def drawn(browser: Any) -> None:
    browser.page.wait_for_function(_DRAWN)


def test_design_an_experiment_through_the_form_and_start_it(server: Any, page_for: Any) -> None:
    from playwright.sync_api import expect

    url, ab = server
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/abtests")
    page.get_by_role("link", name="New experiment").click()
    page.wait_for_url("**/ui/abtests/_new")
    browser.check_accessible()
    assert heading(browser) == "New A/B experiment"
    page.get_by_label("Name", exact=True).fill("pricing")
    page.get_by_label("Hypothesis").fill("the new prices sell more")
    page.get_by_label("Event", exact=True).fill("buy")
    page.get_by_label("Arm 1 model URI or URL").fill("http://127.0.0.1:9/old")
    page.get_by_label("Arm 2 model URI or URL").fill("http://127.0.0.1:9/new")
    page.get_by_label("Arm 1 is the control").check()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/_power" in r.url else None)
    plan = page.locator("#abtest-power")
    default = sample_size("proportions", 0.02, 0.05, 0.8, 2, 0.1)
    expect(plan).to_contain_text(f"{default.per_arm:,} units per arm")
    page.get_by_label("Minimum detectable effect").fill("0.05")
    page.get_by_label("Units a day").fill("1000")
    wider = sample_size("proportions", 0.05, 0.05, 0.8, 2, 0.1)
    expect(plan).to_contain_text(f"{wider.per_arm:,} units per arm")  # htmx, as one types
    expect(plan).to_contain_text(f"About {wider.total / 1000:.1f} days at 1,000 units a day")
    assert asked and not any("csrf" in u for u in asked), asked  # no token in a URL (or a log)
    assert not any("hypothesis" in u or "arm_target" in u for u in asked), asked  # power only
    browser.shot("abtest-new", full_page=True)
    page.get_by_label("Arm 2 share").fill("0.6")  # 0.5 + 0.6: refused
    page.get_by_role("button", name="Create in draft").click()
    page.wait_for_load_state("networkidle")
    browser.errors.clear()  # the browser logs the 422 of that answer
    assert "the shares must add up to 1" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Name", exact=True).input_value() == "pricing"  # kept
    page.get_by_label("Arm 2 share").fill("0.5")
    page.get_by_role("button", name="Create in draft").click()
    page.wait_for_url("**/ui/abtests/pricing?done=created")
    assert heading(browser) == "pricing"
    assert "created in draft" in page.get_by_role("status").inner_text()
    page.get_by_label("Reason to start").fill("both arms serve")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**/ui/abtests/pricing?done=start")
    assert page.get_by_role("status").inner_text() == "pricing: started"
    history = page.get_by_role("region", name="History").get_by_role("row").all_inner_texts()
    assert "start" in history[1] and "both arms serve" in history[1], history
    assert ab.get_abtest("pricing").status.value == "running"
    browser.check_accessible()


def test_the_results_are_drawn(server: Any, page_for: Any) -> None:
    url, _ = server
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/abtests/churn")
    drawn(browser)
    figures = page.get_by_role("region", name="Results per arm")
    rows = figures.get_by_role("row").all_inner_texts()
    assert any(r.startswith("b") and "1,000" in r and "0.15" in r and "+0.05" in r for r in rows)
    lift = page.get_by_role("img", name="Chart of the absolute lift of conversion per arm")
    assert "b +0.05 [" in (lift.get_attribute("aria-label") or "")
    assert lift.locator("canvas").count() == 1
    assert page.locator("[data-spec] canvas").count() >= 2
    assert page.get_by_role("alert").count() == 0  # nothing to warn of
    browser.shot("abtest-results", full_page=True)


def test_warnings_are_seen_first(server: Any, page_for: Any) -> None:
    url, _ = server
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/abtests/skewed")
    drawn(browser)
    warning = page.get_by_role("alert").inner_text()
    assert "Sample ratio mismatch" in warning and "Guardrail revenue broken in arm b" in warning
    assert page.get_by_role("img", name="Chart of the lift of guardrail revenue").is_visible()
    browser.shot("abtest-warnings", full_page=True)


def test_the_results_refresh_while_it_runs(server: Any, page_for: Any) -> None:
    from playwright.sync_api import expect

    url, ab = server
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/abtests/live")
    assert "No exposures logged yet" in page.locator("#abtest-results").inner_text()
    traffic(ab, "live", {"control": 300, "b": 300}, {"control": 30, "b": 60})
    figures = page.get_by_role("region", name="Results per arm")
    expect(figures).to_contain_text("300", timeout=20_000)  # htmx polls every 5 s
    drawn(browser)
    browser.check_accessible()


def test_stop_asks_first(server: Any, page_for: Any) -> None:
    url, ab = server
    browser = page_for(url)
    page = browser.page
    browser.goto("/ui/abtests/stoppable")
    page.get_by_label("Reason to stop").fill("enough")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Stop").click()
    assert ab.get_abtest("stoppable").status.value == "running"
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop").click()
    page.wait_for_url("**/ui/abtests/stoppable?done=stop")
    assert ab.get_abtest("stoppable").status.value == "stopped"
    assert page.get_by_role("button", name="Stop").count() == 0


def test_the_pages_fit_a_phone(server: Any, page_for: Any) -> None:
    url, _ = server
    browser = page_for(url)
    browser.phone()
    for path in ("/ui/abtests", "/ui/abtests/_new", "/ui/abtests/churn", "/ui/abtests/skewed"):
        browser.goto(path)
        browser.fits()
    drawn(browser)
    browser.shot("abtest-phone", full_page=True)


def test_the_report_opens_from_a_file_without_a_network(
    server: Any, page_for: Any, tmp_path: Path
) -> None:
    _, ab = server
    out = tmp_path / "skewed.html"
    write_report(ab, "skewed", out)
    browser = page_for("file://")  # any request to a host is recorded as foreign
    page = browser.page
    for phone in (False, True):
        if phone:
            browser.phone()
        page.goto(out.as_uri())
        page.wait_for_load_state("networkidle")
        drawn(browser)
        browser.check_accessible()
        browser.fits()
        assert heading(browser) == "A/B experiment skewed"
        assert "Sample ratio mismatch" in page.get_by_role("alert").inner_text()
        assert page.locator("[data-spec] canvas").count() >= 3
    browser.shot("abtest-report")
