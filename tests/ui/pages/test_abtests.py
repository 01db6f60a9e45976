"""The A/B pages: the list, the design form with its power analysis, an experiment's page
with its actions (CSRF, permissions, refusals) and its results, charts and warnings."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest

from plinth.abtests.power import sample_size
from plinth.abtests.service import AbTestService
from plinth.abtests.types import Bandit, Canary, Mode, Status, Unit
from plinth.auth.types import Role
from tests.ui.conftest import Dashboard
from tests.ui.pages.abtests_data import arms, design, guarded, traffic

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

PAGE = "/ui/abtests/churn"
_SPEC = re.compile(r'<script type="application/json" id="abtest-spec-([^"]+)">(.*?)</script>', re.S)


def service(dashboard: Dashboard) -> AbTestService:
    registry = dashboard.app.state.dashboard.registry
    return AbTestService(dashboard.store, dashboard.settings.resolved_artifact_uri, registry)


def text(page: Any) -> str:
    """A page's text without markup, in one line."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text))).replace(" ,", ",")


def charts(page: Any) -> dict[str, dict[str, Any]]:
    """The chart specs a page embeds, by key."""
    return {key: json.loads(spec) for key, spec in _SPEC.findall(page.text)}


def running(dashboard: Dashboard, **kw: Any) -> AbTestService:
    """churn, started: control converts 100 of 1,000 units, b 150 of 1,000."""
    ab = service(dashboard)
    design(ab, **kw)
    ab.start_abtest("churn", reason="arms serving")
    traffic(ab, "churn", {"control": 1000, "b": 1000}, {"control": 100, "b": 150})
    return ab


# -- the list ----------------------------------------------------------------------------


def test_the_list_shows_each_experiment_and_filters_by_status(any_dashboard: Dashboard) -> None:
    ab = service(any_dashboard)
    design(ab, mode=Mode.SHADOW)
    design(ab, "pricing", arms=arms("old", "new"), hypothesis="new prices")
    ab.start_abtest("churn")
    page = any_dashboard.http.get("/ui/abtests")
    assert page.status_code == 200
    shown = text(page)
    assert "churn" in shown and "pricing" in shown and "shadow" in shown
    assert "control 50% (control), b 50%" in shown and "old 50% (control), new 50%" in shown
    assert shown.count("not yet") == 1  # pricing has not started
    assert 'href="/ui/abtests/_new"' in page.text
    only = text(any_dashboard.http.get("/ui/abtests?status=draft"))
    assert "pricing" in only and "churn" not in only
    refused = any_dashboard.http.get("/ui/abtests?status=sleeping")
    assert refused.status_code == 422
    assert "status: one of draft, running, paused, stopped, not 'sleeping'" in text(refused)


# -- the design form ---------------------------------------------------------------------


def test_the_form_shows_the_power_analysis_and_htmx_updates_it(dashboard: Dashboard) -> None:
    form = dashboard.http.get("/ui/abtests/_new")
    assert form.status_code == 200
    planned = sample_size("proportions", 0.02, 0.05, 0.8, 2, 0.1)
    assert f"{planned.per_arm:,} units per arm" in text(form)
    assert 'hx-get="/ui/abtests/_power"' in form.text
    query = {
        "kpi_kind": "mean",
        "mde": "0.05",
        "alpha": "0.05",
        "power": "0.8",
        "units_per_day": "20000",
        "arm_name": ["a", "b", "c"],
    }
    part = dashboard.http.get("/ui/abtests/_power", params=query, headers={"hx-request": "true"})
    assert part.status_code == 200 and "<html" not in part.text
    three = sample_size("means", 0.05, 0.05, 0.8, 3)
    shown = text(part)
    assert (
        f"{three.per_arm:,} units per arm" in shown and f"{three.total:,} in all, 3 arms" in shown
    )
    assert f"About {three.total / 20000:.1f} days at 20,000 units a day" in shown
    bad = dashboard.http.get(
        "/ui/abtests/_power", params={**query, "alpha": "2"}, headers={"hx-request": "true"}
    )
    assert "No sample size yet: alpha: a level between 0 and 1" in text(bad)
    typo = dashboard.http.get(
        "/ui/abtests/_power", params={**query, "mde": "lots"}, headers={"hx-request": "true"}
    )
    assert "mde: a number such as 0.05, not 'lots'" in text(typo)


