"""Cron expressions in the Unix (5 fields) and Quartz (6-7 fields, seconds first) dialects:
`parse_cron` reads one strictly, `CronSchedule` gives its fire times in any time zone."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

import attrs
from croniter import CroniterBadDateError, CroniterError, croniter

__all__ = ["CronSchedule", "Dialect", "parse_cron"]

Dialect = Literal["unix", "quartz"]

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

# A schedule without a year field repeats with the 400-year Gregorian cycle, so a search that
# finds nothing in 400 years never will.
_SEARCH_YEARS = 400

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

_NUMBER = re.compile(r"[0-9]+")
# Quartz-only syntax, recognised in Unix expressions so the error can say what it is.
_DAY = "[0-9]+|" + "|".join(_DAY_NAMES)
_QUARTZ_ONLY = re.compile(rf"\?|L|LW|L-[0-9]+W?|[0-9]+W|({_DAY})L|({_DAY})#[0-9]*")
_QUARTZ_NEAREST_WEEKDAY = re.compile(r"([0-9]+)W")
_QUARTZ_LAST_OFFSET = re.compile(r"L-[0-9]+W?")
_QUARTZ_LAST_WEEKDAY_OF = re.compile(r"([0-9]+|[A-Z]+)L")
_QUARTZ_NTH_WEEKDAY = re.compile(r"([0-9]+|[A-Z]+)#([0-9]*)")

# Quartz's nearest-weekday rule looks the day up in the month without clamping, so for a day a
# month lacks (31W in April) its result spills into the next month; only days every month has
# are read the same way everywhere.
_MAX_NEAREST_WEEKDAY = 28


@attrs.frozen
class _Field:
    """One position of an expression: its name in messages, range and spellings."""

    name: str
    low: int
    high: int
    max_step: int
    names: Mapping[str, int] = attrs.field(factory=dict)
    # Quartz reads a backwards range such as 22-2 or FRI-MON as running over the end of the
    # cycle; Unix cron rejects it.
    wraps: bool = False
    hint: str = ""


def _names(names: tuple[str, ...], first: int) -> dict[str, int]:
    return {name: number for number, name in enumerate(names, start=first)}


_UNIX_FIELDS = (
    _Field("minute", 0, 59, 59),
    _Field("hour", 0, 23, 23),
    _Field("day-of-month", 1, 31, 31),
    _Field("month", 1, 12, 12, _names(_MONTH_NAMES, 1)),
    _Field("day-of-week", 0, 7, 7, _names(_DAY_NAMES, 0), hint=" (0 and 7 are Sunday)"),
)
_QUARTZ_FIELDS = (
    _Field("second", 0, 59, 59, wraps=True),
    _Field("minute", 0, 59, 59, wraps=True),
    _Field("hour", 0, 23, 23, wraps=True),
    _Field("day-of-month", 1, 31, 31, wraps=True),
    _Field("month", 1, 12, 12, _names(_MONTH_NAMES, 1), wraps=True),
    _Field(
        "day-of-week",
        1,
        7,
        7,
        _names(_DAY_NAMES, 1),
        wraps=True,
        hint=" (Quartz counts 1=SUN to 7=SAT)",
    ),
    _Field("year", 1970, 2099, 129),
)


def _problem(field: _Field, problem: str) -> ValueError:
    return ValueError(f"{field.name}: {problem}")


@attrs.frozen
class CronSchedule:
    """A parsed cron expression and the fire times it names.

    Fire times are wall-clock times in the zone of the datetime asked about. Around daylight
    saving changes each wall-clock fire time fires once: a time the clocks skip fires at the
    end of the gap (02:30 on a spring-forward night fires at 03:00), and a time that occurs
    twice fires at its first occurrence only.
    """

    expression: str
    dialect: Dialect
    # The same schedule spelled for croniter: explicit value lists, Unix day-of-week numbers.
    _croniter_expression: str = attrs.field(alias="croniter_expression", repr=False)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after *moment* (aware), in *moment*'s zone.

        None when the schedule never fires again (only possible with a Quartz year field).
        """
        zone, moment = _normalise(moment, "moment")
        start = _floor_second(moment.replace(tzinfo=None))
        repeat_end = _repeat_end(moment)
        if repeat_end is not None:
            # In the second pass of a repeated hour the first pass's fire times are behind us.
            start = repeat_end - timedelta(seconds=1)
        wall = self._wall_after(start)
        if wall is None:
            return None
        # Wall times map to instants in order (see `_instant`), so the first later wall time
        # is the first later instant.
        fire = _instant(wall, zone)
        assert _utc(fire) > _utc(moment)
        return fire

    def latest_at_or_before(self, moment: datetime, *, not_before: datetime) -> datetime | None:
        """The newest fire time t with *not_before* < t <= *moment*, in *moment*'s zone, or None.

        A scheduler uses it to find the run it missed while it was down, without walking every
        fire time in between.
        """
        zone, moment = _normalise(moment, "moment")
        _normalise(not_before, "not_before")
        if _utc(not_before) >= _utc(moment):
            return None
        repeat_end = _repeat_end(moment)
        if repeat_end is not None:
            # Every wall time of the repeated hour has fired by its second pass.
            start = repeat_end
        else:
            start = _floor_second(moment.replace(tzinfo=None)) + timedelta(seconds=1)
        wall = self._wall_before(start)
        if wall is None:
            return None
        fire = _instant(wall, zone)
        assert _utc(fire) <= _utc(moment)
        return fire if _utc(fire) > _utc(not_before) else None

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        """The next *count* fire times after *moment* (fewer if the schedule ends)."""
        fires: list[datetime] = []
        current: datetime | None = moment
        while len(fires) < count and current is not None:
            current = self.next_after(current)
            if current is not None:
                fires.append(current)
        return fires

    def _croniter(self, start: datetime) -> croniter[datetime]:
        return croniter(
            self._croniter_expression,
            start,
            ret_type=datetime,
            second_at_beginning=self.dialect == "quartz",
            max_years_between_matches=_SEARCH_YEARS,
        )

    def _wall_after(self, wall: datetime) -> datetime | None:
        """The first matching naive wall time strictly after naive *wall*."""
        try:
            return self._croniter(wall).get_next(datetime)
        except (CroniterBadDateError, OverflowError):
            return None

    def _wall_before(self, wall: datetime) -> datetime | None:
        """The last matching naive wall time strictly before naive *wall*."""
        try:
            return self._croniter(wall).get_prev(datetime)
        except (CroniterBadDateError, OverflowError):
            return None


