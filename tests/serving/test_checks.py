"""The checks on scores before delivery, fed chunk by chunk as a job feeds them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from plinth.errors import InvalidArgument
from plinth.serving.checks import (
    CheckResult,
    ScoreChecks,
    Thresholds,
    TrainingProfile,
    blocked_message,
)


def profile(labels: list[object] | np.ndarray) -> TrainingProfile:
    return TrainingProfile(
        "training dataset 1 (churn:v1)",
        np.asarray(labels),
        {"age": (20.0, 60.0)},
        {"plan": {"basic", "pro"}},
    )


def frame(n: int, age: float = 30.0, plan: str = "basic") -> pd.DataFrame:
    return pd.DataFrame({"age": [age] * n, "plan": [plan] * n})


def by_name(checks: ScoreChecks) -> dict[str, CheckResult]:
    return {r.name: r for r in checks.results()}


def test_class_shares_are_compared_with_the_training_labels() -> None:
    checks = ScoreChecks(profile([0] * 70 + [1] * 30), Thresholds(), classifier=True)
    checks.update(frame(50), pa.array([0] * 40 + [1] * 10), [])  # two chunks
    checks.update(frame(50), pa.array([0] * 30 + [1] * 20), [])
    result = checks.results()[0]
    assert (result.name, result.passed, result.skipped) == ("prediction_distribution", True, False)
    assert result.observed == {
        "predicted": {"0": 0.7, "1": 0.3},
        "training": {"0": 0.7, "1": 0.3},
        "max_shift": 0.0,
    }

    shifted = ScoreChecks(profile([0.0] * 70 + [1.0] * 30), Thresholds(), classifier=True)
    shifted.update(frame(40), pa.array([1] * 30 + [2] * 10), [])  # 1.0 and 1 are one class
    result = shifted.results()[0]
    assert not result.passed
    assert result.detail == (
        "class '0' is 0.0% of predictions, 70.0% of training labels: shift 0.700 > 0.2"
    )
    assert result.observed["predicted"] == {"1": 0.75, "2": 0.25}


def test_string_predictions_are_classes() -> None:
    checks = ScoreChecks(profile(["no"] * 50 + ["yes"] * 50), Thresholds(), classifier=False)
    checks.update(frame(40), pa.array(["no", "yes"] * 20), [])
    assert checks.classifier and checks.results()[0].passed


def test_regressors_are_compared_by_psi() -> None:
    rng = np.random.default_rng(3)
    labels = rng.normal(100, 10, 2000)
    same = ScoreChecks(profile(labels), Thresholds(), classifier=False)
    same.update(frame(1000), pa.array(rng.normal(100, 10, 1000)), [])
    result = same.results()[0]
    assert result.passed and result.observed["psi"] < 0.05

    moved = ScoreChecks(profile(labels), Thresholds(), classifier=False)
    moved.update(frame(1000), pa.array(rng.normal(120, 10, 1000)), [])
    result = moved.results()[0]
    assert not result.passed and result.observed["psi"] > 1
    assert result.detail.startswith("PSI of predictions vs training labels")
    assert result.detail.endswith("> 0.25")


def test_the_distribution_check_says_why_it_was_skipped() -> None:
    def skipped(checks: ScoreChecks) -> str:
        result = checks.results()[0]
        assert result.skipped and result.passed
        return result.detail

    bare = ScoreChecks(None, Thresholds(), classifier=True)
    bare.update(frame(50), pa.array([1] * 50), [])
    assert skipped(bare) == "skipped: no training data is linked to the model version"
    unlabelled = ScoreChecks(profile([]), Thresholds(), classifier=True)
    unlabelled.update(frame(50), pa.array([1] * 50), [])
    assert skipped(unlabelled) == "skipped: training dataset 1 (churn:v1) has no labels"
    few = ScoreChecks(profile([0, 1]), Thresholds(), classifier=True)
    few.update(frame(5), pa.array([1] * 5), [])
    assert skipped(few) == "skipped: too few rows (5 < 30) to compare"
    words = ScoreChecks(profile(["a", "b"]), Thresholds(), classifier=False)
    words.update(frame(40), pa.array([0.5] * 40), [])
    assert skipped(words) == "skipped: the labels of training dataset 1 (churn:v1) are not numbers"


def test_null_nan_and_infinite_predictions_fail() -> None:
    checks = ScoreChecks(None, Thresholds(), classifier=False)
    checks.update(
        frame(4), pa.array([1.0, None, np.nan, np.inf]), [pa.array([0.1, 0.2, 0.3, np.nan])]
    )
    result = by_name(checks)["prediction_values"]
    assert not result.passed
    assert result.observed == {"null": 1, "nan": 2, "inf": 1, "rows": 4}
    tolerant = ScoreChecks(None, Thresholds(max_bad_share=1.0), classifier=False)
    tolerant.update(frame(2), pa.array([np.nan, 1.0]), [])
    assert by_name(tolerant)["prediction_values"].passed


def test_inputs_out_of_the_training_range() -> None:
    checks = ScoreChecks(profile([0, 1]), Thresholds(), classifier=True)
    checks.update(frame(98, age=40.0), pa.array([0] * 98), [])
    checks.update(frame(2, age=64.0), pa.array([0] * 2), [])  # within 10% of the width
    assert by_name(checks)["input_ranges"].passed
    checks.update(frame(2, age=65.0), pa.array([0] * 2), [])
    result = by_name(checks)["input_ranges"]
    assert not result.passed
    assert result.detail == "out of the training range: age (2 value(s) outside [20, 60])"
    assert result.observed["age"] == {
        "train_min": 20.0,
        "train_max": 60.0,
        "min": 40.0,
        "max": 65.0,
        "outside": 2,
        "values": 102,
    }
    lenient = Thresholds(max_out_of_range_share=0.05)
    relaxed = ScoreChecks(profile([0, 1]), lenient, classifier=True)
    relaxed.update(frame(98), pa.array([0] * 98), [])
    relaxed.update(frame(2, age=1000.0), pa.array([0] * 2), [])
    assert by_name(relaxed)["input_ranges"].passed


def test_unseen_categories() -> None:
    checks = ScoreChecks(profile([0, 1]), Thresholds(), classifier=True)
    checks.update(frame(50), pa.array([0] * 50), [])
    checks.update(frame(3, plan="gold"), pa.array([0] * 3), [])
    result = by_name(checks)["unseen_categories"]
    assert not result.passed
    assert result.observed == {"plan": {"unseen": 3, "values": 53, "examples": ["gold"]}}
    message = blocked_message("scores of model churn v1 for in.parquet", checks.results()[3:])
    assert message == (
        "scores of model churn v1 for in.parquet not delivered: check(s) failed: "
        "unseen_categories: values never seen in training: plan (3 value(s), e.g. ['gold']) "
        "(--allow-failed-checks, or allow_failed_checks=True, delivers them anyway)"
    )


def test_thresholds_from_the_command_line() -> None:
    parsed = Thresholds.parse(["max_psi=0.3", "min-rows=10"])
    assert (parsed.max_psi, parsed.min_rows, parsed.max_class_shift) == (0.3, 10, 0.2)
    with pytest.raises(InvalidArgument, match=r"threshold 'psi=1' is not NAME=VALUE"):
        Thresholds.parse(["psi=1"])
    with pytest.raises(InvalidArgument, match="threshold max_psi must be a number, not 'high'"):
        Thresholds.parse(["max_psi=high"])
