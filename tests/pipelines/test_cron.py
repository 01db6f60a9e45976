from __future__ import annotations

from datetime import UTC, datetime

import pytest

from plinth.errors import InvalidArgument
from plinth.pipelines.cron import check_cron, latest_at, next_at, occurrences


def ms(*when: int) -> int:
    return int(datetime(*when, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def utc(at: int) -> str:
    return datetime.fromtimestamp(at / 1000, UTC).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("* * *", "3 field(s); expected five"),
        ("* * * * * *", "6 field(s); expected five"),
        ("61 * * * *", "the minute field '61' is not valid; it takes 0-59"),
        ("0 24 * * *", "the hour field '24'"),
        ("0 0 0 * *", "the day-of-month field '0'"),
        ("0 0 * 13 *", "the month field '13'"),
        ("0 0 * * 9", "the day-of-week field '9'"),
        ("*/0 * * * *", "the minute field '*/0'"),
        ("every day", "2 field(s)"),
        ("", "expected five fields"),
        ("@sometimes", "unknown alias"),
        ("0 0 31 2 *", "never occurs"),
        ("R * * * *", "the minute field 'R' is random or hashed"),
        ("0 r * * *", "the hour field 'r' is random or hashed"),
        ("H 3 * * *", "the minute field 'H' is random or hashed"),
        ("H(0-29)/5 * * * *", "the minute field 'H(0-29)/5' is random or hashed"),
        ("0 0 * mar,R *", "the month field 'mar,R' is random or hashed"),
        ("0 0 * * thu-H", "the day-of-week field 'thu-H' is random or hashed"),
    ],
)
def test_a_bad_cron_string_is_refused_naming_what_is_wrong(expr: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_cron(expr)
    assert repr(expr) in refused.value.message
    assert says in refused.value.message


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="time zone 'Mars/Olympus' is not known"):
        check_cron("0 3 * * *", "Mars/Olympus")


def test_good_cron_strings_pass() -> None:
    for expr in ("0 3 * * *", "*/15 9-17 * * mon-fri", "0 0 1 jan,mar *", "0 0 * * thu", "@daily"):
        check_cron(expr, "Europe/Berlin")


def test_occurrences_are_counted_from_the_cursor() -> None:
    after = ms(2026, 1, 1, 3)  # an occurrence itself: the next one is a day on
    assert [utc(a) for a in occurrences("0 3 * * *", "UTC", after, ms(2026, 1, 4), 10)] == [
        "2026-01-02 03:00",
        "2026-01-03 03:00",
    ]
    assert len(occurrences("* * * * *", "UTC", after, None, 7)) == 7
    assert next_at("0 3 * * *", "UTC", after + 1) == ms(2026, 1, 2, 3)


def test_a_daily_time_keeps_its_local_hour_across_dst() -> None:
    # New York: clocks go forward on 8 March 2026, back on 1 November 2026
    spring = occurrences("0 9 * * *", "America/New_York", ms(2026, 3, 6), ms(2026, 3, 10), 10)
    assert [utc(a) for a in spring] == [
        "2026-03-06 14:00",
        "2026-03-07 14:00",
        "2026-03-08 13:00",
        "2026-03-09 13:00",
    ]
    autumn = occurrences("0 9 * * *", "America/New_York", ms(2026, 10, 31), ms(2026, 11, 3), 10)
    assert [utc(a) for a in autumn] == [
        "2026-10-31 13:00",
        "2026-11-01 14:00",
        "2026-11-02 14:00",
    ]


def test_a_missing_or_repeated_wall_clock_time_runs_once() -> None:
    # Berlin: 02:30 does not exist on 29 March 2026 and occurs twice on 25 October 2026
    spring = occurrences("30 2 * * *", "Europe/Berlin", ms(2026, 3, 28), ms(2026, 3, 30, 12), 10)
    assert [utc(a) for a in spring] == [
        "2026-03-28 01:30",
        "2026-03-29 01:00",  # 03:00 CEST, the first time that exists
        "2026-03-30 00:30",
    ]
    autumn = occurrences("30 2 * * *", "Europe/Berlin", ms(2026, 10, 24), ms(2026, 10, 26, 12), 10)
    assert [utc(a) for a in autumn] == ["2026-10-24 00:30", "2026-10-25 00:30", "2026-10-26 01:30"]
    # the newest occurrence after the first 02:30 is the repeated one: not run again
    assert (
        latest_at("30 2 * * *", "Europe/Berlin", ms(2026, 10, 25, 0, 30), ms(2026, 10, 25, 2))
        is None
    )
    # an hourly schedule runs every real hour, the repeated one included
    hourly = occurrences(
        "0 * * * *", "Europe/Berlin", ms(2026, 10, 24, 23), ms(2026, 10, 25, 2), 10
    )
    assert [utc(a) for a in hourly] == ["2026-10-25 00:00", "2026-10-25 01:00", "2026-10-25 02:00"]


def test_latest_is_the_newest_occurrence_in_the_window() -> None:
    assert latest_at("0 * * * *", "UTC", ms(2026, 1, 1), ms(2026, 1, 1, 5, 30)) == ms(2026, 1, 1, 5)
    assert latest_at("0 * * * *", "UTC", ms(2026, 1, 1), ms(2026, 1, 1, 5)) == ms(2026, 1, 1, 5)
    assert latest_at("0 * * * *", "UTC", ms(2026, 1, 1, 5), ms(2026, 1, 1, 5, 59)) is None


def test_the_repeated_hour_runs_once_when_the_hour_is_not_a_wildcard() -> None:
    # Berlin, 25 October 2026: 02:00-02:59 occurs at 00:xx UTC (CEST) and 01:xx UTC (CET)
    tz = "Europe/Berlin"
    after, until = ms(2026, 10, 24, 22), ms(2026, 10, 25, 4)
    twice = occurrences("0,30 2 * * *", tz, after, until, 10)
    assert [utc(a) for a in twice] == ["2026-10-25 00:00", "2026-10-25 00:30"]
    spread = occurrences("*/30 1-3 * * *", tz, after, until, 10)
    assert [utc(a) for a in spread] == [
        "2026-10-24 23:00",  # 01:00 CEST
        "2026-10-24 23:30",
        "2026-10-25 00:00",  # 02:00 CEST
        "2026-10-25 00:30",
        "2026-10-25 02:00",  # 03:00 CET: the second 02:00 and 02:30 are passed over
        "2026-10-25 02:30",
    ]
    # "latest", a tick every 5 minutes through the night: each wall-clock time once
    cursor, seen = after, []
    for tick in range(after, until, 5 * 60_000):
        found = latest_at("0,30 2 * * *", tz, cursor, tick)
        if found is not None:
            seen.append(utc(found))
            cursor = found
    assert seen == ["2026-10-25 00:00", "2026-10-25 00:30"]
    # a late tick in the second pass still finds the newest first-pass occurrence
    assert latest_at("0,30 2 * * *", tz, after, ms(2026, 10, 25, 1, 45)) == ms(2026, 10, 25, 0, 30)
    # @hourly is hourly: every real hour, the repeated one included
    hourly = occurrences("@hourly", tz, ms(2026, 10, 24, 23), ms(2026, 10, 25, 2), 10)
    assert [utc(a) for a in hourly] == ["2026-10-25 00:00", "2026-10-25 01:00", "2026-10-25 02:00"]
