"""Model performance with confidence intervals, and label-free estimated performance.

- ``classification_metrics`` / ``regression_metrics``: realised metrics of a window of
  predictions joined to their labels (AUC, accuracy, F1, log loss; RMSE, MAE), each with a
  confidence interval: analytic where a sound one exists (Wilson for accuracy, DeLong for
  AUC, the normal approximation of a mean for log loss and MAE, the same on the mean squared
  error for RMSE), a seeded bootstrap for F1.
- ``CBPE``: confidence-based performance estimation for binary classifiers, as NannyML's
  CBPE does it: isotonic calibration fitted on labelled reference scores, then the expected
  confusion matrix (and expected ROC AUC) of an unlabelled window from its calibrated
  probabilities. Its interval is where the realised metric should land once the labels
  arrive, if the calibration still holds: the spread of the metric when each label is a
  Bernoulli draw with its calibrated probability (delta method; Hanley-McNeil for AUC),
  widened by the calibration's own error (that spread at the reference's size).

Pure numpy/scipy; everything is vectorised (100,000 rows take milliseconds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats  # type: ignore[import-untyped]

from plinth.errors import InvalidArgument

CLASSIFICATION_METRICS = ("auc", "accuracy", "f1", "log_loss", "precision", "recall")
REGRESSION_METRICS = ("rmse", "mae")
ESTIMATED_METRICS = ("auc", "accuracy", "f1", "precision", "recall")
BOOTSTRAP_RESAMPLES = 2000
# sklearn's log_loss clips probabilities to [eps, 1 - eps] with the float64 epsilon.
_EPS = float(np.finfo(np.float64).eps)

Calibration = Literal["isotonic", "auto", "none"]


@dataclass(frozen=True)
class Metric:
    """One metric of one window. ``lower``/``upper`` bound its confidence interval (None
    when there is none); ``estimated`` marks a label-free estimate (``method="cbpe"``)."""

    name: str
    value: float
    lower: float | None
    upper: float | None
    n: int
    estimated: bool = False
    method: str = ""  # bootstrap | analytic | cbpe

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metric:
        return cls(**d)


# --------------------------------------------------------------------------- inputs


def _as_array(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        try:  # pyarrow arrays, pandas series
            values = values.to_numpy(zero_copy_only=False)
        except TypeError:
            values = values.to_numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidArgument(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _floats(values: Any, name: str) -> np.ndarray:
    arr = _as_array(values, name)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        nulls = sum(_is_null(v) for v in arr) if arr.dtype == object else 0
        if nulls:
            raise InvalidArgument(f"{name} has {nulls} missing values (None)")
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"{name} must be numeric, got {arr.dtype}") from exc
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.argmax(bad))
        raise InvalidArgument(
            f"{name} has {int(bad.sum())} NaN or infinite values (first at row {first}: "
            f"{arr[first]})"
        )
    return arr


def _is_null(v: object) -> bool:
    return v is None or type(v).__name__ == "NAType"  # pandas.NA


def _labels(values: Any, name: str = "y_true") -> np.ndarray:
    arr = _floats(values, name)
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        first = int(np.argmax(bad))
        raise InvalidArgument(
            f"{name} must hold binary labels 0/1 (or booleans); {int(bad.sum())} values "
            f"are not, e.g. {arr[first]!r} at row {first}"
        )
    return arr.astype(np.int8)


def _pair(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> int:
    if len(a) != len(b):
        raise InvalidArgument(f"{names[0]} and {names[1]} differ in length: {len(a)} and {len(b)}")
    if len(a) == 0:
        raise InvalidArgument(f"{names[0]} and {names[1]} are empty: no rows to measure")
    return len(a)


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise InvalidArgument(f"confidence must be between 0 and 1, got {confidence}")
    return float(stats.norm.ppf(0.5 + confidence / 2))


def _check_metrics(metrics: Iterable[str], known: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(metrics))
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise InvalidArgument(f"unknown metric {unknown[0]!r}; choose from {', '.join(known)}")
    if not chosen:
        raise InvalidArgument(f"no metrics asked for; choose from {', '.join(known)}")
    return chosen


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


# --------------------------------------------------------------------------- classification


def classification_metrics(
    y_true: Any,
    y_score: Any,
    *,
    threshold: float = 0.5,
    metrics: Iterable[str] = ("auc", "accuracy", "f1", "log_loss"),
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Metric]:
    """Realised metrics of a binary classifier: ``y_true`` 0/1 labels, ``y_score`` its
    scores (probabilities of class 1 for log loss); class 1 is predicted where
    ``y_score >= threshold``. ``metrics`` may also name "precision" and "recall" (Wilson
    intervals on their proportions; 0 without a denominator, as scikit-learn).

    AUC is undefined when the window holds one class only: asking for it then raises
    InvalidArgument (leave "auc" out of ``metrics`` to get the others)."""
    chosen = _check_metrics(metrics, CLASSIFICATION_METRICS)
    _check_threshold(threshold)
    z = _z(confidence)
    y = _labels(y_true)
    s = _floats(y_score, "y_score")
    n = _pair(y, s, ("y_true", "y_score"))
    pred = s >= threshold
    out: dict[str, Metric] = {}
    for name in chosen:
        if name == "auc":
            out[name] = _auc(y, s, z)
        elif name == "accuracy":
            out[name] = _accuracy(int(np.count_nonzero(pred == (y == 1))), n, z)
        elif name == "f1":
            out[name] = _f1(y, pred, confidence, seed)
        elif name in ("precision", "recall"):
            hits = int(np.count_nonzero(pred & (y == 1)))
            of = int(pred.sum()) if name == "precision" else int(np.count_nonzero(y == 1))
            out[name] = _proportion(name, hits, of, n, z)
        else:
            out[name] = _log_loss(y, s, z)
    return out


def _auc(y: np.ndarray, s: np.ndarray, z: float) -> Metric:
    """AUC as the Mann-Whitney statistic from mid-ranks (ties count one half), with
    DeLong's variance from the placement values of each class."""
    pos = y == 1
    n1 = int(pos.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        only = 1 if n0 == 0 else 0
        raise InvalidArgument(
            f"auc is undefined on a window with one class only: all {len(y)} labels are "
            f"{only}; leave 'auc' out of metrics or widen the window"
        )
    ranks = stats.rankdata(s)
    r1, r0 = ranks[pos], ranks[~pos]
    # Placement of each positive: share of negatives below it (ties one half), and so on.
    v10 = (r1 - stats.rankdata(s[pos])) / n0
    v01 = 1.0 - (r0 - stats.rankdata(s[~pos])) / n1
    auc = float(v10.mean())
    var = (v10.var(ddof=1) / n1 if n1 > 1 else 0.0) + (v01.var(ddof=1) / n0 if n0 > 1 else 0.0)
    half = z * math.sqrt(var)
    return Metric("auc", auc, _clip01(auc - half), _clip01(auc + half), len(y), method="analytic")


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return _clip01(centre - half), _clip01(centre + half)


def _proportion(name: str, hits: int, of: int, n: int, z: float) -> Metric:
    if of == 0:
        return Metric(name, 0.0, None, None, n, method="analytic")
    lower, upper = _wilson(hits, of, z)
    return Metric(name, hits / of, lower, upper, n, method="analytic")


def _accuracy(correct: int, n: int, z: float) -> Metric:
    lower, upper = _wilson(correct, n, z)
    return Metric("accuracy", correct / n, lower, upper, n, method="analytic")


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    # sklearn's zero_division default: F1 is 0 when there is no positive at all.
    out = np.zeros(np.shape(tp))
    np.divide(2 * tp, denom, out=out, where=denom > 0)
    return out


def _f1(y: np.ndarray, pred: np.ndarray, confidence: float, seed: int) -> Metric:
    """F1 with a percentile bootstrap. F1 depends on the confusion matrix only, so
    resampling rows is a multinomial draw of the four cell counts: exact, and O(resamples)
    whatever the number of rows."""
    pos = y == 1
    tp = int(np.count_nonzero(pred & pos))
    fp = int(np.count_nonzero(pred & ~pos))
    fn = int(np.count_nonzero(~pred & pos))
    n = len(y)
    tn = n - tp - fp - fn
    value = float(_f1_from_counts(np.array(tp), np.array(fp), np.array(fn)))
    rng = np.random.default_rng(seed)
    cells = rng.multinomial(n, np.array([tp, fp, fn, tn]) / n, size=BOOTSTRAP_RESAMPLES)
    boot = _f1_from_counts(cells[:, 0], cells[:, 1], cells[:, 2])
    alpha = 1 - confidence
    lower, upper = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Metric("f1", value, float(lower), float(upper), n, method="bootstrap")


def _check_threshold(threshold: float) -> None:
    if not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise InvalidArgument(f"threshold must be a number, not {threshold!r}")


def _mean_interval(name: str, per_row: np.ndarray, z: float, floor: float | None) -> Metric:
    n = len(per_row)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(per_row.mean())
        half = z * float(per_row.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    if not math.isfinite(mean):  # the values overflow float64: no finite interval either
        return Metric(name, mean, mean, mean, n, method="analytic")
    if not math.isfinite(half):
        half = math.inf
    lower = mean - half if floor is None else max(floor, mean - half)
    return Metric(name, mean, lower, mean + half, n, method="analytic")


def _log_loss(y: np.ndarray, s: np.ndarray, z: float) -> Metric:
    outside = (s < 0) | (s > 1)
    if outside.any():
        first = int(np.argmax(outside))
        raise InvalidArgument(
            f"log_loss needs probabilities in [0, 1]: y_score has {int(outside.sum())} "
            f"values outside, e.g. {s[first]} at row {first}"
        )
    p = np.clip(s, _EPS, 1 - _EPS)
    per_row = -np.where(y == 1, np.log(p), np.log1p(-p))
    return _mean_interval("log_loss", per_row, z, floor=0.0)


# --------------------------------------------------------------------------- regression


def regression_metrics(
    y_true: Any,
    y_pred: Any,
    *,
    metrics: Iterable[str] = ("rmse", "mae"),
    confidence: float = 0.95,
) -> dict[str, Metric]:
    """RMSE and MAE of a regressor's predictions, with normal-approximation intervals:
    MAE's on the mean absolute error; RMSE's on the mean squared error, whose ends are
    then square-rooted (so the interval is never negative and follows RMSE's skew)."""
    chosen = _check_metrics(metrics, REGRESSION_METRICS)
    z = _z(confidence)
    y = _floats(y_true, "y_true")
    p = _floats(y_pred, "y_pred")
    _pair(y, p, ("y_true", "y_pred"))
    with np.errstate(over="ignore"):  # beyond ~1e154 squares are inf: RMSE inf, said so
        err = p - y
        squares = err * err
    out: dict[str, Metric] = {}
    for name in chosen:
        if name == "mae":
            out[name] = _mean_interval("mae", np.abs(err), z, floor=0.0)
        else:
            mse = _mean_interval("mse", squares, z, floor=0.0)
            out[name] = Metric(
                "rmse",
                math.sqrt(mse.value),
                math.sqrt(mse.lower or 0.0),
                math.sqrt(mse.upper or 0.0),
                mse.n,
                method="analytic",
            )
    return out


# --------------------------------------------------------------------------- CBPE


@dataclass(frozen=True)
class CBPE:
    """Confidence-based performance estimation for a binary classifier.

    ``fit`` learns a monotone map from the model's scores to calibrated probabilities on
    labelled reference data (isotonic regression, predictions interpolated linearly between
    the fitted points and clipped at the ends, as scikit-learn's ``IsotonicRegression``
    that NannyML uses); ``estimate`` then computes the expected metrics of unlabelled
    scores. ``points_x``/``points_y`` are the calibration map (score -> probability),
    empty when not calibrated (``calibrated`` False: scores are taken as probabilities)."""

    points_x: tuple[float, ...]
    points_y: tuple[float, ...]
    calibrated: bool
    reference_rows: int
    reference_positive_rate: float

    @classmethod
    def fit(
        cls,
        reference_scores: Any,
        reference_labels: Any,
        *,
        calibration: Calibration = "isotonic",
        seed: int = 0,
    ) -> CBPE:
        """Fit on reference scores and their labels (both classes needed).

        ``calibration``: "isotonic" (always), "none" (the scores are probabilities already)
        or "auto", NannyML's rule: calibrate when scores are not probabilities, or when
        isotonic calibration fitted on 90% lowers the expected calibration error (10
        equal-count bins) of the other 10%, pooled over 10 seeded stratified splits; not
        when the reference AUC is above 0.999."""
        y = _labels(reference_labels, "reference_labels")
        s = _floats(reference_scores, "reference_scores")
        n = _pair(y, s, ("reference_scores", "reference_labels"))
        if calibration not in ("isotonic", "auto", "none"):
            raise InvalidArgument(
                f"calibration must be 'isotonic', 'auto' or 'none', got {calibration!r}"
            )
        rate = float(y.mean())
        if rate in (0.0, 1.0):
            raise InvalidArgument(
                f"reference_labels hold one class only (all {n} are {int(rate)}): CBPE "
                "needs labels of both classes to calibrate the scores"
            )
        probabilities = bool(((s >= 0) & (s <= 1)).all())
        calibrate = calibration == "isotonic" or (
            calibration == "auto" and (not probabilities or _needs_calibration(y, s, seed))
        )
        if not calibrate:
            _check_probabilities(s, "reference_scores")
            return cls((), (), False, n, rate)
        x, p = _isotonic_fit(s, y)
        return cls(tuple(x.tolist()), tuple(p.tolist()), True, n, rate)

    def calibrate(self, scores: Any) -> np.ndarray:
        """Calibrated probabilities of class 1 for ``scores``."""
        s = _floats(scores, "scores")
        return self._calibrate(s)

    def _calibrate(self, s: np.ndarray) -> np.ndarray:
        if not self.calibrated:
            _check_probabilities(s, "scores")
            return s
        out: np.ndarray = np.interp(s, np.asarray(self.points_x), np.asarray(self.points_y))
        return out

    def estimate(
        self,
        scores: Any,
        *,
        metrics: Iterable[str] = ("auc", "accuracy", "f1"),
        threshold: float = 0.5,
        confidence: float = 0.95,
    ) -> dict[str, Metric]:
        """Estimated metrics of unlabelled ``scores`` (class 1 predicted where
        ``score >= threshold``), each ``estimated=True, method="cbpe"``."""
        chosen = _check_metrics(metrics, ESTIMATED_METRICS)
        _check_threshold(threshold)
        z = _z(confidence)
        s = _floats(scores, "scores")
        if len(s) == 0:
            raise InvalidArgument("scores is empty: no rows to estimate on")
        c = self._calibrate(s)
        pred = s >= threshold
        # The calibration's own error, approximated as the metric's spread at the
        # reference's size, adds to that of the labels still to come.
        inflate = math.sqrt(1 + len(s) / self.reference_rows)
        out: dict[str, Metric] = {}
        for name in chosen:
            value, se = _ESTIMATORS[name](s, c, pred)
            half = z * se * inflate
            out[name] = Metric(
                name,
                value,
                _clip01(value - half),
                _clip01(value + half),
                len(s),
                estimated=True,
                method="cbpe",
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "cbpe",
            "calibration": "isotonic" if self.calibrated else "none",
            "points_x": list(self.points_x),
            "points_y": list(self.points_y),
            "reference_rows": self.reference_rows,
            "reference_positive_rate": self.reference_positive_rate,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CBPE:
        try:
            x = tuple(float(v) for v in d["points_x"])
            y = tuple(float(v) for v in d["points_y"])
            calibrated = d["calibration"] == "isotonic"
            rows, rate = int(d["reference_rows"]), float(d["reference_positive_rate"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"not a stored CBPE: {exc!r}") from exc
        if len(x) != len(y) or (calibrated and not x) or rows <= 0:
            raise InvalidArgument("not a stored CBPE: calibration points or rows missing")
        return cls(x, y, calibrated, rows, rate)


def _check_probabilities(s: np.ndarray, name: str) -> None:
    outside = (s < 0) | (s > 1)
    if outside.any():
        first = int(np.argmax(outside))
        raise InvalidArgument(
            f"{name} must be probabilities in [0, 1] when not calibrated; "
            f"{int(outside.sum())} are not, e.g. {s[first]} at row {first}"
        )


def _isotonic_fit(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(s)
    return _isotonic_fit_sorted(s[order], y[order])


def _isotonic_fit_sorted(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic regression of y on sorted s: the distinct scores and their fitted
    probabilities, trimmed to the ends of each flat block (the points linear interpolation
    needs)."""
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    counts = np.diff(np.r_[starts, len(s)]).astype(np.float64)
    means = np.add.reduceat(y.astype(np.float64), starts) / counts
    fitted = np.asarray(optimize.isotonic_regression(means, weights=counts).x)
    keep = np.ones(len(starts), dtype=bool)
    keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    return s[starts][keep], fitted[keep]


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error on equal-count bins of p (NannyML's definition)."""
    order = np.argsort(p)
    p, y = p[order], y[order]
    width = len(p) // min(bins, len(p) // 2)
    edges = np.arange(0, len(p) + 1, width)
    edges[-1] = len(p)
    sums_p = np.add.reduceat(p, edges[:-1])
    sums_y = np.add.reduceat(y.astype(np.float64), edges[:-1])
    return float(np.abs(sums_p - sums_y).sum() / len(p))


def _needs_calibration(y: np.ndarray, s: np.ndarray, seed: int) -> bool:
    """NannyML's rule (see ``CBPE.fit``), on scores sorted once for all ten fits."""
    if len(y) < 40 or _auc_value(y, s) > 0.999:
        return False
    order = np.argsort(s)
    s, y = s[order], y[order]
    rng = np.random.default_rng(seed)
    pos = y == 1
    idx_pos, idx_neg = np.flatnonzero(pos), np.flatnonzero(~pos)
    ys, raw, cal = [], [], []
    for _ in range(10):
        test = np.zeros(len(y), dtype=bool)
        for idx in (idx_pos, idx_neg):
            test[rng.choice(idx, size=max(1, round(0.1 * len(idx))), replace=False)] = True
        x, p = _isotonic_fit_sorted(s[~test], y[~test])
        ys.append(y[test])
        raw.append(s[test])
        cal.append(np.interp(s[test], x, p))
    yy = np.concatenate(ys)
    return _ece(yy, np.concatenate(raw)) > _ece(yy, np.concatenate(cal))


def _auc_value(y: np.ndarray, s: np.ndarray) -> float:
    """AUC from the rank sum of the positives (Mann-Whitney U), without its interval."""
    pos = y == 1
    n1 = int(pos.sum())
    n0 = len(y) - n1
    u = float(stats.rankdata(s)[pos].sum()) - n1 * (n1 + 1) / 2
    return u / (n1 * n0)


# --------------------------------------------------------------------------- the estimators
# Each takes (scores, calibrated probabilities, predicted class) and returns the estimate
# with its standard error: the spread of the realised metric when each label is a Bernoulli
# draw with its calibrated probability (the delta method for ratios).


def _est_accuracy(s: np.ndarray, c: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    p_correct = np.where(pred, c, 1 - c)
    n = len(c)
    return float(p_correct.sum() / n), math.sqrt(float((c * (1 - c)).sum())) / n


def _parts(c: np.ndarray, pred: np.ndarray) -> tuple[float, float, float, float]:
    """Expected true positives among the predicted positives (a), expected positives among
    the predicted negatives (b), and their variances."""
    var = c * (1 - c)
    return (
        float(c[pred].sum()),
        float(c[~pred].sum()),
        float(var[pred].sum()),
        float(var[~pred].sum()),
    )


def _est_precision(s: np.ndarray, c: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    k = int(pred.sum())
    if k == 0:
        return 0.0, 0.0
    a, _, va, _ = _parts(c, pred)
    return a / k, math.sqrt(va) / k


def _est_recall(s: np.ndarray, c: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    a, b, va, vb = _parts(c, pred)
    d = a + b
    if d == 0:
        return 0.0, 0.0
    return a / d, math.sqrt((b / d**2) ** 2 * va + (a / d**2) ** 2 * vb)


def _est_f1(s: np.ndarray, c: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    # F1 = 2 TP / (2 TP + FP + FN) = 2a / (k + a + b), k the predicted positives.
    a, b, va, vb = _parts(c, pred)
    d = int(pred.sum()) + a + b
    if d == 0:
        return 0.0, 0.0
    da, db = 2 * (d - a) / d**2, -2 * a / d**2
    return 2 * a / d, math.sqrt(da * da * va + db * db * vb)


def _est_auc(s: np.ndarray, c: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Expected ROC AUC as NannyML computes it: the ROC curve traced by the raw scores, with
    calibrated probabilities as expected positives (and their complements as expected
    negatives); the area by the trapezoid rule. Tied scores form one step of the curve
    (NannyML leaves ties in arbitrary order). Standard error: Hanley and McNeil's, with the
    expected class counts."""
    order = np.argsort(s)[::-1]
    s_sorted, c_sorted = s[order], c[order]
    tps = np.cumsum(c_sorted)
    fps = np.arange(1, len(c) + 1) - tps
    last = np.append(s_sorted[1:] != s_sorted[:-1], True)
    tps = np.concatenate(([0.0], tps[last]))
    fps = np.concatenate(([0.0], fps[last]))
    n1, n0 = tps[-1], fps[-1]
    if n1 <= 0 or n0 <= 0:
        only = "0" if n1 <= 0 else "1"
        raise InvalidArgument(
            f"auc cannot be estimated: the calibrated probability of all {len(s)} scores "
            f"is {only}, so one class only is expected; leave 'auc' out of metrics"
        )
    auc = float(np.trapezoid(tps / n1, fps / n0))
    return auc, _hanley_mcneil(auc, n1, n0)


def _hanley_mcneil(auc: float, n1: float, n0: float) -> float:
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc)) / (n1 * n0)
    return math.sqrt(max(var, 0.0))


_ESTIMATORS = {
    "auc": _est_auc,
    "accuracy": _est_accuracy,
    "f1": _est_f1,
    "precision": _est_precision,
    "recall": _est_recall,
}