def _form(**changes: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "name": "churn",
        "hypothesis": "v3 keeps more customers",
        "kpi_name": "revenue",
        "kpi_kind": "ratio",
        "kpi_event": "revenue",
        "kpi_denominator": "visit",
        "mde": "0.03",
        "alpha": "0.05",
        "power": "0.8",
        "baseline": "",
        "units_per_day": "",
        "mode": "canary",
        "unit": "session",
        "reason": "first design",
        "arm_name": ["champion", "challenger", ""],
        "arm_target": ["models:/churn@champion", "http://127.0.0.1:8001/predict", ""],
        "arm_share": ["0.7", "0.3", ""],
        "control": "0",
        "rail_metric": ["latency_p99", "revenue", ""],
        "rail_max_drop": ["", "0.05", ""],
        "rail_max_value": ["250", "", ""],
        "canary_steps": "0.3, 0.6",
        "canary_every": "600",
        "bandit_every": "3600",
        "bandit_floor": "0.05",
    }
    return form | changes


def test_the_form_creates_an_experiment_in_draft(any_dashboard: Dashboard) -> None:
    made = any_dashboard.post("/ui/abtests/_new", _form(), csrf_from="/ui/abtests/_new")
    assert made.status_code == 303
    assert made.headers["location"] == "/ui/abtests/churn?done=created"
    exp = service(any_dashboard).get_abtest("churn")
    assert (exp.status, exp.mode, exp.unit) == (Status.DRAFT, Mode.CANARY, Unit.SESSION)
    assert exp.primary.denominator_event == "visit" and exp.mde == 0.03
    assert [(a.name, a.share, a.control, a.model_uri, a.url) for a in exp.arms] == [
        ("champion", 0.7, True, "models:/churn@champion", None),
        ("challenger", 0.3, False, None, "http://127.0.0.1:8001/predict"),
    ]
    assert [(g.metric, g.max_drop, g.max_value) for g in exp.guardrails] == [
        ("latency_p99", None, 250.0),
        ("revenue", 0.05, None),
    ]
    assert exp.canary == Canary([0.3, 0.6], 600) and exp.bandit is None  # its mode's only
    page = any_dashboard.http.get(made.headers["location"])
    assert "churn: created in draft" in text(page)
    assert "No exposures logged yet" in text(page)
    history = service(any_dashboard).abtest_history("churn")
    assert [(v.action, v.reason) for v in history] == [("create", "first design")]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"arm_share": ["0.7", "0.2", ""]},
            "arms: the shares must add up to 1, they add up to 0.9",
        ),
        ({"mde": "a lot"}, "mde: a number such as 0.05, not 'a lot'"),
        ({"kpi_kind": "median"}, "primary.kind: one of proportion, mean, ratio, not 'median'"),
        ({"control": ""}, "arms: exactly one arm is the control (control: true), got none"),
        ({"arm_target": ["models:/churn@champion", "ftp://x", ""]}, "arms[1].url: 'ftp://x'"),
        ({"rail_max_drop": ["", "-1", ""]}, "guardrails[1].max_drop: a relative drop above 0"),
        (
            {"arm_share": ["0.5", "0.5", ""]},
            "arms[1].share: a canary's challenger 'challenger' starts at most at its first "
            "step (canary.steps[0] 0.3), got 0.5",
        ),
        ({"canary_steps": "0.3, x"}, "canary.steps[1]: a number such as 0.05, not 'x'"),
        ({"canary_every": "1"}, "canary.every_seconds: the seconds between two steps, from 60"),
        (
            {"mode": "bandit", "bandit_floor": "0.4"},
            "arms[1].share: a bandit keeps every arm at or above its floor (bandit.floor 0.4)",
        ),
    ],
)
def test_a_refused_design_keeps_what_was_typed(
    dashboard: Dashboard, changes: dict[str, Any], message: str
) -> None:
    refused = dashboard.post("/ui/abtests/_new", _form(**changes), csrf_from="/ui/abtests/_new")
    assert refused.status_code == 422
    assert message in text(refused)
    assert 'role="alert"' in refused.text
    assert 'value="v3 keeps more customers"' not in refused.text  # a textarea holds it
    assert ">v3 keeps more customers</textarea>" in refused.text
    target = _form(**changes)["arm_target"][1]
    assert f'name="arm_target" value="{target}"' in refused.text
    assert 'name="rail_max_value" value="250"' in refused.text
    assert service(dashboard).list_abtests().items == []


