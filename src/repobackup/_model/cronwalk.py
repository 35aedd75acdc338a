"""The fields of a parsed cron expression as sets of values, and the walk over naive wall times
that finds the next or previous time they all match (Quartz's and cronie's day rules)."""

from __future__ import annotations

import calendar
import functools
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from datetime import MAXYEAR, MINYEAR, datetime, timedelta

import attrs

__all__ = ["DayRule", "Fields"]

# Without a year field a schedule repeats with the 400-year Gregorian cycle, so a walk that finds
# nothing in 400 years never will.
_CYCLE_YEARS = 400
_SECOND = timedelta(seconds=1)


@attrs.frozen
class DayRule:
    """Which days of a month fire. Weekdays count 0=Sunday..6=Saturday.

    A day matches the day-of-month side when it is in *days*, is the last day minus an offset in
    *last_offsets* (``L``, ``L-n``), or is the weekday nearest to a day in *nearest* (``nW``) or
    to the last day minus an offset in *last_nearest* (``LW``, ``L-nW``). It matches the
    day-of-week side when its weekday is in *weekdays*, it is the last *last_weekday* of the
    month (``nL``), or it is the k-th weekday *nth_weekday* = (weekday, k) (``n#k``). With
    *either* a day matching one side fires (cron with both day fields restricted); else it
    must match both.
    """

    days: frozenset[int] = frozenset(range(1, 32))
    last_offsets: frozenset[int] = frozenset()
    nearest: frozenset[int] = frozenset()
    last_nearest: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset(range(7))
    last_weekday: int | None = None
    nth_weekday: tuple[int, int] | None = None
    either: bool = False

    def matching(self, year: int, month: int) -> tuple[int, ...]:
        """The days of *month* in *year* that fire, in order."""
        first, length = calendar.monthrange(year, month)
        return _matching(self, (first + 1) % 7, length)

    def _by_date(self, day: int, first: int, length: int) -> bool:
        if day in self.days or length - day in self.last_offsets:
            return True
        targets = set(self.nearest) | {length - offset for offset in self.last_nearest}
        return any(_nearest_weekday(target, first, length) == day for target in targets)

    def _by_weekday(self, day: int, first: int, length: int) -> bool:
        weekday = (first + day - 1) % 7
        if weekday in self.weekdays:
            return True
        if self.last_weekday == weekday and day + 7 > length:
            return True
        return self.nth_weekday == (weekday, (day - 1) // 7 + 1)


def _nearest_weekday(target: int, first: int, length: int) -> int | None:
    """Quartz's ``W``: the weekday (Monday-Friday) nearest to day *target*, never in another
    month; None when the month has no such day."""
    if not 1 <= target <= length:
        return None
    weekday = (first + target - 1) % 7
    if weekday == 6:  # Saturday: the Friday before, or the Monday after the 1st
        return target + 2 if target == 1 else target - 1
    if weekday == 0:  # Sunday: the Monday after, or the Friday before the last day
        return target - 2 if target == length else target + 1
    return target


@functools.lru_cache(maxsize=4096)
def _matching(rule: DayRule, first: int, length: int) -> tuple[int, ...]:
    # A month's matching days depend only on its length and the weekday of its first day, so
    # fourteen kinds of month cover every calendar.
    days = []
    for day in range(1, length + 1):
        by_date = rule._by_date(day, first, length)
        by_weekday = rule._by_weekday(day, first, length)
        if (by_date or by_weekday) if rule.either else (by_date and by_weekday):
            days.append(day)
    return tuple(days)


@attrs.frozen
class Fields:
    """Every field of an expression as the sorted values it allows; *years* None: every year."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    day: DayRule
    years: tuple[int, ...] | None = None

    def next_wall(self, wall: datetime) -> datetime | None:
        """The first matching naive wall time strictly after naive *wall*, or None."""
        start = wall.replace(microsecond=0) + _SECOND
        clock = (start.hour, start.minute, start.second)
        for year, month in self._months_from(start.year, start.month):
            same_month = (year, month) == (start.year, start.month)
            days = self.day.matching(year, month)
            for day in days[bisect_left(days, start.day) :] if same_month else days:
                found = self._first_time(clock) if (same_month and day == start.day) else None
                if same_month and day == start.day and found is None:
                    continue
                hour, minute, second = found or (self.hours[0], self.minutes[0], self.seconds[0])
                return datetime(year, month, day, hour, minute, second)
        return None

    def prev_wall(self, wall: datetime) -> datetime | None:
        """The last matching naive wall time strictly before naive *wall*, or None."""
        end = wall.replace(microsecond=0) if wall.microsecond else wall - _SECOND
        clock = (end.hour, end.minute, end.second)
        for year, month in self._months_back_from(end.year, end.month):
            same_month = (year, month) == (end.year, end.month)
            days = self.day.matching(year, month)
            chosen = days[: bisect_right(days, end.day)] if same_month else days
            for day in reversed(chosen):
                found = self._last_time(clock) if (same_month and day == end.day) else None
                if same_month and day == end.day and found is None:
                    continue
                hour, minute, second = found or (self.hours[-1], self.minutes[-1], self.seconds[-1])
                return datetime(year, month, day, hour, minute, second)
        return None

    def _months_from(self, year: int, month: int) -> Iterator[tuple[int, int]]:
        if self.years is None:
            years: Iterator[int] | tuple[int, ...] = iter(
                range(year, min(year + _CYCLE_YEARS, MAXYEAR) + 1)
            )
        else:
            years = self.years[bisect_left(self.years, year) :]
        for each in years:
            for number in self.months:
                if each > year or number >= month:
                    yield each, number

    def _months_back_from(self, year: int, month: int) -> Iterator[tuple[int, int]]:
        if self.years is None:
            years: Iterator[int] | tuple[int, ...] = iter(
                range(year, max(year - _CYCLE_YEARS, MINYEAR) - 1, -1)
            )
        else:
            years = tuple(reversed(self.years[: bisect_right(self.years, year)]))
        for each in years:
            for number in reversed(self.months):
                if each < year or number <= month:
                    yield each, number

    def _first_time(self, clock: tuple[int, int, int]) -> tuple[int, int, int] | None:
        """The first allowed (hour, minute, second) at or after *clock* on the same day."""
        hour, minute, second = clock
        for each_hour in self.hours[bisect_left(self.hours, hour) :]:
            if each_hour > hour:
                return each_hour, self.minutes[0], self.seconds[0]
            for each_minute in self.minutes[bisect_left(self.minutes, minute) :]:
                if each_minute > minute:
                    return each_hour, each_minute, self.seconds[0]
                index = bisect_left(self.seconds, second)
                if index < len(self.seconds):
                    return each_hour, each_minute, self.seconds[index]
        return None

    def _last_time(self, clock: tuple[int, int, int]) -> tuple[int, int, int] | None:
        """The last allowed (hour, minute, second) at or before *clock* on the same day."""
        hour, minute, second = clock
        for each_hour in reversed(self.hours[: bisect_right(self.hours, hour)]):
            if each_hour < hour:
                return each_hour, self.minutes[-1], self.seconds[-1]
            for each_minute in reversed(self.minutes[: bisect_right(self.minutes, minute)]):
                if each_minute < minute:
                    return each_hour, each_minute, self.seconds[-1]
                index = bisect_right(self.seconds, second)
                if index > 0:
                    return each_hour, each_minute, self.seconds[index - 1]
        return None
