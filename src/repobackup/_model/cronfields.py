"""Reading the fields of a Unix (cronie) or Quartz cron expression into `Fields`, refusing with
a message naming the field whatever the reference implementation refuses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import attrs

from .cronwalk import DayRule, Fields

__all__ = ["QUARTZ_YEARS", "Dialect", "quartz_fields", "unix_fields"]

Dialect = Literal["unix", "quartz"]

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# Quartz never fires outside the years its year field accepts, given or not.
QUARTZ_YEARS = tuple(range(1970, 2100))

_NUMBER = re.compile(r"[0-9]+")
# Quartz-only syntax, recognised in Unix expressions so the error can say what it is.
_DAY = "[0-9]+|" + "|".join(_DAY_NAMES)
_QUARTZ_ONLY = re.compile(rf"\?|L|LW|L-[0-9]+W?|[0-9]+W|({_DAY})L|({_DAY})#[0-9]*")
_LAST_DAY = re.compile(r"L(?:-([0-9]+))?(W?)")
_NEAREST_WEEKDAY = re.compile(r"([0-9]+)W")
_LAST_WEEKDAY_OF = re.compile(r"([0-9]+|[A-Z]+)L")
_NTH_WEEKDAY = re.compile(r"([0-9]+|[A-Z]+)#([0-9]*)")
# Quartz: "Offset from last day must be <= 30".
_MAX_LAST_OFFSET = 30


@attrs.frozen
class _Field:
    """One position of an expression: its name in messages, range and spellings."""

    name: str
    low: int
    high: int
    # The largest step the reference accepts; None: any (cronie only warns).
    max_step: int | None
    names: Mapping[str, int] = attrs.field(factory=dict)
    # Quartz reads a backwards range such as 22-2 or FRI-MON as running over the end of the
    # cycle; Unix cron does not.
    wraps: bool = False
    hint: str = ""


def _names(names: tuple[str, ...], first: int) -> dict[str, int]:
    return {name: number for number, name in enumerate(names, start=first)}


_UNIX_FIELDS = (
    _Field("minute", 0, 59, None),
    _Field("hour", 0, 23, None),
    _Field("day-of-month", 1, 31, None),
    _Field("month", 1, 12, None, _names(_MONTH_NAMES, 1)),
    _Field("day-of-week", 0, 7, None, _names(_DAY_NAMES, 0), hint=" (0 and 7 are Sunday)"),
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
LAYOUT_NAMES = {
    "unix": tuple(field.name for field in _UNIX_FIELDS),
    "quartz": tuple(field.name for field in _QUARTZ_FIELDS),
}


def _problem(field: _Field, problem: str) -> ValueError:
    return ValueError(f"{field.name}: {problem}")


def unix_fields(fields: list[str]) -> Fields:
    """Five Unix fields, read as cronie reads them."""
    values = []
    for field, text in zip(_UNIX_FIELDS, fields, strict=True):
        for element in text.upper().split(","):
            if _QUARTZ_ONLY.fullmatch(element):
                raise _problem(
                    field, f"{element!r} is Quartz syntax, not valid in 5-field Unix cron"
                )
        values.append(_values(field, text, "unix"))
    minutes, hours, days, months, weekdays = values
    # cronie: when either day field starts with '*' a day must match both, else either.
    either = not (fields[2].startswith("*") or fields[4].startswith("*"))
    rule = DayRule(
        days=frozenset(days), weekdays=frozenset(day % 7 for day in weekdays), either=either
    )
    return Fields((0,), tuple(minutes), tuple(hours), tuple(months), rule)


def quartz_fields(fields: list[str]) -> Fields:
    """Six or seven Quartz fields, read as Quartz reads them."""
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
    rule = _quartz_day_of_month(day) if weekday == "?" else _quartz_day_of_week(weekday)
    years = QUARTZ_YEARS
    if year and year[0] != "*":
        years = tuple(_values(_QUARTZ_FIELDS[6], year[0], "quartz"))
    return Fields(
        tuple(_values(_QUARTZ_FIELDS[0], second, "quartz")),
        tuple(_values(_QUARTZ_FIELDS[1], minute, "quartz")),
        tuple(_values(_QUARTZ_FIELDS[2], hour, "quartz")),
        tuple(_values(_QUARTZ_FIELDS[4], month, "quartz")),
        rule,
        years,
    )


def _quartz_day_of_month(text: str) -> DayRule:
    """Quartz's day-of-month: a list of days, ranges and steps, ``L``, ``L-n``, ``LW``,
    ``L-nW`` and ``nW``, in any mix (Quartz 2.5 reads lists of them; 2.3 refused those)."""
    field = _QUARTZ_FIELDS[3]
    days: set[int] = set()
    last: set[int] = set()
    nearest: set[int] = set()
    last_nearest: set[int] = set()
    for element in text.split(","):
        if not element:
            raise _problem(field, f"empty element in list {text!r}")
        if (match := _LAST_DAY.fullmatch(element)) is not None:
            offset = int(match.group(1)) if match.group(1) else 0
            if offset > _MAX_LAST_OFFSET:
                raise _problem(
                    field, f"{element!r}: the offset from the last day must be at most 30"
                )
            (last_nearest if match.group(2) else last).add(offset)
        elif (match := _NEAREST_WEEKDAY.fullmatch(element)) is not None:
            nearest.add(_value(field, match.group(1), "quartz"))
        elif "L" in element or "W" in element:
            raise _problem(
                field,
                f"{element!r} is not a valid day-of-month value (L, L-n, LW, L-nW, nW or a "
                "number, range or step)",
            )
        else:
            days.update(_element(field, element, "quartz"))
    return DayRule(
        days=frozenset(days),
        last_offsets=frozenset(last),
        nearest=frozenset(nearest),
        last_nearest=frozenset(last_nearest),
    )


def _quartz_day_of_week(text: str) -> DayRule:
    """Quartz's day-of-week (1=SUN..7=SAT): a list, ``L`` (7, Saturday), ``nL`` or ``n#k``;
    like Quartz, ``L`` and ``#`` stand alone."""
    field = _QUARTZ_FIELDS[5]
    if text == "L":
        return DayRule(weekdays=frozenset({6}))
    if "L" not in text and "#" not in text:
        values = _values(field, text, "quartz")
        return DayRule(weekdays=frozenset(value - 1 for value in values))
    if "," in text:
        raise _problem(
            field, f"'L' and '#' cannot be combined with other days of the week, got {text!r}"
        )
    if (match := _LAST_WEEKDAY_OF.fullmatch(text)) is not None:
        weekday = _value(field, match.group(1), "quartz") - 1
        return DayRule(weekdays=frozenset(), last_weekday=weekday)
    match = _NTH_WEEKDAY.fullmatch(text)
    if match is None:
        raise _problem(field, f"{text!r} is not a valid day-of-week value")
    weekday = _value(field, match.group(1), "quartz") - 1
    nth = match.group(2)
    if not nth or not 1 <= int(nth) <= 5:
        raise _problem(field, f"{text!r}: the number after '#' must be 1-5")
    return DayRule(weekdays=frozenset(), nth_weekday=(weekday, int(nth)))


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
    step = _step(field, text, step_text) if slash else 1
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
    return _range(field, base, (start, end, step), dialect)


def _step(field: _Field, text: str, step_text: str) -> int:
    if not _NUMBER.fullmatch(step_text):
        raise _problem(field, f"step {step_text!r} in {text!r} is not a number")
    step = int(step_text)
    if step < 1:
        raise _problem(field, f"step {step} in {text!r} must be at least 1")
    if field.max_step is not None and step > field.max_step:
        raise _problem(field, f"step {step} in {text!r} is larger than {field.max_step}")
    return step


def _range(field: _Field, base: str, bounds: tuple[int, int, int], dialect: Dialect) -> list[int]:
    start, end, step = bounds
    if dialect == "unix" and field.name == "day-of-week" and start > end == 0:
        # cronie reads a day-of-week range ending in 0 as ending on Sunday 7 (FRI-SUN).
        end = 7
    if start <= end:
        return list(range(start, end + 1, step))
    if not field.wraps:
        first, _, last = base.partition("-")
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