def test_the_form_designs_a_bandit_and_starts_a_canary_small(dashboard: Dashboard) -> None:
    form = dashboard.http.get("/ui/abtests/_new", params={"mode": "canary"})
    assert 'name="arm_share" value="1"' in form.text and 'name="arm_share" value="0"' in form.text
    assert '<option value="canary" selected>' in form.text
    plain = dashboard.http.get("/ui/abtests/_new")
    assert plain.text.count('name="arm_share" value="0.5"') == 2
    changes = {"mode": "bandit", "bandit_every": "120", "bandit_floor": "0.1"}
    made = dashboard.post("/ui/abtests/_new", _form(**changes), csrf_from="/ui/abtests/_new")
    assert made.status_code == 303, text(made)
    exp = service(dashboard).get_abtest("churn")
    assert exp.bandit == Bandit(120, 0.1) and exp.canary is None


def test_the_live_power_analysis_sends_only_its_own_fields(dashboard: Dashboard) -> None:
    form = dashboard.http.get("/ui/abtests/_new")
    [included] = re.findall(r'hx-get="/ui/abtests/_power"[^>]*hx-include="([^"]*)"', form.text)
    names = set(re.findall(r"\[name='([a-z_]+)'\]", html.unescape(included)))
    assert names == {"kpi_kind", "mde", "alpha", "power", "baseline", "units_per_day", "arm_name"}


def test_a_tiny_mde_is_a_message_not_a_server_error(dashboard: Dashboard) -> None:
    query = {"kpi_kind": "proportion", "mde": "1e-17", "alpha": "0.05", "power": "0.8"}
    part = dashboard.http.get(
        "/ui/abtests/_power", params={**query, "baseline": "0.1"}, headers={"hx-request": "true"}
    )
    assert part.status_code == 200
    assert "No sample size yet: effect: an effect size of 0 is too small" in text(part)
    refused = dashboard.post(
        "/ui/abtests/_new", _form(mode="ab", mde="1e-17", kpi_kind="proportion", kpi_denominator=""),
        csrf_from="/ui/abtests/_new",
    )  # fmt: skip
    assert refused.status_code == 422
    assert "mde: 1e-17 is too small an effect to detect" in text(refused)


def test_the_form_needs_the_csrf_token(dashboard: Dashboard) -> None:
    refused = dashboard.http.post("/ui/abtests/_new", data=_form())
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert service(dashboard).list_abtests().items == []


# -- an experiment -----------------------------------------------------------------------


