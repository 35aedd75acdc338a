"""Tests for cron parsing and fire times, checked against hand-worked schedules and brute force."""

from __future__ import annotations

import array
import bisect
import calendar
import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import pytest
import pytz
from dateutil import tz as dateutil_tz
from hypothesis import given, settings
from hypothesis import strategies as st

from repobackup import CronSchedule, parse_cron

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
FAR_PAST = datetime(1900, 1, 1, tzinfo=UTC)


def _zone(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        return None


BERLIN = _zone("Europe/Berlin")
NEW_YORK = _zone("America/New_York")
LORD_HOWE = _zone("Australia/Lord_Howe")  # clocks move by 30 minutes
needs_tzdata = pytest.mark.skipif(BERLIN is None, reason="no tzdata for Europe/Berlin")


def at(text: str) -> datetime:
    """An aware datetime from ISO text with an offset."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return moment


def fires(expression: str, after: datetime, count: int) -> list[str]:
    return [fire.isoformat() for fire in parse_cron(expression).upcoming(after, count)]


class TestQuartzSchedules:
    def test_weekdays_at_two_skip_the_weekend(self) -> None:
        """`0 0 2 ? * MON-FRI` fires at 02:00 on weekdays and jumps from Friday to Monday."""
        assert fires("0 0 2 ? * MON-FRI", at("2024-03-07T12:00:00+00:00"), 4) == [
            "2024-03-08T02:00:00+00:00",
            "2024-03-11T02:00:00+00:00",
            "2024-03-12T02:00:00+00:00",
            "2024-03-13T02:00:00+00:00",
        ]

    def test_every_fifteen_minutes_across_the_hour(self) -> None:
        """`0 0/15 * * * ?` fires on the quarter hours, rolling over into the next hour."""
        assert fires("0 0/15 * * * ?", at("2024-03-07T10:31:10+00:00"), 4) == [
            "2024-03-07T10:45:00+00:00",
            "2024-03-07T11:00:00+00:00",
            "2024-03-07T11:15:00+00:00",
            "2024-03-07T11:30:00+00:00",
        ]

    def test_day_of_week_two_is_monday(self) -> None:
        """Quartz counts 1=SUN, so `0 30 10 ? * 2` fires on Mondays at 10:30."""
        result = parse_cron("0 30 10 ? * 2").upcoming(at("2024-03-05T00:00:00+00:00"), 3)
        assert [fire.isoformat() for fire in result] == [
            "2024-03-11T10:30:00+00:00",
            "2024-03-18T10:30:00+00:00",
            "2024-03-25T10:30:00+00:00",
        ]
        assert {fire.strftime("%a") for fire in result} == {"Mon"}

    def test_seconds_field_with_a_start_and_step(self) -> None:
        """`5/20 * * * * ?` fires at seconds 5, 25 and 45 of every minute."""
        assert fires("5/20 * * * * ?", at("2024-03-07T10:00:30+00:00"), 4) == [
            "2024-03-07T10:00:45+00:00",
            "2024-03-07T10:01:05+00:00",
            "2024-03-07T10:01:25+00:00",
            "2024-03-07T10:01:45+00:00",
        ]

    def test_last_day_of_month_in_leap_and_common_years(self) -> None:
        """`0 0 12 L * ?` fires on Feb 29 in a leap year and Feb 28 otherwise."""
        assert fires("0 0 12 L * ?", at("2024-01-31T12:00:00+00:00"), 3) == [
            "2024-02-29T12:00:00+00:00",
            "2024-03-31T12:00:00+00:00",
            "2024-04-30T12:00:00+00:00",
        ]
        assert fires("0 0 12 L * ?", at("2023-01-31T12:00:00+00:00"), 2) == [
            "2023-02-28T12:00:00+00:00",
            "2023-03-31T12:00:00+00:00",
        ]
        # Quartz never fires after 2099.
        assert fires("0 0 12 L * ?", at("2099-12-01T00:00:00+00:00"), 2) == [
            "2099-12-31T12:00:00+00:00"
        ]

    def test_year_field_fires_only_in_that_year(self) -> None:
        """`0 0 0 1 1 ? 2030` fires once, on 2030-01-01, and never again."""
        schedule = parse_cron("0 0 0 1 1 ? 2030")
        first = schedule.next_after(at("2024-06-01T00:00:00+00:00"))
        assert first is not None
        assert first.isoformat() == "2030-01-01T00:00:00+00:00"
        assert schedule.next_after(first) is None

    def test_year_ranges_lists_and_steps(self) -> None:
        """A year range, list or step restricts the years a schedule fires in."""
        start = at("2024-06-01T00:00:00+00:00")
        assert fires("0 0 0 1 1 ? 2026-2028", start, 5) == [
            "2026-01-01T00:00:00+00:00",
            "2027-01-01T00:00:00+00:00",
            "2028-01-01T00:00:00+00:00",
        ]
        assert fires("0 0 0 1 1 ? 2025,2031", start, 5) == [
            "2025-01-01T00:00:00+00:00",
            "2031-01-01T00:00:00+00:00",
        ]
        assert fires("0 0 0 1 1 ? 2024/3", start, 2) == [
            "2027-01-01T00:00:00+00:00",
            "2030-01-01T00:00:00+00:00",
        ]
        assert fires("0 0 0 1 1 ? *", start, 1) == ["2025-01-01T00:00:00+00:00"]

    def test_last_friday_of_month(self) -> None:
        """`6L` and `FRIL` in day-of-week fire on the last Friday of each month."""
        expected = [
            "2024-01-26T08:00:00+00:00",
            "2024-02-23T08:00:00+00:00",
            "2024-03-29T08:00:00+00:00",
            "2024-05-31T08:00:00+00:00",
        ]
        start = at("2024-01-01T00:00:00+00:00")
        assert fires("0 0 8 ? 1-3,5 6L", start, 4) == expected
        assert fires("0 0 8 ? JAN-MAR,MAY FRIL", start, 4) == expected

    def test_lone_l_in_day_of_week_is_saturday(self) -> None:
        """A lone `L` in day-of-week means 7, Saturday, as Quartz documents."""
        assert fires("0 0 8 ? * L", at("2024-03-04T00:00:00+00:00"), 2) == [
            "2024-03-09T08:00:00+00:00",
            "2024-03-16T08:00:00+00:00",
        ]

    def test_nth_weekday_of_month(self) -> None:
        """`FRI#3` fires on the third Friday; `2#5` only in months with five Mondays."""
        assert fires("0 0 9 ? * FRI#3", at("2024-01-01T00:00:00+00:00"), 3) == [
            "2024-01-19T09:00:00+00:00",
            "2024-02-16T09:00:00+00:00",
            "2024-03-15T09:00:00+00:00",
        ]
        assert fires("0 0 9 ? * 2#5", at("2024-01-01T00:00:00+00:00"), 3) == [
            "2024-01-29T09:00:00+00:00",
            "2024-04-29T09:00:00+00:00",
            "2024-07-29T09:00:00+00:00",
        ]

    def test_nearest_weekday(self) -> None:
        """`15W` moves a Saturday 15th to Friday and a Sunday 15th to Monday; `1W` stays in
        its month."""
        # 2024-06-15 is a Saturday, 2024-09-15 a Sunday.
        assert fires("0 0 0 15W 6,9,10 ?", at("2024-01-01T00:00:00+00:00"), 3) == [
            "2024-06-14T00:00:00+00:00",
            "2024-09-16T00:00:00+00:00",
            "2024-10-15T00:00:00+00:00",
        ]
        # 2024-06-01 is a Saturday: the nearest weekday in June is Monday the 3rd.
        assert fires("0 0 0 1W 6 ?", at("2024-01-01T00:00:00+00:00"), 1) == [
            "2024-06-03T00:00:00+00:00"
        ]

    def test_ranges_running_over_the_end_of_the_cycle(self) -> None:
        """Quartz reads hours `22-2` as 22, 23, 0, 1, 2 and `FRI-MON` as Friday to Monday."""
        got = fires("0 0 22-2 ? * FRI-MON", at("2024-03-07T12:00:00+00:00"), 6)
        assert got == [
            "2024-03-08T00:00:00+00:00",
            "2024-03-08T01:00:00+00:00",
            "2024-03-08T02:00:00+00:00",
            "2024-03-08T22:00:00+00:00",
            "2024-03-08T23:00:00+00:00",
            "2024-03-09T00:00:00+00:00",
        ]
        assert fires("0 0 0 1 NOV-FEB ?", at("2024-03-01T00:00:00+00:00"), 4) == [
            "2024-11-01T00:00:00+00:00",
            "2024-12-01T00:00:00+00:00",
            "2025-01-01T00:00:00+00:00",
            "2025-02-01T00:00:00+00:00",
        ]

    def test_names_are_case_insensitive(self) -> None:
        """Month and day names are read in any case."""
        assert fires("0 0 6 ? jan Mon", at("2024-01-01T06:00:00+00:00"), 1) == [
            "2024-01-08T06:00:00+00:00"
        ]

    def test_star_and_question_mark_together(self) -> None:
        """`*` in one day field with `?` in the other fires every day."""
        start = at("2024-02-28T00:00:00+00:00")
        expected = ["2024-02-28T07:00:00+00:00", "2024-02-29T07:00:00+00:00"]
        assert fires("0 0 7 * * ?", start, 2) == expected
        assert fires("0 0 7 ? * *", start, 2) == expected

    def test_dialect_and_expression_are_kept(self) -> None:
        """The schedule keeps the text it was parsed from and names its dialect."""
        schedule = parse_cron(" 0 0 2 ? * MON-FRI ")
        assert schedule.expression == " 0 0 2 ? * MON-FRI "
        assert schedule.dialect == "quartz"
        assert parse_cron("0 2 * * *").dialect == "unix"
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            schedule.expression = "x"  # type: ignore[misc]


class TestUnixSchedules:
    def test_daily_at_half_past_one(self) -> None:
        """`30 1 * * *` fires at 01:30 every day, across a month end."""
        assert fires("30 1 * * *", at("2024-01-30T01:30:00+00:00"), 3) == [
            "2024-01-31T01:30:00+00:00",
            "2024-02-01T01:30:00+00:00",
            "2024-02-02T01:30:00+00:00",
        ]

    def test_weekday_mornings(self) -> None:
        """`0 9 * * 1-5` fires at 09:00 Monday to Friday."""
        assert fires("0 9 * * 1-5", at("2024-03-08T09:00:00+00:00"), 3) == [
            "2024-03-11T09:00:00+00:00",
            "2024-03-12T09:00:00+00:00",
            "2024-03-13T09:00:00+00:00",
        ]

    def test_thirty_first_skips_short_months(self) -> None:
        """`0 0 31 * *` fires only in months that have a 31st."""
        assert fires("0 0 31 * *", at("2024-01-31T00:00:00+00:00"), 4) == [
            "2024-03-31T00:00:00+00:00",
            "2024-05-31T00:00:00+00:00",
            "2024-07-31T00:00:00+00:00",
            "2024-08-31T00:00:00+00:00",
        ]

    def test_zero_and_seven_are_both_sunday(self) -> None:
        """Day-of-week 0 and 7 both mean Sunday."""
        start = at("2024-03-05T00:00:00+00:00")
        expected = ["2024-03-10T00:00:00+00:00", "2024-03-17T00:00:00+00:00"]
        assert fires("0 0 * * 0", start, 2) == expected
        assert fires("0 0 * * 7", start, 2) == expected
        assert fires("0 0 * * SUN", start, 2) == expected
        assert fires("0 0 * * 5-7", start, 3) == [
            "2024-03-08T00:00:00+00:00",
            "2024-03-09T00:00:00+00:00",
            "2024-03-10T00:00:00+00:00",
        ]

    def test_year_end_transition(self) -> None:
        """A schedule late on the last day rolls over into the new year."""
        assert fires("59 23 * * *", at("2024-12-31T00:00:00+00:00"), 2) == [
            "2024-12-31T23:59:00+00:00",
            "2025-01-01T23:59:00+00:00",
        ]
        assert fires("0 0 1 * *", at("2024-12-01T00:00:00+00:00"), 2) == [
            "2025-01-01T00:00:00+00:00",
            "2025-02-01T00:00:00+00:00",
        ]

    def test_month_and_weekday_names(self) -> None:
        """Names and lists of names select months and weekdays."""
        assert fires("0 8 * JAN,jul MON,Fri", at("2024-06-30T00:00:00+00:00"), 3) == [
            "2024-07-01T08:00:00+00:00",
            "2024-07-05T08:00:00+00:00",
            "2024-07-08T08:00:00+00:00",
        ]
        assert fires("0 8 * * MON-WED/2", at("2024-03-04T09:00:00+00:00"), 2) == [
            "2024-03-06T08:00:00+00:00",
            "2024-03-11T08:00:00+00:00",
        ]

    def test_day_of_month_or_day_of_week(self) -> None:
        """With both day fields restricted, a day matching either fires (POSIX cron)."""
        # The 13th, and every Friday.
        assert fires("0 0 13 * 5", at("2024-09-01T00:00:00+00:00"), 4) == [
            "2024-09-06T00:00:00+00:00",
            "2024-09-13T00:00:00+00:00",
            "2024-09-20T00:00:00+00:00",
            "2024-09-27T00:00:00+00:00",
        ]

    def test_steps_over_ranges(self) -> None:
        """`*/20` and `10-50/20` step through the minutes of each hour."""
        start = at("2024-03-07T10:00:00+00:00")
        assert fires("*/20 * * * *", start, 3) == [
            "2024-03-07T10:20:00+00:00",
            "2024-03-07T10:40:00+00:00",
            "2024-03-07T11:00:00+00:00",
        ]
        assert fires("10-50/20 * * * *", start, 3) == [
            "2024-03-07T10:10:00+00:00",
            "2024-03-07T10:30:00+00:00",
            "2024-03-07T10:50:00+00:00",
        ]

    @pytest.mark.parametrize(
        ("macro", "same_as"),
        [
            ("@hourly", "0 * * * *"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@weekly", "0 0 * * 0"),
            ("@monthly", "0 0 1 * *"),
            ("@yearly", "0 0 1 1 *"),
            ("@ANNUALLY", "0 0 1 1 *"),
        ],
    )
    def test_macros(self, macro: str, same_as: str) -> None:
        """Each macro fires exactly when its five-field spelling does."""
        start = at("2024-02-27T13:14:15+00:00")
        assert fires(macro, start, 3) == fires(same_as, start, 3)
        assert parse_cron(macro).dialect == "unix"


class TestInvalidExpressions:
    @pytest.mark.parametrize(
        ("expression", "field", "detail"),
        [
            ("60 * * * *", "minute", "60"),
            ("0 24 * * *", "hour", "24"),
            ("0 0 32 * *", "day-of-month", "32"),
            ("0 0 0 * *", "day-of-month", "0"),
            ("0 0 * 13 *", "month", "13"),
            ("0 0 * 0 *", "month", "0"),
            ("0 0 * * 8", "day-of-week", "8"),
            ("0 0 * * FOO", "day-of-week", "FOO"),
            ("0 0 * JANUARY *", "month", "JANUARY"),
            ("0 0 * * MON-", "day-of-week", "missing"),
            ("*/0 * * * *", "minute", "step 0"),
            ("*/x * * * *", "minute", "'x'"),
            ("5-1 * * * *", "minute", "5-1"),
            ("5/10 * * * *", "minute", "5/10"),
            ("1,,2 * * * *", "minute", "1,,2"),
            ("0 0 L * *", "day-of-month", "Quartz"),
            ("0 0 15W * *", "day-of-month", "Quartz"),
            ("0 0 ? * *", "day-of-month", "Quartz"),
            ("0 0 * * 5L", "day-of-week", "Quartz"),
            ("0 0 * * FRI#2", "day-of-week", "Quartz"),
            ("60 0 0 ? * *", "second", "60"),
            ("0 60 0 ? * *", "minute", "60"),
            ("0 0 24 ? * *", "hour", "24"),
            ("0 0 0 ? 13 *", "month", "13"),
            ("0 0 0 ? * 0", "day-of-week", "0"),
            ("0 0 0 ? * 8", "day-of-week", "8"),
            ("0 0 0 ? * * 1969", "year", "1969"),
            ("0 0 0 ? * * 2100", "year", "2100"),
            ("0 0 0 ? * * 2030-2025", "year", "2030-2025"),
            ("0 0 */24 ? * *", "hour", "step 24"),
            ("? 0 0 1 * ?", "second", "'?'"),
            ("0 0 0 1? * ?", "day-of-month", "'?'"),
            ("0 0 0 W * ?", "day-of-month", "'W'"),
            ("0 0 0 32W * ?", "day-of-month", "32"),
            ("0 0 0 ? * 2#6", "day-of-week", "2#6"),
            ("0 0 0 ? * 2#0", "day-of-week", "2#0"),
            ("0 0 0 ? * 2#", "day-of-week", "2#"),
            ("0 0 0 ? * 9L", "day-of-week", "9"),
            ("0 0 0 ? * 2,6L", "day-of-week", "combined"),
            ("0 0 0 ? * 1#1,2#2", "day-of-week", "combined"),
            ("0 0 0 L-31 * ?", "day-of-month", "at most 30"),
            ("0 0 0 L/2 * ?", "day-of-month", "L/2"),
            ("0 0 0 1-5W * ?", "day-of-month", "1-5W"),
            ("0 0 0 LW-1 * ?", "day-of-month", "LW-1"),
            ("0 0 0 ? * MON-FRI/2", "day-of-week", "MON-FRI/2"),
            ("0 0 0 ? * MON-5", "day-of-week", "MON-5"),
            ("0 0 0 * * *", "day-of-week", "'?'"),
            ("0 0 0 1 * MON", "day-of-month", "'?'"),
            ("0 0 0 ? * ?", "day-of-month", "'?'"),
        ],
    )
    def test_rejected_with_field_and_value(self, expression: str, field: str, detail: str) -> None:
        """An expression that cannot be honoured exactly is refused, naming field and value."""
        with pytest.raises(ValueError, match=r"^.+$") as caught:
            parse_cron(expression)
        message = str(caught.value)
        assert message.startswith(field) or f"and {field}" in message, message
        assert detail in message, message

    @pytest.mark.parametrize("expression", ["* * * *", "* * * * * * * *", "0"])
    def test_wrong_field_count_lists_the_fields(self, expression: str) -> None:
        """A wrong number of fields is refused with the count and the expected layouts."""
        with pytest.raises(ValueError, match="day-of-week") as caught:
            parse_cron(expression)
        assert f"got {len(expression.split())}" in str(caught.value)

    @pytest.mark.parametrize(
        ("expression", "fields"),
        [
            ("0 0 30 2 *", ["day-of-month '30'", "month '2'"]),
            ("0 0 31 APR,JUN *", ["day-of-month '31'", "month 'APR,JUN'"]),
            ("0 0 0 29 2 ? 2025-2027", ["day-of-month '29'", "year '2025-2027'"]),
            ("0 0 0 ? FEB 6#5 2025", ["day-of-week '6#5'", "month 'FEB'"]),
        ],
    )
    def test_schedule_that_never_fires(self, expression: str, fields: list[str]) -> None:
        """An expression no date can match is refused at parse time, naming its day fields."""
        with pytest.raises(ValueError, match="never fires") as caught:
            parse_cron(expression)
        for field in fields:
            assert field in str(caught.value)

    @pytest.mark.parametrize("expression", ["", "   ", "@reboot", "@often"])
    def test_empty_and_unknown_macros(self, expression: str) -> None:
        """Blank text and macros without fire times are refused."""
        with pytest.raises(ValueError, match=r"empty|macro"):
            parse_cron(expression)

    def test_naive_moments_are_refused(self) -> None:
        """Fire times are only computed for timezone-aware moments."""
        schedule = parse_cron("0 0 * * *")
        with pytest.raises(ValueError, match="moment must be timezone-aware"):
            schedule.next_after(datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="not_before must be timezone-aware"):
            schedule.latest_at_or_before(
                at("2024-01-01T00:00:00+00:00"), not_before=datetime(2023, 1, 1)
            )


class TestLatestAtOrBefore:
    def test_finds_the_newest_missed_fire(self) -> None:
        """Of several missed fire times the newest is returned, not the first."""
        schedule = parse_cron("0 */6 * * *")
        latest = schedule.latest_at_or_before(
            at("2024-03-07T13:59:59+00:00"), not_before=at("2024-03-01T00:00:00+00:00")
        )
        assert latest is not None
        assert latest.isoformat() == "2024-03-07T12:00:00+00:00"

    def test_moment_itself_counts_and_not_before_does_not(self) -> None:
        """A fire exactly at *moment* is included; one exactly at *not_before* is excluded."""
        schedule = parse_cron("0 12 * * *")
        noon = at("2024-03-07T12:00:00+00:00")
        latest = schedule.latest_at_or_before(noon, not_before=noon - timedelta(hours=1))
        assert latest is not None
        assert latest.isoformat() == noon.isoformat()
        later = noon + timedelta(hours=5)
        assert schedule.latest_at_or_before(later, not_before=noon) is None

    def test_none_when_nothing_in_the_window(self) -> None:
        """No fire time in the window, or an empty window, gives None."""
        schedule = parse_cron("0 0 0 1 1 ? 2030")
        now = at("2035-06-01T00:00:00+00:00")
        assert schedule.latest_at_or_before(now, not_before=at("2031-01-01T00:00:00+00:00")) is None
        assert schedule.latest_at_or_before(now, not_before=now) is None
        found = schedule.latest_at_or_before(now, not_before=FAR_PAST)
        assert found is not None
        assert found.isoformat() == "2030-01-01T00:00:00+00:00"

    def test_answer_is_in_the_zone_of_moment(self) -> None:
        """The result is expressed in *moment*'s zone, whatever zone *not_before* is in."""
        plus_eight = timezone(timedelta(hours=8))
        schedule = parse_cron("0 9 * * *")
        latest = schedule.latest_at_or_before(
            datetime(2024, 3, 7, 8, 0, tzinfo=plus_eight), not_before=FAR_PAST
        )
        assert latest is not None
        assert latest.isoformat() == "2024-03-06T09:00:00+08:00"


class TestTimeZones:
    def test_wall_clock_of_a_fixed_offset(self) -> None:
        """Fire times are wall-clock times in the zone of the moment asked about."""
        plus_eight = timezone(timedelta(hours=8))
        fire = parse_cron("30 1 * * *").next_after(datetime(2024, 3, 7, 2, 0, tzinfo=plus_eight))
        assert fire is not None
        assert fire.isoformat() == "2024-03-08T01:30:00+08:00"

    def test_microseconds_do_not_repeat_a_fire(self) -> None:
        """Just after a fire time, the next one is a whole period later."""
        moment = at("2024-03-07T10:15:00.000001+00:00")
        assert fires("*/15 * * * *", moment, 1) == ["2024-03-07T10:30:00+00:00"]
        assert fires("0/15 * * * * ?", moment, 1) == ["2024-03-07T10:15:15+00:00"]

    @needs_tzdata
    def test_spring_forward_fires_at_the_end_of_the_gap(self) -> None:
        """A daily 02:30 fires at 03:00 on the night Berlin skips 02:00-03:00."""
        assert BERLIN is not None
        start = datetime(2024, 3, 30, 12, 0, tzinfo=BERLIN)
        assert fires("30 2 * * *", start, 3) == [
            "2024-03-31T03:00:00+02:00",
            "2024-04-01T02:30:00+02:00",
            "2024-04-02T02:30:00+02:00",
        ]

    @needs_tzdata
    def test_spring_forward_quarter_hours(self) -> None:
        """Every 15 minutes runs once at the end of the gap and carries on after it."""
        assert BERLIN is not None
        start = datetime(2024, 3, 31, 1, 40, tzinfo=BERLIN)
        assert fires("*/15 * * * *", start, 3) == [
            "2024-03-31T01:45:00+01:00",
            "2024-03-31T03:00:00+02:00",
            "2024-03-31T03:15:00+02:00",
        ]

    @needs_tzdata
    def test_fall_back_fires_once(self) -> None:
        """A daily 02:30 fires once on the night Berlin repeats 02:00-03:00."""
        assert BERLIN is not None
        start = datetime(2024, 10, 26, 12, 0, tzinfo=BERLIN)
        assert fires("30 2 * * *", start, 2) == [
            "2024-10-27T02:30:00+02:00",
            "2024-10-28T02:30:00+01:00",
        ]

    @needs_tzdata
    def test_second_pass_of_a_repeated_hour(self) -> None:
        """In the repeated hour's second pass, fire times of its first pass are in the past."""
        assert BERLIN is not None
        schedule = parse_cron("*/15 * * * *")
        second_pass = datetime(2024, 10, 27, 2, 10, tzinfo=BERLIN, fold=1)
        following = schedule.next_after(second_pass)
        assert following is not None
        assert following.isoformat() == "2024-10-27T03:00:00+01:00"
        latest = schedule.latest_at_or_before(second_pass, not_before=FAR_PAST)
        assert latest is not None
        assert latest.isoformat() == "2024-10-27T02:45:00+02:00"
        first_pass = datetime(2024, 10, 27, 2, 10, tzinfo=BERLIN, fold=0)
        assert fires("*/15 * * * *", first_pass, 1) == ["2024-10-27T02:15:00+02:00"]

    @needs_tzdata
    def test_moment_given_in_another_zone(self) -> None:
        """A UTC moment is answered in UTC even for a schedule meant for local time."""
        assert BERLIN is not None
        fire = parse_cron("0 9 * * *").next_after(datetime(2024, 7, 1, 8, 0, tzinfo=BERLIN))
        assert fire is not None
        assert fire.isoformat() == "2024-07-01T09:00:00+02:00"
        fire_utc = parse_cron("0 9 * * *").next_after(datetime(2024, 7, 1, 8, 0, tzinfo=UTC))
        assert fire_utc is not None
        assert fire_utc.isoformat() == "2024-07-01T09:00:00+00:00"


# --- brute-force oracles, independent of the evaluator ------------------------------------


@dataclass(frozen=True)
class Spec:
    """What an expression means, built alongside its text by the strategies below."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    day: Callable[[date], bool]
    years: frozenset[int] | None = None

    def month_ok(self, year: int, month: int) -> bool:
        return month in self.months and (self.years is None or year in self.years)


def _first_time(spec: Spec, after: time | None) -> time | None:
    for hour in spec.hours:
        if after is not None and hour < after.hour:
            continue
        for minute in spec.minutes:
            if after is not None and (hour, minute) < (after.hour, after.minute):
                continue
            for second in spec.seconds:
                candidate = time(hour, minute, second)
                if after is None or candidate > after:
                    return candidate
    return None


def _last_time(spec: Spec, until: time | None) -> time | None:
    for hour in reversed(spec.hours):
        if until is not None and hour > until.hour:
            continue
        for minute in reversed(spec.minutes):
            if until is not None and (hour, minute) > (until.hour, until.minute):
                continue
            for second in reversed(spec.seconds):
                candidate = time(hour, minute, second)
                if until is None or candidate <= until:
                    return candidate
    return None


def oracle_next(spec: Spec, moment: datetime, years: int = 40) -> datetime | None:
    """The first fire time strictly after naive UTC *moment*, by walking the calendar."""
    day = moment.date()
    after: time | None = moment.time()
    last_year = max(spec.years) if spec.years else moment.year + years
    end = date(min(last_year + 1, 9999), 1, 1)
    while day < end:
        if not spec.month_ok(day.year, day.month):
            day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
            after = None
            continue
        if spec.day(day) and (found := _first_time(spec, after)) is not None:
            return datetime.combine(day, found)
        day += timedelta(days=1)
        after = None
    return None


def oracle_latest(spec: Spec, moment: datetime, years: int = 40) -> datetime | None:
    """The last fire time at or before naive UTC *moment*, by walking the calendar back."""
    day = moment.date()
    until: time | None = moment.time()
    first_year = min(spec.years) if spec.years else moment.year - years
    end = date(max(first_year, 2), 1, 1) - timedelta(days=1)
    while day > end:
        if not spec.month_ok(day.year, day.month):
            day = day.replace(day=1) - timedelta(days=1)
            until = None
            continue
        if spec.day(day) and (found := _last_time(spec, until)) is not None:
            return datetime.combine(day, found)
        day -= timedelta(days=1)
        until = None
    return None


def _sun0(day: date) -> int:
    return day.isoweekday() % 7


def _last_day(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def _quartz_nearest_weekday(day: date, wanted: int) -> int | None:
    if wanted > _last_day(day):
        return None
    target = day.replace(day=wanted)
    weekday = target.weekday()  # Monday is 0
    if weekday == 5:
        return wanted + 2 if wanted == 1 else wanted - 1
    if weekday == 6:
        return wanted - 2 if wanted == _last_day(day) else wanted + 1
    return wanted


@st.composite
def field(
    draw: st.DrawFn, low: int, high: int, names: tuple[str, ...] = (), *, first_name: int = 0
) -> tuple[str, list[int]]:
    """A field's text and the values it names (before Sunday 7 is folded onto 0)."""

    # Quartz refuses a range mixing a name and a number, so a field uses one or the other.
    use_names = bool(names) and draw(st.booleans())

    def render(value: int) -> str:
        index = value - first_name
        if use_names and 0 <= index < len(names):
            return names[index]
        return str(value)

    kind = draw(st.sampled_from(["star", "list", "range", "range_step", "star_step"]))
    if kind == "star":
        return "*", list(range(low, high + 1))
    if kind == "list":
        values = draw(st.lists(st.integers(low, high), min_size=1, max_size=4))
        return ",".join(render(value) for value in values), values
    first = draw(st.integers(low, high))
    last = draw(st.integers(first, high))
    if kind == "range":
        return f"{render(first)}-{render(last)}", list(range(first, last + 1))
    step = draw(st.integers(1, high - low))
    if kind == "range_step":
        return f"{first}-{last}/{step}", list(range(first, last + 1, step))
    return f"*/{step}", list(range(low, high + 1, step))


@st.composite
def unix_specs(draw: st.DrawFn) -> Spec:
    minute, minutes = draw(field(0, 59))
    hour, hours = draw(field(0, 23))
    dom, doms = draw(field(1, 31))
    month, months = draw(field(1, 12, MONTHS, first_name=1))
    dow, dows = draw(field(0, 7, DAYS))
    weekdays = {value % 7 for value in dows}
    # cronie: a day field starting with '*' makes a day match both fields, else either.
    either = not (dom.startswith("*") or dow.startswith("*"))

    def day(when: date) -> bool:
        by_date = when.day in doms
        by_weekday = _sun0(when) in weekdays
        return (by_date or by_weekday) if either else (by_date and by_weekday)

    return Spec(
        f"{minute} {hour} {dom} {month} {dow}",
        (0,),
        tuple(sorted(set(minutes))),
        tuple(sorted(set(hours))),
        frozenset(months),
        day,
    )


@st.composite
def quartz_specs(draw: st.DrawFn) -> Spec:
    second, seconds = draw(field(0, 59))
    minute, minutes = draw(field(0, 59))
    hour, hours = draw(field(0, 23))
    month, months = draw(field(1, 12, MONTHS, first_name=1))
    kind = draw(st.sampled_from(["dom", "dow", "last", "nearest", "last_of", "nth"]))
    predicate: Callable[[date], bool]
    if kind == "dom":
        dom, doms = draw(field(1, 31))
        days, weekdays = dom, "?"
        predicate = lambda when: when.day in doms  # noqa: E731
    elif kind == "dow":
        weekdays, dows = draw(field(1, 7, DAYS, first_name=1))
        days = "?"
        predicate = lambda when: _sun0(when) + 1 in dows  # noqa: E731
    elif kind == "last":
        days, weekdays = "L", "?"
        predicate = lambda when: when.day == _last_day(when)  # noqa: E731
    elif kind == "nearest":
        wanted = draw(st.integers(1, 31))
        days, weekdays = f"{wanted}W", "?"
        predicate = lambda when: when.day == _quartz_nearest_weekday(when, wanted)  # noqa: E731
    else:
        weekday = draw(st.integers(1, 7))
        name = draw(st.sampled_from([str(weekday), DAYS[weekday - 1]]))
        days = "?"
        if kind == "last_of":
            weekdays = f"{name}L"
            predicate = lambda when: (  # noqa: E731
                _sun0(when) + 1 == weekday and when.day + 7 > _last_day(when)
            )
        else:
            nth = draw(st.integers(1, 5))
            weekdays = f"{name}#{nth}"
            predicate = lambda when: (  # noqa: E731
                _sun0(when) + 1 == weekday and (when.day - 1) // 7 + 1 == nth
            )
    text = f"{second} {minute} {hour} {days} {month} {weekdays}"
    years = frozenset(range(1970, 2100))
    if draw(st.booleans()):
        first = draw(st.integers(2015, 2040))
        last = draw(st.integers(first, 2040))
        years = frozenset(range(first, last + 1))
        text += f" {first}-{last}"
    return Spec(
        text,
        tuple(sorted(set(seconds))),
        tuple(sorted(set(minutes))),
        tuple(sorted(set(hours))),
        frozenset(months),
        predicate,
        years,
    )


def _never_fires(spec: Spec) -> bool:
    """Whether no day in a span longer than the calendar's leap and weekday cycles matches."""
    years = sorted(spec.years) if spec.years else range(2000, 2060)
    for year in years:
        for month in range(1, 13):
            if not spec.month_ok(year, month):
                continue
            first = date(year, month, 1)
            days = calendar.monthrange(year, month)[1]
            if any(spec.day(first.replace(day=number)) for number in range(1, days + 1)):
                return False
    return True


def _parse_or_check_never(spec: Spec) -> CronSchedule | None:
    try:
        return parse_cron(spec.text)
    except ValueError as exc:
        problem = str(exc)
    assert "never fires" in problem, (spec.text, problem)
    assert _never_fires(spec), spec.text
    return None


moments = st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2045, 12, 31))


