"""The rules of a valid experiment design, and what a change to one changed.

Every message names the field at fault (``arms[1].share``) and says what would be right.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

from plinth.abtests.buckets import BUCKETS
from plinth.abtests.types import (
    Arm,
    Bandit,
    Canary,
    Experiment,
    Guardrail,
    Kpi,
    KpiKind,
    Mode,
    Status,
)
from plinth.errors import Conflict, InvalidArgument
from plinth.registry.uris import parse_model_uri

T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
_METRIC = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")
BUILT_IN_GUARDRAILS = ("latency_p99", "error_rate")
# Shares are floats: a sum of 1 within rounding counts as 1.
_TOLERANCE = 1e-9

_ARMS: TypeAdapter[list[Arm]] = TypeAdapter(list[Arm])
_KPI: TypeAdapter[Kpi] = TypeAdapter(Kpi)
_GUARDRAILS: TypeAdapter[list[Guardrail]] = TypeAdapter(list[Guardrail])
_CANARY: TypeAdapter[Canary] = TypeAdapter(Canary)
_BANDIT: TypeAdapter[Bandit] = TypeAdapter(Bandit)
_EXPERIMENT: TypeAdapter[Experiment] = TypeAdapter(Experiment)


def check_name(name: str, what: str = "experiment name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{what} {name!r} is not valid: use 1-200 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def coerce(adapter: TypeAdapter[T], value: Any, field: str) -> T:
    """``value`` as the type ``adapter`` validates (dicts become dataclasses, names enums);
    InvalidArgument names the field and the part of it at fault."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidArgument(f"{field}{field_path(first['loc'])}: {first['msg']}") from None


def field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's location of an error as it reads in Python: ``.arms[0].share``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def coerce_arms(value: Any) -> list[Arm]:
    return coerce(_ARMS, value, "arms")


def coerce_kpi(value: Any) -> Kpi:
    return coerce(_KPI, value, "primary")


def coerce_guardrails(value: Any) -> list[Guardrail]:
    return coerce(_GUARDRAILS, value or [], "guardrails")


def coerce_canary(value: Any) -> Canary | None:
    return None if value is None else coerce(_CANARY, value, "canary")


def coerce_bandit(value: Any) -> Bandit | None:
    return None if value is None else coerce(_BANDIT, value, "bandit")


# The schedules refuse unknown fields as input (a misspelt every_second); a stored design
# is read tolerantly, so a field a newer replica added does not make it unreadable here.
_SCHEDULE_FIELDS = {
    "canary": set(Canary.__dataclass_fields__),
    "bandit": set(Bandit.__dataclass_fields__),
}


def read_config(text: str | bytes) -> Experiment:
    """A stored design, ignoring the fields of its schedules this version does not know."""
    config = json.loads(text)
    if isinstance(config, dict):
        for key, known in _SCHEDULE_FIELDS.items():
            if isinstance(config.get(key), dict):
                config[key] = {k: v for k, v in config[key].items() if k in known}
    return _EXPERIMENT.validate_json(json.dumps(config))


def with_schedule(exp: Experiment) -> Experiment:
    """``exp`` with the default schedule of its mode (a canary's steps, a bandit's
    re-allocation) where none was given."""
    if exp.mode is Mode.CANARY and exp.canary is None:
        return replace(exp, canary=Canary())
    if exp.mode is Mode.BANDIT and exp.bandit is None:
        return replace(exp, bandit=Bandit())
    return exp


