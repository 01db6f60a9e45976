"""plinth.stats.performance: metric values against scikit-learn, interval coverage in seeded
simulations, CBPE against realised metrics (also under covariate shift), bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import metrics as skm
from sklearn.isotonic import IsotonicRegression

from plinth.errors import InvalidArgument
from plinth.stats.performance import CBPE, Metric, classification_metrics, regression_metrics

REPS = 200
NOMINAL = 0.95
# A coverage rate from REPS replications is within 4 standard errors of the nominal rate.
SLACK = 4 * math.sqrt(NOMINAL * (1 - NOMINAL) / REPS)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _model(rng: np.random.Generator, n: int, *, scale: float = 1.0, sharpen: float = 1.0):
    """A feature x ~ N(0, scale), true probability p = sigmoid(2x - 0.4), labels drawn from
    p, and the model's score sigmoid(sharpen * logit(p)): calibrated when sharpen is 1."""
    x = rng.normal(scale=scale, size=n)
    logit = 2 * x - 0.4
    y = (rng.random(n) < _sigmoid(logit)).astype(np.int64)
    return y, _sigmoid(sharpen * logit)


# --------------------------------------------------------------------------- values


def test_classification_values_equal_sklearn() -> None:
    rng = np.random.default_rng(1)
    y, s = _model(rng, 5_000, sharpen=1.7)
    s = np.round(s, 2)  # ties, so AUC's mid-ranks matter
    got = classification_metrics(y, s, threshold=0.4)
    pred = s >= 0.4
    assert got["auc"].value == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert got["accuracy"].value == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert got["f1"].value == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    assert got["log_loss"].value == pytest.approx(skm.log_loss(y, s), abs=1e-12)
    for m in got.values():
        assert m.n == 5_000 and not m.estimated
        assert m.lower is not None and m.upper is not None
        assert m.lower < m.value < m.upper
    assert got["f1"].method == "bootstrap" and got["auc"].method == "analytic"


def test_precision_and_recall_equal_sklearn() -> None:
    rng = np.random.default_rng(4)
    y, s = _model(rng, 2_000)
    got = classification_metrics(y, s, metrics=["precision", "recall"])
    assert got["precision"].value == pytest.approx(skm.precision_score(y, s >= 0.5), abs=1e-12)
    assert got["recall"].value == pytest.approx(skm.recall_score(y, s >= 0.5), abs=1e-12)
    none = classification_metrics([0, 1], [0.1, 0.2], metrics=["precision"])["precision"]
    assert (none.value, none.lower, none.upper) == (0.0, None, None)


def test_log_loss_of_certain_wrong_scores_is_finite_like_sklearn() -> None:
    y = np.array([1, 0, 1, 0])
    s = np.array([0.0, 1.0, 0.9, 0.2])
    got = classification_metrics(y, s, metrics=["log_loss"])["log_loss"]
    assert math.isfinite(got.value)
    assert got.value == pytest.approx(skm.log_loss(y, s), rel=1e-9)


def test_regression_values_equal_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=3_000)
    p = y + rng.standard_t(4, size=3_000)
    got = regression_metrics(y, p)
    assert got["rmse"].value == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)), rel=1e-12)
    assert got["mae"].value == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)
    assert all(m.lower < m.value < m.upper for m in got.values())  # type: ignore[operator]


def test_inputs_may_be_lists_booleans_pandas_or_arrow() -> None:
    y = [True, False, True, True, False, False]
    s = [0.9, 0.2, 0.6, 0.4, 0.3, 0.7]
    want = classification_metrics(np.array(y, dtype=int), np.array(s))
    for yy, ss in ((y, s), (pd.Series(y), pd.Series(s)), (pa.array(y), pa.chunked_array([s]))):
        got = classification_metrics(yy, ss)
        assert {k: m.value for k, m in got.items()} == {k: m.value for k, m in want.items()}


