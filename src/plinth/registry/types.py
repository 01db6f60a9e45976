"""The registry's value objects."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from plinth.errors import InvalidArgument

_JSON = {"ser_json_inf_nan": "strings"}


# The file in a model package that describes it (flavor, signature, sha256 of every file).
MANIFEST_FILE = "plinth-model.json"


class Stage(enum.StrEnum):
    DEVELOPMENT = "DEVELOPMENT"
    STAGING = "STAGING"
    SHADOW = "SHADOW"
    PRODUCTION = "PRODUCTION"
    ARCHIVED = "ARCHIVED"

    @classmethod
    def parse(cls, value: str) -> Stage:
        """A stage from its name in any case; InvalidArgument names the valid ones."""
        try:
            return cls(value.upper() if isinstance(value, str) else value)
        except ValueError:
            from plinth.errors import InvalidArgument

            raise InvalidArgument(
                f"stage {value!r} is not one of {', '.join(cls.__members__)}"
            ) from None


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a model's input or output: its name and a pandas dtype name
    (``int64``, ``float64``, ``bool``, ``string``, ``datetime64[ns]`` ...)."""

    __pydantic_config__ = _JSON

    name: str
    dtype: str


@dataclass(frozen=True)
class Signature:
    __pydantic_config__ = _JSON

    inputs: list[ColumnSpec]
    outputs: list[ColumnSpec] = field(default_factory=list)

    @property
    def input_names(self) -> list[str]:
        return [c.name for c in self.inputs]


@dataclass(frozen=True)
class Manifest:
    """What a model package says about itself; ``files`` maps each file to its sha256.
    ``pickled``: loading the package unpickles (runs code from whoever saved it); a
    manifest written before the field existed is pickled."""

    __pydantic_config__ = _JSON

    flavor: str
    plinth_version: str
    python_version: str
    requirements: dict[str, str]
    created_at: datetime
    files: dict[str, str]
    signature: Signature | None = None
    model_class: str = ""
    pickled: bool = True


@dataclass(frozen=True)
class RegisteredModel:
    __pydantic_config__ = _JSON

    name: str
    description: str
    owner: str
    created_at: datetime
    updated_at: datetime
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    latest_version: int | None = None
    production_version: int | None = None


@dataclass(frozen=True)
class ModelVersion:
    """An immutable model version: only stage, aliases, tags and description ever change."""

    __pydantic_config__ = _JSON

    model_name: str
    version: int
    stage: Stage
    description: str
    owner: str
    created_at: datetime
    package_uri: str
    manifest: Manifest
    run_id: str | None = None
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    #: sha256 of the package's manifest file as registered (None: registered before it was kept)
    manifest_sha256: str | None = None

    @property
    def signature(self) -> Signature | None:
        return self.manifest.signature

    @property
    def flavor(self) -> str:
        return self.manifest.flavor

    @property
    def uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


@dataclass(frozen=True)
class GateResult:
    __pydantic_config__ = _JSON

    gate: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class HistoryEntry:
    """One append-only row of a model's audit trail."""

    __pydantic_config__ = _JSON

    id: int
    model_name: str
    version: int | None
    action: str  # register | stage | alias | unalias | description | tags | delete | rollback | decision
    actor: str
    at: datetime
    from_value: str | None
    to_value: str | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The outcome of champion/challenger adjudication, recorded in the history either way."""

    __pydantic_config__ = _JSON

    outcome: str  # promoted | kept
    model_name: str
    metric: str
    direction: str
    challenger_run_id: str | None
    challenger_score: float | None
    champion_version: int | None
    champion_score: float | None
    version: int | None  # the newly promoted version, when promoted
    reason: str
    # the version the challenger was registered as (promoted or not), the idempotence key
    # a retried pipeline decides once under, what triggered it, and the scores behind it
    challenger_version: int | None = None
    key: str | None = None
    pipeline_run: int | None = None
    alert_id: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    # set once stored (model_decisions): its row id, who decided and when
    id: int | None = None
    actor: str = ""
    at: datetime | None = None


def dataset_id(training_dataset: Any) -> int | None:
    """The id of a training dataset given as itself, its record or its id."""
    if training_dataset is None or isinstance(training_dataset, int):
        return training_dataset
    found = getattr(training_dataset, "id", None)
    if not isinstance(found, int):
        raise InvalidArgument(
            f"training_dataset must be a training dataset or its id, not {type(training_dataset).__name__}"
        )
    return found
