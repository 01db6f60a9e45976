"""Real monitoring records for the monitoring pages, the report and the browser tests:
evaluations made by the services from real data, nothing written to the tables by hand.

- ``spend-drift``: a feature-drift monitor of the group ``customer_stats``; its first run
  compares two commits from the same distributions (ok), its second a commit whose
  ``avg_spend`` moved from N(50, 10) to N(80, 10) and whose segments moved from 50/50 to
  80/20 (breach, an open alert).
- ``churn-auc`` and ``churn-inputs``: a performance and an input-drift monitor of the model
  ``churn`` (trained on a training dataset): seven days of logged probabilities, labels
  (drawn from those probabilities, fixed seed) for the first five, older customers in the
  last two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from plinth.features.types import FeatureSpec
from plinth.monitoring.data import MonitoringData
from plinth.monitoring.labels import LabelIn
from plinth.monitoring.service import MonitorService
from plinth.monitoring.types import MonitorSpec
from plinth.serving.predlog import Entry, PredictionLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000
ROWS = 400


@dataclass(frozen=True)
class Seeded:
    monitors: MonitorService
    data: MonitoringData


def services(found: Any) -> Seeded:
    """The monitoring services over a dashboard's store and services."""
    return services_of(found.tracking.store, found.registry, found.features)


def services_of(store: Any, registry: Any, features: Any) -> Seeded:
    data = MonitoringData(store, registry, features)
    return Seeded(MonitorService(store, data), data)


def customers(first: int, mean: float, wholesale: float, seed: int, day: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.arange(first, first + ROWS)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "event_time": [T0 + timedelta(days=day)] * ROWS,
            "avg_spend": rng.normal(mean, 10.0, ROWS),
            "segment": np.where(rng.random(ROWS) < wholesale, "wholesale", "retail"),
        }
    )


def seed_drift(feature_store: Any, seeded: Seeded, name: str = "spend-drift") -> None:
    """``customer_stats`` with three commits and ``name`` run after the second (ok) and the
    third (drift: breach)."""
    feature_store.create_entity("customer", ["customer_id"])
    group = feature_store.create_feature_group(
        "customer_stats",
        "customer",
        "event_time",
        [FeatureSpec("avg_spend", "float64"), FeatureSpec("segment", "string")],
    )
    group.insert(customers(0, 50.0, 0.5, seed=1, day=0))
    group.insert(customers(ROWS, 50.0, 0.5, seed=2, day=1))
    seeded.monitors.create_monitor(
        name, "feature_drift", "customer_stats", spec=MonitorSpec(reference="previous")
    )
    first = seeded.monitors.run_monitor(name)
    assert first.status == "ok", first.summary
    group.insert(customers(2 * ROWS, 80.0, 0.8, seed=3, day=2))
    second = seeded.monitors.run_monitor(name)
    assert second.status == "breach", second.summary


def accounts(n: int, seed: int, age_shift: float = 0.0) -> pd.DataFrame:
    """Age ~ N(45, 10) (+ ``age_shift``), spend ~ N(2.5, 1); ``p``, the churn probability,
    rises with age."""
    rng = np.random.default_rng(seed)
    age = rng.normal(45.0 + age_shift, 10.0, n)
    return pd.DataFrame(
        {
            "account_id": np.arange(n),
            "age": age,
            "spend": rng.normal(2.5, 1.0, n),
            "p": 1 / (1 + np.exp(-(age - 45) / 8)),
        }
    )


def churn_model(client: Any) -> None:
    """``churn`` v1: a logistic regression trained on a training dataset of the view
    ``churn`` over the group ``account_stats`` (ROWS accounts), registered from a run that
    logged its validation AUC, 0.9."""
    from sklearn.linear_model import LogisticRegression

    fs = client.feature_store()
    fs.create_entity("account", ["account_id"])
    trained = accounts(ROWS, seed=11)
    churned = (np.random.default_rng(12).random(ROWS) < trained["p"]).astype("int64")
    rows = trained.drop(columns=["p"]).assign(event_time=T0)
    group = fs.create_feature_group(
        "account_stats",
        "account",
        "event_time",
        [FeatureSpec("age", "float64"), FeatureSpec("spend", "float64")],
    )
    group.insert(rows)
    view = fs.create_feature_view(
        "churn", ["account_stats:age", "account_stats:spend"], label="churned"
    )
    entities = pd.DataFrame(
        {
            "account_id": trained["account_id"],
            "event_timestamp": pd.to_datetime([T0 + timedelta(days=1)] * ROWS, utc=True),
            "churned": churned,
        }
    )
    dataset = view.create_training_dataset(entities)
    model = LogisticRegression().fit(trained[["age", "spend"]], churned)
    with client.start_run("churn") as run:
        run.log_metric("val_auc", 0.9)
        run.log_model(
            model,
            registered_model="churn",
            input_example=trained[["age", "spend"]].head(4),
            training_dataset=dataset,
        )


def seed_models(client: Any, seeded: Seeded, now_ms: int) -> None:
    """``churn`` v1 with seven days of logged probabilities up to ``now_ms`` (60 a day, in
    the middle of each day), labels for the first five days, ages 15 years older in the
    last two; ``churn-auc`` (performance, AUC, breach below 0.6), ``churn-inputs`` (input
    drift of the last day), ``churn-predictions`` (prediction drift) and
    ``churn-estimated`` (estimated AUC) run once."""
    churn_model(client)
    log = PredictionLog(client.tracking.store, flush_seconds=60)
    labels = []
    for day in range(7):
        frame = accounts(60, seed=100 + day, age_shift=15.0 if day >= 5 else 0.0)
        outcomes = np.random.default_rng(200 + day).random(60) < frame["p"]
        for i in range(60):
            at = now_ms - (7 - day) * DAY_MS + DAY_MS // 2 + 1000 * i  # mid-window
            request = f"d{day}-{i}"
            inputs = frame.iloc[[i]][["age", "spend"]].reset_index(drop=True)
            p = float(frame["p"].iloc[i])
            log.record(Entry("churn", 1, request, at, inputs, np.array([[1 - p, p]]), 1.0))
            if day < 5:
                labels.append(LabelIn(int(outcomes[i]), request_id=request))
    log.close()
    seeded.data.log_labels("churn", labels)
    monitors = seeded.monitors
    monitors.create_monitor(
        "churn-auc", "performance", "churn", spec=MonitorSpec(metric="auc", min_value=0.6)
    )
    monitors.run_monitor("churn-auc")
    monitors.create_monitor("churn-inputs", "input_drift", "churn")
    found = monitors.run_monitor("churn-inputs")
    assert found.status == "breach", found.summary
    monitors.create_monitor("churn-predictions", "prediction_drift", "churn")
    monitors.run_monitor("churn-predictions")
    estimated = MonitorSpec(metric="auc")
    monitors.create_monitor("churn-estimated", "estimated_performance", "churn", spec=estimated)
    monitors.run_monitor("churn-estimated")