def test_f1_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(3)
    y, s = _model(rng, 500)
    a = classification_metrics(y, s, metrics=["f1"], seed=7)["f1"]
    b = classification_metrics(y, s, metrics=["f1"], seed=7)["f1"]
    c = classification_metrics(y, s, metrics=["f1"], seed=8)["f1"]
    assert a == b
    assert (a.lower, a.upper) != (c.lower, c.upper)


def test_metric_round_trips_as_json() -> None:
    m = classification_metrics([0, 1, 1, 0], [0.1, 0.8, 0.4, 0.3])["accuracy"]
    assert Metric.from_dict(json.loads(json.dumps(m.to_dict()))) == m


# --------------------------------------------------------------------------- coverage


def _coverage(hits: list[bool]) -> float:
    assert len(hits) == REPS
    return sum(hits) / REPS


def test_classification_intervals_cover_the_population_value() -> None:
    rng = np.random.default_rng(10)
    y_big, s_big = _model(rng, 2_000_000)
    truth = {k: m.value for k, m in classification_metrics(y_big, s_big).items()}
    hits: dict[str, list[bool]] = {k: [] for k in truth}
    for _ in range(REPS):
        y, s = _model(rng, 300)
        for k, m in classification_metrics(y, s).items():
            assert m.lower is not None and m.upper is not None
            hits[k].append(m.lower <= truth[k] <= m.upper)
    for k, h in hits.items():
        assert abs(_coverage(h) - NOMINAL) <= SLACK, (k, _coverage(h))


def test_regression_intervals_cover_the_population_value() -> None:
    rng = np.random.default_rng(11)
    truth = {"rmse": 1.5, "mae": 1.5 * math.sqrt(2 / math.pi)}  # errors ~ N(0, 1.5)
    hits: dict[str, list[bool]] = {k: [] for k in truth}
    for _ in range(REPS):
        y = rng.normal(size=200)
        for k, m in regression_metrics(y, y + rng.normal(scale=1.5, size=200)).items():
            assert m.lower is not None and m.upper is not None
            hits[k].append(m.lower <= truth[k] <= m.upper)
    for k, h in hits.items():
        assert abs(_coverage(h) - NOMINAL) <= SLACK, (k, _coverage(h))


def test_narrower_confidence_gives_narrower_intervals() -> None:
    rng = np.random.default_rng(12)
    y, s = _model(rng, 1_000)
    wide = classification_metrics(y, s, confidence=0.99)
    narrow = classification_metrics(y, s, confidence=0.8)
    for k in wide:
        assert wide[k].lower < narrow[k].lower < narrow[k].upper < wide[k].upper  # type: ignore[operator]


# --------------------------------------------------------------------------- CBPE


def test_isotonic_calibration_equals_sklearns() -> None:
    rng = np.random.default_rng(20)
    y, s = _model(rng, 20_000, sharpen=2.0)
    s = np.round(s, 3)
    cbpe = CBPE.fit(s, y)
    probe = np.concatenate([rng.random(2_000), [-1.0, 0.0, 1.0, 2.0]])
    want = IsotonicRegression(out_of_bounds="clip").fit(s, y).predict(probe)
    np.testing.assert_allclose(cbpe.calibrate(probe), want, atol=1e-12)


@pytest.mark.parametrize("sharpen", [1.0, 2.5])
def test_cbpe_estimates_the_realised_metrics_of_fresh_data(sharpen: float) -> None:
    rng = np.random.default_rng(21)
    cbpe = CBPE.fit(*reversed(_model(rng, 50_000, sharpen=sharpen)))
    y, s = _model(rng, 50_000, sharpen=sharpen)
    est = cbpe.estimate(s, metrics=["auc", "accuracy", "f1", "precision", "recall"])
    real = classification_metrics(y, s, metrics=["auc", "accuracy", "f1"])
    pred = s >= 0.5
    realised = {
        **{k: m.value for k, m in real.items()},
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
    }
    for k, m in est.items():
        assert m.estimated and m.method == "cbpe" and m.n == 50_000
        assert abs(m.value - realised[k]) < 0.01, (k, m.value, realised[k])
        assert m.lower is not None and m.upper is not None
        assert m.lower <= realised[k] <= m.upper, (k, m, realised[k])


