"""Cron expressions in the Unix (5 fields) and Quartz (6-7 fields, seconds first) dialects:
`parse_cron` reads one strictly, `CronSchedule` gives its fire times in any time zone."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo

import attrs

from .cronfields import LAYOUT_NAMES, Dialect, quartz_fields, unix_fields
from .cronwalk import Fields
from .cronzone import fire_instant, in_zone, local_wall, repeat_end, to_utc

__all__ = ["CronSchedule", "Dialect", "parse_cron"]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_UNIX_LAYOUT = "minute hour day-of-month month day-of-week"
_QUARTZ_LAYOUT = "second minute hour day-of-month month day-of-week [year]"
_SECOND = timedelta(seconds=1)


@attrs.frozen
class CronSchedule:
    """A parsed cron expression and the fire times it names.

    Fire times are wall-clock times in the zone of the datetime asked about, for any `tzinfo`
    (zoneinfo, dateutil, pytz). Around daylight saving changes each wall-clock fire time fires
    once: a time the clocks skip fires at the first instant after the gap (02:30 on a
    spring-forward night fires at 03:00), and a time that occurs twice fires at its first
    occurrence only.
    """

    expression: str
    dialect: Dialect
    _fields: Fields = attrs.field(alias="fields", repr=False)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after *moment* (aware), in *moment*'s zone.

        None when the schedule never fires again (a Quartz schedule ends in 2099 or with its
        year field).
        """
        zone, instant = _normalise(moment, "moment")
        end = repeat_end(instant, zone)
        # In the second pass of a repeated hour the first pass's fire times are behind us.
        start = end - _SECOND if end is not None else local_wall(instant, zone)
        wall = _guard(self._fields.next_wall, start)
        if wall is None:
            return None
        # Wall times map to instants in order (see `fire_instant`), so the first later wall
        # time is the first later instant.
        fire = fire_instant(wall, zone)
        assert fire > instant, (wall, fire, instant)
        return in_zone(fire, zone)

    def latest_at_or_before(self, moment: datetime, *, not_before: datetime) -> datetime | None:
        """The newest fire time t with *not_before* < t <= *moment*, in *moment*'s zone, or None.

        A scheduler uses it to find the run it missed while it was down, without walking every
        fire time in between.
        """
        zone, instant = _normalise(moment, "moment")
        _, floor = _normalise(not_before, "not_before")
        if floor >= instant:
            return None
        end = repeat_end(instant, zone)
        # Every wall time of a repeated hour has fired by its second pass.
        start = end if end is not None else local_wall(instant, zone).replace(microsecond=0)
        if end is None:
            start += _SECOND
        wall = _guard(self._fields.prev_wall, start)
        if wall is None:
            return None
        fire = fire_instant(wall, zone)
        assert fire <= instant, (wall, fire, instant)
        return in_zone(fire, zone) if fire > floor else None

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        """The next *count* fire times after *moment* (fewer if the schedule ends)."""
        fires: list[datetime] = []
        current: datetime | None = moment
        while len(fires) < count and current is not None:
            current = self.next_after(current)
            if current is not None:
                fires.append(current)
        return fires


def _guard(step: Callable[[datetime], datetime | None], wall: datetime) -> datetime | None:
    """*step* (a walk of `Fields`) from *wall*, None at the ends of the calendar."""
    try:
        return step(wall)
    except OverflowError:
        return None


def parse_cron(expression: str) -> CronSchedule:
    """Parse a Unix (5 fields) or Quartz (6-7 fields) cron expression.

    Unix, as cronie reads it: ``minute hour day-of-month month day-of-week`` with ``*``, lists,
    ranges, ``*/n`` and ``a-b/n`` steps, JAN-DEC and SUN-SAT (0 and 7 are Sunday) and the
    ``@hourly``-style macros. When either day field starts with ``*`` a day must match both;
    otherwise a day matching either fires.

    Quartz: ``second minute hour day-of-month month day-of-week [year]`` with exactly one day
    field ``?``, 1=SUN..7=SAT, ``a/n`` steps, backwards ranges over the end of the cycle,
    ``L``, ``L-n``, ``LW``, ``L-nW``, ``nW`` (in lists too), ``nL`` and ``n#k``; years
    1970-2099.

    Raises ValueError naming the field and the value whenever the expression cannot be
    honoured exactly, including when it can never fire.
    """
    text = expression.strip()
    if not text:
        raise ValueError("empty cron expression")
    if text.startswith("@"):
        macro = _MACROS.get(text.lower())
        if macro is None:
            known = ", ".join(sorted(_MACROS))
            raise ValueError(f"unknown macro {text!r}: expected one of {known}")
        return _schedule(expression, "unix", unix_fields(macro.split()))
    fields = re.split(r"[ \t]+", text)
    if len(fields) == len(LAYOUT_NAMES["unix"]):
        return _schedule(expression, "unix", unix_fields(fields))
    if len(fields) in (6, 7):
        return _schedule(expression, "quartz", quartz_fields(fields))
    raise ValueError(
        f"expected 5 fields (Unix: {_UNIX_LAYOUT}) or 6-7 fields (Quartz: {_QUARTZ_LAYOUT}), "
        f"got {len(fields)}"
    )


def _schedule(expression: str, dialect: Dialect, fields: Fields) -> CronSchedule:
    if fields.next_wall(datetime(1969, 12, 31, 23, 59, 59)) is None:
        raise ValueError(f"never fires: no date matches {_day_fields(dialect, expression)}")
    return CronSchedule(expression, dialect, fields=fields)


def _day_fields(dialect: Dialect, expression: str) -> str:
    fields = re.split(r"[ \t]+", expression.strip())
    named = [
        f"{name} {text!r}"
        for name, text in zip(LAYOUT_NAMES[dialect], fields, strict=False)
        if name in ("day-of-month", "month", "day-of-week", "year") and text not in ("*", "?")
    ]
    return ", ".join(named)


def _normalise(moment: datetime, name: str) -> tuple[tzinfo, datetime]:
    """*moment*'s zone and *moment* as a naive UTC instant."""
    zone = moment.tzinfo
    if zone is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")
    return zone, to_utc(moment)
