"""The checks of a monitor's arguments: each refusal an InvalidArgument (or NotFound)
naming the field at fault and what would be right."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection, select

from plinth.errors import InvalidArgument, NotFound
from plinth.monitoring.types import DRIFT_KINDS, METRICS, MONITOR_KINDS, PRESETS, MonitorSpec
from plinth.store.schema import feature_groups, model_versions, registered_models

_SPEC: TypeAdapter[MonitorSpec] = TypeAdapter(MonitorSpec)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_REFERENCE = re.compile(r"group|previous|days:(\d{1,4})|commit:(\d{1,18})")
MIN_SCHEDULE_SECONDS = 60
MAX_SECONDS = 366 * 86_400


def check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"name: monitor name {name!r} is not valid: use 1-200 letters, digits, '_', '-' "
            "or '.', starting with a letter or digit"
        )


def check_kind(kind: str) -> str:
    if kind not in MONITOR_KINDS:
        raise InvalidArgument(f"kind: {kind!r} is not one of {', '.join(MONITOR_KINDS)}")
    return kind


def coerce_spec(spec: MonitorSpec | dict[str, Any] | None, kind: str) -> MonitorSpec:
    """The spec as a MonitorSpec (a dict is checked as the API checks it). A feature group's
    default reference, ``training`` (the dataclass's default), reads ``group``: the
    verdict drift on write stored with each commit, against the group's own reference."""
    if spec is None:
        spec = MonitorSpec()
    elif not isinstance(spec, MonitorSpec):
        try:
            spec = _SPEC.validate_python(spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
            raise InvalidArgument(f"spec{where}: {first['msg']}") from None
    if kind == "feature_drift" and spec.reference == "training":
        spec = replace(spec, reference="group")
    return spec


def check_spec(kind: str, spec: MonitorSpec) -> MonitorSpec:
    """The spec's fields, each checked against the kind: InvalidArgument names the field."""
    _check_reference(kind, spec.reference)
    _check_int(spec.window_seconds, "spec.window_seconds", MIN_SCHEDULE_SECONDS, MAX_SECONDS)
    if spec.columns is not None:
        if not spec.columns or not all(isinstance(c, str) and c for c in spec.columns):
            raise InvalidArgument("spec.columns: name at least one column, or leave it out")
        twice = sorted({c for c in spec.columns if spec.columns.count(c) > 1})
        if twice:
            raise InvalidArgument(f"spec.columns: {', '.join(twice)} named twice")
    if spec.preset not in PRESETS:
        raise InvalidArgument(f"spec.preset: {spec.preset!r} is not one of {', '.join(PRESETS)}")
    share = spec.max_drifted_share
    if not (_finite(share) and 0 < share <= 1):
        raise InvalidArgument(f"spec.max_drifted_share: between 0 (excluded) and 1, got {share!r}")
    if not (_finite(spec.tolerance) and spec.tolerance >= 0):
        raise InvalidArgument(f"spec.tolerance: 0 or more, got {spec.tolerance!r}")
    for field in ("min_value", "max_value"):
        value = getattr(spec, field)
        if value is not None and not _finite(value):
            raise InvalidArgument(f"spec.{field}: a finite number, got {value!r}")
    if (
        spec.min_value is not None
        and spec.max_value is not None
        and spec.min_value >= spec.max_value
    ):
        raise InvalidArgument(
            f"spec.min_value: {spec.min_value!r} must be below spec.max_value {spec.max_value!r}"
        )
    if spec.model_version is not None:
        if kind == "feature_drift":
            raise InvalidArgument("spec.model_version: a feature_drift monitor watches no model")
        _check_int(spec.model_version, "spec.model_version", 1, 2**31 - 1)
    _check_metric(kind, spec)
    return spec


def _check_reference(kind: str, reference: str) -> None:
    if kind == "feature_drift":
        if not isinstance(reference, str) or not _REFERENCE.fullmatch(reference):
            raise InvalidArgument(
                "spec.reference: a feature_drift monitor compares with 'group' (the verdict "
                "of the group's own drift reference, stored with each commit), 'previous' "
                f"(commit), 'days:N' or 'commit:V', got {reference!r}"
            )
        if reference.startswith("days:") and int(reference[5:]) < 1:
            raise InvalidArgument(f"spec.reference: {reference!r}: at least 1 day")
    elif reference != "training":
        raise InvalidArgument(
            f"spec.reference: a {kind} monitor compares with its model version's 'training' "
            f"data, got {reference!r}"
        )


def _check_metric(kind: str, spec: MonitorSpec) -> None:
    if kind in DRIFT_KINDS:
        for field in ("metric", "min_value", "max_value"):
            if getattr(spec, field) is not None:
                raise InvalidArgument(
                    f"spec.{field}: a {kind} monitor has no metric (it breaches on "
                    "spec.max_drifted_share)"
                )
        return
    allowed = METRICS[kind]
    if spec.metric not in allowed:
        raise InvalidArgument(
            f"spec.metric: a {kind} monitor watches one of {', '.join(allowed)}, "
            f"got {spec.metric!r}"
        )


def _check_int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{field}: a whole number from {low} to {high}, got {value!r}")
    return value


def check_schedule(seconds: int | None) -> int | None:
    if seconds is None:
        return None
    return _check_int(seconds, "schedule_seconds", MIN_SCHEDULE_SECONDS, MAX_SECONDS)


def check_cooldown(seconds: int) -> int:
    return _check_int(seconds, "cooldown_seconds", 0, MAX_SECONDS)


def check_flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{field}: true or false, got {value!r}")
    return value


def check_webhook(url: str | None) -> str | None:
    """An http(s) URL with a host, without credentials (put a secret in a path or header
    the receiver checks, not in user:password@)."""
    if url is None:
        return None
    if (
        not isinstance(url, str)
        or len(url) > 2000
        or not url.isascii()
        or any(c.isspace() for c in url)
    ):
        raise InvalidArgument(
            f"webhook_url: {url!r} is not a URL (ASCII, no spaces, 2000 characters at most)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise InvalidArgument(f"webhook_url: {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"webhook_url: {url!r} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(
            "webhook_url: credentials in the URL (user:password@) are refused: they would be "
            "shown and logged; use a secret path or token the receiver checks"
        )
    if parts.fragment:
        raise InvalidArgument(f"webhook_url: {url!r} has a fragment (#...): drop it")
    return url


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def group_of(target: str) -> tuple[str, int | None]:
    """A feature_drift target: ``name`` (its newest version) or ``name:vN``."""
    name, sep, number = target.rpartition(":v")
    if sep and number.isdigit():
        return name, int(number)
    return target, None


def require_group(conn: Connection, target: str, spec: MonitorSpec) -> None:
    name, version = group_of(target)
    fg = feature_groups.c
    query = select(fg.features, fg["keys"], fg.event_time).where(fg.name == name)
    if version is not None:
        query = query.where(fg.version == version)
    row = conn.execute(query.order_by(fg.version.desc()).limit(1)).first()
    if row is None:
        if version is not None and _group_exists(conn, name):
            raise NotFound(f"target: feature group {name!r} has no version {version}")
        raise NotFound(f"target: feature group {name!r} does not exist")
    if spec.columns is None:
        return
    known = {f["name"] for f in json.loads(row.features)} | set(json.loads(row._mapping["keys"]))
    known.add(row.event_time)
    unknown = [c for c in spec.columns if c not in known]
    if unknown:
        raise InvalidArgument(
            f"spec.columns: feature group {name!r} has no column {', '.join(map(repr, unknown))} "
            f"(it has {', '.join(sorted(known))})"
        )


def _group_exists(conn: Connection, name: str) -> bool:
    fg = feature_groups.c
    return conn.execute(select(fg.name).where(fg.name == name).limit(1)).first() is not None


def require_model(conn: Connection, name: str, spec: MonitorSpec, kind: str = "") -> None:
    """The model (and the spec's version) exists; a drift monitor's ``spec.columns`` are
    inputs of the version it checks (``model_version``, else the PRODUCTION one, else the
    newest), when that version has a signature."""
    found = conn.execute(
        select(registered_models.c.name).where(registered_models.c.name == name)
    ).first()
    if found is None:
        raise NotFound(f"target: registered model {name!r} does not exist")
    mv = model_versions.c
    query = select(mv.version, mv.manifest).where(mv.model_name == name)
    if spec.model_version is not None:
        query = query.where(mv.version == spec.model_version)
    chosen = conn.execute(
        query.order_by((mv.stage == "PRODUCTION").desc(), mv.version.desc()).limit(1)
    ).first()
    if chosen is None and spec.model_version is not None:
        raise NotFound(
            f"spec.model_version: registered model {name!r} has no version {spec.model_version}"
        )
    if chosen is not None and kind in DRIFT_KINDS and spec.columns is not None:
        _require_inputs(name, chosen.version, json.loads(chosen.manifest), spec.columns)


def _require_inputs(name: str, version: int, manifest: dict[str, Any], columns: list[str]) -> None:
    signature = manifest.get("signature") or {}
    inputs = [str(c.get("name")) for c in signature.get("inputs") or []]
    if not inputs:
        return  # no signature: the check names what it does not find
    unknown = [c for c in columns if c not in inputs]
    if unknown:
        raise InvalidArgument(
            f"spec.columns: version {version} of registered model {name!r} has no input "
            f"{', '.join(map(repr, unknown))} (its inputs: {', '.join(inputs)})"
        )
