"""The demo's retraining pipeline, registered by its entrypoint
``plinth.demo.retrain:pipeline`` and run by the scheduler's worker when the drift monitor
raises an alert: fresh point-in-time training data from the feature view, validated,
a model trained, checked on the holdout, then champion/challenger on that same holdout.

The labels known so far and the holdout are files the demo leaves in its home
(``demo-data/``), as a labelling job would; the worker finds them through its client's
home, which the scheduler sets to the demo's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]

from plinth.demo.world import FEATURES
from plinth.pipelines import steps
from plinth.pipelines.context import StepContext
from plinth.pipelines.pipeline import Pipeline

NAME = "churn-retrain"
ENTRYPOINT = "plinth.demo.retrain:pipeline"
SPINE_FILE = "retrain-labels.parquet"
HOLDOUT_FILE = "holdout.parquet"


def data_folder(context: StepContext) -> Path:
    return Path(context.client.settings.home).resolve() / "demo-data"


def fresh_labels(context: StepContext) -> pd.DataFrame:
    return pd.read_parquet(data_folder(context) / SPINE_FILE)


def holdout(context: StepContext) -> pd.DataFrame:
    return pd.read_parquet(data_folder(context) / HOLDOUT_FILE)


def _expectations() -> list[Any]:
    from plinth.features.types import Expectation

    return [Expectation("not_null", column=c) for c in FEATURES]


def _model() -> Any:
    from sklearn.ensemble import GradientBoostingClassifier  # type: ignore[import-untyped]

    return GradientBoostingClassifier(n_estimators=80, max_depth=3, random_state=0)


pipeline = Pipeline(
    NAME,
    [
        steps.training_data("churn", fresh_labels),
        steps.validate_data(expectations=_expectations()),
        steps.train(_model()),
        steps.validate_model("auc", holdout=holdout, min_value=0.6, name="val"),
        steps.champion_challenger("churn", "auc", holdout=holdout),
    ],
    description="retrain churn on the labels known so far; promote only if better",
)
