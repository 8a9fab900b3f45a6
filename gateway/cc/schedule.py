"""Time-of-day routing: weekly opening hours in named shifts, holidays, a time zone.

A schedule is parsed from a plain dict (a TOML table)::

    timezone = "Asia/Shanghai"            # IANA name, required

    [shifts]                              # named shifts: "HH:MM-HH:MM" or {start, end}
    morning = "08:00-16:00"
    evening = "16:00-24:00"               # 24:00 = the end of the day
    night   = "00:00-08:00"               # or "22:00-06:00": crossing midnight is allowed

    [week]                                # days: mon..sun, ranges "mon-fri", lists "sat,sun"
    "mon-sun" = ["morning", "evening", "night"]   # shift names or inline "09:00-17:00"

    [[holidays]]                          # dates, inclusive; their own hours replace the week's
    name = "National Day"
    from = "2025-10-01"                   # or date = "2025-10-01" for one day
    to   = "2025-10-07"
    hours = ["morning"]                   # [] or absent: closed all day

A shift belongs to the day it starts on: Monday's "22:00-06:00" covers Monday 22:00 to Tuesday
06:00, even when Tuesday is a holiday. An end equal to the start means 24 hours. Days absent from
``week`` are closed. When shifts overlap, the one that started first wins (then the first listed).
Times are wall-clock times in the schedule's zone; comparisons are made in UTC, so DST is handled.

Errors raise ``ValueError("<key>: <why>")``; the config loader adds the path of the table.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DAY_NAMES",
    "Holiday",
    "Schedule",
    "Shift",
    "parse_schedules",
]

DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day keys of ``week``, in ``date.weekday()`` order."""

_HHMM: Final = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_DAY_MINUTES: Final = 24 * 60
# next_change() looks this far ahead before deciding the state never changes.
_HORIZON_DAYS: Final = 400


@dataclass(frozen=True, slots=True)
class Shift:
    """A named span of wall-clock time: minutes after midnight, ``end`` may pass 1440 (next day)."""

    name: str
    start: int  # minutes after midnight, 0..1439
    end: int  # minutes after the start day's midnight, start < end <= start + 1440

    @property
    def crosses_midnight(self) -> bool:
        """Whether the shift ends on the next day."""
        return self.end > _DAY_MINUTES

    def __str__(self) -> str:
        return f"{self.name} {_fmt(self.start)}-{_fmt(self.end % _DAY_MINUTES or self.end)}"


