"""The runs of an experiment: server-side paging, sorting, filtering, chosen columns, live
updates while runs go on; and the list of experiments."""

from __future__ import annotations

import re
import time

import pytest

from plinth.store.schema import runs
from plinth.tracking.service import TrackingService
from plinth.tracking.types import MetricBatch, RunStatus
from tests.ui.conftest import Dashboard

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

_RUN_LINK = re.compile(r'<a href="/ui/runs/([0-9a-f]{32})">([^<]+)</a>')


def tracking_of(dashboard: Dashboard) -> TrackingService:
    found: TrackingService = dashboard.app.state.dashboard.tracking
    return found


def log(tracking: TrackingService, run_id: str, metrics: dict[str, list[float]]) -> None:
    keys = [k for k, values in metrics.items() for _ in values]
    values = [v for vs in metrics.values() for v in vs]
    steps = [i for vs in metrics.values() for i in range(len(vs))]
    now = int(time.time() * 1000)
    batch = MetricBatch(keys, values, steps, [now] * len(keys), [None] * len(keys))
    tracking.log_metric_batch(run_id, batch)


def seed(
    tracking: TrackingService, count: int, experiment: str = "churn", running: int = 0
) -> list[str]:
    """``count`` runs: run-00, run-01, ...; acc rises with the number, lr falls; the last
    ``running`` runs stay RUNNING."""
    ids = []
    for i in range(count):
        run = tracking.create_run(experiment, name=f"run-{i:02d}")
        tracking.log_params(run.id, {"lr": round(1.0 - i / 100, 2), "depth": i % 3}, "hyper")
        tracking.log_params(run.id, {"kind": "gbm" if i % 2 else "forest"}, "model")
        log(tracking, run.id, {"acc": [0.1, 0.5 + i / 200], "loss": [1.0, 1 - i / 200]})
        if i < count - running:
            tracking.end_run(run.id, RunStatus.FAILED if i == 1 else RunStatus.FINISHED)
        ids.append(run.id)
    return ids


def names_in(html: str) -> list[str]:
    return [name for _, name in _RUN_LINK.findall(html)]


def test_the_experiments_list_links_each_experiment(any_dashboard: Dashboard) -> None:
    tracking = tracking_of(any_dashboard)
    seed(tracking, 1, "churn")
    seed(tracking, 1, "fraud/v2")
    page = any_dashboard.http.get("/ui/experiments?q=fraud")
    assert page.status_code == 200
    assert 'href="/ui/experiments/fraud%2Fv2"' in page.text and "churn" not in page.text
    runs = any_dashboard.http.get("/ui/experiments/fraud%2Fv2")
    assert runs.status_code == 200 and names_in(runs.text) == ["run-00"]


def test_the_runs_page_shows_a_page_of_runs_with_their_columns(any_dashboard: Dashboard) -> None:
    tracking = tracking_of(any_dashboard)
    ids = seed(tracking, 53)
    first = any_dashboard.http.get("/ui/experiments/churn")
    assert first.status_code == 200
    html = first.text
    assert "<h1>churn</h1>" in html
    shown = names_in(html)
    assert len(shown) == 50 and shown[0] == "run-52"  # newest first
    assert f'href="/ui/runs/{ids[52]}"' in html
    for header in ("acc (last)", "loss (last)", "hyper.depth", "hyper.lr", "model.kind"):
        assert header in html
    assert "0.76" in html  # run-52's acc: its last value, not its first
    assert 'rel="next"' in html and 'hx-target="#runs"' in html
    assert 'aria-sort="descending"' in html
    second = any_dashboard.http.get("/ui/experiments/churn?page=2")
    assert names_in(second.text) == ["run-02", "run-01", "run-00"]
    assert 'rel="next"' not in second.text and 'rel="prev"' in second.text
    assert "status-failed" in second.text


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sort=name&order=asc", ["run-00", "run-01", "run-02", "run-03"]),
        ("sort=metrics.acc&order=desc", ["run-03", "run-02", "run-01", "run-00"]),
        ("sort=params.hyper.lr&order=desc", ["run-00", "run-01", "run-02", "run-03"]),
        ("sort=status&order=asc&filter=name+in+('run-03','run-01')", ["run-01", "run-03"]),
        ("sort=status&order=desc&filter=name+in+('run-03','run-01')", ["run-03", "run-01"]),
        ("filter=params.hyper.depth+%3D+0", ["run-03", "run-00"]),
        ("filter=metrics.acc+>+0.505&sort=name&order=desc", ["run-03", "run-02"]),
    ],
)
def test_runs_sort_and_filter_on_the_server(
    any_dashboard: Dashboard, query: str, expected: list[str]
) -> None:
    seed(tracking_of(any_dashboard), 4)
    page = any_dashboard.http.get(f"/ui/experiments/churn?{query}")
    assert page.status_code == 200, page.text
    assert names_in(page.text) == expected


