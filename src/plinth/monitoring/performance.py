"""A model version's performance per window of its prediction log: measured where labels
have arrived (``plinth.stats.performance`` metrics with intervals), estimated for binary
classifiers whose logged outputs are probabilities (CBPE), and the version's validation
metric to compare with.

The estimator's reference: CBPE needs scores with known outcomes from the version itself.
Plinth fits it on the version's OLDEST labelled predictions among those read (up to
50,000; at least 100 with both classes): the production data the labels first came back
for. Scoring the training dataset instead would mean loading the model package in the
monitoring process (trusting its pickles) and would be in-sample for the model; the first
labelled window is what NannyML's documentation calls the reference period. Without such
labelled predictions the estimate is skipped, saying why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plinth.errors import InvalidArgument
from plinth.monitoring.labels import LABEL
from plinth.monitoring.windows import AT, PREDICTION, SCORE
from plinth.stats.performance import CBPE, Metric, classification_metrics, regression_metrics

CLASSIFICATION = ("auc", "accuracy", "f1", "log_loss")
REGRESSION = ("rmse", "mae")
METRICS = CLASSIFICATION + REGRESSION
LOWER_IS_BETTER = {"log_loss", "rmse", "mae"}
ESTIMABLE = ("auc", "accuracy", "f1")
_TEXT_CLASSES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}
REFERENCE_ROWS = 50_000
MIN_REFERENCE = 100
MIN_LABELLED = 2  # fewer labelled predictions in a window: no measured metrics
_VALIDATION_PREFIXES = ("", "val_", "validation_", "valid_", "test_", "eval_", "holdout_")
_JSON = {"ser_json_inf_nan": "strings"}


@dataclass(frozen=True)
class WindowPerformance:
    """One window [start, end) (ms) of predictions: how many, how many labelled, the
    measured metrics (none without labels) and the estimated ones (``estimated=True``)."""

    __pydantic_config__ = _JSON

    start: int
    end: int
    predictions: int
    labelled: int
    metrics: dict[str, Metric] = field(default_factory=dict)
    estimated: dict[str, Metric] = field(default_factory=dict)
    note: str = ""  # e.g. labelled predictions left out: their label is not one of the classes


@dataclass(frozen=True)
class Performance:
    """Performance per window, oldest first. ``task``: binary | regression | unknown;
    ``scores``: probability (the outputs carry the positive class's probability) | label |
    value. ``validation``: the version's own figure for ``metric`` (``validation_key`` says
    which of its metrics), None when it logged none. ``skipped`` says what could not be done
    and why (no labels, no estimator reference...)."""

    __pydantic_config__ = _JSON

    model_name: str
    version: int
    task: str
    scores: str
    metric: str
    window_seconds: int
    windows: list[WindowPerformance]
    validation: float | None = None
    validation_key: str | None = None
    estimator: str = ""
    skipped: list[str] = field(default_factory=list)
    rows_read: int = 0
    capped: bool = False

    @property
    def latest_measured(self) -> WindowPerformance | None:
        return next((w for w in reversed(self.windows) if self.metric in w.metrics), None)

    @property
    def latest_estimated(self) -> WindowPerformance | None:
        return next((w for w in reversed(self.windows) if self.metric in w.estimated), None)


@dataclass(frozen=True)
class Task:
    """binary | regression | unknown. A binary task's classes: 0/1 (``positive`` 1, and
    false/true as the same), or two strings (``positive`` the later, ``negative`` the
    other)."""

    kind: str
    positive: Any = None  # the binary positive class (1, True or the later of two strings)
    negative: Any = None  # the other class, when the classes are strings

    def classes(self) -> str:
        if isinstance(self.positive, str):
            return f"{self.negative}, {self.positive}"
        return "0, 1"

    def of(self, value: Any) -> float:
        """1.0 for the positive class, 0.0 for the other, NaN for anything else (null, or
        a value that is not one of the classes: never scored as the negative one)."""
        if value is None:
            return math.nan
        if isinstance(self.positive, str):
            if isinstance(value, str) and value in (self.positive, self.negative):
                return float(value == self.positive)
            return math.nan
        if isinstance(value, str):  # labels of mixed kinds are read as text
            value = _TEXT_CLASSES.get(value.strip().lower(), math.nan)
        if isinstance(value, bool | int | float) and value in (0, 1):
            return float(value)
        return math.nan


def infer_task(labels: list[Any], hint: Task | None = None) -> Task:
    """Binary when the labels are two classes (0/1, booleans or two strings), regression when
    they are other numbers; ``hint`` (from the training labels) wins when given."""
    if hint is not None and hint.kind != "unknown":
        return hint
    values = {v for v in labels if v is not None}
    if not values:
        return Task("unknown")
    if values <= {0, 1}:
        return Task("binary", 1)
    if all(isinstance(v, str) for v in values):
        if len(values) != 2:
            return Task("unknown")
        negative, positive = sorted(values)
        return Task("binary", positive, negative)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return Task("regression")
    return Task("unknown")


def measure(
    model: str,
    version: int,
    joined: pa.Table,
    *,
    start: int,
    window_ms: int,
    windows: int,
    metric: str | None,
    task_hint: Task | None,
    validation: dict[str, float],
    capped: bool,
) -> Performance:
    """``joined``: the predictions read (with ``__at``, ``__label``, maybe ``__score``)."""
    labels = joined[LABEL].to_pylist() if joined.num_rows else []
    task = infer_task(labels, task_hint)
    has_scores = SCORE in joined.column_names and joined[SCORE].null_count < joined.num_rows
    scores = "probability" if has_scores else ("value" if task.kind == "regression" else "label")
    chosen = _metric(metric, task, scores)
    skipped: list[str] = []
    if not any(v is not None for v in labels):
        skipped.append(f"no labels joined to the predictions of {model} v{version} read")
    estimator, why = _estimator(joined, task, has_scores)
    if estimator is None:
        skipped.append(f"estimated performance: {why}")
    at = joined[AT].to_numpy() if joined.num_rows else np.empty(0, np.int64)
    found = [
        _window(joined, at, start + i * window_ms, window_ms, task, scores, estimator)
        for i in range(windows)
    ]
    value, key = _validation(validation, chosen)
    return Performance(
        model, version, task.kind, scores, chosen, window_ms // 1000, found, value, key,
        why, skipped, joined.num_rows, capped,
    )  # fmt: skip


def _metric(metric: str | None, task: Task, scores: str) -> str:
    if metric is None:
        if task.kind == "regression":
            return "rmse"
        return "auc" if scores == "probability" else "accuracy"
    if metric not in METRICS:
        raise InvalidArgument(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if task.kind == "regression" and metric not in REGRESSION:
        raise InvalidArgument(f"{metric} is a classification metric; this model is a regressor")
    if task.kind == "binary" and metric not in CLASSIFICATION:
        raise InvalidArgument(f"{metric} is a regression metric; this model is a classifier")
    return metric


def _window(
    joined: pa.Table,
    at: np.ndarray[Any, Any],
    start: int,
    window_ms: int,
    task: Task,
    scores: str,
    estimator: CBPE | None,
) -> WindowPerformance:
    inside = (at >= start) & (at < start + window_ms)
    rows = joined.filter(pa.array(inside)) if joined.num_rows else joined
    labelled = rows.filter(pc.is_valid(rows[LABEL])) if rows.num_rows else rows
    note = ""
    if task.kind == "binary" and labelled.num_rows:
        labelled, note = _of_the_classes(labelled, task, scores)
    measured = _measured(labelled, task, scores) if labelled.num_rows >= MIN_LABELLED else {}
    estimated: dict[str, Metric] = {}
    if estimator is not None and rows.num_rows:
        window_scores = _finite(rows[SCORE])
        if len(window_scores):
            estimated = estimator.estimate(window_scores, metrics=ESTIMABLE)
    return WindowPerformance(
        start, start + window_ms, rows.num_rows, labelled.num_rows, measured, estimated, note
    )


def _of_the_classes(labelled: pa.Table, task: Task, scores: str) -> tuple[pa.Table, str]:
    """The labelled rows whose label (and, for class predictions, prediction) is one of the
    task's classes, and a note counting those left out."""
    keep = np.isfinite(_binary(labelled[LABEL].to_pylist(), task))
    notes = []
    if (~keep).any():
        notes.append(f"{int((~keep).sum())} labels are not one of the classes {task.classes()}")
    if scores != "probability":
        predicted = np.isfinite(_binary(labelled[PREDICTION].to_pylist(), task))
        off = keep & ~predicted
        if off.any():
            notes.append(
                f"{int(off.sum())} predictions are not one of the classes {task.classes()}"
            )
        keep &= predicted
    if keep.all():
        return labelled, ""
    return labelled.filter(pa.array(keep)), "; ".join(notes) + ": left out"


