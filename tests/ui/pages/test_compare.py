"""Runs compared: params side by side with differences marked, metric summaries, curves
overlaid (one line per run) and a param against a metric; bad input is an error page."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import Dashboard
from tests.ui.pages.test_tracking import log, seed, tracking_of

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


def query(ids: list[str], **more: str) -> str:
    return "&".join([f"runs={i}" for i in ids] + [f"{k}={v}" for k, v in more.items()])


def test_params_side_by_side_with_differences_marked(any_dashboard: Dashboard) -> None:
    ids = seed(tracking_of(any_dashboard), 3)
    tracking = tracking_of(any_dashboard)
    tracking.log_params(ids[0], {"seed": 7}, "data")
    for run_id in ids:
        tracking.log_params(run_id, {"rows": 100}, "data")
    page = any_dashboard.http.get(f"/ui/compare?{query(ids)}")
    assert page.status_code == 200, page.text
    html = page.text
    assert "<h1>Compare 3 runs</h1>" in html
    for i, run_id in enumerate(ids):
        assert f'<a href="/ui/runs/{run_id}">run-{i:02d}</a>' in html
    rows = re.findall(r'<tr( class="differs")?>\s*<th scope="row">(.*?)</th>', html)
    marked = {re.sub(r"<[^>]+>", "", name).split(": ")[-1]: bool(cls) for cls, name in rows}
    assert marked["hyper.lr"] and marked["model.kind"] and marked["data.seed"]
    assert not marked["data.rows"] and "differs: hyper.lr" in re.sub(r"<[^>]+>", "", html)
    assert "4 of 5 params differ" in html
    assert re.search(r"<td>0\.99</td>\s*<td>0\.98</td>", html)


def test_only_differences_hides_equal_params(dashboard: Dashboard) -> None:
    tracking = tracking_of(dashboard)
    ids = seed(tracking, 4)
    ids = [ids[0], ids[3]]  # same depth (0), other lr and kind
    everything = dashboard.http.get(f"/ui/compare?{query(ids)}").text
    assert ">hyper.depth</th>" in everything and "Show only differences" in everything
    only = dashboard.http.get(f"/ui/compare?{query(ids, only='1')}").text
    assert ">hyper.depth</th>" not in only and "hyper.lr</th>" in only
    assert "Show all params" in only


def test_metric_summaries_and_one_chart_per_chosen_metric(any_dashboard: Dashboard) -> None:
    ids = seed(tracking_of(any_dashboard), 2)
    html = any_dashboard.http.get(f"/ui/compare?{query(ids)}").text
    assert "Metric (last value; best)" in html and "0.505" in html
    charts = re.findall(r'data-chart="([^"]+)"', html)
    assert [c.replace("&amp;", "&") for c in charts[:2]] == [
        f"/ui/compare/chart?{query(ids, metric='acc')}",
        f"/ui/compare/chart?{query(ids, metric='loss')}",
    ]
    chosen = any_dashboard.http.get(f"/ui/compare?{query(ids, metric='loss')}").text
    curves = [c for c in re.findall(r'data-chart="([^"]+)"', chosen) if "/chart?" in c]
    assert len(curves) == 1 and curves[0].endswith("metric=loss")


def test_the_chart_has_one_line_per_run_that_logged_the_metric(any_dashboard: Dashboard) -> None:
    tracking = tracking_of(any_dashboard)
    ids = seed(tracking, 2)
    other = tracking.create_run("churn", name="no-acc")
    log(tracking, other.id, {"loss": [0.3]})
    spec = any_dashboard.http.get(
        f"/ui/compare/chart?{query([*ids, other.id], metric='acc')}",
        headers={"accept": "application/json"},
    ).json()
    assert spec["x_label"] == "step" and spec["y_label"] == "acc"
    assert [(s["label"], s["x"], s["y"], s["style"]) for s in spec["series"]] == [
        ("run-00", [0, 1], [0.1, 0.5], "line"),
        ("run-01", [0, 1], [0.1, 0.505], "line"),
    ]


def test_a_param_against_a_metric(any_dashboard: Dashboard) -> None:
    ids = seed(tracking_of(any_dashboard), 3)
    html = any_dashboard.http.get(f"/ui/compare?{query(ids, x='hyper.lr', y='acc')}").text
    url = next(c for c in re.findall(r'data-chart="([^"]+)"', html) if "/scatter?" in c)
    spec = any_dashboard.http.get(
        url.replace("&amp;", "&"), headers={"accept": "application/json"}
    ).json()
    assert [(s["label"], s["x"], s["y"], s["style"]) for s in spec["series"]] == [
        ("run-02", [0.98], [0.51], "points"),
        ("run-01", [0.99], [0.505], "points"),
        ("run-00", [1.0], [0.5], "points"),
    ]
    assert "Scatter of acc (last value) against param hyper.lr" in html


def test_a_param_that_is_no_number_is_explained_not_drawn(dashboard: Dashboard) -> None:
    ids = seed(tracking_of(dashboard), 2)
    page = dashboard.http.get(f"/ui/compare?{query(ids, x='model.kind', y='acc')}")
    assert page.status_code == 200
    assert "param model.kind is not a number in these runs (&#39;forest&#39;, &#39;gbm&#39;)" in (
        page.text
    )
    assert "/ui/compare/scatter?" not in page.text
    chart = dashboard.http.get(
        f"/ui/compare/scatter?{query(ids, x='model.kind', y='acc')}",
        headers={"accept": "application/json"},
    )
    assert chart.status_code == 422 and "not a number" in chart.json()["message"]


@pytest.mark.parametrize(
    ("make", "status", "message"),
    [
        (lambda ids: query(ids[:1]), 422, "compare 2 to 20 runs"),
        (lambda ids: query(ids * 7), 422, "compare 2 to 20 runs (?runs=ID&amp;runs=ID...), got 21"),
        (lambda ids: query([ids[0], ids[0]]), 422, "listed more than once"),
        (lambda ids: query([ids[0], "f" * 32]), 404, "do not exist"),
        (lambda ids: query(ids[:2], metric="nope"), 404, "none of these runs logged metric"),
        (lambda ids: query(ids[:2], x="hyper.nope"), 404, "none of these runs has param"),
        (lambda ids: query(ids[:2], y="nope"), 404, "none of these runs logged metric"),
    ],
)
def test_bad_input_is_an_error_page(
    any_dashboard: Dashboard, make: object, status: int, message: str
) -> None:
    ids = seed(tracking_of(any_dashboard), 3)
    assert callable(make)
    page = any_dashboard.http.get(f"/ui/compare?{make(ids)}")
    assert page.status_code == status
    assert message in page.text and 'role="alert"' in page.text


def test_a_chart_of_bad_input_answers_its_error_as_json(dashboard: Dashboard) -> None:
    ids = seed(tracking_of(dashboard), 2)
    for url, status in [
        (f"/ui/compare/chart?{query(ids, metric='nope')}", 404),
        (f"/ui/compare/chart?{query(ids[:1], metric='acc')}", 422),
        (f"/ui/compare/chart?{query(ids)}", 422),  # no metric
    ]:
        answer = dashboard.http.get(url, headers={"accept": "application/json"})
        assert answer.status_code == status and answer.json()["message"], url


def test_the_toggle_keeps_every_run(dashboard: Dashboard) -> None:
    ids = seed(tracking_of(dashboard), 2)
    html = dashboard.http.get(f"/ui/compare?{query(ids)}").text
    assert f'href="/ui/compare?runs={ids[0]}&amp;runs={ids[1]}&amp;only=1#params"' in html