def test_runs_sort_by_duration(dashboard: Dashboard) -> None:
    tracking = tracking_of(dashboard)
    for name, took in [("quick", 5), ("slow", 500)]:
        run = tracking.create_run("churn", name=name)
        tracking.end_run(run.id)
        with tracking.store.write() as conn:  # durations of our choosing: no clock to wait on
            conn.execute(
                runs.update().where(runs.c.id == run.id).values(start_time=0, end_time=took)
            )
    page = dashboard.http.get("/ui/experiments/churn?sort=duration&order=desc")
    assert names_in(page.text) == ["slow", "quick"]
    header = re.search(
        r'<th scope="col" class="num" aria-sort="descending">\s*<a[^>]*>Duration', page.text
    )
    assert header, "the duration header should say it sorts the table"


def test_a_header_link_sorts_by_it_or_turns_the_order_around(dashboard: Dashboard) -> None:
    seed(tracking_of(dashboard), 2)
    html = dashboard.http.get("/ui/experiments/churn?sort=name&order=asc&page=1").text
    assert 'href="/ui/experiments/churn?sort=name&amp;order=desc"' in html
    assert 'href="/ui/experiments/churn?sort=start_time&amp;order=desc"' in html


def test_chosen_columns_replace_the_default_ones(dashboard: Dashboard) -> None:
    seed(tracking_of(dashboard), 2)
    html = dashboard.http.get(
        "/ui/experiments/churn?columns=chosen&metrics=loss&params=model.kind"
    ).text
    assert "loss (last)" in html and "model.kind</a>" in html
    assert "acc (last)" not in html and "hyper.lr</a>" not in html
    assert re.search(r'value="loss" checked', html) and not re.search(r'value="acc" checked', html)
    assert ">forest<" in html and ">gbm<" in html
    none = dashboard.http.get("/ui/experiments/churn?columns=chosen").text
    assert "(last)" not in none and names_in(none) == ["run-01", "run-00"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("filter=metrics.acc+>", "filter: at position 14: expected a value"),
        ("filter=colour+%3D+'red'", "unknown identifier &#39;colour&#39;"),
        ("sort=colour", "sort: unknown column &#39;colour&#39;"),
        ("order=sideways", "order: &#39;sideways&#39;; use asc or desc"),
        ("page=0", "page must be 1 or more, got 0"),
        ("params=lr", "params: &#39;lr&#39; is not GROUP.NAME"),
    ],
)
def test_bad_input_is_the_page_with_the_error_and_a_422(
    any_dashboard: Dashboard, query: str, message: str
) -> None:
    seed(tracking_of(any_dashboard), 1)
    page = any_dashboard.http.get(f"/ui/experiments/churn?{query}")
    assert page.status_code == 422
    assert message in page.text and 'role="alert"' in page.text
    assert "<h1>" in page.text


def test_a_malformed_filter_keeps_the_form_to_fix_it(dashboard: Dashboard) -> None:
    seed(tracking_of(dashboard), 1)
    page = dashboard.http.get("/ui/experiments/churn?filter=metrics.acc+>")
    assert page.status_code == 422
    assert 'value="metrics.acc &gt;"' in page.text and "<h1>churn</h1>" in page.text
    part = dashboard.http.get(
        "/ui/experiments/churn?filter=metrics.acc+>", headers={"hx-request": "true"}
    )
    assert part.status_code == 422 and "<h1>" not in part.text and 'role="alert"' in part.text


def test_other_bad_input_is_an_error_page(dashboard: Dashboard) -> None:
    missing = dashboard.http.get("/ui/experiments/nope")
    assert missing.status_code == 404 and "experiment &#39;nope&#39; does not exist" in missing.text
    seed(tracking_of(dashboard), 1)
    word = dashboard.http.get("/ui/experiments/churn?page=two")
    assert word.status_code == 422 and "page" in word.text
    beyond = dashboard.http.get("/ui/experiments/churn?page=9")
    assert beyond.status_code == 200 and "No runs on page 9" in beyond.text
    # each column repeats the page's links: a page of a thousand columns is refused
    wide = "&".join(f"metrics=m{i}" for i in range(51))
    refused = dashboard.http.get(f"/ui/experiments/churn?columns=1&{wide}")
    assert refused.status_code == 422 and "at most 50 metrics columns" in refused.text