def test_calibration_is_what_makes_overconfident_scores_estimable() -> None:
    rng = np.random.default_rng(22)
    y_ref, s_ref = _model(rng, 50_000, sharpen=3.0)
    y, s = _model(rng, 50_000, sharpen=3.0)
    realised = classification_metrics(y, s, metrics=["accuracy"])["accuracy"].value
    calibrated = CBPE.fit(s_ref, y_ref).estimate(s, metrics=["accuracy"])["accuracy"]
    raw = CBPE.fit(s_ref, y_ref, calibration="none").estimate(s, metrics=["accuracy"])
    assert abs(calibrated.value - realised) < 0.01
    assert raw["accuracy"].value - realised > 0.05  # overconfident scores overestimate


def test_cbpe_tracks_a_covariate_shift() -> None:
    rng = np.random.default_rng(23)
    cbpe = CBPE.fit(*reversed(_model(rng, 50_000)))
    y0, s0 = _model(rng, 20_000)
    y1, s1 = _model(rng, 20_000, scale=0.3)  # inputs crowd the decision boundary
    before = cbpe.estimate(s0, metrics=["accuracy", "auc"])
    after = cbpe.estimate(s1, metrics=["accuracy", "auc"])
    real0 = classification_metrics(y0, s0, metrics=["accuracy", "auc"])
    real1 = classification_metrics(y1, s1, metrics=["accuracy", "auc"])
    for k in ("accuracy", "auc"):
        assert real0[k].value - real1[k].value > 0.1  # the shift costs real performance
        assert abs(after[k].value - real1[k].value) < 0.02, (k, after[k], real1[k])
        assert abs(before[k].value - real0[k].value) < 0.02, (k, before[k], real0[k])


def test_cbpe_intervals_cover_the_realised_metric() -> None:
    """Fixed scores, labels redrawn each time: how often the realised metric lands in the
    estimate's interval. AUC's Hanley-McNeil interval may only be conservative."""
    rng = np.random.default_rng(24)
    cbpe = CBPE.fit(*reversed(_model(rng, 100_000)))
    x = rng.normal(size=1_000)
    p = _sigmoid(2 * x - 0.4)
    est = cbpe.estimate(p, metrics=["auc", "accuracy", "f1", "precision", "recall"])
    hits: dict[str, list[bool]] = {k: [] for k in est}
    pred = p >= 0.5
    for _ in range(REPS):
        y = (rng.random(len(p)) < p).astype(np.int64)
        realised = {
            **{
                k: m.value
                for k, m in classification_metrics(y, p, metrics=["auc", "accuracy", "f1"]).items()
            },
            "precision": skm.precision_score(y, pred),
            "recall": skm.recall_score(y, pred),
        }
        for k, m in est.items():
            hits[k].append(m.lower <= realised[k] <= m.upper)  # type: ignore[operator]
    for k, h in hits.items():
        assert _coverage(h) >= NOMINAL - SLACK, (k, _coverage(h))
        if k != "auc":
            assert _coverage(h) <= NOMINAL + SLACK, (k, _coverage(h))


def test_cbpe_round_trips_as_json() -> None:
    rng = np.random.default_rng(25)
    cbpe = CBPE.fit(*reversed(_model(rng, 10_000, sharpen=2.0)))
    again = CBPE.from_dict(json.loads(json.dumps(cbpe.to_dict())))
    _, s = _model(rng, 5_000)
    assert again == cbpe
    assert again.estimate(s) == cbpe.estimate(s)


def test_auto_calibration_calibrates_scores_that_are_not_probabilities() -> None:
    rng = np.random.default_rng(26)
    y, s = _model(rng, 20_000)
    logits = np.log(s / (1 - s))
    auto = CBPE.fit(logits, y, calibration="auto")
    assert auto.calibrated
    assert auto == CBPE.fit(logits, y)


