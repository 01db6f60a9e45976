"""An online experiment's design and lifecycle, as value objects (checked in ``design.py``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from plinth.abtests.buckets import Allocation

_JSON = {"ser_json_inf_nan": "strings"}
# a schedule's misspelt field (every_second) is refused, not silently left at its default
_STRICT = {**_JSON, "extra": "forbid"}


class Status(enum.StrEnum):
    """draft -> running <-> paused -> stopped; stopped is final."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class Mode(enum.StrEnum):
    AB = "ab"
    SHADOW = "shadow"
    CANARY = "canary"
    BANDIT = "bandit"


class Unit(enum.StrEnum):
    """What is assigned to an arm: every request of a user, of a session, or each request."""

    USER = "user"
    SESSION = "session"
    REQUEST = "request"


class KpiKind(enum.StrEnum):
    PROPORTION = "proportion"  # units with at least one ``event`` / units
    MEAN = "mean"  # sum of ``event`` values / units
    RATIO = "ratio"  # sum of ``event`` values / sum of ``denominator_event`` values


@dataclass(frozen=True)
class Arm:
    """One variant: a model served by ``plinth serve`` (``model_uri``) or any service
    (``url``), exactly one of the two. ``share``: its part of the experiment's units."""

    __pydantic_config__ = _JSON

    name: str
    share: float
    model_uri: str | None = None
    url: str | None = None
    control: bool = False


@dataclass(frozen=True)
class Kpi:
    __pydantic_config__ = _JSON

    name: str
    kind: KpiKind
    event: str
    denominator_event: str | None = None


@dataclass(frozen=True)
class Guardrail:
    """A metric that must not get worse: ``latency_p99``, ``error_rate`` or a KPI's name.
    ``max_drop``: the largest relative drop against control (0.05: 5 %); ``max_value``: an
    absolute ceiling. At least one of the two."""

    __pydantic_config__ = _JSON

    metric: str
    max_drop: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class Canary:
    """A canary's schedule: the challenger's share rises through ``steps`` (increasing,
    each above 0 and at most 1) while no guardrail is broken, from the share it has to the
    next step above it: at once to the first step, then one step each ``every_seconds``.
    A broken guardrail rolls it back (challenger 0, experiment stopped). Design the
    challenger at 0 (or the first step) so that the canary starts small."""

    __pydantic_config__ = _STRICT

    steps: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.2, 0.5])
    every_seconds: float = 3600.0


@dataclass(frozen=True)
class Bandit:
    """A bandit's schedule: every ``every_seconds`` the shares follow each arm's
    probability of being best (Thompson sampling), none below ``floor``."""

    __pydantic_config__ = _STRICT

    every_seconds: float = 3600.0
    floor: float = 0.05


@dataclass(frozen=True)
class Experiment:
    """An A/B experiment between models. ``salt`` is drawn at creation and never changes
    (a unit's arm depends on it); ``allocation`` gives each arm its buckets and follows the
    shares, moving as few units as a change must. In a ``layer``, the experiment takes
    ``traffic`` of the layer's units: while it runs (or is paused) it owns
    ``layer_ranges`` of the buckets of ``bucket(layer_salt, unit)``, disjoint from every
    other experiment of the layer. ``version`` counts the recorded changes. ``canary`` and
    ``bandit``: the schedule the controller follows in those modes (None in the others)."""

    __pydantic_config__ = _JSON

    name: str
    hypothesis: str
    owner: str
    status: Status
    mode: Mode
    unit: Unit
    primary: Kpi
    arms: list[Arm]
    mde: float
    alpha: float
    power: float
    salt: str
    allocation: Allocation
    version: int
    created_at: datetime
    updated_at: datetime
    guardrails: list[Guardrail] = field(default_factory=list)
    layer: str | None = None
    traffic: float = 1.0
    layer_salt: str | None = None
    layer_ranges: list[tuple[int, int]] = field(default_factory=list)
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    canary: Canary | None = None
    bandit: Bandit | None = None

    @property
    def control(self) -> Arm:
        return next(arm for arm in self.arms if arm.control)

    @property
    def shares(self) -> dict[str, float]:
        return {arm.name: arm.share for arm in self.arms}


@dataclass(frozen=True)
class ExperimentVersion:
    """One recorded change: who, when, why, what (field: "before -> after") and the whole
    design as it was afterwards."""

    __pydantic_config__ = _JSON

    name: str
    version: int
    # create | update | start | pause | resume | stop | promote; the controller's:
    # canary-step | rollback | reallocate (and stop)
    action: str
    changed_by: str
    changed_at: datetime
    reason: str
    changes: dict[str, str]
    experiment: Experiment


@dataclass(frozen=True)
class ControllerAction:
    """What one controller pass did to one running experiment: ``action`` is one of
    ``canary-step``, ``rollback``, ``reallocate``, ``stop`` (each recorded as ``version``
    of its history, with these ``changes`` and ``reason``), ``wait`` (nothing due yet, or
    another controller acted first: ``reason`` says which) or ``error`` (``reason`` is the
    error; the other experiments are still controlled)."""

    __pydantic_config__ = _JSON

    experiment: str
    action: str
    reason: str
    changes: dict[str, str] = field(default_factory=dict)
    version: int | None = None