def _naive_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


class TestAgainstBruteForce:
    @given(spec=unix_specs(), moment=moments)
    def test_unix_next_and_latest(self, spec: Spec, moment: datetime) -> None:
        """For random Unix expressions both directions agree with a calendar walk."""
        schedule = _parse_or_check_never(spec)
        if schedule is None:
            return
        aware = moment.replace(tzinfo=UTC)
        assert _naive_utc(schedule.next_after(aware)) == oracle_next(spec, moment), spec.text
        not_before = moment - timedelta(days=366 * 9)
        expected = oracle_latest(spec, moment, years=10)
        if expected is not None and expected <= not_before:
            expected = None
        latest = schedule.latest_at_or_before(aware, not_before=not_before.replace(tzinfo=UTC))
        assert _naive_utc(latest) == expected, spec.text

    @given(spec=quartz_specs(), moment=moments)
    def test_quartz_next_and_latest(self, spec: Spec, moment: datetime) -> None:
        """For random Quartz expressions, with L, W, L and # forms, both directions agree with a
        calendar walk."""
        schedule = _parse_or_check_never(spec)
        if schedule is None:
            return
        aware = moment.replace(tzinfo=UTC)
        assert _naive_utc(schedule.next_after(aware)) == oracle_next(spec, moment), spec.text
        latest = schedule.latest_at_or_before(aware, not_before=FAR_PAST)
        expected_latest = oracle_latest(spec, moment, years=moment.year - 1901)
        assert _naive_utc(latest) == expected_latest, spec.text