def check_design(exp: Experiment) -> Experiment:
    """Raise InvalidArgument at the first rule ``exp`` breaks; return it unchanged."""
    check_name(exp.name)
    if not isinstance(exp.hypothesis, str) or not exp.hypothesis.strip():
        raise InvalidArgument("hypothesis: say what the experiment should show (it is empty)")
    check_arms(exp.arms)
    _check_kpi(exp.primary, "primary")
    _check_guardrails(exp.guardrails)
    _check_open_interval(exp.alpha, "alpha")
    _check_open_interval(exp.power, "power")
    if not _finite(exp.mde) or exp.mde <= 0:
        raise InvalidArgument(
            f"mde: the minimum detectable effect must be a number above 0, got {exp.mde!r}"
        )
    if exp.primary.kind is KpiKind.PROPORTION:
        _check_rate_difference(exp.mde)
    _check_schedules(exp)
    if exp.layer is not None:
        check_name(exp.layer, "layer")
    if not _finite(exp.traffic) or not 0 < exp.traffic <= 1:
        raise InvalidArgument(
            f"traffic: the share of its layer's units must be above 0 and at most 1, "
            f"got {exp.traffic!r}"
        )
    if round(exp.traffic * BUCKETS) < 1:
        raise InvalidArgument(f"traffic: at least one bucket (0.0001), got {exp.traffic!r}")
    if abs(exp.traffic * BUCKETS - round(exp.traffic * BUCKETS)) > 1e-6:
        # whole buckets: the experiments of a layer then keep theirs exactly as others come
        raise InvalidArgument(
            f"traffic: {exp.traffic!r} is not a whole number of buckets: use steps of 0.0001"
        )
    if exp.layer is None and exp.traffic != 1:
        raise InvalidArgument(
            f"traffic: {exp.traffic} is a share of a layer's units: give a layer, or leave "
            "traffic at 1 (every unit)"
        )
    return exp


def _check_rate_difference(mde: float) -> None:
    # a proportion's mde is an absolute difference in rates; one so small that Cohen's h
    # rounds to 0 (even between rates around one half) can be planned for by no sample
    if mde >= 1:
        return  # no pair of rates is that far apart: the plan says so, naming the baseline
    h = 2 * math.asin(math.sqrt(0.5 + mde / 2)) - 2 * math.asin(math.sqrt(0.5 - mde / 2))
    if not h > 1e-12:
        raise InvalidArgument(
            f"mde: {mde!r} is too small an effect to detect (its effect size, Cohen's h, "
            f"rounds to {h:.3g}): give a difference in rates such as 0.001"
        )


def check_arms(arms: list[Arm]) -> None:
    if len(arms) < 2:
        raise InvalidArgument(f"arms: an experiment needs at least 2 arms, got {len(arms)}")
    seen: set[str] = set()
    for at, arm in enumerate(arms):
        where = f"arms[{at}]"
        check_name(arm.name, f"{where}.name")
        if arm.name in seen:
            raise InvalidArgument(f"{where}.name: {arm.name!r} names two arms; names are unique")
        seen.add(arm.name)
        _check_target(arm, where)
        if not _finite(arm.share) or not 0 <= arm.share <= 1:
            raise InvalidArgument(f"{where}.share: must be between 0 and 1, got {arm.share!r}")
    controls = [arm.name for arm in arms if arm.control]
    if len(controls) != 1:
        raise InvalidArgument(
            "arms: exactly one arm is the control (control: true), "
            + (f"got {len(controls)}: {', '.join(controls)}" if controls else "got none")
        )
    total = sum(arm.share for arm in arms)
    if abs(total - 1) > _TOLERANCE:
        raise InvalidArgument(f"arms: the shares must add up to 1, they add up to {total:.6g}")


