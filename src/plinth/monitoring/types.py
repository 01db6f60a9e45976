"""Monitors, their evaluations and their alerts, as value objects (checked in
``service.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

_JSON = {"ser_json_inf_nan": "strings"}
# a misspelt field (max_drift_share) is refused, not silently left at its default
_STRICT = {**_JSON, "extra": "forbid"}

MonitorKind = Literal[
    "feature_drift", "input_drift", "prediction_drift", "performance", "estimated_performance"
]
MONITOR_KINDS: tuple[str, ...] = (
    "feature_drift",
    "input_drift",
    "prediction_drift",
    "performance",
    "estimated_performance",
)
DRIFT_KINDS = ("feature_drift", "input_drift", "prediction_drift")
PERFORMANCE_KINDS = ("performance", "estimated_performance")
#: the metrics each performance kind may watch (estimated: binary classifiers, CBPE)
METRICS: dict[str, tuple[str, ...]] = {
    "performance": ("auc", "accuracy", "f1", "log_loss", "rmse", "mae"),
    "estimated_performance": ("auc", "accuracy", "f1"),
}
PRESETS = ("plinth", "evidently")

#: what an evaluation found: ``error`` when the check itself failed (its message stored)
EvaluationStatus = Literal["ok", "breach", "error", "skipped"]
#: an alert's webhook delivery: ``none`` (no webhook), ``pending`` (not tried yet),
#: ``sending`` (a round under way), ``delivered``, ``failed`` (the last round failed;
#: retried until its attempts run out)
Delivery = Literal["none", "pending", "sending", "delivered", "failed"]


@dataclass(frozen=True)
class MonitorSpec:
    """What a monitor checks and its thresholds (stored as JSON in ``monitors.config``).

    ``reference``: a feature group's drift is the verdict stored with each commit against
    the group's own drift reference (``group``; the default ``training`` reads so), or is
    measured against its ``previous`` commit, the last ``days:N`` or a pinned
    ``commit:V``; a model's against its version's ``training`` data. ``window_seconds``: the current window of a model's traffic.
    Drift kinds breach when the share of drifted columns reaches ``max_drifted_share``;
    performance kinds when ``metric`` falls below ``min_value`` (or rises above
    ``max_value``); without either, the version's validation metric -/+ ``tolerance``.
    ``model_version`` None: the model's PRODUCTION version, else its newest."""

    __pydantic_config__ = _STRICT

    reference: str = "training"
    window_seconds: int = 86_400
    columns: list[str] | None = None
    preset: str = "plinth"
    max_drifted_share: float = 0.5
    metric: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    tolerance: float = 0.05
    model_version: int | None = None


@dataclass(frozen=True)
class Monitor:
    """A named check on a feature group (``feature_drift``) or a registered model (the
    other kinds), evaluated every ``schedule_seconds`` and/or on each new commit or score
    job (``on_event``), or only when run by hand. A breach alerts at most once per
    ``cooldown_seconds`` for the same finding; ``webhook_url`` is told of each alert.
    ``last_event``: the newest commit version / score job id evaluated."""

    __pydantic_config__ = _JSON

    name: str
    kind: str
    target: str
    spec: MonitorSpec
    schedule_seconds: int | None
    on_event: bool
    webhook_url: str | None
    cooldown_seconds: int
    enabled: bool
    owner: str
    created_at: datetime
    updated_at: datetime
    last_run_at: datetime | None = None
    last_event: int | None = None


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a monitor. ``trigger``: ``manual``, ``schedule``, ``commit:V`` or
    ``job:N``. ``summary``: one line (the check's, or the error's message); ``result``: the
    check's JSON report (a drift report, performance windows). ``alert_id``: the alert a
    breach raised; ``suppressed_by``: the earlier alert that, within the cooldown, stood for
    the same finding instead."""

    __pydantic_config__ = _JSON

    id: int
    monitor: str
    at: datetime
    status: str
    trigger: str
    summary: str
    result: dict[str, Any] = field(default_factory=dict)
    reference_profile: int | None = None
    current_profile: int | None = None
    event: int | None = None
    alert_id: int | None = None
    suppressed_by: int | None = None


@dataclass(frozen=True)
class Alert:
    """A breach of a monitor: ``open`` until acknowledged. ``delivery``, ``attempts`` (in
    ``rounds``) and ``last_error`` say how telling its webhook went. ``dedup_key``: what breached (the
    drifted columns, the metric); within the cooldown the same key raises no new alert."""

    __pydantic_config__ = _JSON

    id: int
    monitor: str
    evaluation_id: int
    at: datetime
    severity: str
    message: str
    status: str
    delivery: str
    attempts: int
    last_error: str | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    dedup_key: str = ""
    rounds: int = 0


@dataclass(frozen=True)
class LoopAction:
    """What the monitor scheduler did with one monitor in a pass: ``evaluated`` (with the
    evaluation's ``status`` and ``trigger``), ``error`` (it could not even be looked at),
    or ``delivered`` / ``failed`` for an alert's webhook retried."""

    __pydantic_config__ = _JSON

    monitor: str
    action: str
    detail: str
    evaluation_id: int | None = None
    alert_id: int | None = None
