"""The feature store's pages: the catalog, entities, groups with their commits, statistics
and validation, views and training datasets; bad input; what a user may see."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from httpx import Response

import plinth
from plinth.auth.types import Kind, Role
from plinth.errors import InvalidArgument
from plinth.features import statistics
from plinth.features.store import FeatureStore
from plinth.features.types import Expectation, FeatureSpec
from tests.ui.conftest import Dashboard

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@plinth.on_demand(inputs=["amount", "avg_spend"], outputs={"amount_over_avg": "float64"})
def amount_over_avg(df: pd.DataFrame) -> pd.Series:
    return df["amount"] / df["avg_spend"] if len(df) else df["amount"]  # <b>escaped</b>


def rows(first: int, count: int, day: int, segment: str = "retail") -> pd.DataFrame:
    ids = list(range(first, first + count))
    return pd.DataFrame(
        {
            "customer_id": ids,
            "event_time": [T0 + timedelta(days=day)] * count,
            "orders_30d": [i % 7 for i in ids],
            "avg_spend": [10.0 + i * 1.5 for i in ids],
            "segment": [segment if i % 3 else "wholesale" for i in ids],
        }
    )


class Always:
    """A model of the generic flavor: cheap to package."""

    def predict(self, data: pd.DataFrame) -> list[int]:
        return [0] * len(data)


def seed(fs: FeatureStore) -> dict[str, int]:
    """An entity, a group with three commits (the third failing a warned expectation) and a
    refused write, a view with a transformation and a training dataset; returns the commit
    numbers and the dataset's id."""
    fs.create_entity("customer", ["customer_id"], description="a buying customer")
    features = [
        FeatureSpec("orders_30d", "int64", "orders in the last 30 days", {"team": "growth"}),
        FeatureSpec("avg_spend", "float64", "mean basket value"),
        FeatureSpec("segment", "string", "market segment"),
    ]
    group = fs.create_feature_group(
        "customer_stats", "customer", "event_time", features, description="30-day aggregates"
    )
    first = group.insert(rows(1, 40, 0))
    expectations = [
        Expectation("not_null", column="segment"),
        Expectation("allowed_values", column="segment", values=["retail", "wholesale"]),
    ]
    fs.service.set_expectations("customer_stats", 1, expectations, mode="warn")
    second = group.insert(rows(41, 20, 1))
    third = group.insert(rows(61, 10, 2, segment="<script>alert(1)</script>"))
    fs.service.set_expectations("customer_stats", 1, expectations, mode="strict")
    with pytest.raises(InvalidArgument, match="refused"):
        group.insert(rows(71, 5, 3, segment="online"))
    view = fs.create_feature_view(
        "churn",
        ["customer_stats:orders_30d", "customer_stats:avg_spend"],
        label="churned",
        request={"amount": "float64"},
        transformations=[amount_over_avg],
        description="what the churn model reads",
    )
    entity_rows = pd.DataFrame(
        {
            "customer_id": [1, 2, 45],
            "event_timestamp": pd.to_datetime(
                [T0 + timedelta(days=3), T0 + timedelta(days=4), T0 + timedelta(days=5)], utc=True
            ),
            "amount": [50.0, 25.0, 10.0],
            "churned": [0, 1, 0],
        }
    )
    dataset = view.create_training_dataset(entity_rows, description="january churn")
    return {
        "first": first.commit_version,
        "second": second.commit_version,
        "third": third.commit_version,
        "dataset": dataset.id,
    }


@pytest.fixture
def seeded(dashboard: Dashboard) -> dict[str, int]:
    return seed(dashboard.app.state.dashboard.feature_store)


def text(answer: Response) -> str:
    """What a reader sees: the page without its markup, character references resolved."""
    return html.unescape(re.sub(r"<[^>]+>", "", answer.text))


