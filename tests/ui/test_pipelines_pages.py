"""The pipelines pages: the pipelines with their steps, last run and schedules; a
pipeline's runs, schedules paused and resumed through the page (CSRF, permissions) and its
steps' durations; a failed run's steps, logs and traceback; the decision a run made with
its evidence and the alert behind it; the decisions with challenger vs champion; what a
user without rights sees. All from runs the runner made of a real pipeline."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from plinth.auth.types import Kind, Role
from tests.backends import local_client
from tests.ui import pipelines_data
from tests.ui.conftest import Dashboard
from tests.ui.pipelines_data import FAILURE, MODEL, NAME, Seeded

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

_SVG = re.compile(r"<svg\b.*?</svg>", re.S)


def text(page: Any) -> str:
    """A page's text without markup, in one line."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text)))


def charts(page: Any) -> dict[str, ET.Element]:
    found = {}
    for svg in _SVG.findall(page.text):
        root = ET.fromstring(svg)
        found[root.findtext("title") or ""] = root
    return found


def region(page: Any, label: str) -> str:
    """The markup of a table's scroll box, or a log, named ``label``."""
    found = re.search(rf'aria-label="{re.escape(label)}"[^>]*>(.*?)</(table|pre)>', page.text, re.S)
    assert found, f"no region {label!r}"
    return found.group(1)


def section(page: Any, heading: str) -> str:
    """The markup of the section under the heading ``heading``."""
    found = re.search(rf">{re.escape(heading)}</h2>(.*?)</section>", page.text, re.S)
    assert found, f"no section {heading!r}"
    return found.group(1)


def rows(markup: str) -> list[list[str]]:
    """The cells' text of each body row."""
    body = markup.split("<tbody>", 1)[-1]
    return [
        [html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c))).strip() for c in cells]
        for cells in (
            re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
        )
    ]


def client_of(dashboard: Dashboard) -> Any:
    settings = dashboard.settings
    return local_client(settings.resolved_store_uri, settings.resolved_artifact_uri)


def seeded(dashboard: Dashboard, alert_id: int | None = None) -> Seeded:
    return pipelines_data.seed(client_of(dashboard), alert_id=alert_id)


@pytest.fixture
def runs(dashboard: Dashboard) -> Seeded:
    return seeded(dashboard)


# -- the list ----------------------------------------------------------------------------


def test_the_list_shows_each_pipeline_its_steps_last_run_and_schedules(
    dashboard: Dashboard, runs: Seeded
) -> None:
    page = dashboard.http.get("/ui/pipelines")
    assert page.status_code == 200, page.text
    assert '<a href="/ui/pipelines" aria-current="page">Pipelines</a>' in page.text
    [row] = rows(region(page, "Table of pipelines"))
    assert row[0].startswith(NAME) and "fresh data" in row[0]
    assert row[1] == "load → fit"
    assert row[2].startswith(f"failed run {runs.failed.id}")
    assert "cron 0 3 * * * (UTC)" in row[3] and "cron 0 * * * * (UTC) paused" in row[3]
    assert f'href="/ui/pipeline-runs/{runs.failed.id}"' in page.text


def test_no_pipelines_says_how_to_register_one(dashboard: Dashboard) -> None:
    page = dashboard.http.get("/ui/pipelines")
    assert page.status_code == 200 and "No pipelines." in text(page)
    assert "plinth pipelines register" in text(page)


# -- a pipeline --------------------------------------------------------------------------


