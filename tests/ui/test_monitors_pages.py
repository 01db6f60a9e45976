"""The monitoring pages: the monitors with their last status and open alerts, alerts
acknowledged through the page (CSRF, permissions), a drift monitor's page (drift per
column over time, the latest report, reference-vs-current histograms), a performance
monitor's page (metric per window with its interval, measured and estimated), run now;
what a user without rights sees. All from evaluations the services made on real data."""

from __future__ import annotations

import html
import re
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from plinth.auth.types import Kind, Role
from tests.backends import local_client
from tests.ui.conftest import Dashboard
from tests.ui.monitors_data import Seeded, seed_drift, seed_models, services

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

_SVG = re.compile(r"<svg\b.*?</svg>", re.S)


def text(page: Any) -> str:
    """A page's text without markup, in one line."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text)))


def charts(page: Any) -> dict[str, ET.Element]:
    """The page's SVG charts by their title."""
    found = {}
    for svg in _SVG.findall(page.text):
        root = ET.fromstring(svg)
        found[root.findtext("title") or ""] = root
    return found


def seeded_drift(dashboard: Dashboard) -> Seeded:
    found = dashboard.app.state.dashboard
    seeded = services(found)
    seed_drift(found.feature_store, seeded)
    return seeded


@pytest.fixture
def drift(dashboard: Dashboard) -> Seeded:
    return seeded_drift(dashboard)


# -- the list ----------------------------------------------------------------------------


def test_the_list_shows_each_monitor_its_last_status_and_open_alerts(
    dashboard: Dashboard, drift: Seeded
) -> None:
    page = dashboard.http.get("/ui/monitors")
    assert page.status_code == 200, page.text
    assert '<a href="/ui/monitors" aria-current="page">Monitoring</a>' in page.text
    shown = text(page)
    listed = page.text.split('aria-label="Monitors" tabindex', 1)[1].split("</table>")[0]
    [row] = [r for r in re.findall(r"<tr>.*?</tr>", listed, re.S) if "spend-drift" in r]
    cells = [
        html.unescape(re.sub(r"<[^>]+>", " ", c)).split()
        for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]
    assert cells[1] == ["feature_drift"] and cells[2] == ["customer_stats"]
    assert cells[4][0] == "breach" and cells[5] == ["1"]
    [alert] = drift.monitors.list_alerts(status="open").items
    assert alert.message in shown
    assert f'action="/ui/monitors/_alerts/{alert.id}/acknowledge"' in page.text
    assert "Acknowledge" in shown


def test_the_list_filters_by_target_and_alert_status(dashboard: Dashboard, drift: Seeded) -> None:
    assert "spend-drift" not in text(dashboard.http.get("/ui/monitors?target=nothing"))
    assert "spend-drift" in text(dashboard.http.get("/ui/monitors?target=customer_stats"))
    acknowledged = dashboard.http.get("/ui/monitors?alerts=acknowledged")
    assert "Alerts (acknowledged)" in text(acknowledged) and "No alerts." in text(acknowledged)
    bad = dashboard.http.get("/ui/monitors?alerts=maybe")
    assert bad.status_code == 422 and "alerts: one of open, acknowledged, all" in text(bad)


def test_an_alert_is_acknowledged_with_the_forms_token_only(
    dashboard: Dashboard, drift: Seeded
) -> None:
    [alert] = drift.monitors.list_alerts(status="open").items
    path = f"/ui/monitors/_alerts/{alert.id}/acknowledge"
    forged = dashboard.http.post(path, data={"back": "/ui/monitors"})
    assert forged.status_code == 403 and "CSRF" in text(forged)
    assert drift.monitors.list_alerts(status="open").items == [alert]
    done = dashboard.post(path, {"back": "/ui/monitors/spend-drift"}, csrf_from="/ui/monitors")
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/monitors/spend-drift?done=ack"
    [seen] = drift.monitors.list_alerts().items
    assert seen.status == "acknowledged" and seen.acknowledged_by
    after = dashboard.http.get("/ui/monitors/spend-drift?done=ack")
    assert "spend-drift: alert acknowledged" in text(after)
    assert "Acknowledge" not in text(after)
    elsewhere = dashboard.post(
        path, {"back": "https://evil.example/"}, csrf_from="/ui/monitors/spend-drift"
    )
    assert elsewhere.headers["location"] == "/ui/monitors?done=ack"  # only back to our pages


# -- a drift monitor ---------------------------------------------------------------------