def test_the_page_shows_the_results_and_their_charts(any_dashboard: Dashboard) -> None:
    ab = running(any_dashboard)
    page = any_dashboard.http.get(PAGE)
    assert page.status_code == 200
    shown = text(page)
    assert "control (control) 50% 1,000 0.1 [" in shown
    assert "b 50% 1,000 0.15 [" in shown
    found = ab.abtest_results("churn").primary["b"]
    low, high = found.absolute_ci
    assert f"+0.05 [{low:+.4g}, {high:+.4g}]" in shown
    assert f"+50.00% [{found.relative_ci[0] * 100:+.2f}%" in shown  # type: ignore[index]
    assert "Warnings" not in shown  # equal shares, no guardrail
    plan = sample_size("proportions", 0.02, 0.05, 0.8, 2, 0.1)  # control converts 10 %
    assert (
        f"Planned sample: {plan.per_arm:,} units per arm; the smallest arm has 1,000 "
        f"({100_000 / plan.per_arm:.0f}%)." in shown
    )
    bayes = ab.abtest_results("churn").bayes["b"]
    assert (
        f"b {bayes.probability_to_beat_control * 100:.1f}% {bayes.expected_loss_treatment:.4g} "
        f"{bayes.expected_loss_control:.4g} [{bayes.lift_interval[0]:+.4g}," in shown
    )
    drawn = charts(page)
    assert set(drawn) >= {"lift-absolute", "lift-relative"}
    [b] = [s for s in drawn["lift-absolute"]["series"] if s["label"] == "b"]
    assert (b["label"], b["y"], b["lower"], b["upper"]) == (
        "b",
        [found.absolute_lift],
        [low],
        [high],
    )
    assert drawn["lift-absolute"]["x_names"] == [[1.0, "b"]] and drawn["lift-absolute"]["zero"]
    assert drawn["lift-relative"]["series"][0]["y"] == [pytest.approx(50.0)]
    alt = re.search(r'aria-label="(Chart of the absolute lift[^"]+)"', page.text)
    assert alt and "b +0.05 [" in alt.group(1)
    # live: the results poll themselves while the experiment runs
    assert 'hx-get="/ui/abtests/churn/results" hx-trigger="every 5s"' in page.text
    part = any_dashboard.http.get(f"{PAGE}/results", headers={"hx-request": "true"})
    assert part.status_code == 200 and "<html" not in part.text and "1,000" in part.text
    assert charts(part) == drawn
    history = text(page).split("History", 1)[1]
    assert "start" in history and "arms serving" in history and "create" in history


def test_warnings_for_a_sample_ratio_mismatch_and_a_broken_guardrail(
    dashboard: Dashboard,
) -> None:
    ab = service(dashboard)
    design(ab, guardrails=guarded("revenue", 0.05))
    ab.start_abtest("churn")
    units, buyers = {"control": 1200, "b": 800}, {"control": 120, "b": 80}
    traffic(ab, "churn", units, buyers, revenue={"control": 20.0, "b": 10.0})
    page = dashboard.http.get(PAGE)
    box = re.search(r'<div class="abtests-warning" role="alert".*?</div>', page.text, re.S)
    assert box, "no warning box"
    warned = html.unescape(box.group(0))
    srm = ab.abtest_results("churn").srm
    assert srm is not None and srm.flagged
    assert "Sample ratio mismatch: the units per arm (control 1,200, b 800)" in warned
    assert f"p = {srm.p_value:.3g}" in warned
    assert "Guardrail revenue broken in arm b: relative lift -" in warned
    assert "guardrail-revenue" in charts(page)
    assert 'class="abtests-breached"' in page.text


def test_start_pause_resume_stop_with_reasons(any_dashboard: Dashboard) -> None:
    ab = service(any_dashboard)
    design(ab)
    for action, status in (
        ("start", Status.RUNNING),
        ("pause", Status.PAUSED),
        ("resume", Status.RUNNING),
        ("stop", Status.STOPPED),
    ):
        page = any_dashboard.http.get(PAGE)
        assert f'action="{PAGE}/{action}"' in page.text
        done = any_dashboard.post(f"{PAGE}/{action}", {"reason": f"why {action}"}, csrf_from=PAGE)
        assert done.status_code == 303 and done.headers["location"] == f"{PAGE}?done={action}"
        assert ab.get_abtest("churn").status is status
    page = any_dashboard.http.get(f"{PAGE}?done=stop")
    assert "churn: stopped" in text(page)
    assert f'action="{PAGE}/start"' not in page.text and f'action="{PAGE}/stop"' not in page.text
    assert 'hx-trigger="every 5s"' not in page.text  # a stopped experiment is not polled
    history = [(v.action, v.reason) for v in ab.abtest_history("churn")]
    assert history[1:] == [(a, f"why {a}") for a in ("start", "pause", "resume", "stop")]
    assert "why resume" in text(page).split("History", 1)[1]