def test_a_pipeline_shows_its_runs_schedules_and_step_durations(
    dashboard: Dashboard, runs: Seeded
) -> None:
    page = dashboard.http.get(f"/ui/pipelines/{NAME}")
    assert page.status_code == 200, page.text
    table = rows(region(page, "Table of runs"))
    assert [r[0] for r in table] == [f"run {runs.failed.id}", f"run {runs.ok.id}"]
    assert [r[1] for r in table] == ["failed", "succeeded"]
    assert [r[2] for r in table] == ["manual", "manual"]
    assert [r[3] for r in table] == ["1 of 1", "1 of 1"]
    assert FAILURE in table[0][6] and table[1][6] == ""
    schedules = rows(region(page, "Table of schedules"))
    by_id = {int(r[0]): r for r in schedules}
    assert by_id[runs.nightly.id][2] == "active" and by_id[runs.hourly.id][2] == "paused"
    assert by_id[runs.nightly.id][6] == "Pause" and by_id[runs.hourly.id][6] == "Resume"
    chart = charts(page)["Step durations over recent runs"]
    alt = chart.get("aria-label", "")
    assert "load: 2 points" in alt and "fit: 2 points" in alt, alt
    # the failed step's point is filled, the others hollow
    fills = [c.get("fill") for c in chart.iter("circle")]
    assert fills.count("#fff") == 3 and len(fills) == 4


def test_a_schedule_is_paused_and_resumed_with_the_forms_token_only(
    dashboard: Dashboard, runs: Seeded
) -> None:
    service = client_of(dashboard).pipelines
    here = f"/ui/pipelines/{NAME}"
    pause = f"/ui/pipeline-schedules/{runs.nightly.id}/pause"
    forged = dashboard.http.post(pause, data={"back": here})
    assert forged.status_code == 403 and "CSRF" in text(forged)
    assert not _schedule(service, runs.nightly.id).paused
    done = dashboard.post(pause, {"back": here}, csrf_from=here)
    assert done.status_code == 303 and done.headers["location"] == f"{here}?done=paused"
    assert _schedule(service, runs.nightly.id).paused
    after = dashboard.http.get(done.headers["location"])
    assert f"{NAME}: schedule paused" in text(after)
    assert [r[6] for r in rows(region(after, "Table of schedules"))] == ["Resume", "Resume"]
    resumed = dashboard.post(
        f"/ui/pipeline-schedules/{runs.hourly.id}/resume",
        {"back": "https://evil.example/"},
        csrf_from=here,
    )
    assert resumed.headers["location"] == f"{here}?done=resumed"  # only back to our pages
    assert not _schedule(service, runs.hourly.id).paused


def _schedule(service: Any, schedule_id: int) -> Any:
    [found] = [s for s in service.list_schedules(NAME) if s.id == schedule_id]
    return found


# -- a run -------------------------------------------------------------------------------


def test_a_failed_run_shows_its_steps_logs_and_traceback(
    dashboard: Dashboard, runs: Seeded
) -> None:
    page = dashboard.http.get(f"/ui/pipeline-runs/{runs.failed.id}")
    assert page.status_code == 200, page.text
    assert f"Run {runs.failed.id} of {NAME}" in text(page)
    steps = rows(region(page, "Table of steps"))
    assert [(s[0], s[1]) for s in steps] == [("load", "succeeded"), ("fit", "failed")]
    assert steps[0][2].endswith(" s") and "12" in steps[0][4], steps[0]
    traceback = html.unescape(section(page, "Traceback of step fit"))
    assert "Traceback (most recent call last)" in traceback
    assert f"ValueError: {FAILURE}" in traceback
    assert "loaded 12 rows of customers" in html.unescape(region(page, "Log of step load"))
    assert "fitting on 12 rows" in html.unescape(region(page, "Log of step fit"))
    assert "This run made no champion/challenger decision." in text(page)
    ok = dashboard.http.get(f"/ui/pipeline-runs/{runs.ok.id}")
    assert "Traceback of step" not in text(ok)
    assert [s[1] for s in rows(region(ok, "Table of steps"))] == ["succeeded", "succeeded"]


def test_a_queued_run_waits_for_a_worker(dashboard: Dashboard, runs: Seeded) -> None:
    queued = client_of(dashboard).pipelines.queue_run(NAME, params={"rows": 3})
    page = dashboard.http.get(f"/ui/pipeline-runs/{queued.id}")
    assert page.status_code == 200, page.text
    assert "No steps recorded yet: the run waits for a worker." in text(page)
    assert "Params rows=3 Tracking run —" in text(page)
    pipeline = dashboard.http.get(f"/ui/pipelines/{NAME}")
    [newest, *_] = rows(region(pipeline, "Table of runs"))
    assert newest[:2] == [f"run {queued.id}", "queued"] and newest[4].startswith("queued ")
    assert "load: 2 points" in charts(pipeline)["Step durations over recent runs"].get(
        "aria-label", ""
    )