# --- daylight saving ------------------------------------------------------------------------

ZONES = [zone for zone in (BERLIN, NEW_YORK, LORD_HOWE) if zone is not None]


def _transitions(zone: tzinfo, year: int) -> list[datetime]:
    """Instants (UTC) within a quarter hour after each change of *zone*'s offset in *year*."""
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    offset = moment.astimezone(zone).utcoffset()
    while moment.year == year:
        moment += timedelta(minutes=15)
        now = moment.astimezone(zone).utcoffset()
        if now != offset:
            found.append(moment)
            offset = now
    return found


TRANSITIONS = {zone: _transitions(zone, 2024) for zone in ZONES}


def _policy_instant(wall: datetime, zone: tzinfo) -> datetime:
    """The documented rule, minute by minute: the first occurrence of a wall time, or the first
    wall minute that exists after a skipped one."""
    while True:
        instant = wall.replace(tzinfo=zone).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            return instant
        wall += timedelta(minutes=1)


def _wall_matches(spec: Spec, wall: datetime) -> bool:
    return (
        wall.minute in spec.minutes
        and wall.hour in spec.hours
        and spec.month_ok(wall.year, wall.month)
        and spec.day(wall.date())
    )


@st.composite
def daily_specs(draw: st.DrawFn) -> Spec:
    """Unix expressions firing at least daily, so a two-day window always holds a fire."""
    minute, minutes = draw(field(0, 59))
    hour, hours = draw(field(0, 23))
    return Spec(
        f"{minute} {hour} * * *",
        (0,),
        tuple(sorted(set(minutes))),
        tuple(sorted(set(hours))),
        frozenset(range(1, 13)),
        lambda when: True,
    )