def _check_schedules(exp: Experiment) -> None:
    if exp.canary is not None:
        if exp.mode is not Mode.CANARY:
            raise InvalidArgument(
                f"canary: only a canary experiment has a canary schedule (the mode is "
                f"{exp.mode}): set mode to canary or leave canary out"
            )
        _check_canary(exp.canary)
    if exp.mode is Mode.CANARY and len(exp.arms) != 2:
        raise InvalidArgument(
            f"arms: a canary has two arms, the control and the challenger whose share rises, "
            f"got {len(exp.arms)}"
        )
    if exp.status is Status.DRAFT:
        check_canary_start(exp)
    if exp.bandit is not None:
        if exp.mode is not Mode.BANDIT:
            raise InvalidArgument(
                f"bandit: only a bandit experiment has a bandit schedule (the mode is "
                f"{exp.mode}): set mode to bandit or leave bandit out"
            )
        _check_every(exp.bandit.every_seconds, "bandit.every_seconds")
        most = 1 / len(exp.arms)
        floor = exp.bandit.floor
        if not _finite(floor) or not 0 <= floor <= most + _TOLERANCE:
            raise InvalidArgument(
                f"bandit.floor: the least share an arm keeps, between 0 and 1/arms "
                f"({most:.4g} for {len(exp.arms)} arms), got {floor!r}"
            )
        # an arm under the floor would get too few units for its posterior (at 0, none:
        # the bandit would wait for its results for ever); one bucket of rounding is allowed
        # (the controller's shares are whole buckets, the floor rounded up to one)
        for at, arm in enumerate(exp.arms):
            if arm.share < floor - 1 / BUCKETS:
                raise InvalidArgument(
                    f"arms[{at}].share: a bandit keeps every arm at or above its floor "
                    f"(bandit.floor {floor:g}), arm {arm.name!r} has {arm.share:g}: raise its "
                    "share or lower the floor"
                )


def check_canary_start(exp: Experiment) -> None:
    """A canary starts small: its challenger's share at most its first step (the
    controller then takes the steps; one above the first would serve that share at once
    and have no step left to take)."""
    if exp.mode is not Mode.CANARY:
        return
    first = (exp.canary or Canary()).steps[0]
    for at, arm in enumerate(exp.arms):
        if not arm.control and arm.share > first + _TOLERANCE:
            raise InvalidArgument(
                f"arms[{at}].share: a canary's challenger {arm.name!r} starts at most at its "
                f"first step (canary.steps[0] {first:g}), got {arm.share:g}: give it 0 (and "
                f"the control {exp.control.name!r} 1), the controller takes the steps"
            )


def _check_canary(canary: Canary) -> None:
    if not canary.steps:
        raise InvalidArgument("canary.steps: give the challenger's shares, e.g. [0.01, 0.05, 0.2]")
    previous = 0.0
    for at, step in enumerate(canary.steps):
        if not _finite(step) or not 0 < step <= 1:
            raise InvalidArgument(
                f"canary.steps[{at}]: a share above 0 and at most 1, got {step!r}"
            )
        if step <= previous:
            raise InvalidArgument(
                f"canary.steps[{at}]: the steps must increase, {step:g} follows {previous:g}"
            )
        previous = step
    _check_every(canary.every_seconds, "canary.every_seconds")


# A schedule's period: not so short that every controller pass records a version, not so
# long that a due time overflows the calendar.
MIN_EVERY_SECONDS = 60.0
MAX_EVERY_SECONDS = 365 * 86_400.0


def _check_every(value: float, field: str) -> None:
    if not _finite(value) or not MIN_EVERY_SECONDS <= value <= MAX_EVERY_SECONDS:
        raise InvalidArgument(
            f"{field}: the seconds between two steps, from {MIN_EVERY_SECONDS:g} (a minute) "
            f"to {MAX_EVERY_SECONDS:.0f} (365 days), got {value!r}"
        )


def _check_target(arm: Arm, where: str) -> None:
    if (arm.model_uri is None) == (arm.url is None):
        raise InvalidArgument(
            f"{where}: give exactly one of model_uri (models:/churn/3, models:/churn@champion) "
            "or url (any service)"
        )
    if arm.model_uri is not None:
        try:
            parse_model_uri(arm.model_uri)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}.model_uri: {exc.message}") from None
    elif (problem := arm_url_problem(str(arm.url))) is not None:
        raise InvalidArgument(f"{where}.url: {arm.url!r:.200} {problem}")


MAX_URL_CHARS = 2_000


