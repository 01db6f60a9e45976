"""The feature store's value objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_JSON = {"ser_json_inf_nan": "strings"}

# Feature dtypes, as Arrow names: what a feature group's schema may declare.
DTYPES = ("bool", "int32", "int64", "float32", "float64", "string", "timestamp", "date")


@dataclass(frozen=True)
class Entity:
    __pydantic_config__ = _JSON

    name: str
    join_keys: list[str]
    value_type: str = "int64"
    description: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True)
class FeatureSpec:
    __pydantic_config__ = _JSON

    name: str
    dtype: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Expectation:
    """One rule a write must pass. ``kind`` is one of: not_null, unique (over ``columns``),
    range (min/max), allowed_values (values), regex (pattern), row_count (min/max),
    mean (min/max), std (min/max), quantile (q, min, max)."""

    __pydantic_config__ = _JSON

    kind: str
    column: str | None = None
    columns: list[str] = field(default_factory=list)
    min: float | None = None
    max: float | None = None
    values: list[Any] = field(default_factory=list)
    pattern: str | None = None
    q: float | None = None


@dataclass(frozen=True)
class ExpectationResult:
    __pydantic_config__ = _JSON

    expectation: Expectation
    passed: bool
    failed_rows: int
    detail: str
    sample: list[dict[str, Any]] = field(default_factory=list)  # a few offending rows


@dataclass(frozen=True)
class ValidationReport:
    __pydantic_config__ = _JSON

    group: str
    version: int
    mode: str  # strict | warn
    passed: bool
    rows: int
    results: list[ExpectationResult]
    commit_version: int | None = None  # the Delta version written (None when refused)
    at: datetime | None = None
    id: int | None = None


@dataclass(frozen=True)
class TopValue:
    value: str  # as text: booleans are "true" and "false"
    count: int


@dataclass(frozen=True)
class ColumnStatistics:
    """Statistics of one column in one commit (see ``plinth.features.statistics``).
    Fields added later default to empty, so statistics stored before them still load."""

    __pydantic_config__ = _JSON

    column: str
    count: int
    nulls: int
    distinct: int | None
    mean: float | None = None
    std: float | None = None
    min: Any = None
    max: Any = None
    deciles: list[float] = field(default_factory=list)  # 0%, 10%, ..., 100%
    bin_edges: list[float] = field(default_factory=list)  # numeric: bins + 1 edges
    bin_counts: list[int] = field(default_factory=list)  # finite values per bin
    top_values: list[TopValue] = field(default_factory=list)  # strings and booleans


@dataclass(frozen=True)
class DriftReference:
    """What each insert into a group version is compared with for drift
    (``plinth.features.drift``): ``previous`` (the newest earlier commit), ``days`` (every
    commit in the ``days`` days before the insert, their profiles merged), ``commit`` (the
    pinned commit at Delta version ``commit``) or ``none`` (no drift check); ``preset``
    chooses the tests (``plinth`` or ``evidently``)."""

    __pydantic_config__ = _JSON

    kind: str = "previous"  # previous | days | commit | none
    days: int | None = None
    commit: int | None = None
    preset: str = "plinth"

    def describe(self) -> str:
        preset = f" ({self.preset} preset)"
        if self.kind == "days":
            return f"the commits of the last {self.days} day(s){preset}"
        if self.kind == "commit":
            return f"pinned commit {self.commit}{preset}"
        if self.kind == "none":
            return "none (no drift check)"
        return f"the previous commit{preset}"


@dataclass(frozen=True)
class FeatureGroup:
    __pydantic_config__ = _JSON

    name: str
    version: int
    entity: str
    keys: list[str]
    event_time: str
    features: list[FeatureSpec]
    online: bool = False
    ttl_seconds: int | None = None
    description: str = ""
    owner: str = ""
    table_uri: str = ""  # the offline Delta table
    created_at: datetime | None = None
    expectations: list[Expectation] = field(default_factory=list)
    validation_mode: str = "strict"
    drift_reference: DriftReference = field(default_factory=DriftReference)

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"


@dataclass(frozen=True)
class CommitInfo:
    """One insert into a feature group: one Delta commit."""

    __pydantic_config__ = _JSON

    group: str
    version: int
    commit_version: int  # the Delta table version it created
    rows: int
    operation: str  # insert | upsert
    written_by: str
    at: datetime
    validation_passed: bool = True
    statistics: list[ColumnStatistics] = field(default_factory=list)
    # TableProfile.to_dict() of the rows written, sent by the writer to be stored (a
    # profiles row); never returned by the service, which keeps it out of listings
    profile: dict[str, Any] | None = None
    # the drift verdict against the group's DriftReference (``plinth.features.drift``);
    # None when not checked (reference "none", or a writer that sent no profile)
    drift: dict[str, Any] | None = None


@dataclass(frozen=True)
class Transformation:
    """An on-demand transformation: a Python function over a pandas DataFrame holding its
    ``inputs`` (features of the view or request values), returning its ``outputs``.
    ``source`` is the function's text, which is both what the view shows and what runs
    (records of older versions also held a ``code`` pickle: it is ignored, never loaded)."""

    __pydantic_config__ = _JSON

    name: str
    inputs: list[str]
    outputs: list[FeatureSpec]
    source: str = ""


@dataclass(frozen=True)
class FeatureView:
    """A named, versioned selection of features (``group:vN:feature``, pinned to group
    versions), request-time values, on-demand transformations and an optional label."""

    __pydantic_config__ = _JSON

    name: str
    version: int
    features: list[str]
    keys: list[str]
    label: str | None = None
    request: list[FeatureSpec] = field(default_factory=list)
    transformations: list[Transformation] = field(default_factory=list)
    description: str = ""
    owner: str = ""
    created_at: datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    @property
    def output_names(self) -> list[str]:
        """The columns the view adds: its features, then each transformation's outputs."""
        names = [f.rsplit(":", 1)[-1] for f in self.features]
        return names + [o.name for t in self.transformations for o in t.outputs]


@dataclass(frozen=True)
class TrainingDataset:
    """A materialised snapshot of a feature view over an entity table, with the exact group
    commits it read, so it can be rebuilt and a model version can point at it."""

    __pydantic_config__ = _JSON

    id: int
    view: str
    view_version: int
    uri: str  # Delta table of the rows
    entity_uri: str  # Delta table of the entity rows it was built from
    rows: int
    group_commits: dict[str, int]  # "group:vN" -> the Delta version read
    timestamp_column: str
    label: str | None = None
    description: str = ""
    created_by: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True)
class ModelUse:
    __pydantic_config__ = _JSON

    model: str
    version: int
    stage: str
    training_dataset: int


@dataclass(frozen=True)
class Usage:
    """Where a feature group (or one feature of it) is used."""

    __pydantic_config__ = _JSON

    group: str
    feature: str | None
    feature_views: list[str]
    training_datasets: list[int]
    model_versions: list[ModelUse]
