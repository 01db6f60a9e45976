"""A model trained from a feature view is served from entity keys and request values: the
service reads the online store and applies the view's transformations, as training did."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from plinth.client import Client
from plinth.features.online.redis import RedisOnlineStore
from plinth.features.store import FeatureStore
from tests.features.conftest import define, transactions
from tests.features.test_views import amount_over_avg, churn_view, entity_rows
from tests.serving.conftest import service

COLUMNS = ["orders_30d", "avg_spend", "amount_over_avg"]


@pytest.fixture
def trained(client: Client) -> tuple[Client, pd.DataFrame]:
    fs = client.feature_store()
    define(fs, ttl=None).insert(transactions())  # type: ignore[arg-type, attr-defined]
    view = churn_view(fs, transformations=[amount_over_avg])  # keep the model's inputs small
    dataset = view.create_training_dataset(entity_rows())
    rows = dataset.to_pandas().dropna()
    model = LogisticRegression().fit(rows[COLUMNS], rows.churned)
    version = client.register_model(
        model, "churn", input_example=rows[COLUMNS], training_dataset=dataset
    )
    client.set_alias("churn", "live", version.version)
    fs.materialize("customer_stats")
    return client, rows


def test_keys_and_request_values_are_enough(trained: tuple[Client, pd.DataFrame]) -> None:
    client, _ = trained
    model = client.load_model("models:/churn@live")
    with service(client, "models:/churn@live", poll_seconds=0) as http:
        answer = http.post("/predict", json=[{"customer_id": 1, "amount": 25.0}])
        assert answer.status_code == 200, answer.text
        # customer 1's latest values (day 10): 5 orders, 25.0 average spend
        expected = model.predict(
            pd.DataFrame({"orders_30d": [5], "avg_spend": [25.0], "amount_over_avg": [1.0]})
        )
        assert answer.json()["predictions"] == expected.tolist()
        full = http.post(
            "/predict", json=[{"orders_30d": 5, "avg_spend": 25.0, "amount_over_avg": 1.0}]
        )
        assert full.json()["predictions"] == expected.tolist()  # complete rows need no lookup
        missing = http.post("/predict", json=[{"amount": 25.0}])
        assert (
            missing.status_code == 422 and "entity key 'customer_id'" in missing.json()["message"]
        )
        unknown = http.post(
            "/predict", json=[{"customer_id": 1, "amount": 1.0}, {"customer_id": 7, "amount": 1.0}]
        )
        assert unknown.status_code == 422
        assert (
            "row 1 (customer_id=7): feature 'orders_30d' is NOT_FOUND" in unknown.json()["message"]
        )
        no_amount = http.post("/predict", json=[{"customer_id": 1}])
        assert (
            no_amount.status_code == 422
            and "request values ['amount']" in no_amount.json()["message"]
        )


def test_an_unreachable_online_store_is_a_503(trained: tuple[Client, pd.DataFrame]) -> None:
    client, _ = trained
    fs = client.feature_store()
    down = FeatureStore(fs.service, fs.offline, RedisOnlineStore("redis://127.0.0.1:1/0"))
    client._feature_store = down  # type: ignore[attr-defined]
    with service(client, "models:/churn@live", poll_seconds=0) as http:
        answer = http.post("/predict", json=[{"customer_id": 1, "amount": 25.0}])
    assert answer.status_code == 503
    assert (
        answer.json()["error_code"] == "UNAVAILABLE" and "redis" in answer.json()["message"].lower()
    )
    assert "127.0.0.1:1" not in answer.text  # the store's address stays in the service log


def test_an_entity_outside_the_ttl_is_refused(client: Client) -> None:
    """With a TTL, an entity whose latest online value is older than it is not scored."""
    from datetime import UTC, datetime, timedelta

    fs = client.feature_store()
    fresh = pd.DataFrame(  # customer 2 again, an hour ago; customer 1's last row is on day 10
        {
            "customer_id": [2],
            "event_time": [datetime.now(UTC) - timedelta(hours=1)],
            "orders_30d": [4],
            "avg_spend": [30.0],
        }
    )
    define(fs, ttl="30d").insert(pd.concat([transactions(), fresh], ignore_index=True))  # type: ignore[attr-defined]
    view = churn_view(fs, transformations=[amount_over_avg])
    dataset = view.create_training_dataset(entity_rows())
    rows = dataset.to_pandas().dropna()
    model = LogisticRegression().fit(rows[COLUMNS], rows.churned)
    client.register_model(model, "churn", input_example=rows[COLUMNS], training_dataset=dataset)
    fs.materialize("customer_stats")
    expected = model.predict(
        pd.DataFrame({"orders_30d": [4], "avg_spend": [30.0], "amount_over_avg": [1.0]})
    )
    with service(client, "models:/churn/1", poll_seconds=0) as http:
        inside = http.post("/predict", json=[{"customer_id": 2, "amount": 30.0}])
        assert inside.status_code == 200, inside.text
        assert inside.json()["predictions"] == expected.tolist()
        outside = http.post(
            "/predict", json=[{"customer_id": 2, "amount": 1.0}, {"customer_id": 1, "amount": 1.0}]
        )
    assert outside.status_code == 422
    assert "row 1 (customer_id=1): feature 'orders_30d' is OUTSIDE_TTL" in outside.json()["message"]