def test_a_long_log_shows_its_end(
    dashboard: Dashboard, runs: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.ui import pipeline_views

    monkeypatch.setattr(pipeline_views, "MAX_LOG_CHARS", 20)
    page = dashboard.http.get(f"/ui/pipeline-runs/{runs.ok.id}")
    shown = html.unescape(region(page, "Log of step load"))
    assert shown == "2 rows of customers\n", shown
    assert f"plinth pipelines logs {runs.ok.id} --step load prints all of it" in text(page)


def test_a_runs_page_shows_its_decision_with_its_evidence(
    dashboard: Dashboard, runs: Seeded
) -> None:
    page = dashboard.http.get(f"/ui/pipeline-runs/{runs.ok.id}")
    assert page.status_code == 200, page.text
    shown = text(page)
    decision = shown.split("Decision Model", 1)[1]
    assert f"{MODEL} Outcome promoted version 2 to PRODUCTION" in decision
    assert "Challenger 0.91 · version 2" in decision and "Champion 0.85 · version 1" in decision
    assert "Margin +0.06 (challenger better)" in decision
    assert '"sha256": "ab12"' in decision and "not worse on auc" in decision
    assert f'href="/ui/runs/{runs.ok.run_id}"' in page.text


def test_an_unknown_pipeline_or_run_is_not_found(dashboard: Dashboard) -> None:
    assert dashboard.http.get("/ui/pipelines/nothing").status_code == 404
    assert dashboard.http.get("/ui/pipeline-runs/999").status_code == 404
    assert dashboard.http.get("/ui/pipeline-runs/abc").status_code == 422


# -- decisions ---------------------------------------------------------------------------


def test_the_decisions_show_challenger_vs_champion(dashboard: Dashboard, runs: Seeded) -> None:
    page = dashboard.http.get("/ui/model-decisions")
    assert page.status_code == 200, page.text
    assert '<a href="/ui/pipelines" aria-current="page">Pipelines</a>' in page.text
    table = rows(region(page, "Table of decisions"))
    kept, promoted = runs.kept, runs.promoted
    assert [(r[0], r[2], r[3]) for r in table] == [
        (str(kept.id), MODEL, "kept"),
        (str(promoted.id), MODEL, "promoted"),
    ]
    assert table[0][5:8] == ["0.8 v3", "0.91 v2", "-0.11"]
    assert table[1][8] == f"run {runs.ok.id}" and table[0][8] == "—"
    chart = charts(page)[f"{MODEL}: auc of challenger vs champion"]
    alt = chart.get("aria-label", "")
    assert "challenger: 2 points from 0.8 to 0.91, last 0.8" in alt, alt
    assert "champion: 2 points from 0.85 to 0.91, last 0.91" in alt, alt
    assert f"Decision {promoted.id}: {MODEL} promoted" in text(page)
    assert "No decisions on other:" in text(dashboard.http.get("/ui/model-decisions?model=other"))


def test_a_run_and_a_decision_link_the_alert_behind_them(dashboard: Dashboard) -> None:
    from tests.ui.monitors_data import seed_drift, services

    found = dashboard.app.state.dashboard
    monitors = services(found)
    seed_drift(found.feature_store, monitors)
    [alert] = monitors.monitors.list_alerts(status="open").items
    made = seeded(dashboard, alert_id=alert.id)
    triggered = pipelines_data.run_for_alert(client_of(dashboard), alert.id)
    link = (
        f'<a href="/ui/monitors/spend-drift" title="{html.escape(alert.message)}">'
        f"alert {alert.id} of spend-drift</a>"
    )
    pipeline = dashboard.http.get(f"/ui/pipelines/{NAME}")
    [newest, *_] = rows(region(pipeline, "Table of runs"))
    assert newest[:3] == [
        f"run {triggered.id}",
        "succeeded",
        f"alert ( alert {alert.id} of spend-drift )",
    ]
    assert link in pipeline.text
    assert link in dashboard.http.get(f"/ui/pipeline-runs/{triggered.id}").text
    decided = dashboard.http.get(f"/ui/pipeline-runs/{made.ok.id}")  # its decision's alert
    assert f"<dt>Triggered by</dt><dd>{link}</dd>" in decided.text
    assert link in dashboard.http.get("/ui/model-decisions").text


def test_the_pages_on_each_store(any_dashboard: Dashboard) -> None:
    made = seeded(any_dashboard)
    for path, shown in (
        ("/ui/pipelines", NAME),
        (f"/ui/pipelines/{NAME}", f"run {made.failed.id}"),
        (f"/ui/pipeline-runs/{made.failed.id}", f"ValueError: {FAILURE}"),
        (f"/ui/pipeline-runs/{made.ok.id}", "loaded 12 rows of customers"),
        ("/ui/model-decisions", f"Decision {made.promoted.id}: {MODEL} promoted"),
    ):
        answer = any_dashboard.http.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert shown in text(answer), path


# -- who sees what -----------------------------------------------------------------------


def test_a_user_without_rights_sees_no_pipeline_and_may_not_act(secured: Dashboard) -> None:
    made = seeded(secured)
    secured.auth.revoke_grant(Kind.PIPELINE, NAME, "everyone", "*")
    secured.auth.revoke_grant(Kind.MODEL, MODEL, "everyone", "*")
    secured.user("bob", Role.VIEWER)
    secured.sign_in("bob")
    listed = secured.http.get("/ui/pipelines")
    assert listed.status_code == 200 and NAME not in text(listed)
    for path in (f"/ui/pipelines/{NAME}", f"/ui/pipeline-runs/{made.failed.id}"):
        hidden = secured.http.get(path)
        assert hidden.status_code == 404, (path, hidden.status_code)
    assert "No decisions" in text(secured.http.get("/ui/model-decisions"))
    token = secured.csrf("/ui/pipelines")
    refused = secured.http.post(
        f"/ui/pipeline-schedules/{made.nightly.id}/pause", data={"csrf": token}
    )
    assert refused.status_code == 404
    assert not _schedule(client_of(secured).pipelines, made.nightly.id).paused


def test_a_reader_sees_the_pipeline_without_its_buttons(secured: Dashboard) -> None:
    made = seeded(secured)
    secured.user("ann", Role.VIEWER)
    secured.sign_in("ann")
    page = secured.http.get(f"/ui/pipelines/{NAME}")
    assert page.status_code == 200, page.text
    assert "Pause" not in text(page) and "Resume" not in text(page)
    assert len(rows(region(page, "Table of runs"))) == 2
    token = secured.csrf("/ui/pipelines")
    refused = secured.http.post(
        f"/ui/pipeline-schedules/{made.nightly.id}/pause", data={"csrf": token}
    )
    assert refused.status_code == 403
    assert not _schedule(client_of(secured).pipelines, made.nightly.id).paused


def test_logs_need_the_experiment_too(secured: Dashboard) -> None:
    """A step's log is an artifact of the run's tracking run: a reader of the pipeline who
    may not read its experiment sees the steps and the traceback, not the logs."""
    made = seeded(secured)
    secured.auth.revoke_grant(Kind.EXPERIMENT, NAME, "everyone", "*")
    secured.user("ann", Role.VIEWER)
    secured.sign_in("ann")
    page = secured.http.get(f"/ui/pipeline-runs/{made.failed.id}")
    assert page.status_code == 200, page.text
    assert [s[1] for s in rows(region(page, "Table of steps"))] == ["succeeded", "failed"]
    assert f"ValueError: {FAILURE}" in section(page, "Traceback of step fit")
    assert "loaded 12 rows" not in page.text
    assert "Log of step load (not readable:" in text(page)
