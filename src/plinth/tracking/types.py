"""Tracking's value objects. Frozen dataclasses: cheap to import, serialised by pydantic."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from plinth.errors import InvalidArgument

T = TypeVar("T")

# Read by pydantic (without importing it here): NaN and infinities travel as "NaN",
# "Infinity" and "-Infinity" in JSON, which has no literal for them.
_JSON = {"ser_json_inf_nan": "strings"}

ParamValue = int | float | str | bool | dict[str, Any] | list[Any] | None


VIEWS = ("active", "deleted", "all")  # which runs or experiments a listing shows


class RunStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


@dataclass(frozen=True)
class Experiment:
    __pydantic_config__ = _JSON

    id: str
    name: str
    description: str
    owner: str
    created_at: datetime
    tags: dict[str, str] = field(default_factory=dict)
    deleted_at: datetime | None = None  # soft-deleted: hidden from lists, restorable


@dataclass(frozen=True)
class MetricSummary:
    """A metric's series in one run. ``best`` is the value at the last point marked is-best."""

    __pydantic_config__ = _JSON

    key: str
    goal: str
    count: int
    last: float
    last_step: int
    min: float | None
    max: float | None
    best: float | None
    best_step: int | None
    last_timestamp: datetime | None = None  # when the last point was logged (its own time)


@dataclass(frozen=True)
class MetricPoint:
    __pydantic_config__ = _JSON

    step: int
    value: float
    timestamp: datetime
    is_best: bool


@dataclass(frozen=True)
class MetricSeries:
    """A metric as a chart draws it: at most ``max_points`` (step, value) pairs that keep
    its shape (``downsampled`` says whether points were left out of the ``count`` read),
    and its is-best points apart."""

    key: str
    count: int
    steps: list[int]
    values: list[float]
    best_steps: list[int]
    best_values: list[float]
    downsampled: bool


@dataclass(frozen=True)
class MetricBatch:
    """Metric points in columns: one entry per point in every list.

    ``is_best`` None leaves the mark to the store, which judges the point against the run's
    stored best when it writes it. ``spool`` names the writer's local spool the points come
    from and ``first_seq`` the first point's position in it: the store remembers how far
    each spool got, so a batch written twice (a retry, a replay) is written once."""

    __pydantic_config__ = _JSON

    keys: list[str]
    values: list[float]
    steps: list[int]
    timestamps: list[int]  # milliseconds since the epoch
    is_best: list[bool | None]
    goals: dict[str, str] = field(default_factory=dict)  # key -> "max" | "min"
    spool: str | None = None
    first_seq: int = 0

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class DatasetInput:
    """A dataset a run read. ``context`` says what for ("training", "eval"...);
    ``source_type``, ``schema`` and ``profile`` are kept as a client sent them (MLflow's
    source type and its schema and profile as JSON text) and given back unchanged."""

    __pydantic_config__ = _JSON

    name: str
    uri: str
    digest: str | None = None
    version: str | None = None
    rows: int | None = None
    logged_at: datetime | None = None
    context: str | None = None
    source_type: str | None = None
    schema: str | None = None
    profile: str | None = None


@dataclass(frozen=True)
class Environment:
    __pydantic_config__ = _JSON

    digest: str
    python_version: str
    platform: str
    packages: dict[str, str]


@dataclass(frozen=True)
class Lineage:
    """Where a run came from: code, machine and environment, captured when it started."""

    __pydantic_config__ = _JSON

    git_commit: str | None = None
    git_dirty: bool | None = None
    git_remote: str | None = None
    entry_point: str | None = None
    host: str | None = None
    seed: int | None = None
    environment_digest: str | None = None


@dataclass(frozen=True)
class Run:
    __pydantic_config__ = _JSON

    id: str
    experiment_id: str
    experiment_name: str
    number: int
    name: str
    description: str
    status: RunStatus
    owner: str
    start_time: datetime
    end_time: datetime | None
    heartbeat_at: datetime
    artifact_uri: str
    lineage: Lineage
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    inputs: list[DatasetInput] = field(default_factory=list)
    deleted_at: datetime | None = None  # soft-deleted: hidden from searches, restorable

    def param(self, name: str, group: str | None = None) -> Any:
        """A param's value by name, in ``group`` or in whichever group holds it."""
        groups = [group] if group else list(self.params)
        for g in groups:
            if name in self.params.get(g, {}):
                return self.params[g][name]
        raise KeyError(name)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results; pass ``next_page_token`` back for the next one (None: last page)."""

    __pydantic_config__ = _JSON

    items: list[T]
    next_page_token: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]


@dataclass(frozen=True)
class RunComparison:
    """N runs side by side: every param and metric, one value per run (None where absent)."""

    __pydantic_config__ = _JSON

    run_ids: list[str]
    run_names: list[str]
    params: dict[str, list[Any]]  # "group.name" -> values
    params_differing: list[str]
    metrics: dict[str, list[MetricSummary | None]]


@dataclass(frozen=True)
class RunKeys:
    """The metric names and the params (``group.name``) found in the runs of an experiment."""

    __pydantic_config__ = _JSON

    metrics: list[str]
    params: list[str]


@dataclass(frozen=True)
class ArtifactEntry:
    __pydantic_config__ = _JSON

    path: str
    is_dir: bool
    size: int | None


def sequence_of(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


_MINIMISED = ("loss", "error", "err", "mse", "mae", "rmse", "mape", "perplexity", "latency", "time")


def infer_goal(key: str) -> str:
    """Whether bigger is better for a metric: names like loss/error/mae are minimised."""
    lowered = key.lower()
    return "min" if any(word in lowered for word in _MINIMISED) else "max"


MAX_KEY_LENGTH = 500


def validate_key(key: str, what: str = "metric name") -> None:
    if not isinstance(key, str) or not key.strip():
        raise InvalidArgument(f"{what} must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(
            f"{what} {key[:40]!r}... is {len(key)} characters; the limit is {MAX_KEY_LENGTH}"
        )
    if any(ord(c) < 32 for c in key):
        raise InvalidArgument(f"{what} {key!r} contains a control character")


def check_tags(tags: dict[str, Any] | None, what: str = "tag") -> None:
    """Tags are text: a value of another type is refused (locally and over HTTP alike),
    not turned into its ``str``."""
    for key, value in (tags or {}).items():
        validate_key(key, f"{what} name")
        if not isinstance(value, str):
            raise InvalidArgument(
                f"{what} {key!r}: value {value!r:.40} is a {type(value).__name__}; tag values "
                "are strings (use str(value), or log a param for a typed value)"
            )