@st.composite
def near_transitions(draw: st.DrawFn) -> datetime:
    zone = draw(st.sampled_from(ZONES))
    change = draw(st.sampled_from(TRANSITIONS[zone]))
    seconds = draw(st.integers(-4 * 3600, 4 * 3600))
    return (change + timedelta(seconds=seconds)).astimezone(zone)


@needs_tzdata
class TestDaylightSaving:
    @given(spec=daily_specs(), moment=near_transitions())
    def test_matches_the_documented_rule(self, spec: Spec, moment: datetime) -> None:
        """Near clock changes, fire times are what the first-occurrence / end-of-gap rule gives
        when applied minute by minute."""
        zone = moment.tzinfo
        assert zone is not None
        schedule = parse_cron(spec.text)
        wall = moment.replace(tzinfo=None, fold=0, second=0, microsecond=0)
        candidates = {
            _policy_instant(wall + timedelta(minutes=step), zone)
            for step in range(-52 * 60, 52 * 60)
            if _wall_matches(spec, wall + timedelta(minutes=step))
        }
        after = [fire for fire in candidates if fire > moment]
        before = [fire for fire in candidates if fire <= moment]
        following = schedule.next_after(moment)
        latest = schedule.latest_at_or_before(moment, not_before=moment - timedelta(days=3))
        assert following is not None
        assert latest is not None
        assert following.tzinfo is zone
        assert following.astimezone(UTC) == min(after), spec.text
        assert latest.astimezone(UTC) == max(before), spec.text

    @given(spec=unix_specs(), moment=near_transitions())
    def test_next_and_latest_agree(self, spec: Spec, moment: datetime) -> None:
        """next_after is strictly increasing and latest_at_or_before leaves no fire time between
        it and next_after."""
        schedule = _parse_or_check_never(spec)
        if schedule is None:
            return
        following = schedule.next_after(moment)
        assert following is not None
        assert following.astimezone(UTC) > moment.astimezone(UTC)
        again = schedule.next_after(following)
        assert again is not None
        assert again.astimezone(UTC) > following.astimezone(UTC)
        itself = schedule.latest_at_or_before(following, not_before=moment)
        assert itself is not None
        assert itself.astimezone(UTC) == following.astimezone(UTC)
        latest = schedule.latest_at_or_before(moment, not_before=FAR_PAST)
        assert latest is not None
        assert latest.astimezone(UTC) <= moment.astimezone(UTC)
        after_latest = schedule.next_after(latest)
        assert after_latest is not None
        assert after_latest.astimezone(UTC) == following.astimezone(UTC), spec.text