def test_a_refused_action_is_shown_on_the_page(dashboard: Dashboard) -> None:
    ab = service(dashboard)
    design(ab)
    refused = dashboard.post(f"{PAGE}/resume", {"reason": "try"}, csrf_from=PAGE)
    assert refused.status_code == 409
    assert "it has not started: start it first" in text(refused)
    unknown = dashboard.post(f"{PAGE}/explode", {}, csrf_from=PAGE)
    assert unknown.status_code == 422 and "action: one of start, pause" in text(unknown)
    forged = dashboard.http.post(f"{PAGE}/start", data={"reason": "x", "csrf": "forged"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    assert ab.get_abtest("churn").status is Status.DRAFT
    missing = dashboard.http.get("/ui/abtests/nope")
    assert missing.status_code == 404 and "A/B experiment 'nope' does not exist" in text(missing)


def test_promote_without_a_winner_is_refused_on_the_page(dashboard: Dashboard) -> None:
    ab = service(dashboard)
    design(ab, arms=arms(targets={"control": "models:/churn/1", "b": "models:/churn/2"}))
    ab.start_abtest("churn")
    traffic(ab, "churn", {"control": 500, "b": 500}, {"control": 50, "b": 50})
    page = dashboard.http.get(PAGE)
    assert f'action="{PAGE}/promote"' in page.text and "data-confirm=" in page.text
    refused = dashboard.post(f"{PAGE}/promote", {"arm": "", "reason": "ship"}, csrf_from=PAGE)
    assert refused.status_code == 409
    assert "has no significant winner" in text(refused)
    assert 'name="reason" value="ship"' in refused.text  # what was typed stays
    named = dashboard.post(f"{PAGE}/promote", {"arm": "b", "reason": "ship"}, csrf_from=PAGE)
    assert named.status_code == 404 and "churn" in text(named)  # no such model registered
    assert ab.get_abtest("churn").status is Status.RUNNING


def test_a_viewer_sees_no_buttons_and_is_refused(secured: Dashboard) -> None:
    ab = service(secured)
    design(ab)
    secured.user("carol", Role.VIEWER)
    secured.sign_in("carol")
    page = secured.http.get(PAGE)
    assert page.status_code == 200 and "the new model sells more" in page.text
    assert '<form method="post" action="/ui/abtests/churn/' not in page.text
    assert "Actions" not in text(page)
    assert 'href="/ui/abtests/_new"' not in secured.http.get("/ui/abtests").text
    refused = secured.post(f"{PAGE}/start", {"reason": "x"}, csrf_from=PAGE)
    assert refused.status_code == 403 and "PERMISSION_DENIED" in refused.text
    created = secured.post("/ui/abtests/_new", _form(name="mine"), csrf_from="/ui/abtests/_new")
    assert created.status_code == 403
    assert ab.get_abtest("churn").status is Status.DRAFT
    assert [e.name for e in ab.list_abtests().items] == ["churn"]


def test_an_editor_granted_the_experiment_gets_its_buttons(secured: Dashboard) -> None:
    from plinth.auth.types import Kind

    ab = service(secured)
    design(ab)
    secured.user("bob", Role.EDITOR)
    secured.sign_in("bob")
    before = secured.http.get(PAGE)
    assert f'action="{PAGE}/start"' not in before.text  # an editor, but not of this one
    secured.auth.grant(Kind.ABTEST, "churn", "user", "bob", "editor")
    page = secured.http.get(PAGE)
    assert f'action="{PAGE}/start"' in page.text
    started = secured.post(f"{PAGE}/start", {"reason": "go"}, csrf_from=PAGE)
    assert started.status_code == 303
    assert ab.abtest_history("churn")[-1].changed_by == "bob"


def test_the_timeline_charts(dashboard: Dashboard) -> None:
    running(dashboard)
    drawn = charts(dashboard.http.get(PAGE))
    over_time = drawn["kpi-over-time"]
    assert over_time["x_time"] and {s["label"] for s in over_time["series"]} == {"control", "b"}
    [band] = drawn["sequential"]["series"]
    assert band["label"] == "b" and len(band["lower"]) == len(band["x"]) > 1


def test_cuped_lifts(dashboard: Dashboard) -> None:
    ab = service(dashboard)
    design(ab)
    ab.start_abtest("churn")
    earlier = {"control": 300, "b": 300}  # bought before their exposure: the covariate
    traffic(ab, "churn", {"control": 1000, "b": 1000}, {"control": 100, "b": 150}, None, earlier)
    cuped = ab.abtest_results("churn").cuped
    assert "b" in cuped
    shown = text(dashboard.http.get(PAGE))
    assert "With CUPED variance reduction" in shown
    low, high = cuped["b"].absolute_ci
    assert f"b {cuped['b'].absolute_lift:+.4g} [{low:+.4g}, {high:+.4g}]" in shown


def test_promote_the_winner_through_the_registry(dashboard: Dashboard) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from plinth.registry.types import Stage
    from tests.backends import local_client

    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"spend": rng.normal(100, 30, 40)})
    model = LogisticRegression().fit(frame, (frame.spend > 100).astype(int))
    settings = dashboard.settings
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        for _ in range(2):
            with client.start_run(experiment="churn") as run:
                run.log_model(model, input_example=frame[:5], registered_model="churn")
    ab = service(dashboard)
    design(ab, arms=arms(targets={"control": "models:/churn/1", "b": "models:/churn/2"}))
    ab.start_abtest("churn")
    traffic(ab, "churn", {"control": 1000, "b": 1000}, {"control": 100, "b": 200})
    done = dashboard.post(f"{PAGE}/promote", {"arm": "", "reason": "b sells more"}, csrf_from=PAGE)
    assert done.status_code == 303 and done.headers["location"] == f"{PAGE}?done=promote"
    registry = dashboard.app.state.dashboard.registry
    assert registry.get_model_version("churn", 2).stage is Stage.PRODUCTION
    assert ab.get_abtest("churn").status is Status.STOPPED
    page = dashboard.http.get(done.headers["location"])
    assert "churn: promoted" in text(page)
    history = text(page).split("History", 1)[1]
    assert "promote" in history and "b sells more" in history
    assert "arm b: models:/churn/2 -> PRODUCTION" in history