def arm_url_problem(url: str) -> str | None:
    """Why the router could not call ``url`` (POST to its path + ``/predict``), or None."""
    if len(url) > MAX_URL_CHARS:
        return f"is over {MAX_URL_CHARS:,} characters"
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        return "has spaces, control or non-ASCII characters (percent-encode them)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"is not a URL the router can call ({e})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http:// or https:// URL"
    if port == 0:
        return "has port 0: give a port from 1 to 65535"
    if "?" in url or "#" in url:
        return "has a query or fragment: the router POSTs to the URL's path + /predict"
    return None


def _check_kpi(kpi: Kpi, where: str) -> None:
    _check_metric(kpi.name, f"{where}.name")
    _check_metric(kpi.event, f"{where}.event")
    if kpi.kind is KpiKind.RATIO:
        if kpi.denominator_event is None:
            raise InvalidArgument(
                f"{where}.denominator_event: a ratio KPI divides the sum of {kpi.event!r} by "
                "the sum of another event: name it"
            )
        _check_metric(kpi.denominator_event, f"{where}.denominator_event")
    elif kpi.denominator_event is not None:
        raise InvalidArgument(
            f"{where}.denominator_event: only a ratio KPI has one ({kpi.name!r} is a "
            f"{kpi.kind.value})"
        )


def _check_guardrails(guardrails: list[Guardrail]) -> None:
    seen: set[str] = set()
    for at, rail in enumerate(guardrails):
        where = f"guardrails[{at}]"
        _check_metric(rail.metric, f"{where}.metric")
        if rail.metric in seen:
            raise InvalidArgument(f"{where}.metric: {rail.metric!r} has two guardrails")
        seen.add(rail.metric)
        if rail.max_drop is None and rail.max_value is None:
            raise InvalidArgument(
                f"{where}: give max_drop (relative, 0.05 for 5 %) or max_value (a ceiling)"
            )
        if rail.max_drop is not None and (not _finite(rail.max_drop) or rail.max_drop <= 0):
            raise InvalidArgument(
                f"{where}.max_drop: a relative drop above 0 (0.05 for 5 %), got {rail.max_drop!r}"
            )
        if rail.max_value is not None and not _finite(rail.max_value):
            raise InvalidArgument(f"{where}.max_value: must be a finite number")


def _check_metric(name: str, where: str) -> None:
    if not isinstance(name, str) or not _METRIC.fullmatch(name):
        raise InvalidArgument(
            f"{where}: {name!r} is not valid: use 1-100 letters, digits, '_', '-' or '.', "
            "starting with a letter"
        )


def _check_open_interval(value: float, field: str) -> None:
    if not _finite(value) or not 0 < value < 1:
        raise InvalidArgument(f"{field}: must be between 0 and 1 (exclusive), got {value!r}")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- lifecycle -------------------------------------------------------------------------------

# action -> (the statuses it starts from, the status it leads to)
TRANSITIONS: dict[str, tuple[tuple[Status, ...], Status]] = {
    "start": ((Status.DRAFT,), Status.RUNNING),
    "pause": ((Status.RUNNING,), Status.PAUSED),
    "resume": ((Status.PAUSED,), Status.RUNNING),
    "stop": ((Status.RUNNING, Status.PAUSED), Status.STOPPED),
}
_HINTS = {
    (Status.PAUSED, "start"): "it was started already: resume it",
    (Status.RUNNING, "resume"): "it is running already",
    (Status.DRAFT, "pause"): "it has not started: start it first",
    (Status.DRAFT, "resume"): "it has not started: start it first",
    (Status.DRAFT, "stop"): "it has not started, there is nothing to stop",
}


def next_status(exp: Experiment, action: str) -> Status:
    sources, target = TRANSITIONS[action]
    if exp.status not in sources:
        if exp.status is Status.STOPPED:
            hint = "a stopped experiment is final: create a new one"
        else:
            hint = _HINTS.get((exp.status, action), f"only a {' or '.join(sources)} one can")
        raise Conflict(f"cannot {action} A/B experiment {exp.name!r}: it is {exp.status}; {hint}")
    return target