def test_htmx_gets_the_runs_or_the_table_alone(dashboard: Dashboard) -> None:
    seed(tracking_of(dashboard), 2)
    part = dashboard.http.get("/ui/experiments/churn", headers={"hx-request": "true"})
    assert part.status_code == 200
    assert "<h1>" not in part.text and 'role="search"' in part.text
    assert names_in(part.text) == ["run-01", "run-00"]
    table = dashboard.http.get(
        "/ui/experiments/churn", headers={"hx-request": "true", "hx-target": "runs-table"}
    )
    assert 'role="search"' not in table.text and names_in(table.text) == ["run-01", "run-00"]
    assert table.text.lstrip().startswith('<div id="runs-table"')
    restored = dashboard.http.get(
        "/ui/experiments/churn",
        headers={"hx-request": "true", "hx-history-restore-request": "true"},
    )
    assert "<h1>churn</h1>" in restored.text  # going back to a pushed address: the page


def test_the_table_refreshes_itself_only_while_a_run_shown_goes_on(dashboard: Dashboard) -> None:
    tracking = tracking_of(dashboard)
    [run_id] = seed(tracking, 1, running=1)
    live = dashboard.http.get("/ui/experiments/churn?sort=name&order=asc").text
    poll = re.search(r'<div id="runs-table" hx-get="([^"]+)" hx-trigger="every 5s"', live)
    assert poll and poll.group(1) == "/ui/experiments/churn?sort=name&amp;order=asc"
    assert "status-running" in live
    tracking.end_run(run_id)
    done = dashboard.http.get(
        "/ui/experiments/churn?sort=name&order=asc",
        headers={"hx-request": "true", "hx-target": "runs-table"},
    ).text
    assert 'hx-trigger="every 5s"' not in done and "status-finished" in done


def test_runs_can_be_picked_for_comparison(dashboard: Dashboard) -> None:
    ids = seed(tracking_of(dashboard), 2)
    html = dashboard.http.get("/ui/experiments/churn").text
    assert '<form id="compare-form" method="get" action="/ui/compare"' in html
    for run_id in ids:
        assert f'name="runs" value="{run_id}" form="compare-form"' in html


def test_a_viewer_sees_only_the_experiments_they_may_read(secured: Dashboard) -> None:
    from plinth.auth.types import Kind, Role

    seed(tracking_of(secured), 1, "secret")
    seed(tracking_of(secured), 1, "open")
    secured.app.state.dashboard.auth.revoke_grant(Kind.EXPERIMENT, "secret", "everyone", "*")
    secured.user("vera", Role.VIEWER)
    secured.sign_in("vera")
    listed = secured.http.get("/ui/experiments")
    assert listed.status_code == 200 and "secret" not in listed.text and "open" in listed.text
    assert names_in(secured.http.get("/ui/experiments/open").text) == ["run-00"]
    refused = secured.http.get("/ui/experiments/secret")
    assert refused.status_code in (403, 404) and "run-00" not in refused.text


def test_links_keep_every_chosen_column(dashboard: Dashboard) -> None:
    seed(tracking_of(dashboard), 2)
    html = dashboard.http.get(
        "/ui/experiments/churn?columns=chosen&metrics=acc&metrics=loss&params=hyper.lr"
    ).text
    assert (
        'href="/ui/experiments/churn?columns=chosen&amp;metrics=acc&amp;metrics=loss'
        '&amp;params=hyper.lr&amp;sort=name&amp;order=asc"'
    ) in html


def test_a_chosen_column_stays_on_offer_when_no_new_run_has_it(dashboard: Dashboard) -> None:
    tracking = tracking_of(dashboard)
    seed(tracking, 1)
    html = dashboard.http.get("/ui/experiments/churn?columns=chosen&metrics=gone").text
    assert 'value="gone" checked' in html and "gone (last)" in html


def test_deleted_runs_and_experiments_leave_the_lists(dashboard: Dashboard) -> None:
    tracking = tracking_of(dashboard)
    _, gone = seed(tracking, 2, "churn")
    seed(tracking, 1, "fraud")
    tracking.delete_run(gone)
    assert names_in(dashboard.http.get("/ui/experiments/churn").text) == ["run-00"]
    tracking.delete_experiment("fraud")
    listed = dashboard.http.get("/ui/experiments").text
    assert "/ui/experiments/churn" in listed and "/ui/experiments/fraud" not in listed
    page = dashboard.http.get("/ui/experiments/fraud")  # still there by its address
    assert page.status_code == 200
    assert "This experiment was deleted on" in page.text and names_in(page.text) == []
    assert "was deleted" not in dashboard.http.get("/ui/experiments/churn").text
    tracking.restore_run(gone)
    assert names_in(dashboard.http.get("/ui/experiments/churn").text) == ["run-01", "run-00"]