def test_a_drift_monitor_shows_its_columns_over_time_and_the_drifted_histograms(
    dashboard: Dashboard, drift: Seeded
) -> None:
    page = dashboard.http.get("/ui/monitors/spend-drift")
    assert page.status_code == 200, page.text
    shown = text(page)
    assert "Reference previous" in shown and "Breach when 50% or more of the columns drift" in shown
    found = charts(page)
    strip = found["Evaluations over time"]
    assert "2 evaluations (1 ok, 1 breach); the last breach" in strip.get("aria-label", "")
    over_time = [root for title, root in found.items() if "per column over time" in title]
    assert over_time, list(found)
    drawn = " ".join(root.get("aria-label", "") for root in over_time)
    assert "avg_spend: 2 points" in drawn and "segment: 2 points" in drawn
    # the table: both columns drifted in the newest evaluation, with their tests
    [latest, _] = drift.monitors.list_evaluations("spend-drift").items
    report = {c["column"]: c for c in latest.result["columns"]}
    assert report["avg_spend"]["drifted"] and report["segment"]["drifted"]
    for column in ("avg_spend", "segment"):
        row = re.search(
            rf"<tr class=\"monitors-drifted\">\s*<td>{column}</td>.*?</tr>", page.text, re.S
        )
        assert row, column
        assert f"<td>{report[column]['test']}</td>" in row.group(0)
        assert "<td>yes</td>" in row.group(0)
    # reference vs current: numbers as histograms on shared edges, segments as categories
    spend = found["avg_spend: reference vs current"]
    assert len([r for r in spend.iter("rect") if r.get("class") == "ref-bar"]) > 5
    assert [p for p in spend.iter("polyline") if p.get("class") == "cur-step"]
    segment = found["segment: reference vs current"]
    alt = segment.get("aria-label", "")
    assert "wholesale" in alt and "retail" in alt
    wholesale = re.search(r"wholesale (\d+\.\d)% → (\d+\.\d)%", alt)
    assert wholesale and float(wholesale.group(1)) < 60 < float(wholesale.group(2))


def test_run_now_evaluates_and_comes_back(dashboard: Dashboard, drift: Seeded) -> None:
    page = "/ui/monitors/spend-drift"
    assert "Run now" in text(dashboard.http.get(page))
    forged = dashboard.http.post(f"{page}/run")
    assert forged.status_code == 403
    assert len(drift.monitors.list_evaluations("spend-drift").items) == 2
    done = dashboard.post(f"{page}/run", {}, csrf_from=page)
    assert done.status_code == 303 and done.headers["location"] == f"{page}?done=run"
    newest = drift.monitors.list_evaluations("spend-drift").items
    assert len(newest) == 3 and newest[0].trigger == "manual"
    assert "3 evaluations" in charts(dashboard.http.get(page))["Evaluations over time"].get(
        "aria-label", ""
    )


def test_an_unknown_monitor_is_a_404_page(dashboard: Dashboard) -> None:
    answer = dashboard.http.get("/ui/monitors/nope")
    assert answer.status_code == 404 and "monitor 'nope' does not exist" in text(answer)


# -- a performance monitor ---------------------------------------------------------------


def test_a_performance_monitor_shows_each_window_measured_and_estimated(
    dashboard: Dashboard,
) -> None:
    found = dashboard.app.state.dashboard
    seeded = services(found)
    settings = dashboard.settings
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        seed_models(client, seeded, int(time.time() * 1000))
    page = dashboard.http.get("/ui/monitors/churn-auc")
    assert page.status_code == 200, page.text
    performance = seeded.data.performance("churn", window_seconds=86_400, windows=14, metric="auc")
    measured = [w for w in performance.windows if "auc" in w.metrics]
    estimated = [w for w in performance.windows if "auc" in w.estimated]
    assert len(measured) == 5 and len(estimated) >= 7
    chart = charts(page)["auc per window"]
    solid, dashed = [p for p in chart.iter("polyline") if p.get("class") == "series"]
    assert solid.get("stroke-dasharray") is None and dashed.get("stroke-dasharray")
    assert len(solid.get("points", "").split()) == 5
    assert len(list(chart.iter("polygon"))) >= 1  # the measured interval's band
    alt = chart.get("aria-label", "")
    assert "auc measured: 5 points" in alt and "min 0.6 at 0.6" in alt
    assert performance.validation == 0.9 and "validation 0.9 at 0.9" in alt
    table = page.text.split('aria-label="Performance per window"', 1)[1].split("</table>")[0]
    rows = re.findall(r"<tr>.*?</tr>", table, re.S)
    first = measured[0].metrics["auc"]
    assert any(f"{first.value:.4f}" in r and f"{first.lower:.4f}" in r for r in rows)


def test_an_input_drift_monitor_draws_the_drifted_inputs_against_the_training_data(
    dashboard: Dashboard,
) -> None:
    found = dashboard.app.state.dashboard
    seeded = services(found)
    settings = dashboard.settings
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        seed_models(client, seeded, int(time.time() * 1000))
    page = dashboard.http.get("/ui/monitors/churn-inputs")
    assert page.status_code == 200, page.text
    drawn = charts(page)
    assert "age: reference vs current" in drawn  # older customers than in training
    assert "spend: reference vs current" not in drawn  # spend did not move
    age = re.search(r'<tr class="monitors-drifted">\s*<td>age</td>', page.text)
    spend = re.search(r"<tr>\s*<td>spend</td>.*?<td>no</td>", page.text, re.S)
    assert age and spend
    bars = [
        r for r in drawn["age: reference vs current"].iter("rect") if r.get("class") == "ref-bar"
    ]
    assert len(bars) > 5