def parse_cron(expression: str) -> CronSchedule:
    """Parse a Unix (5 fields) or Quartz (6-7 fields) cron expression.

    Unix: ``minute hour day-of-month month day-of-week`` with ``*``, lists, ranges, ``*/n`` and
    ``a-b/n`` steps, JAN-DEC and SUN-SAT (0 and 7 are Sunday) and the ``@hourly``-style macros.
    When both day fields are restricted a day matching either fires, as POSIX cron does.

    Quartz: ``second minute hour day-of-month month day-of-week [year]`` with exactly one day
    field ``?``, 1=SUN..7=SAT, ``a/n`` steps, backwards ranges over the end of the cycle, and
    ``L``, ``nW`` (n <= 28), ``dL`` and ``d#n``; ``LW`` and ``L-n`` are not supported.

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
        return _schedule(expression, "unix", _unix_fields(macro.split()))
    fields = re.split(r"[ \t]+", text)
    if len(fields) == len(_UNIX_FIELDS):
        return _schedule(expression, "unix", _unix_fields(fields))
    if len(fields) in (6, 7):
        return _schedule(expression, "quartz", _quartz_fields(fields))
    raise ValueError(
        f"expected 5 fields (Unix: {_UNIX_LAYOUT}) or 6-7 fields (Quartz: {_QUARTZ_LAYOUT}), "
        f"got {len(fields)}"
    )


def _schedule(expression: str, dialect: Dialect, parts: list[str]) -> CronSchedule:
    try:
        schedule = CronSchedule(expression, dialect, croniter_expression=" ".join(parts))
        first = schedule._wall_after(datetime(1969, 12, 31, 23, 59, 59))
    except CroniterError as exc:  # pragma: no cover - the fields above are croniter-clean
        raise ValueError(f"cannot be evaluated: {exc}") from None
    if first is None:
        raise ValueError(f"never fires: no date matches {_day_fields(dialect, expression)}")
    return schedule


def _day_fields(dialect: Dialect, expression: str) -> str:
    fields = re.split(r"[ \t]+", expression.strip())
    layout = _UNIX_FIELDS if dialect == "unix" else _QUARTZ_FIELDS
    named = [
        f"{field.name} {text!r}"
        for field, text in zip(layout, fields, strict=False)
        if field.name in ("day-of-month", "month", "day-of-week", "year") and text not in ("*", "?")
    ]
    return ", ".join(named)


def _unix_fields(fields: list[str]) -> list[str]:
    parts = []
    for field, text in zip(_UNIX_FIELDS, fields, strict=True):
        for element in text.upper().split(","):
            if _QUARTZ_ONLY.fullmatch(element):
                raise _problem(
                    field, f"{element!r} is Quartz syntax, not valid in 5-field Unix cron"
                )
        if text == "*":
            parts.append("*")
            continue
        values = _values(field, text, "unix")
        if field.name == "day-of-week":
            values = sorted({value % 7 for value in values})
        parts.append(",".join(map(str, values)))
    return parts


def _quartz_fields(fields: list[str]) -> list[str]:
    second, minute, hour, day, month, weekday, *year = (text.upper() for text in fields)
    for field, text in zip(_QUARTZ_FIELDS, fields, strict=False):
        if "?" in text and field.name not in ("day-of-month", "day-of-week"):
            raise _problem(field, "'?' is only allowed in day-of-month or day-of-week")
        if "?" in text and text != "?":
            raise _problem(field, f"'?' must stand alone, got {text!r}")
    if day == "?" and weekday == "?":
        raise ValueError(
            "day-of-month and day-of-week: only one of them may be '?' (Quartz needs the "
            "other to say which days fire)"
        )
    if day != "?" and weekday != "?":
        raise ValueError(
            f"day-of-month and day-of-week: Quartz needs '?' in exactly one of them, got "
            f"{fields[3]!r} and {fields[5]!r} (e.g. '0 0 2 ? * MON-FRI' or '0 0 2 1 * ?')"
        )
    parts = [
        _plain(_QUARTZ_FIELDS[0], second),
        _plain(_QUARTZ_FIELDS[1], minute),
        _plain(_QUARTZ_FIELDS[2], hour),
        _quartz_day_of_month(day),
        _plain(_QUARTZ_FIELDS[4], month),
        _quartz_day_of_week(weekday),
    ]
    if year and year[0] != "*":
        parts.append(_plain(_QUARTZ_FIELDS[6], year[0]))
    return parts


def _plain(field: _Field, text: str) -> str:
    if text == "*":
        return "*"
    return ",".join(map(str, _values(field, text, "quartz")))


def _quartz_day_of_month(text: str) -> str:
    field = _QUARTZ_FIELDS[3]
    if text in ("?", "*"):
        return "*"
    if text == "L":
        return "l"
    if "L" in text or "W" in text:
        if "," in text:
            raise _problem(field, f"'L' and 'W' cannot be part of a list, got {text!r}")
        if text == "LW":
            raise _problem(field, "'LW' (the last weekday of the month) is not supported")
        if _QUARTZ_LAST_OFFSET.fullmatch(text):
            raise _problem(
                field, f"{text!r} (an offset from the last day of the month) is not supported"
            )
        match = _QUARTZ_NEAREST_WEEKDAY.fullmatch(text)
        if match is None:
            raise _problem(field, f"{text!r} is not a valid day-of-month value")
        day = _value(field, match.group(1), "quartz")
        if day > _MAX_NEAREST_WEEKDAY:
            raise _problem(
                field,
                f"{text!r} is not supported: Quartz's nearest weekday to a day some months "
                f"lack is ill-defined, use a day of {_MAX_NEAREST_WEEKDAY} or less",
            )
        return f"{day}w"
    return _plain(field, text)


def _quartz_day_of_week(text: str) -> str:
    field = _QUARTZ_FIELDS[5]
    if text in ("?", "*"):
        return "*"
    if text == "L":
        # Quartz reads a lone L in day-of-week as 7, Saturday.
        return "6"
    if "L" in text or "#" in text:
        if "," in text:
            raise _problem(field, f"'L' and '#' cannot be part of a list, got {text!r}")
        match = _QUARTZ_LAST_WEEKDAY_OF.fullmatch(text)
        if match is not None:
            return f"l{_value(field, match.group(1), 'quartz') - 1}"
        match = _QUARTZ_NTH_WEEKDAY.fullmatch(text)
        if match is None:
            raise _problem(field, f"{text!r} is not a valid day-of-week value")
        weekday = _value(field, match.group(1), "quartz")
        nth = match.group(2)
        if not nth or not 1 <= int(nth) <= 5:
            raise _problem(field, f"{text!r}: the number after '#' must be 1-5")
        return f"{weekday - 1}#{int(nth)}"
    return ",".join(str(value - 1) for value in _values(field, text, "quartz"))


def _values(field: _Field, text: str, dialect: Dialect) -> list[int]:
    """Every value a list field names, in the field's own numbering."""
    values: set[int] = set()
    for element in text.split(","):
        if not element:
            raise _problem(field, f"empty element in list {text!r}")
        values.update(_element(field, element, dialect))
    return sorted(values)