def test_auto_calibration_leaves_perfectly_separated_scores_alone() -> None:
    y = np.array([0] * 50 + [1] * 50)
    s = np.linspace(0.01, 0.99, 100)
    cbpe = CBPE.fit(s, y, calibration="auto")
    assert not cbpe.calibrated
    np.testing.assert_array_equal(cbpe.calibrate(s), s)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("y", "s", "kwargs", "message"),
    [
        ([0, 1, 1], [0.1, 0.2], {}, "y_true and y_score differ in length: 3 and 2"),
        ([0, 2, 1], [0.1, 0.2, 0.3], {}, "binary labels 0/1"),
        ([0, 1, 1], [0.1, float("nan"), 0.3], {}, "y_score has 1 NaN or infinite values"),
        ([0, None, 1], [0.1, 0.2, 0.3], {}, "y_true has 1 missing values"),
        (pd.array([0, None, 1], dtype="Int64"), [0.1, 0.2, 0.3], {}, "y_true has 1 (NaN|missing)"),
        (pa.array([0, None, 1]), [0.1, 0.2, 0.3], {}, "y_true has 1 NaN"),
        ([1, 1, 1], [0.1, 0.2, 0.3], {}, "auc is undefined on a window with one class only"),
        ([], [], {}, "empty"),
        ([0, 1], [0.1, 1.2], {"metrics": ["log_loss"]}, "log_loss needs probabilities"),
        ([0, 1], [0.1, 0.9], {"metrics": ["r2"]}, "unknown metric 'r2'"),
        ([0, 1], [0.1, 0.9], {"confidence": 1.5}, "confidence must be between 0 and 1"),
    ],
)
def test_bad_classification_input(y: object, s: list, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        classification_metrics(y, s, **kwargs)


def test_one_class_window_still_gives_the_other_metrics() -> None:
    got = classification_metrics([1, 1, 1], [0.7, 0.2, 0.9], metrics=["accuracy", "f1"])
    assert got["accuracy"].value == pytest.approx(2 / 3)
    assert got["f1"].value == pytest.approx(0.8)


def test_bad_regression_input() -> None:
    with pytest.raises(InvalidArgument, match="y_pred has 1 NaN"):
        regression_metrics([1.0, 2.0], [1.0, float("inf")])
    with pytest.raises(InvalidArgument, match="differ in length"):
        regression_metrics([1.0, 2.0], [1.0])


def test_bad_cbpe_input() -> None:
    with pytest.raises(InvalidArgument, match="reference_labels hold one class only"):
        CBPE.fit([0.2, 0.8], [1, 1])
    with pytest.raises(InvalidArgument, match="reference_scores must be probabilities"):
        CBPE.fit([-2.0, 3.0], [0, 1], calibration="none")
    with pytest.raises(InvalidArgument, match="calibration must be"):
        CBPE.fit([0.2, 0.8], [0, 1], calibration="platt")  # type: ignore[arg-type]
    cbpe = CBPE.fit([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    with pytest.raises(InvalidArgument, match="scores has 1 NaN"):
        cbpe.estimate([0.5, float("nan")])
    with pytest.raises(InvalidArgument, match="scores is empty"):
        cbpe.estimate([])
    with pytest.raises(InvalidArgument, match="auc cannot be estimated"):
        cbpe.estimate([0.1, 0.15])
    with pytest.raises(InvalidArgument, match="not a stored CBPE"):
        CBPE.from_dict({"kind": "cbpe"})


def test_overflowing_errors_give_infinite_rmse_with_infinite_bounds_not_nan() -> None:
    out = regression_metrics([0.0, 0.0, 0.0], [1e154, 1e155, 1.0])
    rmse, mae = out["rmse"], out["mae"]
    assert rmse.value == rmse.lower == rmse.upper == math.inf
    assert not any(math.isnan(v) for v in (mae.value, mae.lower or 0.0, mae.upper or 0.0))


def test_a_nan_threshold_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="threshold"):
        classification_metrics([0, 1, 1], [0.2, 0.8, 0.6], threshold=math.nan)