@dataclass(frozen=True, slots=True)
class Holiday:
    """Dates ``first``..``last`` inclusive with their own ``shifts`` (empty: closed)."""

    name: str
    first: date
    last: date
    shifts: tuple[Shift, ...] = ()

    def covers(self, day: date) -> bool:
        """Whether ``day`` is one of the holiday's dates."""
        return self.first <= day <= self.last


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly shifts (``week[weekday]``, Monday = 0), holidays and a time zone."""

    tz: ZoneInfo
    week: tuple[tuple[Shift, ...], ...]  # 7 entries
    holidays: tuple[Holiday, ...] = ()
    shifts: Mapping[str, Shift] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> Schedule:
        """Build a schedule from a TOML table; ``ValueError("<key>: <why>")`` when it is wrong."""
        return _parse(data)

    @classmethod
    def always_open(cls, tz: str = "UTC", name: str = "open") -> Schedule:
        """A schedule open around the clock in one shift called ``name``."""
        shift = Shift(name, 0, _DAY_MINUTES)
        return cls(ZoneInfo(tz), ((shift,),) * 7, (), MappingProxyType({name: shift}))

    @property
    def shift_names(self) -> frozenset[str]:
        """Every shift name that :meth:`current_shift` may return."""
        names = {s.name for day in self.week for s in day}
        names.update(s.name for h in self.holidays for s in h.shifts)
        names.update(self.shifts)
        return frozenset(names)

    def shifts_on(self, day: date) -> tuple[Shift, ...]:
        """The shifts that start on local date ``day`` (a holiday's, else the week's)."""
        for holiday in self.holidays:
            if holiday.covers(day):
                return holiday.shifts
        return self.week[day.weekday()]

    def current_shift(self, dt: datetime) -> str | None:
        """Name of the shift running at ``dt``, or ``None`` when closed.

        A naive ``dt`` is read as wall-clock time in the schedule's zone.
        """
        at = self._utc(dt)
        today = at.astimezone(self.tz).date()
        for day in (today - timedelta(days=1), today):
            for start, end, shift in self._intervals(day):
                if start <= at < end:
                    return shift.name
        return None

    def is_open(self, dt: datetime) -> bool:
        """Whether some shift is running at ``dt``."""
        return self.current_shift(dt) is not None

    def next_change(self, dt: datetime) -> datetime | None:
        """The first instant after ``dt`` when the shift (or open/closed) changes, in the
        schedule's zone; ``None`` when nothing changes within about a year."""
        at = self._utc(dt)
        state = self.current_shift(at)
        today = at.astimezone(self.tz).date()
        pending: list[datetime] = []
        for offset in range(-1, _HORIZON_DAYS):
            day = today + timedelta(days=offset)
            for start, end, _ in self._intervals(day):
                for edge in (start, end):
                    if edge > at:
                        heapq.heappush(pending, edge)
            # Intervals of later days start at or after the next local midnight: every edge
            # before it is final.
            horizon = self._local_midnight(day + timedelta(days=1))
            while pending and pending[0] <= horizon:
                edge = heapq.heappop(pending)
                if self.current_shift(edge) != state:
                    return edge.astimezone(self.tz)
        return None

    def _utc(self, dt: datetime) -> datetime:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.tz)
        return dt.astimezone(UTC)

    def _local_midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=self.tz).astimezone(UTC)

    def _intervals(self, day: date) -> Iterator[tuple[datetime, datetime, Shift]]:
        for shift in self.shifts_on(day):
            yield self._instant(day, shift.start), self._instant(day, shift.end), shift

    def _instant(self, day: date, minutes: int) -> datetime:
        days, rest = divmod(minutes, _DAY_MINUTES)
        local = datetime.combine(day + timedelta(days=days), time(rest // 60, rest % 60))
        return local.replace(tzinfo=self.tz).astimezone(UTC)


def parse_schedules(data: Mapping[str, object]) -> dict[str, Schedule]:
    """The ``[schedules]`` table: name → schedule; errors name ``<name>.<key>``."""
    out: dict[str, Schedule] = {}
    for name, table in data.items():
        if not isinstance(table, Mapping):
            raise ValueError(f"{name}: expected a table")
        try:
            out[name] = Schedule.parse(table)
        except ValueError as err:
            raise ValueError(f"{name}.{err}") from None
    return out


# ---------------------------------------------------------------------------------------------
# Parsing


def _fmt(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(key: str, text: object, *, end: bool) -> int:
    if not isinstance(text, str):
        raise ValueError(f'{key}: expected a time "HH:MM", got {text!r}')
    match = _HHMM.match(text.strip())
    if match is None:
        raise ValueError(f'{key}: expected a time "HH:MM", got {text!r}')
    value = int(match[1]) * 60 + int(match[2])
    if value > _DAY_MINUTES or (value == _DAY_MINUTES and not end):
        raise ValueError(f"{key}: {text!r} is not a time of day" + ("" if end else " to start at"))
    return value


def _shift(key: str, name: str, spec: object) -> Shift:
    if isinstance(spec, str):
        start_text, sep, end_text = spec.partition("-")
        if not sep:
            raise ValueError(f'{key}: expected "HH:MM-HH:MM", got {spec!r}')
        start = _minutes(key, start_text, end=False)
        end = _minutes(key, end_text, end=True)
    elif isinstance(spec, Mapping):
        unknown = set(spec) - {"start", "end"}
        if unknown:
            raise ValueError(f"{key}.{sorted(unknown)[0]}: unknown key (expected start, end)")
        for part in ("start", "end"):
            if part not in spec:
                raise ValueError(f"{key}.{part}: missing")
        start = _minutes(f"{key}.start", spec["start"], end=False)
        end = _minutes(f"{key}.end", spec["end"], end=True)
    else:
        raise ValueError(f'{key}: expected "HH:MM-HH:MM" or a table {{start, end}}')
    if end <= start:
        end += _DAY_MINUTES  # crosses midnight; equal times mean a whole day
    return Shift(name, start, end)


def _days(key: str) -> list[int]:
    days: list[int] = []
    for part in key.split(","):
        part = part.strip().lower()
        first, sep, last = part.partition("-")
        if first not in DAY_NAMES or (sep and last not in DAY_NAMES):
            raise ValueError(f"week.{key}: unknown day {part!r} (use {', '.join(DAY_NAMES)})")
        a = DAY_NAMES.index(first)
        b = DAY_NAMES.index(last) if sep else a
        days.extend((a + i) % 7 for i in range((b - a) % 7 + 1))  # "sat-mon" wraps
    return days


def _shift_list(key: str, items: object, named: Mapping[str, Shift]) -> tuple[Shift, ...]:
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ValueError(f'{key}: expected a list of shift names or "HH:MM-HH:MM"')
    out: list[Shift] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f'{key}[{i}]: expected a shift name or "HH:MM-HH:MM"')
        if item in named:
            out.append(named[item])
        elif _HHMM.match(item.partition("-")[0].strip()) and "-" in item:
            out.append(_shift(f"{key}[{i}]", item, item))
        else:
            known = ", ".join(sorted(named)) or "none defined"
            raise ValueError(f"{key}[{i}]: unknown shift {item!r} (known: {known})")
    return tuple(out)


def _date(key: str, value: object) -> date:
    if isinstance(value, datetime):
        raise ValueError(f"{key}: expected a date, got a date-time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{key}: expected a date YYYY-MM-DD, got {value!r}")


def _holiday(key: str, spec: object, named: Mapping[str, Shift]) -> Holiday:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{key}: expected a table")
    unknown = set(spec) - {"name", "date", "from", "to", "hours"}
    if unknown:
        raise ValueError(f"{key}.{sorted(unknown)[0]}: unknown key")
    name = spec.get("name", "holiday")
    if not isinstance(name, str):
        raise ValueError(f"{key}.name: expected a string")
    if "date" in spec:
        if "from" in spec or "to" in spec:
            raise ValueError(f"{key}.date: give either date or from/to, not both")
        first = last = _date(f"{key}.date", spec["date"])
    elif "from" in spec:
        first = _date(f"{key}.from", spec["from"])
        last = _date(f"{key}.to", spec["to"]) if "to" in spec else first
        if last < first:
            raise ValueError(f"{key}.to: {last} is before from = {first}")
    else:
        raise ValueError(f"{key}.date: missing (or from/to)")
    shifts = _shift_list(f"{key}.hours", spec.get("hours", []), named)
    return Holiday(name, first, last, shifts)


def _parse(data: Mapping[str, object]) -> Schedule:
    unknown = set(data) - {"timezone", "shifts", "week", "holidays"}
    if unknown:
        raise ValueError(
            f"{sorted(unknown)[0]}: unknown key (expected timezone, shifts, week, holidays)"
        )
    tz_name = data.get("timezone")
    if not isinstance(tz_name, str) or not tz_name:
        raise ValueError('timezone: missing (an IANA name such as "Asia/Shanghai")')
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone: unknown time zone {tz_name!r}") from None

    shifts_table = data.get("shifts", {})
    if not isinstance(shifts_table, Mapping):
        raise ValueError('shifts: expected a table of name = "HH:MM-HH:MM"')
    named = {name: _shift(f"shifts.{name}", name, spec) for name, spec in shifts_table.items()}

    week_table = data.get("week", {})
    if not isinstance(week_table, Mapping):
        raise ValueError("week: expected a table of day = [shifts]")
    week: list[tuple[Shift, ...] | None] = [None] * 7
    for day_key, items in week_table.items():
        day_shifts = _shift_list(f"week.{day_key}", items, named)
        for day in _days(day_key):
            if week[day] is not None:
                raise ValueError(f"week.{day_key}: {DAY_NAMES[day]} is given twice")
            week[day] = day_shifts

    holidays_list = data.get("holidays", [])
    if not isinstance(holidays_list, Sequence) or isinstance(holidays_list, str):
        raise ValueError("holidays: expected an array of tables")
    holidays = tuple(
        _holiday(f"holidays[{i}]", spec, named) for i, spec in enumerate(holidays_list)
    )
    return Schedule(
        tz,
        tuple(day or () for day in week),
        holidays,
        MappingProxyType(dict(named)),
    )