def _element(field: _Field, text: str, dialect: Dialect) -> list[int]:
    base, slash, step_text = text.partition("/")
    step = 1
    if slash:
        if not _NUMBER.fullmatch(step_text):
            raise _problem(field, f"step {step_text!r} in {text!r} is not a number")
        step = int(step_text)
        if step < 1:
            raise _problem(field, f"step {step} in {text!r} must be at least 1")
        if step > field.max_step:
            raise _problem(field, f"step {step} in {text!r} is larger than {field.max_step}")
    if base == "*" or (not base and slash and dialect == "quartz"):
        return list(range(field.low, field.high + 1, step))
    if not base:
        raise _problem(field, f"{text!r} has no value")
    first, dash, last = base.partition("-")
    has_names = not _NUMBER.fullmatch(first) or (dash and not _NUMBER.fullmatch(last))
    if dialect == "quartz" and slash and has_names:
        # Quartz reads "MON-FRI/2" as MON-FRI: it ignores a step after names.
        raise _problem(field, f"{text!r}: Quartz ignores a step after names, use numbers")
    start = _value(field, first, dialect)
    if dash:
        end = _value(field, last, dialect)
        if dialect == "quartz" and bool(_NUMBER.fullmatch(first)) != bool(_NUMBER.fullmatch(last)):
            raise _problem(field, f"{text!r} mixes a name and a number")
    elif slash:
        if dialect == "unix":
            raise _problem(
                field,
                f"{text!r} needs a range in Unix cron, e.g. {first}-{field.high}/{step}",
            )
        end = field.high
    else:
        return [start]
    if start <= end:
        return list(range(start, end + 1, step))
    if not field.wraps:
        hint = f", write {first}-{field.high},{field.low}-{last}" if dialect == "unix" else ""
        raise _problem(field, f"range {base!r} runs backwards{hint}")
    size = field.high - field.low + 1
    return [field.low + (i - field.low) % size for i in range(start, end + size + 1, step)]


