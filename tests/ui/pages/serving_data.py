"""Real serving records for the serving pages: score jobs run by ``plinth.serving.batch``
(one delivered, one blocked by a failed check) and requests logged by a model service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plinth.client import Client
from plinth.serving.app import ServeConfig, create_service
from plinth.serving.batch import score
from plinth.serving.checks import ChecksFailed
from plinth.serving.predlog import Entry, PredictionLog
from tests.backends import local_client
from tests.serving.conftest import EXAMPLE, constant, logistic


class HalfNaN:
    """A pyfunc model whose predictions for a spend above 2 are NaN: the check of
    prediction values fails on them."""

    def predict(self, frame: pd.DataFrame) -> Any:
        return np.where(frame["spend"] > 2, np.nan, 1.0)


@dataclass(frozen=True)
class Seeded:
    client: Client
    delivered: str  # job keys
    blocked: str | None


def seeded_client(home: Path, store_uri: str | None = None) -> Client:
    from plinth.config import load_settings

    settings = load_settings(home=home, **({"store_uri": store_uri} if store_uri else {}))
    return local_client(settings.resolved_store_uri, settings.resolved_artifact_uri)


def seed(client: Client, folder: Path, model: str = "churn", odd: bool = True) -> Seeded:
    """``model`` v1 (logistic) and v2 (always 1) with a delivered job and four logged
    requests (three by a model service of v1, one of v2); with ``odd``, the model ``odd``
    v1 with a blocked job."""
    folder.mkdir(parents=True, exist_ok=True)
    client.register_model(logistic(), model, input_example=EXAMPLE)
    client.register_model(constant(1), model, input_example=EXAMPLE)
    source = str(folder / "customers.parquet")
    EXAMPLE.to_parquet(source)
    done = score(client, f"models:/{model}/1", source, str(folder / f"{model}-scores"))
    log_requests(client, model)
    return Seeded(client, done.job_key, blocked_job(client, source, folder) if odd else None)


def blocked_job(client: Client, source: str, folder: Path) -> str:
    client.register_model(HalfNaN(), "odd", input_example=EXAMPLE)
    try:
        score(client, "models:/odd/1", source, str(folder / "odd-scores"), trust_pickle=True)
    except ChecksFailed as refused:
        return refused.job_key
    raise AssertionError("the NaN predictions were delivered")


def log_requests(client: Client, model: str) -> None:
    from fastapi.testclient import TestClient

    app = create_service(ServeConfig(f"models:/{model}/1", poll_seconds=0), client)
    with TestClient(app) as http:  # leaving it flushes the prediction log
        for i, body in enumerate(
            [[{"age": 41, "spend": 2.5}, {"age": 20, "spend": 1.0}], {"age": 50, "spend": 4.0}]
        ):
            answer = http.post("/predict", json=body, headers={"x-request-id": f"req-{i}"})
            assert answer.status_code == 200, answer.text
        assert http.post("/predict", json={"age": 30, "spend": 2.0}).status_code == 200
    log = PredictionLog(client.tracking.store)
    frame = pd.DataFrame({"age": [33], "spend": [9.5]})
    log.record(Entry(model, 2, "req-v2", _now_ms(), frame, np.array([1]), 0.5))
    log.close()


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
