"""A model version trained from a feature view's training dataset (with a label and a
validation metric), and its prediction log written with controlled times and data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from plinth.client import Client
from plinth.registry.types import ModelVersion
from plinth.serving.predlog import Entry, PredictionLog
from plinth.store.engine import open_store
from tests.backends import empty_tables, local_client

if TYPE_CHECKING:
    from plinth.monitoring.data import MonitoringData

NOW = 1_780_000_000_000  # ms: 2026-05-28
HOUR = 3_600_000
DAY = 24 * HOUR
INPUTS = ["age", "spend", "plan"]
ROWS = 2_000  # training rows
VALIDATION_AUC = 0.85


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]


def local_client_on(request: pytest.FixtureRequest, tmp_path: Path) -> Client:
    """A local client on SQLite, or on PostgreSQL (emptied first): the ``client`` fixture
    of the model monitoring test modules (defined there, so the other modules here keep
    the suite's own ``client``, remote included)."""
    uri = f"sqlite:///{tmp_path / 'plinth.db'}"
    if request.param == "postgres":
        uri = request.getfixturevalue("postgres_uri")
        empty_tables(open_store(uri))
    made = local_client(uri, str(tmp_path / "artifacts"))
    made.settings.online_uri = f"sqlite:///{tmp_path / 'online.db'}"
    return made


@pytest.fixture
def data(client: Client) -> MonitoringData:
    from plinth.monitoring.data import MonitoringData

    return MonitoringData(client.tracking.store, client.registry, client.features)


def customers(n: int, seed: int, *, age_shift: float = 0.0, pro: float = 0.3) -> pd.DataFrame:
    """Age ~ N(40, 10) (+ ``age_shift``), spend ~ Exp(50), plan pro with probability
    ``pro``; ``p``, the churn probability, rises with age: sigmoid((age - 40) / 10)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40 + age_shift, 10, n)
    return pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "age": age,
            "spend": rng.exponential(50, n),
            "plan": np.where(rng.random(n) < pro, "pro", "basic"),
            "p": 1 / (1 + np.exp(-(age - 40) / 10)),
        }
    )


def outcomes(p: np.ndarray[Any, Any], seed: int) -> np.ndarray[Any, Any]:
    return (np.random.default_rng(seed).random(len(p)) < p).astype("int64")


def churn_model(client: Client, *, linked: bool = True, labelled: bool = True) -> ModelVersion:
    """The feature group ``customer_stats`` (ROWS customers), the view ``churn`` over it,
    a training dataset (labelled ``churned`` unless not ``labelled``) and a model trained
    on it, registered from a run that logged ``val_auc``."""
    fs = client.feature_store()
    fs.create_entity("customer", join_keys=["customer_id"])
    df = customers(ROWS, seed=1).drop(columns=["p"])
    df["event_time"] = datetime(2026, 1, 1, tzinfo=UTC)
    group = fs.create_feature_group(
        "customer_stats", entity="customer", event_time="event_time", schema=df.dtypes
    )
    group.insert(df)  # type: ignore[attr-defined]
    view = fs.create_feature_view(
        "churn", [f"customer_stats:{c}" for c in INPUTS], label="churned" if labelled else None
    )
    entities = pd.DataFrame(
        {
            "customer_id": df.customer_id,
            "event_timestamp": pd.to_datetime([datetime(2026, 1, 2, tzinfo=UTC)] * ROWS),
        }
    )
    if labelled:
        entities["churned"] = outcomes(customers(ROWS, seed=1)["p"].to_numpy(), seed=2)
    dataset = view.create_training_dataset(entities)
    model = DummyClassifier(strategy="prior").fit(df[INPUTS], np.arange(ROWS) % 2)
    with client.start_run("churn", capture_environment=False) as run:
        run.log_metric("val_auc", VALIDATION_AUC)
        found = run.log_model(
            model,
            registered_model="churn",
            input_example=df[INPUTS].head(5),
            training_dataset=dataset if linked else None,
        )
    assert found is not None
    return found


@dataclass(frozen=True)
class Logged:
    request_ids: list[str]
    frame: pd.DataFrame  # what was logged, with ``p`` and ``request_id``


def log_predictions(
    client: Client,
    start: int,
    end: int,
    n: int,
    *,
    seed: int,
    requests: int = 20,
    version: int = 1,
    prefix: str = "",
    **shift: Any,
) -> Logged:
    """``n`` predictions of customers (their churn probability ``p`` as the output) in
    ``requests`` requests spread evenly over [start, end)."""
    frame = customers(n, seed, **shift)
    writer = PredictionLog(client.tracking.store, flush_seconds=60)
    ids: list[str] = []
    parts = np.array_split(np.arange(n), requests)
    for i, rows in enumerate(parts):
        request_id = f"{prefix}{seed}-{i}"
        at = start + (end - start) * i // requests
        inputs = frame.iloc[rows][["customer_id", *INPUTS]].reset_index(drop=True)
        writer.record(
            Entry("churn", version, request_id, at, inputs, frame["p"].to_numpy()[rows], 1.0)
        )
        ids.extend([request_id] * len(rows))
    writer.close()
    return Logged(
        ids, frame.assign(request_id=ids, row=np.concatenate([np.arange(len(r)) for r in parts]))
    )
