"""The serving pages: score jobs (run for real) with their checks, a model's predictions
from the prediction log, live refresh of running jobs, bad input and who sees what."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plinth.auth.types import Kind
from plinth.client import Client
from plinth.ui.pages import serving
from tests.ui.conftest import Dashboard
from tests.ui.pages.serving_data import Seeded, seed, seeded_client

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


def seeded(dashboard: Dashboard, tmp_path: Path, **options: bool) -> Seeded:
    client = seeded_client(dashboard.settings.home, dashboard.settings.store_uri)
    return seed(client, tmp_path / "data", **options)


def cells(html: str) -> list[list[str]]:
    """The body rows of a page's first table, as text."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [[text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_jobs_page_lists_real_jobs_on_each_store(
    any_dashboard: Dashboard, tmp_path: Path
) -> None:
    seeded(any_dashboard, tmp_path)
    page = any_dashboard.http.get("/ui/serving")
    assert page.status_code == 200
    blocked, delivered = cells(page.text)
    assert blocked[1:4] == ["models:/odd/1", "BLOCKED", "root"]
    assert blocked[7:9] == ["4", "0"] and blocked[10] == "0 passed, 1 failed (3 skipped)"
    assert delivered[1:3] == ["models:/churn/1", "DELIVERED"]
    assert delivered[7:9] == ["4", "4"] and delivered[10] == "1 passed, 0 failed (3 skipped)"
    assert "(version 1)" in delivered[9] and "churn-scores" in delivered[9]
    assert 'href="/ui/models/churn/versions/1"' in page.text
    assert "hx-trigger" not in page.text  # nothing running: no polling
    only_blocked = any_dashboard.http.get("/ui/serving?status=BLOCKED")
    assert [r[2] for r in cells(only_blocked.text)] == ["BLOCKED"]
    of_churn = any_dashboard.http.get("/ui/serving?model=churn")
    assert [r[1] for r in cells(of_churn.text)] == ["models:/churn/1"]
    none = any_dashboard.http.get("/ui/serving?model=churn&status=FAILED")
    assert "No score jobs of model “churn” with status FAILED." in none.text


def test_a_job_page_shows_its_parameters_and_checks(dashboard: Dashboard, tmp_path: Path) -> None:
    jobs = seeded(dashboard, tmp_path)
    page = dashboard.http.get(f"/ui/serving/jobs/{jobs.blocked}")
    assert page.status_code == 200
    assert "<strong>BLOCKED</strong>: nothing was delivered because" in page.text
    assert "prediction_values failed (2 null, NaN or infinite prediction value(s) in 4" in page.text
    assert 'href="/ui/models/odd/versions/1"' in page.text and jobs.blocked in page.text
    checks = {row[0]: row[1:] for row in cells(page.text)}
    assert checks["prediction_values"][:2] == ["failed", "inf=0, nan=2, null=0, rows=4"]
    assert checks["input_ranges"][0] == "skipped"
    assert (
        "skipped: no training data is linked to the model version"
        in checks["prediction_distribution"][3]
    )
    good = dashboard.http.get(f"/ui/serving/jobs/{jobs.delivered}")
    assert 'role="alert"' not in good.text and "(Delta version 1)" in good.text
    assert "<dt>Rows delivered</dt><dd>4</dd>" in good.text


def test_running_jobs_refresh_until_they_end(dashboard: Dashboard, tmp_path: Path) -> None:
    jobs = seeded(dashboard, tmp_path, odd=False).client.score_jobs
    jobs.start_score_job("live-1", "churn", 1, "in.parquet", "out")
    listing = dashboard.http.get("/ui/serving")
    assert 'hx-trigger="every 3s"' in listing.text
    part = dashboard.http.get("/ui/serving", headers={"hx-request": "true"})
    assert part.text.lstrip().startswith('<div id="serving-jobs"') and "<h1>" not in part.text
    assert "RUNNING" in part.text and "none yet" in part.text
    detail = dashboard.http.get("/ui/serving/jobs/live-1", headers={"hx-request": "true"})
    assert 'hx-trigger="every 3s"' in detail.text and "so far" in detail.text
    jobs.finish_score_job("live-1", "FAILED", 2)
    after = dashboard.http.get("/ui/serving", headers={"hx-request": "true"})
    assert "hx-trigger" not in after.text and "RUNNING" not in after.text
    failed = dashboard.http.get("/ui/serving/jobs/live-1")
    assert "hx-trigger" not in failed.text
    assert "<strong>FAILED</strong>: the run stopped before delivering" in failed.text


def test_the_predictions_page_on_each_store(any_dashboard: Dashboard, tmp_path: Path) -> None:
    seeded(any_dashboard, tmp_path, odd=False)
    page = any_dashboard.http.get("/ui/serving/predictions?model=churn")
    assert page.status_code == 200
    rows = cells(page.text)
    ids = [r[1] for r in rows]
    assert (ids[0], ids[2], ids[3]) == ("req-v2", "req-1", "req-0")  # the newest first
    by_id = {r[1]: r for r in rows}
    assert by_id["req-0"][2:6] == ["1", "2", "age=41, spend=2.5 (first of 2)", "1, 0"]
    assert by_id["req-v2"][2:6] == ["2", "1", "age=33, spend=9.5", "1"]
    assert len(rows) == 4 and 'data-chart="/ui/serving/predictions/chart?model=churn' in page.text
    one = any_dashboard.http.get("/ui/serving/predictions?model=churn&version=1&window=1h")
    assert [r[1] for r in cells(one.text)][1:] == ["req-1", "req-0"]  # not req-v2
    counts = any_dashboard.http.get("/ui/serving/predictions/chart?model=churn&window=1h").json()
    requests, predicted = counts["series"]
    assert len(requests["x"]) == 60 and counts["x_time"]  # a bar a minute over the hour
    assert (sum(requests["y"]), sum(y for y in predicted["y"] if y)) == (4, 5)
    assert requests["y"].count(0) >= 56  # four requests fill four minutes at most
    latency = any_dashboard.http.get(
        "/ui/serving/predictions/chart?model=churn&what=latency&version=2"
    ).json()
    assert [s["label"] for s in latency["series"]] == ["mean latency", "max latency"]
    assert [y for y in latency["series"][0]["y"] if y is not None] == [0.5]