def _value(field: _Field, text: str, dialect: Dialect) -> int:
    if _NUMBER.fullmatch(text):
        value = int(text)
    elif text.upper() in field.names:
        value = field.names[text.upper()]
    elif not text:
        raise _problem(field, "missing value in a range")
    elif field.names:
        names = list(field.names)
        raise _problem(
            field, f"{text!r} is not a number or a name ({names[0]}-{names[-1]}){field.hint}"
        )
    else:
        raise _problem(field, f"{text!r} is not a number")
    if not field.low <= value <= field.high:
        raise _problem(field, f"{value} is out of range {field.low}-{field.high}{field.hint}")
    return value


def _normalise(moment: datetime, name: str) -> tuple[tzinfo, datetime]:
    """*moment*'s zone and *moment* re-read in it, so that its wall time exists and its fold
    says which pass of a repeated hour it is in."""
    zone = moment.tzinfo
    if zone is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")
    return zone, moment.astimezone(UTC).astimezone(zone)


def _utc(moment: datetime) -> datetime:
    # Aware datetimes sharing a tzinfo compare by wall time, which is wrong across a fold.
    return moment.astimezone(UTC)


def _floor_second(wall: datetime) -> datetime:
    return wall.replace(microsecond=0)


def _offset_at(zone: tzinfo, timestamp: int) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, zone).utcoffset()


def _transition(zone: tzinfo, before: datetime, after: datetime) -> datetime:
    """The first whole second (naive UTC) after naive UTC *before* whose offset in *zone* is no
    longer *before*'s, given that *after* has another offset."""
    low = math.floor(before.replace(tzinfo=UTC).timestamp())
    high = math.ceil(after.replace(tzinfo=UTC).timestamp())
    old = _offset_at(zone, low)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(zone, middle) == old:
            low = middle
        else:
            high = middle
    return datetime(1970, 1, 1) + timedelta(seconds=high)


def _repeat_end(moment: datetime) -> datetime | None:
    """When normalised *moment* is in the second pass of a repeated hour, the naive wall time at
    which the repetition ends; else None."""
    zone = moment.tzinfo
    assert zone is not None
    wall = moment.replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0)
    first_offset, offset = first.utcoffset(), moment.utcoffset()
    assert first_offset is not None
    assert offset is not None
    if first_offset == offset:
        return None
    change = _transition(zone, wall - first_offset, wall - offset)
    return change + first_offset


def _instant(wall: datetime, zone: tzinfo) -> datetime:
    """The instant naive *wall* fires at in *zone*: its first occurrence, or the end of the gap
    when the clocks skip it. Later wall times never map to earlier instants under this rule."""
    early = wall.replace(tzinfo=zone, fold=0)
    late = wall.replace(tzinfo=zone, fold=1)
    offsets = {early.utcoffset(), late.utcoffset()}
    if len(offsets) == 1:
        return early
    candidates = sorted(wall - offset for offset in offsets if offset is not None)
    for candidate in candidates:
        local = candidate.replace(tzinfo=UTC).astimezone(zone)
        if local.replace(tzinfo=None) == wall:
            return local
    change = _transition(zone, candidates[0], candidates[-1])
    return change.replace(tzinfo=UTC).astimezone(zone)
