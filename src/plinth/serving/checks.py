"""Checks on batch scores before they are delivered, and the record of scoring jobs.

The checks are judged on everything a job is about to deliver, against the training data
of the model version (its first training dataset, when it has one):

- ``prediction_distribution``: classifiers compare each class's share of the predictions
  with its share of the training labels; regressors compare the predictions with the
  training labels by the population stability index over ten bins cut at the labels'
  deciles. Skipped when no training data (or no label) is linked, or for too few rows.
- ``prediction_values``: predictions and class probabilities that are null, NaN or ±inf.
- ``input_ranges``: numeric model inputs outside the training data's [min, max], widened by
  ``range_tolerance`` times its width on each side.
- ``unseen_categories``: string model inputs holding values the training data never had.

A failed check blocks delivery unless the caller allows failed checks. Each job is a row of
``score_jobs`` in the central store (for a client connected to the store directly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plinth.errors import Conflict, InvalidArgument

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

    from plinth.client import Client
    from plinth.serving.model import ServedModel

_EPS = 1e-4  # floor of a bin's share in the PSI, so an empty bin costs much but not infinity
_EXAMPLES = 5


@dataclass(frozen=True)
class Thresholds:
    """What a check tolerates (the defaults in brackets)."""

    max_class_shift: float = 0.2  # classifiers: |class share predicted - in training|
    max_psi: float = 0.25  # regressors: PSI vs training labels (0.1 moderate, 0.25 major)
    min_rows: int = 30  # fewer scored rows skip the distribution check
    max_bad_share: float = 0.0  # share of null/NaN/inf predictions
    range_tolerance: float = 0.1  # widening of each training [min, max], times its width
    max_out_of_range_share: float = 0.01  # per numeric input column
    max_unseen_share: float = 0.01  # per string input column

    @classmethod
    def parse(cls, pairs: list[str]) -> Thresholds:
        """From ``name=value`` strings (the CLI's ``--threshold``)."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for pair in pairs:
            name, _, raw = pair.partition("=")
            name = name.strip().replace("-", "_")
            if name not in known or not raw:
                raise InvalidArgument(
                    f"threshold {pair!r} is not NAME=VALUE with NAME one of {sorted(known)}"
                )
            try:
                values[name] = int(raw) if known[name] == "int" else float(raw)
            except ValueError:
                raise InvalidArgument(f"threshold {name} must be a number, not {raw!r}") from None
        return cls(**values)


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str
    observed: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


class ChecksFailed(Conflict):
    """Scores were not delivered because checks failed; ``checks`` holds every result."""

    error_code = "CHECKS_FAILED"

    def __init__(self, message: str, checks: list[CheckResult], job_key: str) -> None:
        super().__init__(message)
        self.checks = checks
        self.job_key = job_key


@dataclass(frozen=True)
class TrainingProfile:
    """What the checks compare with, read once from a training dataset."""

    source: str  # "training dataset 7 (churn:v1)"
    labels: np.ndarray[Any, Any]  # the non-null training labels (none without a label)
    ranges: dict[str, tuple[float, float]]
    categories: dict[str, set[str]]


def training_profile(client: Client, served: ServedModel) -> TrainingProfile | None:
    """The profile of the model version's first training dataset; None without one."""
    datasets = served.version.lineage.get("training_datasets") or []
    if not datasets:
        return None
    dataset = client.feature_store().get_training_dataset(int(datasets[0]))
    table = dataset.to_arrow()
    labels = np.empty(0)
    if dataset.label and dataset.label in table.column_names:
        labels = table[dataset.label].drop_null().to_numpy(zero_copy_only=False)
    ranges, categories = {}, {}
    for name in served.input_names:
        if name not in table.column_names:
            continue
        column = table[name]
        if _numeric(column.type):
            bounds = pc.min_max(pc.cast(column, pa.float64()).filter(_finite(column)))
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is not None:
                ranges[name] = (low, high)
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            categories[name] = {v for v in pc.unique(column).to_pylist() if v is not None}
    return TrainingProfile(
        f"training dataset {dataset.id} ({dataset.view}:v{dataset.view_version})",
        labels,
        ranges,
        categories,
    )


class ScoreChecks:
    """Accumulates what the checks need, chunk by chunk, in bounded memory."""

    def __init__(
        self, profile: TrainingProfile | None, thresholds: Thresholds, classifier: bool
    ) -> None:
        self.profile = profile
        self.thresholds = thresholds
        self.classifier = classifier
        self.rows = 0
        self.bad = {"null": 0, "nan": 0, "inf": 0}
        self.classes: dict[str, int] = {}
        self.labels = np.empty(0) if profile is None else profile.labels
        numeric = len(self.labels) and np.issubdtype(self.labels.dtype, np.number)
        quantiles = np.quantile(self.labels.astype(float), np.arange(1, 10) / 10) if numeric else []
        self.edges = np.unique(quantiles)  # empty: no numeric labels to bin
        self.bins = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.ranges: dict[str, dict[str, Any]] = {}
        self.unseen: dict[str, dict[str, Any]] = {}

    def update(self, frame: pd.DataFrame, scores: pa.Array, probas: list[pa.Array]) -> None:
        """One chunk: the model's input frame, its scores and class probabilities."""
        self.rows += len(scores)
        if self.rows == len(scores) and not _numeric(scores.type):
            self.classifier = True  # labels that are not numbers are classes whatever else
        for values in (scores, *probas):
            self._count_bad(values)
        if self.classifier:
            for value, count in _class_counts(scores).items():
                self.classes[value] = self.classes.get(value, 0) + count
        else:
            self._bin(scores)
        if self.profile is not None:
            self._ranges(frame, self.profile)
            self._categories(frame, self.profile)

    def results(self) -> list[CheckResult]:
        return [self._distribution(), self._values(), self._range_result(), self._unseen_result()]

    # -- accumulation ------------------------------------------------------------------

    def _count_bad(self, values: pa.Array) -> None:
        self.bad["null"] += values.null_count
        if pa.types.is_floating(values.type):
            array = values.drop_null().to_numpy(zero_copy_only=False)
            self.bad["nan"] += int(np.isnan(array).sum())
            self.bad["inf"] += int(np.isinf(array).sum())

    def _bin(self, scores: pa.Array) -> None:
        if not len(self.edges):
            return
        array = pc.cast(scores, pa.float64()).filter(_finite(scores)).to_numpy()
        found = np.bincount(
            np.searchsorted(self.edges, array, side="right"), minlength=len(self.bins)
        )
        self.bins = self.bins + found

    def _ranges(self, frame: pd.DataFrame, profile: TrainingProfile) -> None:
        tolerance = self.thresholds.range_tolerance
        for name, (low, high) in profile.ranges.items():
            if name not in frame.columns:
                continue
            values = np.asarray(frame[name].to_numpy(dtype=float, na_value=np.nan), dtype=float)
            values = values[~np.isnan(values)]
            slack = tolerance * (high - low)
            outside = int(((values < low - slack) | (values > high + slack)).sum())
            seen = self.ranges.setdefault(
                name, {"train_min": low, "train_max": high, "min": None, "max": None, "outside": 0}
            )
            seen["outside"] += outside
            seen["values"] = seen.get("values", 0) + len(values)
            if len(values):
                seen["min"] = _extreme(min, seen["min"], float(values.min()))
                seen["max"] = _extreme(max, seen["max"], float(values.max()))

    def _categories(self, frame: pd.DataFrame, profile: TrainingProfile) -> None:
        for name, known in profile.categories.items():
            if name not in frame.columns:
                continue
            values = frame[name].dropna().astype(str)
            new = values[~values.isin(known)]
            seen = self.unseen.setdefault(name, {"unseen": 0, "values": 0, "examples": []})
            seen["unseen"] += len(new)
            seen["values"] += len(values)
            examples: list[str] = seen["examples"]
            for value in sorted(set(new)):
                if len(examples) < _EXAMPLES and value not in examples:
                    examples.append(value)

    # -- verdicts ----------------------------------------------------------------------

    def _distribution(self) -> CheckResult:
        name = "prediction_distribution"
        skip = self._skip_distribution()
        if skip:
            return CheckResult(name, True, f"skipped: {skip}", {"rows": self.rows}, skipped=True)
        labels = self.labels
        if self.classifier:
            trained = {k: c / len(labels) for k, c in _class_counts(pa.array(labels)).items()}
            predicted = {k: c / self.rows for k, c in self.classes.items()}
            shifts = {
                k: abs(predicted.get(k, 0.0) - trained.get(k, 0.0)) for k in {*trained, *predicted}
            }
            worst = max(sorted(shifts), key=lambda k: shifts[k])
            limit = self.thresholds.max_class_shift
            observed = {"predicted": _rounded(predicted), "training": _rounded(trained)}
            detail = (
                f"class {worst!r} is {predicted.get(worst, 0.0):.1%} of predictions, "
                f"{trained.get(worst, 0.0):.1%} of training labels: shift "
                f"{shifts[worst]:.3f} {'>' if shifts[worst] > limit else '<='} {limit}"
            )
            return CheckResult(
                name,
                shifts[worst] <= limit,
                detail,
                {**observed, "max_shift": round(shifts[worst], 6)},
            )
        expected = np.bincount(
            np.searchsorted(self.edges, labels.astype(float), side="right"),
            minlength=len(self.bins),
        )
        psi = _psi(self.bins / max(self.bins.sum(), 1), expected / len(labels))
        limit = self.thresholds.max_psi
        detail = f"PSI of predictions vs training labels {psi:.3f} {'>' if psi > limit else '<='} {limit}"
        return CheckResult(name, psi <= limit, detail, {"psi": round(psi, 6), "rows": self.rows})

    def _skip_distribution(self) -> str:
        profile = self.profile
        if profile is None:
            return "no training data is linked to the model version"
        if not len(self.labels):
            return f"{profile.source} has no labels"
        if self.rows < self.thresholds.min_rows:
            return f"too few rows ({self.rows} < {self.thresholds.min_rows}) to compare"
        if not self.classifier and not len(self.edges):
            return f"the labels of {profile.source} are not numbers"
        return ""

    def _values(self) -> CheckResult:
        bad = sum(self.bad.values())
        share = bad / self.rows if self.rows else 0.0
        passed = share <= self.thresholds.max_bad_share
        detail = f"{bad} null, NaN or infinite prediction value(s) in {self.rows} row(s)"
        return CheckResult("prediction_values", passed, detail, {**self.bad, "rows": self.rows})

    def _range_result(self) -> CheckResult:
        name = "input_ranges"
        if self.profile is None:
            return CheckResult(name, True, "skipped: no training data is linked", skipped=True)
        limit = self.thresholds.max_out_of_range_share
        failed = [
            f"{column} ({seen['outside']} value(s) outside "
            f"[{seen['train_min']:.6g}, {seen['train_max']:.6g}])"
            for column, seen in self.ranges.items()
            if seen["outside"] > limit * seen.get("values", 0)
        ]
        detail = (
            "out of the training range: " + ", ".join(failed)
            if failed
            else (
                f"{len(self.ranges)} numeric input(s) within the training range "
                f"(±{self.thresholds.range_tolerance:.0%} of its width)"
            )
        )
        return CheckResult(name, not failed, detail, _plain(self.ranges))

    def _unseen_result(self) -> CheckResult:
        name = "unseen_categories"
        if self.profile is None:
            return CheckResult(name, True, "skipped: no training data is linked", skipped=True)
        limit = self.thresholds.max_unseen_share
        failed = [
            f"{column} ({seen['unseen']} value(s), e.g. {seen['examples']})"
            for column, seen in self.unseen.items()
            if seen["unseen"] > limit * seen["values"]
        ]
        detail = (
            "values never seen in training: " + ", ".join(failed)
            if failed
            else (f"{len(self.unseen)} string input(s) hold only values seen in training")
        )
        return CheckResult(name, not failed, detail, _plain(self.unseen))


def blocked_message(what: str, failed: list[CheckResult]) -> str:
    reasons = "; ".join(f"{r.name}: {r.detail}" for r in failed)
    return (
        f"{what} not delivered: check(s) failed: {reasons} "
        "(--allow-failed-checks, or allow_failed_checks=True, delivers them anyway)"
    )


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _finite(values: pa.Array | pa.ChunkedArray) -> Any:
    floats = pc.cast(values, pa.float64())
    return pc.and_(pc.is_finite(floats), pc.is_valid(floats))


def _class_counts(values: pa.Array) -> dict[str, int]:
    """Rows per class, classes named as strings (1.0 and 1 are the same class)."""
    counts: dict[str, int] = {}
    for pair in pc.value_counts(values.drop_null()).to_pylist():
        value = pair["values"]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        counts[str(value)] = counts.get(str(value), 0) + int(pair["counts"])
    return counts


def _psi(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> float:
    a, e = np.maximum(actual, _EPS), np.maximum(expected, _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def _extreme(pick: Any, old: float | None, new: float) -> float:
    return new if old is None else float(pick(old, new))


def _rounded(shares: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in sorted(shares.items())}


def _plain(value: Any) -> Any:
    """JSON-safe observed values (no numpy scalars, no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