# Fields a started experiment may still change; the rest would change what it measures.
CHANGEABLE_WHILE_STARTED = {"hypothesis", "guardrails", "shares", "canary", "bandit"}


def check_change_allowed(before: Experiment, after: Experiment, changes: dict[str, str]) -> None:
    if before.status is Status.STOPPED:
        raise Conflict(f"A/B experiment {before.name!r} is stopped: it cannot change any more")
    if before.status is Status.DRAFT:
        return
    refused = sorted(set(changes) - CHANGEABLE_WHILE_STARTED)
    if refused:
        raise Conflict(
            f"A/B experiment {before.name!r} is {before.status}: only its shares, guardrails "
            f"and hypothesis (and a canary's or bandit's schedule) may change, not "
            f"{', '.join(refused)} (stop it and create a new one)"
        )


# -- what changed ----------------------------------------------------------------------------

_SCALARS = ("hypothesis", "mode", "unit", "mde", "alpha", "power", "layer", "traffic", "status")


def changes_between(before: Experiment, after: Experiment) -> dict[str, str]:
    """Each changed field and how: ``{"shares": "a 0.5 -> 0.4, b 0.5 -> 0.6"}``. Arms that
    differ only in their shares count as a change of ``shares``."""
    found: dict[str, str] = {}
    for name in _SCALARS:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            found[name] = f"{_shown(old)} -> {_shown(new)}"
    if _targets(before.arms) != _targets(after.arms):
        found["arms"] = (
            f"{', '.join(_arm_text(a) for a in before.arms)} -> "
            f"{', '.join(_arm_text(a) for a in after.arms)}"
        )
    elif before.shares != after.shares:
        found["shares"] = ", ".join(
            f"{arm} {before.shares[arm]:g} -> {share:g}"
            for arm, share in after.shares.items()
            if before.shares[arm] != share
        )
    shows: tuple[tuple[str, Callable[[Any], str]], ...] = (
        ("primary", _kpi_text),
        ("guardrails", _guardrails_text),
        ("canary", _canary_text),
        ("bandit", _bandit_text),
    )
    for name, show in shows:
        old_value, new_value = getattr(before, name), getattr(after, name)
        if old_value != new_value:
            found[name] = f"{show(old_value)} -> {show(new_value)}"
    return found


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _targets(arms: list[Arm]) -> list[tuple[str, str | None, str | None, bool]]:
    return [(a.name, a.model_uri, a.url, a.control) for a in arms]


def _arm_text(arm: Arm) -> str:
    role = " (control)" if arm.control else ""
    return f"{arm.name}{role}={arm.model_uri or arm.url} {arm.share:g}"


def _kpi_text(kpi: Kpi) -> str:
    over = f"/{kpi.denominator_event}" if kpi.denominator_event else ""
    return f"{kpi.name} ({kpi.kind} of {kpi.event}{over})"


def _guardrails_text(rails: list[Guardrail]) -> str:
    return "; ".join(_rail_text(r) for r in rails) or "none"


def _canary_text(canary: Canary | None) -> str:
    if canary is None:
        return "none"
    return f"steps {', '.join(f'{s:g}' for s in canary.steps)} every {canary.every_seconds:g} s"


def _bandit_text(bandit: Bandit | None) -> str:
    if bandit is None:
        return "none"
    return f"every {bandit.every_seconds:g} s, floor {bandit.floor:g}"


def _rail_text(rail: Guardrail) -> str:
    bounds = []
    if rail.max_drop is not None:
        bounds.append(f"drop <= {rail.max_drop:g}")
    if rail.max_value is not None:
        bounds.append(f"<= {rail.max_value:g}")
    return f"{rail.metric} {' and '.join(bounds)}"


Mutation = Callable[[Experiment], Experiment]