def test_the_catalog_finds_every_kind(dashboard: Dashboard, seeded: dict[str, int]) -> None:
    page = dashboard.http.get("/ui/features")
    assert page.status_code == 200
    body = text(page)
    assert "Entities (1)" in body and "Feature groups (1)" in body and "Feature views (1)" in body
    by_tag = text(dashboard.http.get("/ui/features?q=growth"))  # a feature's tag
    assert "customer_stats" in by_tag and "Feature views" not in by_tag
    fs = dashboard.app.state.dashboard.features
    fs.create_entity("store", ["store_id"])
    fs.create_feature_group("store_stats", "store", "day", [FeatureSpec("visits", "int64")])
    fs.create_feature_view("footfall", ["store_stats:visits"])
    by_entity = dashboard.http.get("/ui/features?entity=customer&kind=views").text
    assert "/ui/features/views/churn" in by_entity and "Feature groups" not in by_entity
    assert "/ui/features/views/footfall" not in by_entity
    nothing = text(dashboard.http.get("/ui/features?q=zebra"))
    assert "Nothing in the catalog matches “zebra”" in nothing


def test_the_catalog_answers_htmx_with_its_results_only(
    dashboard: Dashboard, seeded: dict[str, int]
) -> None:
    part = dashboard.http.get("/ui/features?q=churn", headers={"hx-request": "true"})
    assert part.status_code == 200
    assert "<html" not in part.text and "/ui/features/views/churn" in part.text


def test_the_catalog_pages_long_lists(dashboard: Dashboard) -> None:
    fs = dashboard.app.state.dashboard.features
    for i in range(12):
        fs.create_entity(f"thing{i:02d}", ["thing_id"])
    overview = dashboard.http.get("/ui/features").text
    assert "entities/thing09" in overview and "entities/thing10" not in overview
    assert "All 12 entities" in overview
    first = dashboard.http.get("/ui/features?kind=entities&page=1").text
    assert "entities/thing11" in first and 'rel="next"' not in first


def test_an_entity_lists_the_groups_using_it(dashboard: Dashboard, seeded: dict[str, int]) -> None:
    page = dashboard.http.get("/ui/features/entities/customer")
    assert page.status_code == 200
    assert "a buying customer" in text(page) and "customer_id" in text(page)
    assert "/ui/features/groups/customer_stats" in page.text


def test_a_group_shows_schema_commits_validation_and_use(
    dashboard: Dashboard, seeded: dict[str, int]
) -> None:
    page = dashboard.http.get("/ui/features/groups/customer_stats")
    assert page.status_code == 200
    body = text(page)
    for shown in ("orders in the last 30 days", "team=growth", "string", "30-day aggregates"):
        assert shown in body
    assert f"/commits/{seeded['third']}?version=1" in page.text
    assert "3 reports, 2 failed" in body and "Mode strict" in body and "allowed_values" in body
    assert "churn:v1" in body and f"/ui/features/datasets/{seeded['dataset']}" in page.text
    assert "<script>alert(1)</script>" not in page.text  # values are escaped


def test_a_commit_shows_its_statistics_and_report(
    dashboard: Dashboard, seeded: dict[str, int]
) -> None:
    third = seeded["third"]
    page = dashboard.http.get(f"/ui/features/groups/customer_stats/commits/{third}")
    assert page.status_code == 200
    body = text(page)
    assert "histogram of the feature's finite values" in body and "quantile plot" not in body
    assert f"/commits/{third}/histogram/avg_spend?version=1" in page.text
    assert "/quantiles/" not in page.text
    assert 'aria-label="Histogram of avg_spend: 20 bins from 101.5 to 115' in page.text
    assert "<script>alert(1)</script>" in body and "<script>alert(1)" not in page.text
    assert "allowed_values" in body and "failed" in body
    # ids 61..70: the 3 multiples of 3 are wholesale, the other 7 the script
    table = page.text.split("Most frequent values of <code>segment</code>")[1].split("</table>")[0]
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", table)]
    assert cells == ["<script>alert(1)</script>", "7", "70.0 %", "wholesale", "3", "30.0 %"]
    chart = dashboard.http.get(
        f"/ui/features/groups/customer_stats/commits/{third}/histogram/avg_spend?version=1",
        headers={"accept": "application/json"},
    ).json()
    (bars,) = chart["series"]
    width = (115.0 - 101.5) / 20
    assert bars["style"] == "bars" and len(bars["x"]) == 20
    assert bars["x"][0] == pytest.approx(101.5 + width / 2)
    assert bars["x"][-1] == pytest.approx(115.0 - width / 2)
    assert sum(bars["y"]) == 10 and bars["y"][0] == 1 and bars["y"][-1] == 1
    first = text(
        dashboard.http.get(f"/ui/features/groups/customer_stats/commits/{seeded['first']}")
    )
    assert "had no expectations when this commit was written" in first


