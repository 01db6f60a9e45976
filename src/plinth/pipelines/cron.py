"""Cron expressions (five fields, via croniter) evaluated in a time zone, in ms since the
epoch.

Occurrences are always counted from a schedule's cursor (the last occurrence enqueued),
never from "now plus an interval", so a late or slow scheduler does not drift. Across a
daylight-saving change croniter moves a wall-clock time that does not exist (02:30 on
the night clocks go forward) to the first one that does; the hour that occurs twice (the
night they go back) is run through once, as cron does: an occurrence in its second pass
(the later UTC offset) is passed over, unless the hour field is a wildcard (an hourly
schedule runs every real hour). So '0,30 2 * * *' runs at 02:00 and 02:30 once each.

croniter's random (``R``) and hashed (``H``) fields are refused: each croniter made would
draw or hash its own minute, so a schedule counted from its cursor would not keep one.
"""

from __future__ import annotations

import re
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
# an R or H standing alone in a field (not a letter of a name such as 'mar' or 'thu')
_RANDOM = re.compile(r"(?<![a-z])[hr](?![a-z])", re.IGNORECASE)


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
        if _RANDOM.search(parts[i]):
            raise InvalidArgument(
                f"cron {expr!r}: the {name} field {parts[i]!r} is random or hashed (R, H), "
                f"which is not supported; it takes {accepted}, as numbers, ranges (a-b), "
                "lists (a,b) or steps (*/n)"
            )
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
    it = croniter(expr.strip(), _local(after_ms, tz))
    wildcard_hour = _wildcard_hour(expr)
    found: list[int] = []
    while len(found) < limit:
        at: datetime = it.get_next(datetime)
        ms = int(at.timestamp() * 1000)
        if until_ms is not None and ms > until_ms:
            break
        if ms <= after_ms or (not wildcard_hour and _second_pass(ms, tz)):
            continue  # the repeated hour again, the night clocks go back
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
        if ms > until_ms:
            continue
        if ms <= after_ms:
            return None
        if _wildcard_hour(expr) or not _second_pass(ms, tz):
            return ms
        # the repeated hour's second pass (the night clocks go back): cron runs it once,
        # so the newest occurrence is an earlier one


def _wildcard_hour(expr: str) -> bool:
    text = expr.strip()
    if text.startswith("@"):
        return text.lower() == "@hourly"
    return text.split()[1].startswith("*")


def _second_pass(ms: int, tz: ZoneInfo) -> bool:
    """Whether ``ms`` is in the second pass through a wall-clock hour that occurs twice."""
    return _local(ms, tz).fold == 1


def _local(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)
