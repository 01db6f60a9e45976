from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def churn_data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 300).astype("int64"),
            "spend": rng.normal(100, 30, 300),
            "visits": rng.normal(5, 2, 300),
        }
    )
    labels = ((frame.spend / 30 - frame.visits / 2 + rng.normal(0, 0.5, 300)) > 1.0).astype(int)
    return frame, labels


@pytest.fixture(scope="session")
def churn_model(churn_data: tuple[pd.DataFrame, pd.Series]) -> object:
    from sklearn.linear_model import LogisticRegression

    frame, labels = churn_data
    return LogisticRegression(max_iter=500).fit(frame, labels)


@pytest.fixture(scope="session")
def weak_model(churn_data: tuple[pd.DataFrame, pd.Series]) -> object:
    from sklearn.dummy import DummyClassifier

    frame, labels = churn_data
    return DummyClassifier(strategy="prior").fit(frame, labels)