def test_a_sample_ratio_mismatch_holds_a_promotion_back_unless_forced(
    dashboard: Dashboard,
) -> None:
    ab = service(dashboard)
    design(ab, arms=arms(targets={"control": "models:/churn/1", "b": "models:/churn/2"}))
    ab.start_abtest("churn")
    traffic(ab, "churn", {"control": 1200, "b": 800}, {"control": 120, "b": 200})
    page = dashboard.http.get(PAGE)
    assert "Promote despite the sample ratio mismatch" in page.text
    form = {"arm": "b", "reason": "ship"}
    held = dashboard.post(f"{PAGE}/promote", form, csrf_from=PAGE)
    assert held.status_code == 409 and "CONFLICT" in held.text  # the SRM holds it back
    assert ab.get_abtest("churn").status is Status.RUNNING
    forced = dashboard.post(f"{PAGE}/promote", {**form, "force": "1"}, csrf_from=PAGE)
    assert forced.status_code == 404  # past the SRM check: no model churn in this registry


def test_a_long_history_shows_its_newest_versions(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.ui.report import render_report

    monkeypatch.setattr("plinth.ui.abtest_results.HISTORY_SHOWN", 3)
    ab = running(dashboard)
    for i in range(4):
        ab.update_abtest("churn", hypothesis=f"take {i}", reason=f"reworded {i}")
    page = text(dashboard.http.get(PAGE))
    assert "The newest 3 of 6 versions; plinth ab history churn lists them all." in page
    assert "reworded 3" in page and "reworded 1" in page and "reworded 0" not in page
    report = render_report(ab, "churn")
    assert "The newest 3 of 6 versions" in report and "reworded 0" not in report