# --- a year, minute by minute, in zones with daylight saving ----------------------------------

YEAR = 2024
_YEAR_START = datetime(YEAR, 1, 1)
# Wall minutes are counted from two days before the year, so that every wall time of the year
# exists in the table whatever the zone's offset.
_WALL_BASE = _YEAR_START - timedelta(days=2)
_YEAR_MINUTES = (datetime(YEAR + 1, 1, 1) - _YEAR_START) // timedelta(minutes=1)


def _zone_of(library: str, name: str) -> tzinfo:
    if library == "zoneinfo":
        return ZoneInfo(name)
    if library == "pytz":
        return pytz.timezone(name)
    zone = dateutil_tz.gettz(name)
    assert zone is not None
    return zone


ZONE_CASES = [
    (library, name)
    for library in ("zoneinfo", "dateutil", "pytz")
    for name in ("Europe/Berlin", "America/New_York", "Australia/Sydney")
]


@functools.cache
def _first_instants(library: str, name: str) -> array.array[int]:
    """For each wall minute (counted from `_WALL_BASE`), the UTC minute (counted from the same
    naive origin) at which the documented rule fires it: the first UTC minute that shows that
    wall minute, or, for a wall minute the clocks skip, the first UTC minute after it. Found by
    converting every UTC minute of the year and a few days around it, one by one."""
    zone = _zone_of(library, name)
    count = _YEAR_MINUTES + 6 * 24 * 60
    first = array.array("q", [-1]) * (count + 4 * 24 * 60)
    moment = _WALL_BASE.replace(tzinfo=UTC)
    step = timedelta(minutes=1)
    for minute in range(count):
        offset = moment.astimezone(zone).utcoffset()
        assert offset is not None
        wall = minute + offset // step
        if 0 <= wall < len(first) and first[wall] < 0:
            first[wall] = minute
        moment += step
    for wall in range(len(first) - 2, -1, -1):
        if first[wall] < 0:
            first[wall] = first[wall + 1]
    return first