def test_a_commit_written_before_histograms_keeps_its_quantile_plot(
    dashboard: Dashboard, seeded: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statistics stored without histograms or top values (as they were before them) load
    with both empty: the page draws the deciles and says why."""
    monkeypatch.setattr(statistics, "_shape", lambda stats, values: stats)
    fs = dashboard.app.state.dashboard.feature_store
    old = fs.get_feature_group("customer_stats").insert(rows(81, 10, 4)).commit_version
    page = dashboard.http.get(f"/ui/features/groups/customer_stats/commits/{old}")
    body = text(page)
    assert "written before histograms were recorded" in body and "quantile plot" in body
    assert "not recorded for this commit" in body and "Most frequent values" not in body
    assert f"/commits/{old}/quantiles/avg_spend?version=1" in page.text
    assert "/histogram/" not in page.text
    chart = dashboard.http.get(
        f"/ui/features/groups/customer_stats/commits/{old}/quantiles/avg_spend?version=1",
        headers={"accept": "application/json"},
    ).json()
    line, points = chart["series"]
    assert line["x"] == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert line["y"][0] == pytest.approx(10 + 81 * 1.5) and line["y"][-1] == pytest.approx(145.0)
    assert points["style"] == "points"


def test_the_validation_page_lists_every_report(
    dashboard: Dashboard, seeded: dict[str, int]
) -> None:
    page = dashboard.http.get("/ui/features/groups/customer_stats/validation")
    assert page.status_code == 200
    body = text(page)
    assert "Mode strict" in body and "Report 1: passed" in body and "Report 2: failed" in body
    assert "Report 3: failed" in body and "write refused, no commit" in body
    assert "7 of 10 rows have 'segment' not in ['retail', 'wholesale']" in body
    assert "0 of 20 rows are null in 'segment'" in body


def test_a_view_shows_its_definition_and_escaped_source(
    dashboard: Dashboard, seeded: dict[str, int]
) -> None:
    page = dashboard.http.get("/ui/features/views/churn")
    assert page.status_code == 200
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page.text and "<b>escaped</b>" not in page.text
    body = text(page)
    assert "mean basket value" in body and "amount_over_avg" in body and "churned" in body
    assert "Training datasets (1)" in body


def test_a_views_training_datasets_and_one_of_them(
    dashboard: Dashboard, seeded: dict[str, int]
) -> None:
    listed = dashboard.http.get("/ui/features/views/churn/datasets").text
    assert f"/ui/features/datasets/{seeded['dataset']}" in listed and "january churn" in listed
    page = dashboard.http.get(f"/ui/features/datasets/{seeded['dataset']}")
    assert page.status_code == 200
    body = text(page)
    assert "2026-01-04 00:00:00 … 2026-01-06 00:00:00" in body
    assert f"customer_stats:v1 commit {seeded['third']}" in body


BAD_INPUT = [
    ("/ui/features/entities/nobody", 404, "entity 'nobody' does not exist"),
    ("/ui/features/groups/nothing", 404, "feature group 'nothing' does not exist"),
    ("/ui/features/groups/customer_stats?version=9", 404, "'customer_stats' v9"),
    ("/ui/features/groups/customer_stats/commits/99", 404, "has no commit 99"),
    ("/ui/features/groups/customer_stats/commits/-1", 404, "has no commit -1"),
    ("/ui/features/groups/customer_stats/commits/x", 422, "commit"),
    ("/ui/features/groups/customer_stats/commits/0/quantiles/nope", 404, "'nope'"),
    ("/ui/features/groups/customer_stats/commits/0/histogram/nope", 404, "'nope'"),
    ("/ui/features/groups/customer_stats?page=0", 422, "page must be 1 or more"),
    ("/ui/features/groups/customer_stats/validation?version=x", 422, "version"),
    ("/ui/features/views/nothing", 404, "feature view 'nothing' does not exist"),
    ("/ui/features/views/churn?version=7", 404, "'churn' v7"),
    ("/ui/features/views/nothing/datasets", 404, "does not exist"),
    ("/ui/features/datasets/999", 404, "training dataset 999 does not exist"),
    ("/ui/features/datasets/abc", 422, "id"),
    ("/ui/features?kind=robots", 422, "kind must be one of"),
    ("/ui/features?page=-1", 422, "page must be 1 or more"),
]


def test_bad_input_is_a_page_with_the_error(dashboard: Dashboard, seeded: dict[str, int]) -> None:
    for path, status, message in BAD_INPUT:
        answer = dashboard.http.get(path)
        assert answer.status_code == status, (path, answer.status_code)
        assert "text/html" in answer.headers["content-type"], path
        assert message in text(answer), path


def test_the_main_pages_on_each_store(any_dashboard: Dashboard) -> None:
    seeded = seed(any_dashboard.app.state.dashboard.feature_store)
    for path in (
        "/ui/features?q=customer",
        "/ui/features/entities/customer",
        "/ui/features/groups/customer_stats",
        f"/ui/features/groups/customer_stats/commits/{seeded['second']}",
        "/ui/features/groups/customer_stats/validation",
        "/ui/features/views/churn",
        f"/ui/features/datasets/{seeded['dataset']}",
    ):
        answer = any_dashboard.http.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert "customer" in answer.text


def test_a_private_group_stays_hidden_from_users_without_a_grant(secured: Dashboard) -> None:
    found = secured.app.state.dashboard
    seed(found.feature_store)
    found.features.create_feature_group(
        "secret_stats", "customer", "event_time", [FeatureSpec("score", "float64")]
    )
    found.auth.revoke_grant(Kind.FEATURE_GROUP, "secret_stats", "everyone", "*")
    secured.user("bob", Role.VIEWER)
    secured.sign_in("bob")
    catalog = text(secured.http.get("/ui/features"))
    assert "customer_stats" in catalog and "secret_stats" not in catalog
    hidden = secured.http.get("/ui/features/groups/secret_stats")
    assert hidden.status_code == 404 and "does not exist" in text(hidden)
    entity = text(secured.http.get("/ui/features/entities/customer"))
    assert "secret_stats" not in entity
    assert secured.http.get("/ui/features/groups/customer_stats").status_code == 200


def test_a_dataset_shows_the_models_trained_on_it_and_their_runs(
    dashboard: Dashboard, seeded: dict[str, int]
) -> None:
    from tests.backends import local_client

    settings = dashboard.settings
    with local_client(settings.resolved_store_uri, settings.resolved_artifact_uri) as client:
        dataset = client.feature_store().get_training_dataset(seeded["dataset"])
        with client.start_run("churn") as run:
            run.log_input(dataset)
            run.log_model(Always(), registered_model="churn_model")
    page = text(dashboard.http.get(f"/ui/features/datasets/{seeded['dataset']}"))
    assert "churn_model v1" in page and run.id in page
    group = text(dashboard.http.get("/ui/features/groups/customer_stats"))
    assert "churn_model v1 DEVELOPMENT" in group
