"""Time-of-day schedules: shifts, midnight crossings, holidays, zones, next change, parse errors."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.cc.schedule import Schedule, parse_schedules

SH = ZoneInfo("Asia/Shanghai")

THREE_SHIFTS: dict[str, Any] = {
    "timezone": "Asia/Shanghai",
    "shifts": {"morning": "08:00-16:00", "evening": "16:00-24:00", "night": "00:00-08:00"},
    "week": {"mon-sun": ["morning", "evening", "night"]},
}

OFFICE: dict[str, Any] = {
    "timezone": "Asia/Shanghai",
    "shifts": {
        "day": {"start": "09:00", "end": "18:00"},
        "late": "22:00-06:00",  # crosses midnight
    },
    "week": {"mon-fri": ["day", "late"], "sat": ["10:00-12:00"]},
    "holidays": [
        {
            "name": "National Day",
            "from": "2025-10-01",
            "to": "2025-10-07",
            "hours": ["10:00-14:00"],
        },
        {"name": "New Year", "date": "2026-01-01"},
    ],
}


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)  # type: ignore[arg-type,misc]


@pytest.mark.parametrize(
    ("when", "shift"),
    [
        (at(2025, 11, 25, 0, 0), "night"),
        (at(2025, 11, 25, 7, 59, 59), "night"),
        (at(2025, 11, 25, 8, 0), "morning"),
        (at(2025, 11, 25, 15, 30), "morning"),
        (at(2025, 11, 25, 16, 0), "evening"),
        (at(2025, 11, 25, 23, 59, 59), "evening"),
        (at(2025, 11, 30, 3, 0), "night"),  # Sunday too: 24×7
    ],
)
def test_three_shifts_around_the_clock(when: datetime, shift: str) -> None:
    s = Schedule.parse(THREE_SHIFTS)
    assert s.current_shift(when) == shift
    assert s.is_open(when)


def test_shift_crossing_midnight_belongs_to_its_start_day() -> None:
    s = Schedule.parse(OFFICE)
    assert s.current_shift(at(2025, 11, 24, 23, 0)) == "late"  # Monday 23:00
    assert s.current_shift(at(2025, 11, 25, 5, 59)) == "late"  # Tuesday 05:59, Monday's shift
    assert s.current_shift(at(2025, 11, 25, 6, 0)) is None
    assert s.current_shift(at(2025, 11, 29, 3, 0)) == "late"  # Saturday 03:00: Friday's shift
    assert s.current_shift(at(2025, 11, 30, 3, 0)) is None  # Sunday 03:00: Saturday has none
    # Wednesday 1 Oct 2025 is a holiday, but Tuesday's late shift still runs into it.
    assert s.current_shift(at(2025, 10, 1, 2, 0)) == "late"
    assert s.current_shift(at(2025, 10, 1, 23, 0)) is None  # no late shift on the holiday


def test_holidays_with_their_own_hours_or_closed() -> None:
    s = Schedule.parse(OFFICE)
    assert s.current_shift(at(2025, 10, 3, 11, 0)) == "10:00-14:00"
    assert not s.is_open(at(2025, 10, 3, 9, 30))
    assert not s.is_open(at(2026, 1, 1, 10, 0))  # New Year: closed all day
    assert s.is_open(at(2026, 1, 2, 10, 0))  # Friday after
    assert s.current_shift(at(2025, 11, 29, 11, 0)) == "10:00-12:00"  # Saturday inline hours
    assert [h.name for h in s.holidays] == ["National Day", "New Year"]
    assert s.holidays[0].last == date(2025, 10, 7)


def test_zones_and_naive_datetimes() -> None:
    s = Schedule.parse(OFFICE)
    # 01:30 UTC = 09:30 in Shanghai, a Tuesday
    assert s.current_shift(datetime(2025, 11, 25, 1, 30, tzinfo=UTC)) == "day"
    assert s.current_shift(datetime(2025, 11, 25, 9, 30)) == "day"  # naive: Shanghai wall time
    ny = datetime(2025, 11, 24, 20, 30, tzinfo=ZoneInfo("America/New_York"))  # = Tue 09:30 SH
    assert s.current_shift(ny) == "day"


def test_next_change() -> None:
    s = Schedule.parse(OFFICE)
    assert s.next_change(at(2025, 11, 25, 10, 0)) == at(2025, 11, 25, 18, 0)
    assert s.next_change(at(2025, 11, 25, 18, 0)) == at(2025, 11, 25, 22, 0)
    assert s.next_change(at(2025, 11, 25, 23, 0)) == at(2025, 11, 26, 6, 0)
    # Friday night → Saturday 10:00 inline hours
    assert s.next_change(at(2025, 11, 29, 7, 0)) == at(2025, 11, 29, 10, 0)
    # Saturday noon → closed until Monday 09:00
    assert s.next_change(at(2025, 11, 29, 12, 0)) == at(2025, 12, 1, 9, 0)
    change = s.next_change(datetime(2025, 11, 25, 2, 0, tzinfo=UTC))
    assert change is not None and change.tzinfo == SH and change == at(2025, 11, 25, 18, 0)


def test_next_change_between_abutting_shifts_and_never() -> None:
    s = Schedule.parse(THREE_SHIFTS)
    assert s.next_change(at(2025, 11, 25, 9, 0)) == at(2025, 11, 25, 16, 0)
    assert s.next_change(at(2025, 11, 25, 23, 0)) == at(2025, 11, 26, 0, 0)
    assert Schedule.always_open("Asia/Shanghai").next_change(at(2025, 1, 1)) is None
    closed = Schedule.parse({"timezone": "UTC"})
    assert closed.next_change(at(2025, 1, 1)) is None and not closed.is_open(at(2025, 1, 1))


def test_daylight_saving_is_handled_in_utc() -> None:
    berlin = Schedule.parse(
        {"timezone": "Europe/Berlin", "shifts": {"n": "00:00-06:00"}, "week": {"sun": ["n"]}}
    )
    # 30 Mar 2025: clocks go 02:00 → 03:00, so the shift is 5 hours long.
    start = datetime(2025, 3, 30, 0, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    end = berlin.next_change(start)
    assert end is not None
    assert (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() == 5 * 3600


def test_whole_day_and_24_00() -> None:
    s = Schedule.parse(
        {"timezone": "UTC", "shifts": {"all": "07:00-07:00", "eod": "20:00-24:00"},
         "week": {"mon": ["all"], "tue": ["eod"]}}
    )  # fmt: skip
    utc = ZoneInfo("UTC")
    assert s.current_shift(datetime(2025, 11, 25, 6, 59, tzinfo=utc)) == "all"  # Tue, Mon's shift
    assert s.current_shift(datetime(2025, 11, 25, 7, 0, tzinfo=utc)) is None
    assert s.current_shift(datetime(2025, 11, 25, 23, 59, tzinfo=utc)) == "eod"
    assert s.shift_names == frozenset({"all", "eod"})


def test_parse_from_toml_with_native_dates() -> None:
    text = """
    timezone = "Asia/Shanghai"
    week = { "sat-mon" = ["09:00-17:00"] }
    [[holidays]]
    from = 2025-10-01
    to = 2025-10-02
    """
    s = Schedule.parse(tomllib.loads(text))
    assert s.is_open(at(2025, 11, 24, 10, 0))  # Monday: "sat-mon" wraps round the week
    assert not s.is_open(at(2025, 11, 25, 10, 0))
    assert not s.is_open(at(2025, 9, 27, 8, 0))
    assert not s.is_open(at(2025, 10, 1, 10, 0))  # a Wednesday anyway


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timezone": None}, "timezone: missing"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"colour": "red"}, "colour: unknown key"),
        ({"shifts": {"x": "25:00-26:00"}}, "shifts.x: expected a time"),
        ({"shifts": {"x": "24:00-02:00"}}, "shifts.x: '24:00' is not a time of day to start at"),
        ({"shifts": {"x": "08:00 to 16:00"}}, 'shifts.x: expected "HH:MM-HH:MM"'),
        ({"shifts": {"x": "0800-1600"}}, "shifts.x: expected a time \"HH:MM\", got '0800'"),
        ({"shifts": {"x": {"start": "08:00"}}}, "shifts.x.end: missing"),
        ({"shifts": {"x": {"start": "08:00", "end": "9", "z": 1}}}, "shifts.x.z: unknown key"),
        ({"week": {"mon": ["brunch"]}}, "week.mon[0]: unknown shift 'brunch'"),
        ({"week": {"mon-fry": []}}, "week.mon-fry: unknown day 'mon-fry'"),
        ({"week": {"mon-fri": [], "fri": []}}, "week.fri: fri is given twice"),
        ({"week": {"mon": "morning"}}, "week.mon: expected a list"),
        (
            {"holidays": [{"from": "2025-10-07", "to": "2025-10-01"}]},
            "holidays[0].to: 2025-10-01 is before",
        ),
        ({"holidays": [{"name": "x"}]}, "holidays[0].date: missing"),
        ({"holidays": [{"date": "2025-13-01"}]}, "holidays[0].date: expected a date"),
        (
            {"holidays": [{"date": "2025-10-01", "from": "2025-10-01"}]},
            "holidays[0].date: give either",
        ),
        (
            {"holidays": [{"date": "2025-10-01", "hours": ["lunch"]}]},
            "holidays[0].hours[0]: unknown shift",
        ),
    ],
)
def test_parse_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    data = {**THREE_SHIFTS, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        Schedule.parse(data)


def test_parse_schedules_prefixes_the_name() -> None:
    parsed = parse_schedules({"main": THREE_SHIFTS})
    assert set(parsed) == {"main"}
    with pytest.raises(ValueError, match=r"^night\.timezone: missing"):
        parse_schedules({"night": {"week": {}}})