def test_prediction_drift_and_estimated_performance_monitors(dashboard: Dashboard) -> None:
    found = dashboard.app.state.dashboard
    seeded = services(found)
    settings = dashboard.settings
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        seed_models(client, seeded, int(time.time() * 1000))
    predictions = dashboard.http.get("/ui/monitors/churn-predictions")
    assert predictions.status_code == 200, predictions.text
    assert "Prediction drift" in text(predictions)
    [evaluation] = seeded.monitors.list_evaluations("churn-predictions").items
    [judged] = evaluation.result["prediction"]["columns"]
    assert re.search(
        rf"<td>prediction</td><td>[a-z]+</td><td>{judged['test']}</td>", predictions.text
    )
    assert not [t for t in charts(predictions) if "reference vs current" in t]
    estimated = dashboard.http.get("/ui/monitors/churn-estimated")
    assert estimated.status_code == 200, estimated.text
    chart = charts(estimated)["auc per window"]
    [dashed] = [p for p in chart.iter("polyline") if p.get("stroke-dasharray")]
    assert len(dashed.get("points", "").split()) == 7  # every day had predictions
    assert "validation 0.9 at 0.9" in chart.get("aria-label", "")


def test_the_pages_on_each_store(any_dashboard: Dashboard) -> None:
    seeded_drift(any_dashboard)
    for path in ("/ui/monitors", "/ui/monitors/spend-drift", "/ui/monitors?alerts=all"):
        answer = any_dashboard.http.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert "spend-drift" in answer.text
    assert "avg_spend: reference vs current" in charts(
        any_dashboard.http.get("/ui/monitors/spend-drift")
    )


# -- who sees what -----------------------------------------------------------------------


def test_a_user_without_rights_sees_no_monitor_and_may_not_act(secured: Dashboard) -> None:
    seeded = seeded_drift(secured)
    secured.auth.revoke_grant(Kind.MONITOR, "spend-drift", "everyone", "*")
    [alert] = seeded.monitors.list_alerts(status="open").items
    secured.user("bob", Role.VIEWER)
    secured.sign_in("bob")
    listed = secured.http.get("/ui/monitors")
    assert listed.status_code == 200
    assert "spend-drift" not in text(listed) and "No alerts." in text(listed)
    hidden = secured.http.get("/ui/monitors/spend-drift")
    # what a user may not read does not exist for them (as for a hidden feature group)
    assert hidden.status_code == 404 and "monitor 'spend-drift' does not exist" in text(hidden)
    token = secured.csrf("/ui/monitors")
    refused = secured.http.post(
        f"/ui/monitors/_alerts/{alert.id}/acknowledge", data={"csrf": token, "back": ""}
    )
    assert refused.status_code == 404 and f"alert {alert.id} does not exist" in text(refused)
    run = secured.http.post("/ui/monitors/spend-drift/run", data={"csrf": token})
    assert run.status_code == 404
    assert seeded.monitors.list_alerts(status="open").items == [alert]


def test_a_monitor_of_a_group_the_user_may_not_read_is_not_there(secured: Dashboard) -> None:
    """Its charts are the group's data: a grant on the monitor alone shows nothing."""
    seeded_drift(secured)
    secured.auth.revoke_grant(Kind.FEATURE_GROUP, "customer_stats", "everyone", "*")
    secured.user("bob", Role.VIEWER)
    secured.sign_in("bob")
    listed = secured.http.get("/ui/monitors")
    assert listed.status_code == 200
    assert "spend-drift" not in text(listed) and "No alerts." in text(listed)
    hidden = secured.http.get("/ui/monitors/spend-drift")
    assert hidden.status_code == 404 and "monitor 'spend-drift' does not exist" in text(hidden)


def test_a_reader_sees_the_monitor_without_its_buttons(secured: Dashboard) -> None:
    seeded = seeded_drift(secured)
    secured.user("ann", Role.VIEWER)
    secured.sign_in("ann")
    page = secured.http.get("/ui/monitors/spend-drift")
    assert page.status_code == 200, page.text
    assert "Run now" not in text(page) and "Acknowledge" not in text(page)
    assert "avg_spend: reference vs current" in charts(page)
    token = secured.csrf("/ui/monitors")
    refused = secured.http.post("/ui/monitors/spend-drift/run", data={"csrf": token})
    assert refused.status_code == 403 and "spend-drift" in text(refused)
    [alert] = seeded.monitors.list_alerts(status="open").items
    ack = secured.http.post(f"/ui/monitors/_alerts/{alert.id}/acknowledge", data={"csrf": token})
    assert ack.status_code == 403
    assert seeded.monitors.list_alerts(status="open").items == [alert]
    assert len(seeded.monitors.list_evaluations("spend-drift").items) == 2
