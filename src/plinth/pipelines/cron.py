"""Cron expressions (five fields, via croniter) evaluated in a time zone, in ms since the
epoch.

Occurrences are always counted from a schedule's cursor (the last occurrence enqueued),
never from "now plus an interval", so a late or slow scheduler does not drift. Across a
daylight-saving change croniter moves a wall-clock time that does not exist (02:30 on
the night clocks go forward) to the first one that does; a time that occurs twice (the
night they go back) runs once, as cron does, unless the hour field is a wildcard (an
hourly schedule runs every real hour).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import (  # type: ignore[import-untyped]
    CroniterBadDateError,
    CroniterError,
    croniter,
)

from plinth.errors import InvalidArgument

FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-6 or sun-sat"),
)
ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def check_cron(expr: str, timezone: str = "UTC") -> None:
    """Refuse an expression croniter cannot use, or a time zone that does not exist, with
    a message naming the field at fault and what it accepts."""
    zone(timezone)
    if not isinstance(expr, str) or not expr.strip():
        raise InvalidArgument(
            f"cron {expr!r}: expected five fields 'minute hour day-of-month month "
            "day-of-week', e.g. '0 3 * * *'"
        )
    text = expr.strip()
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise InvalidArgument(f"cron {expr!r}: unknown alias; expected one of {ALIASES}")
        return
    parts = text.split()
    if len(parts) != len(FIELDS):
        raise InvalidArgument(
            f"cron {expr!r}: {len(parts)} field(s); expected five, 'minute hour "
            "day-of-month month day-of-week', e.g. '0 3 * * *'"
        )
    for i, (name, accepted) in enumerate(FIELDS):
        alone = ["*"] * len(FIELDS)
        alone[i] = parts[i]
        if not croniter.is_valid(" ".join(alone)):
            raise InvalidArgument(
                f"cron {expr!r}: the {name} field {parts[i]!r} is not valid; it takes "
                f"{accepted}, as numbers, ranges (a-b), lists (a,b) or steps (*/n)"
            )
    try:
        croniter(text, datetime.now(UTC)).get_next(datetime)
    except (CroniterError, CroniterBadDateError, ValueError) as exc:
        raise InvalidArgument(f"cron {expr!r}: never occurs ({exc})") from None


def zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidArgument(
            f"time zone {timezone!r} is not known; expected an IANA name such as "
            "'UTC' or 'Europe/Berlin'"
        ) from None


def next_at(expr: str, timezone: str, after_ms: int) -> int:
    """The first occurrence strictly after ``after_ms``."""
    found = occurrences(expr, timezone, after_ms, None, 1)
    return found[0]


def occurrences(
    expr: str, timezone: str, after_ms: int, until_ms: int | None, limit: int
) -> list[int]:
    """Up to ``limit`` occurrences in (``after_ms``, ``until_ms``], oldest first
    (``until_ms`` None: no end)."""
    check_cron(expr, timezone)
    tz = zone(timezone)
    start = _local(after_ms, tz)
    it = croniter(expr.strip(), start)
    wildcard_hour = not expr.strip().startswith("@") and expr.split()[1].startswith("*")
    seen = start.replace(tzinfo=None)
    found: list[int] = []
    while len(found) < limit:
        at: datetime = it.get_next(datetime)
        ms = int(at.timestamp() * 1000)
        if until_ms is not None and ms > until_ms:
            break
        wall = at.replace(tzinfo=None)
        if ms <= after_ms or (wall == seen and not wildcard_hour):
            continue  # the same wall-clock time again, the night clocks go back
        seen = wall
        found.append(ms)
    return found


def latest_at(expr: str, timezone: str, after_ms: int, until_ms: int) -> int | None:
    """The newest occurrence in (``after_ms``, ``until_ms``]; None when there is none."""
    check_cron(expr, timezone)
    tz = zone(timezone)
    # croniter counts in whole seconds: start a second on so that an occurrence at
    # ``until_ms`` itself is found
    it = croniter(expr.strip(), _local(until_ms + 1000, tz))
    while True:
        at: datetime = it.get_prev(datetime)
        ms = int(at.timestamp() * 1000)
        if ms <= until_ms:
            break
    if ms <= after_ms:
        return None
    # the second of a repeated wall-clock time, the first one being the cursor: cron
    # runs that time once
    return ms if _repeats_ok(expr, tz, after_ms, ms) else None


def _repeats_ok(expr: str, tz: ZoneInfo, after_ms: int, ms: int) -> bool:
    wildcard_hour = not expr.strip().startswith("@") and expr.split()[1].startswith("*")
    same = _local(after_ms, tz).replace(tzinfo=None) == _local(ms, tz).replace(tzinfo=None)
    return wildcard_hour or not same


def _local(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)