def _measured(labelled: pa.Table, task: Task, scores: str) -> dict[str, Metric]:
    if task.kind == "regression":
        y_true = _floats(labelled[LABEL].to_pylist())
        y_pred = _floats(labelled[PREDICTION].to_pylist())
        keep = np.isfinite(y_true) & np.isfinite(y_pred)
        if keep.sum() < MIN_LABELLED:
            return {}
        return regression_metrics(y_true[keep], y_pred[keep])
    if task.kind != "binary":
        return {}
    y_true = _binary(labelled[LABEL].to_pylist(), task)
    if scores == "probability":
        y_score = _floats(labelled[SCORE].to_pylist())
        wanted: tuple[str, ...] = CLASSIFICATION
    else:
        y_score = _binary(labelled[PREDICTION].to_pylist(), task)
        wanted = ("accuracy", "f1")  # hard labels: no ranking, no probabilities
    keep = np.isfinite(y_true) & np.isfinite(y_score)
    if keep.sum() < MIN_LABELLED:
        return {}
    if len(np.unique(y_true[keep])) < 2:  # one class only: AUC is undefined, the rest is not
        wanted = tuple(m for m in wanted if m != "auc")
    return classification_metrics(y_true[keep], y_score[keep], metrics=wanted)


def _estimator(joined: pa.Table, task: Task, has_scores: bool) -> tuple[CBPE | None, str]:
    if task.kind != "binary":
        return None, "only for binary classifiers"
    if not has_scores:
        return None, (
            "the logged predictions are class labels, not probabilities (log the positive "
            "class's probability to have performance estimated before labels arrive)"
        )
    labelled = joined.filter(pc.and_(pc.is_valid(joined[LABEL]), pc.is_valid(joined[SCORE])))
    if labelled.num_rows:
        labelled = labelled.sort_by(AT).slice(0, REFERENCE_ROWS)
    y = _binary(labelled[LABEL].to_pylist(), task)
    s = _floats(labelled[SCORE].to_pylist())
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep], s[keep]
    if len(y) < MIN_REFERENCE or len(np.unique(y)) < 2:
        return None, (
            f"no reference to fit it on: {len(y)} labelled prediction(s) with a score "
            f"(at least {MIN_REFERENCE}, of both classes, are needed)"
        )
    return CBPE.fit(s, y), f"CBPE fitted on the {len(y):,} oldest labelled predictions read"


def _validation(metrics: dict[str, float], metric: str) -> tuple[float | None, str | None]:
    for prefix in _VALIDATION_PREFIXES:
        for key in (f"{prefix}{metric}", f"{metric}_{prefix.rstrip('_')}" if prefix else ""):
            value = metrics.get(key) if key else None
            if isinstance(value, int | float) and math.isfinite(value):
                return float(value), key
    return None, None


def _finite(values: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, Any]:
    array = _floats(values.to_pylist())
    return np.asarray(array[np.isfinite(array)], dtype=float)


def _floats(values: list[Any]) -> np.ndarray[Any, Any]:
    return np.array([_float(v) for v in values], dtype=float)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _binary(values: list[Any], task: Task) -> np.ndarray[Any, Any]:
    """1.0 for the positive class, 0.0 for the other, NaN for nulls and other values."""
    return np.array([task.of(v) for v in values], dtype=float)