def test_the_predictions_page_offers_the_models_first(dashboard: Dashboard, tmp_path: Path) -> None:
    seeded(dashboard, tmp_path, odd=False)
    page = dashboard.http.get("/ui/serving/predictions")
    assert page.status_code == 200 and "Choose a model" in page.text
    assert 'href="/ui/serving/predictions?model=churn"' in page.text
    quiet = dashboard.http.get("/ui/serving/predictions?model=churn&version=2&window=15m&page=2")
    assert "No predictions of churn version 2 logged in the last 15m on page 2." in quiet.text


def test_jobs_and_predictions_come_in_pages(
    dashboard: Dashboard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(dashboard, tmp_path, odd=False)
    monkeypatch.setattr(serving, "JOBS_PER_PAGE", 1)
    monkeypatch.setattr(serving, "PREDICTIONS_PER_PAGE", 3)
    dashboard.app.state.dashboard.score_jobs.start_score_job("second", "churn", 2, "in", "out")
    first = dashboard.http.get("/ui/serving?model=churn")
    assert [r[1] for r in cells(first.text)] == ["models:/churn/2"]
    assert 'href="/ui/serving?model=churn&amp;page=2" rel="next"' in first.text
    second = dashboard.http.get("/ui/serving?model=churn&page=2")
    assert [r[1] for r in cells(second.text)] == ["models:/churn/1"]
    assert 'rel="next"' not in second.text and 'rel="prev"' in second.text
    newest = cells(dashboard.http.get("/ui/serving/predictions?model=churn").text)
    oldest = cells(dashboard.http.get("/ui/serving/predictions?model=churn&page=2").text)
    assert len(newest) == 3 and len(oldest) == 1
    assert {r[1] for r in newest + oldest} >= {"req-0", "req-1", "req-v2"}


BAD_INPUT = [
    ("/ui/serving/jobs/no-such-job", 404, "score job &#39;no-such-job&#39; not found"),
    ("/ui/serving/predictions?model=nobody", 404, "registered model &#39;nobody&#39; does not"),
    ("/ui/serving/predictions?model=churn&version=9", 404, "&#39;churn&#39; has no version 9"),
    ("/ui/serving/predictions?model=churn&version=x", 422, "version must be a version"),
    ("/ui/serving/predictions?model=churn&version=0", 422, "version must be 1 or more"),
    ("/ui/serving/predictions?model=churn&window=2w", 422, "window must be one of 15m"),
    ("/ui/serving/predictions?model=churn&page=0", 422, "page must be 1 or more"),
    ("/ui/serving/predictions?model=churn&page=x", 422, "page: Input should be a valid integer"),
    ("/ui/serving?page=-1", 422, "page must be 1 or more"),
    ("/ui/serving?status=DONE", 422, "status must be one of RUNNING"),
    ("/ui/serving/predictions/chart?model=churn&what=x", 422, "requests or latency"),
    ("/ui/serving/predictions/chart?model=nobody", 404, "&#39;nobody&#39; does not exist"),
]


def test_bad_input_is_a_page_with_the_error(dashboard: Dashboard) -> None:
    dashboard.app.state.dashboard.registry.create_registered_model("churn")
    for path, status, message in BAD_INPUT:
        answer = dashboard.http.get(path)
        assert answer.status_code == status, path
        assert "text/html" in answer.headers["content-type"], path
        assert message in answer.text, path


def test_a_chart_of_an_unknown_model_answers_json(dashboard: Dashboard) -> None:
    answer = dashboard.http.get(
        "/ui/serving/predictions/chart?model=nobody", headers={"accept": "application/json"}
    )
    assert answer.status_code == 404 and answer.json()["error_code"] == "NOT_FOUND"


def test_a_private_model_shows_neither_its_jobs_nor_its_predictions(
    secured: Dashboard, tmp_path: Path
) -> None:
    client: Client = seeded_client(secured.settings.home)
    seed(client, tmp_path / "open", odd=False)
    secret = seed(client, tmp_path / "secret", model="secret", odd=False)
    secured.auth.revoke_grant(Kind.MODEL, "secret", "everyone", "*")
    secured.user("bob")
    secured.sign_in("bob")
    listing = secured.http.get("/ui/serving")
    assert [r[1] for r in cells(listing.text)] == ["models:/churn/1"]
    assert "secret" not in secured.http.get("/ui/serving/predictions").text
    for path in (
        f"/ui/serving/jobs/{secret.delivered}",
        "/ui/serving/predictions?model=secret",
        "/ui/serving/predictions/chart?model=secret",
    ):
        hidden = secured.http.get(path)
        assert hidden.status_code == 404 and "req-" not in hidden.text, path
    assert "req-0" in secured.http.get("/ui/serving/predictions?model=churn").text
    secured.auth.grant(Kind.MODEL, "secret", "user", "bob", "viewer")
    shown = secured.http.get(f"/ui/serving/jobs/{secret.delivered}")
    assert shown.status_code == 200 and "models:/secret/1" in shown.text
    assert "req-0" in secured.http.get("/ui/serving/predictions?model=secret").text
