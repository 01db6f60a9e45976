"""Metrics to compare models on the same holdout data (champion/challenger, gates)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from plinth.errors import InvalidArgument


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(y == p))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    # Mann-Whitney U on average ranks: ties count half.
    positives = y == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise InvalidArgument("auc needs both classes in the holdout labels")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=float)
    sorted_p = p[order]
    start = 0
    for end in range(1, len(p) + 1):
        if end == len(p) or sorted_p[end] != sorted_p[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _f1(y: np.ndarray, p: np.ndarray) -> float:
    tp = float(np.sum((p == 1) & (y == 1)))
    fp = float(np.sum((p == 1) & (y != 1)))
    fn = float(np.sum((p != 1) & (y == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - p) ** 2)))


def _mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(y - p)))


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - p) ** 2)) / total if total else 0.0


SCORERS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], float], str]] = {
    "accuracy": (_accuracy, "max"),
    "auc": (_auc, "max"),
    "roc_auc": (_auc, "max"),
    "f1": (_f1, "max"),
    "rmse": (_rmse, "min"),
    "mae": (_mae, "min"),
    "r2": (_r2, "max"),
}


def score(metric: str, predict: Callable[[Any], Any], holdout: tuple[Any, Any]) -> float:
    """``metric`` of a model's predictions on ``holdout = (X, y)``. For auc the model's
    positive-class probability is used when it has ``predict_proba``."""
    name = metric.split("/")[-1].lower().removeprefix("val_").removeprefix("test_")
    if name not in SCORERS:
        raise InvalidArgument(f"cannot score {metric!r} on holdout data; known: {sorted(SCORERS)}")
    scorer, _ = SCORERS[name]
    features, labels = holdout
    predictions = np.asarray(predict(features))
    if predictions.ndim == 2:
        predictions = (
            predictions[:, -1] if name in ("auc", "roc_auc") else predictions.argmax(axis=1)
        )
    return scorer(np.asarray(labels), predictions)