@functools.cache
def _year_transitions(library: str, name: str) -> list[datetime]:
    return _transitions(_zone_of(library, name), YEAR)


def _brute_force_fires(spec: Spec, library: str, name: str) -> list[int]:
    """Every fire of *spec* in the wall-clock year, as UTC minutes from `_WALL_BASE`, by
    testing each day and each minute of the day against the fields."""
    table = _first_instants(library, name)
    fires = set()
    for day_number in range((date(YEAR + 1, 1, 1) - date(YEAR, 1, 1)).days):
        day = date(YEAR, 1, 1) + timedelta(days=day_number)
        if not (spec.month_ok(day.year, day.month) and spec.day(day)):
            continue
        base = (datetime.combine(day, time()) - _WALL_BASE) // timedelta(minutes=1)
        for hour in spec.hours:
            for minute in spec.minutes:
                fires.add(table[base + hour * 60 + minute])
    return sorted(fires)


def _utc_minute(moment: datetime) -> float:
    return (moment.astimezone(UTC).replace(tzinfo=None) - _WALL_BASE) / timedelta(minutes=1)


@st.composite
def minute_specs(draw: st.DrawFn) -> Spec:
    """Unix or Quartz expressions that fire on whole minutes."""
    if draw(st.booleans()):
        return draw(unix_specs())
    spec = draw(quartz_specs())
    return replace(spec, text="0" + spec.text[spec.text.index(" ") :], seconds=(0,))


