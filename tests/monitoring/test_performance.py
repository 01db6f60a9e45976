"""Performance per window from predictions joined to labels: the task told from the labels,
regressors and classifiers measured, windows without labels left empty."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from plinth.errors import InvalidArgument
from plinth.monitoring.labels import LABEL, _label_array
from plinth.monitoring.performance import Task, infer_task, measure
from plinth.monitoring.windows import AT, PREDICTION, SCORE


def joined(
    labels: list[Any], predictions: list[Any], at: list[int], scores: Any = None
) -> pa.Table:
    columns = {
        PREDICTION: pa.array(predictions),
        AT: pa.array(at, pa.int64()),
        LABEL: _label_array(labels),  # as join_labels makes it
    }
    if scores is not None:
        columns[SCORE] = pa.array(scores, pa.float64())
    return pa.table(columns)


def test_the_task_is_told_from_the_labels() -> None:
    assert infer_task([0, 1, None, 1]) == Task("binary", 1)
    assert infer_task([True, False]) == Task("binary", 1)
    assert infer_task(["stay", "churn", "stay"]) == Task("binary", "stay", "churn")
    assert infer_task([1.5, 2.0, 7]) == Task("regression")
    assert infer_task(["a", "b", "c"]).kind == "unknown"
    assert infer_task([None]).kind == "unknown"
    assert infer_task([1.5], Task("binary", 1)) == Task("binary", 1)  # the training labels win


def test_a_regressor_is_measured_per_window() -> None:
    rng = np.random.default_rng(5)
    truth = rng.normal(100, 10, 200)
    table = joined(
        [*truth[:100].tolist(), *[None] * 100],
        (truth + rng.normal(0, 2, 200)).tolist(),
        [0] * 100 + [1_000] * 100,
    )
    perf = measure("m", 1, table, start=0, window_ms=1_000, windows=2, metric=None,
                   task_hint=None, validation={"val_rmse": 2.5}, capped=False)  # fmt: skip
    assert (perf.task, perf.scores, perf.metric) == ("regression", "value", "rmse")
    assert (perf.validation, perf.validation_key) == (2.5, "val_rmse")
    first, second = perf.windows
    assert set(first.metrics) == {"rmse", "mae"} and 1.5 < first.metrics["rmse"].value < 2.5
    assert (second.predictions, second.labelled, second.metrics) == (100, 0, {})
    assert perf.estimator == "only for binary classifiers" and first.estimated == {}


def test_class_labels_are_measured_without_ranking_metrics() -> None:
    table = joined(["yes", "no", "yes", "no"], ["yes", "no", "no", "no"], [0, 0, 0, 0])
    perf = measure("m", 1, table, start=0, window_ms=1_000, windows=1, metric=None,
                   task_hint=None, validation={}, capped=False)  # fmt: skip
    assert (perf.task, perf.scores, perf.metric) == ("binary", "label", "accuracy")
    assert set(perf.windows[0].metrics) == {"accuracy", "f1"}
    assert perf.windows[0].metrics["accuracy"].value == 0.75
    assert perf.estimator.startswith("the logged predictions are class labels, not probabilities")
    assert perf.validation is None


def test_a_window_of_one_class_leaves_auc_out() -> None:
    table = joined([1, 1, 1], [0.9, 0.8, 0.3], [0, 0, 0], scores=[0.9, 0.8, 0.3])
    perf = measure("m", 1, table, start=0, window_ms=1_000, windows=1, metric=None,
                   task_hint=None, validation={}, capped=False)  # fmt: skip
    assert "auc" not in perf.windows[0].metrics and "accuracy" in perf.windows[0].metrics


def test_a_metric_that_does_not_fit_the_task_is_refused() -> None:
    table = joined([1.5, 2.5, 9.0], [1.0, 2.0, 3.0], [0, 0, 0])
    with pytest.raises(InvalidArgument, match="auc is a classification metric"):
        measure("m", 1, table, start=0, window_ms=1_000, windows=1, metric="auc",
                task_hint=None, validation={}, capped=False)  # fmt: skip
    with pytest.raises(InvalidArgument, match="metric must be one of"):
        measure("m", 1, table, start=0, window_ms=1_000, windows=1, metric="r2",
                task_hint=None, validation={}, capped=False)  # fmt: skip


def test_labels_that_are_not_one_of_the_classes_are_left_out_saying_so() -> None:
    """Against probabilities of class 1 (a 0/1 task from the training labels), labels
    "yes" and 2 are not scored as negatives: they are left out and counted."""
    labels = [1, 0, 1, 0, "yes", "no", "yes", 2]
    scores = [0.9, 0.2, 0.8, 0.3, 0.1, 0.9, 0.2, 0.1]
    table = joined(labels, scores, [0] * 8, scores=scores)
    perf = measure("m", 1, table, start=0, window_ms=1_000, windows=1, metric=None,
                   task_hint=Task("binary", 1), validation={}, capped=False)  # fmt: skip
    [window] = perf.windows
    assert window.note == "4 labels are not one of the classes 0, 1: left out"
    assert window.metrics["accuracy"].value == 1.0 and window.metrics["accuracy"].n == 4


def test_class_predictions_of_other_classes_than_the_labels_are_not_scored() -> None:
    table = joined(["yes", "no", "yes", "no"], [1, 0, 0, 0], [0, 0, 0, 0])
    perf = measure("m", 1, table, start=0, window_ms=1_000, windows=1, metric=None,
                   task_hint=None, validation={}, capped=False)  # fmt: skip
    [window] = perf.windows
    assert window.metrics == {}
    assert window.note == "4 predictions are not one of the classes no, yes: left out"


def test_booleans_and_integers_are_the_same_classes() -> None:
    assert _label_array([True, 0, None, 1, False]).to_pylist() == [1, 0, None, 1, 0]
    assert _label_array(["yes", True, 1]).to_pylist() == ["yes", "1", "1"]
    assert _label_array(["yes", False]).to_pylist() == ["yes", "false"]
    table = joined([True, 0, True, 0], [0.9, 0.2, 0.4, 0.1], [0] * 4, scores=[0.9, 0.2, 0.4, 0.1])
    perf = measure("m", 1, table, start=0, window_ms=1_000, windows=1, metric=None,
                   task_hint=None, validation={}, capped=False)  # fmt: skip
    assert perf.task == "binary" and perf.windows[0].note == ""
    assert perf.windows[0].metrics["accuracy"].value == 0.75