def _year_property(spec: Spec, case: tuple[str, str], starts: list[int]) -> None:
    """next_after and latest_at_or_before give the brute-force fire times of a year, from
    random moments and from each side of every clock change."""
    schedule = _parse_or_check_never(spec)
    if schedule is None:
        return
    library, name = case
    zone = _zone_of(library, name)
    fires = _brute_force_fires(spec, library, name)
    lowest = _first_instants(library, name)[(_YEAR_START - _WALL_BASE) // timedelta(minutes=1)]
    highest = lowest + _YEAR_MINUTES - 24 * 60
    moments = [_YEAR_START.replace(tzinfo=UTC) + timedelta(seconds=seconds) for seconds in starts]
    moments += [
        change + timedelta(seconds=delta)
        for change in _year_transitions(library, name)
        for delta in (-3601, -1, 0, 1, 3599)
    ]
    for moment in moments:
        local = moment.astimezone(zone)
        at = _utc_minute(local)
        if not lowest + 24 * 60 <= at <= highest:
            continue
        _check_next(schedule, local, fires, at, highest)
        _check_latest(schedule, local, fires, at, lowest)


_STARTS = st.lists(st.integers(0, _YEAR_MINUTES * 60), min_size=3, max_size=3)


@needs_tzdata
class TestYearMinuteByMinute:
    @settings(max_examples=50, deadline=None)
    @given(
        spec=minute_specs(),
        case=st.sampled_from([case for case in ZONE_CASES if case[0] == "zoneinfo"]),
        starts=_STARTS,
    )
    def test_zoneinfo_zones(self, spec: Spec, case: tuple[str, str], starts: list[int]) -> None:
        """Against a minute-by-minute brute force over 2024 in Berlin, New York and Sydney."""
        _year_property(spec, case, starts)

    @pytest.mark.slow
    @settings(max_examples=200, deadline=None)
    @given(spec=minute_specs(), case=st.sampled_from(ZONE_CASES), starts=_STARTS)
    def test_zoneinfo_dateutil_and_pytz_zones(
        self, spec: Spec, case: tuple[str, str], starts: list[int]
    ) -> None:
        """The same with the zones of zoneinfo, dateutil and pytz (pytz's need localize and
        normalize, which fire times never rely on)."""
        _year_property(spec, case, starts)


def _check_next(
    schedule: CronSchedule, local: datetime, fires: list[int], at: float, end: int
) -> None:
    following = schedule.next_after(local)
    index = bisect.bisect_right(fires, at)
    expected = fires[index] if index < len(fires) else None
    if expected is None or expected > end:
        assert following is None or _utc_minute(following) > end, (schedule.expression, local)
        return
    assert following is not None, (schedule.expression, local)
    assert _utc_minute(following) == expected, (schedule.expression, local, following)
    assert following.utcoffset() == following.astimezone(UTC).astimezone(local.tzinfo).utcoffset()


def _check_latest(
    schedule: CronSchedule, local: datetime, fires: list[int], at: float, start: int
) -> None:
    latest = schedule.latest_at_or_before(local, not_before=local - timedelta(days=400))
    index = bisect.bisect_right(fires, at)
    expected = fires[index - 1] if index else None
    if expected is None or expected < start:
        assert latest is None or _utc_minute(latest) < start, (schedule.expression, local)
        return
    assert latest is not None, (schedule.expression, local)
    assert _utc_minute(latest) == expected, (schedule.expression, local, latest)
