"""Cron cases carried over from the reference implementations' own tests (Quartz, cron-utils,
cronsim, cronie), read from tests/data/ where each file names its sources."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytz
from dateutil import tz as dateutil_tz

from repobackup import parse_cron

DATA = Path(__file__).parent / "data"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return loaded


QUARTZ = _load("quartz_cron_cases.json")
CRONUTILS = _load("cronutils_quartz_cases.json")
UNIX = _load("unix_cron_cases.json")


def _utc(text: str) -> datetime:
    """A wall time without offset read in UTC, or a time with offset as it is."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [f"{case.get('test') or case.get('source')}:{case['expression']}" for case in cases]


def _fires_at(expression: str, moment: datetime) -> bool:
    """Whether *expression* fires at exactly *moment* (whole seconds)."""
    following = parse_cron(expression).next_after(moment - timedelta(seconds=1))
    return following is not None and following == moment


def _moments(case: dict[str, Any]) -> list[tuple[datetime, bool]]:
    return [(_utc(text), True) for text in case["at"]] + [
        (_utc(text), False) for text in case["not_at"]
    ]


class TestQuartzOwnCases:
    """quartz/src/test/java/org/quartz/CronExpressionTest.java."""

    @pytest.mark.parametrize("case", QUARTZ["valid"], ids=_ids(QUARTZ["valid"]))
    def test_valid(self, case: dict[str, Any]) -> None:
        """Quartz accepts it, and so do we."""
        assert parse_cron(case["expression"]).dialect == "quartz"

    @pytest.mark.parametrize("case", QUARTZ["invalid"], ids=_ids(QUARTZ["invalid"]))
    def test_invalid(self, case: dict[str, Any]) -> None:
        """Quartz refuses it, and so do we, with a message."""
        with pytest.raises(ValueError, match=r"\w") as caught:
            parse_cron(case["expression"])
        assert str(caught.value)

    @pytest.mark.parametrize("case", QUARTZ["satisfied"], ids=_ids(QUARTZ["satisfied"]))
    def test_satisfied_by(self, case: dict[str, Any]) -> None:
        """isSatisfiedBy: the expression fires at each listed time and at no unlisted one."""
        for moment, expected in _moments(case):
            assert _fires_at(case["expression"], moment) is expected, moment

    @pytest.mark.parametrize("case", QUARTZ["sequences"], ids=_ids(QUARTZ["sequences"]))
    def test_sequence(self, case: dict[str, Any]) -> None:
        """getTimeAfter, chained: the listed fire times, in order."""
        fires = parse_cron(case["expression"]).upcoming(_utc(case["after"]), len(case["fires"]))
        assert fires == [_utc(text) for text in case["fires"]]

    @pytest.mark.parametrize("case", QUARTZ["distinct_fires"], ids=_ids(QUARTZ["distinct_fires"]))
    def test_no_fire_time_repeats(self, case: dict[str, Any]) -> None:
        """QTZ-259: chained fire times never repeat one."""
        fires = parse_cron(case["expression"]).upcoming(_utc("2024-01-01T00:00:00"), case["count"])
        assert len(fires) == case["count"]
        assert all(later > earlier for earlier, later in itertools.pairwise(fires))

    @pytest.mark.parametrize("case", QUARTZ["intervals"], ids=_ids(QUARTZ["intervals"]))
    def test_intervals_around_a_fire(self, case: dict[str, Any]) -> None:
        """getTimeBefore / getTimeAfter around a fire time are the listed seconds away."""
        schedule = parse_cron(case["expression"])
        fire = schedule.next_after(_utc("2024-01-01T12:00:00"))
        assert fire is not None
        before = schedule.latest_at_or_before(
            fire - timedelta(microseconds=1), not_before=fire - timedelta(days=2)
        )
        after = schedule.next_after(fire)
        assert before is not None
        assert after is not None
        assert (fire - before).total_seconds() == case["before"]
        assert (after - fire).total_seconds() == case["after"]

    @pytest.mark.parametrize("case", QUARTZ["bounded"], ids=_ids(QUARTZ["bounded"]))
    def test_year_bounds(self, case: dict[str, Any]) -> None:
        """A year field bounds the fire times both ways."""
        schedule = parse_cron(case["expression"])
        now = _utc(case["now"])
        following = schedule.next_after(now)
        latest = schedule.latest_at_or_before(now, not_before=_utc("1970-01-01T00:00:00"))
        assert following == (_utc(case["next"]) if case["next"] else None)
        assert latest == (_utc(case["previous"]) if case["previous"] else None)

    def test_no_fire_outside_1970_to_2099(self) -> None:
        """Quartz's years run 1970-2099 whether or not the expression has a year field."""
        schedule = parse_cron("0 0 0 1 1 ?")
        assert schedule.next_after(_utc("2099-01-01T00:00:00")) is None
        assert schedule.next_after(_utc("1960-06-01T00:00:00")) == _utc("1970-01-01T00:00:00")
        assert (
            schedule.latest_at_or_before(
                _utc("1969-12-31T00:00:00"), not_before=_utc("1900-01-01T00:00:00")
            )
            is None
        )


class TestCronUtilsQuartzCases:
    """cron-utils' ExecutionTimeQuartzIntegrationTest."""

    @staticmethod
    def _now(case: dict[str, Any]) -> datetime:
        moment = datetime.fromisoformat(case["now"])
        if "zone" in case:
            return moment.replace(tzinfo=ZoneInfo(case["zone"]))
        return _utc(case["now"])

    @pytest.mark.parametrize("case", CRONUTILS["next"], ids=_ids(CRONUTILS["next"]))
    def test_next(self, case: dict[str, Any]) -> None:
        """nextExecution."""
        following = parse_cron(case["expression"]).next_after(self._now(case))
        assert following is not None
        assert following.isoformat() == datetime.fromisoformat(case["expected"]).isoformat()

    @pytest.mark.parametrize("case", CRONUTILS["previous"], ids=_ids(CRONUTILS["previous"]))
    def test_previous(self, case: dict[str, Any]) -> None:
        """lastExecution: the latest fire time strictly before now."""
        now = self._now(case)
        latest = parse_cron(case["expression"]).latest_at_or_before(
            now - timedelta(microseconds=1), not_before=_utc("1970-01-01T00:00:00")
        )
        assert latest is not None
        assert latest.isoformat() == datetime.fromisoformat(case["expected"]).isoformat()

    @pytest.mark.parametrize("case", CRONUTILS["matches"], ids=_ids(CRONUTILS["matches"]))
    def test_matches(self, case: dict[str, Any]) -> None:
        """isMatch."""
        for moment, expected in _moments(case):
            assert _fires_at(case["expression"], moment) is expected, moment

    @pytest.mark.parametrize("case", CRONUTILS["intervals"], ids=_ids(CRONUTILS["intervals"]))
    def test_minimum_interval(self, case: dict[str, Any]) -> None:
        """The gap between the first two fire times after 2016-01-01."""
        first, second = parse_cron(case["expression"]).upcoming(_utc("2016-01-01T00:00:00"), 2)
        assert (second - first).total_seconds() == case["seconds"]

    @pytest.mark.parametrize("case", CRONUTILS["valid"], ids=_ids(CRONUTILS["valid"]))
    def test_valid(self, case: dict[str, Any]) -> None:
        """Accepted, and it fires."""
        assert parse_cron(case["expression"]).next_after(_utc("2016-01-01T00:00:00"))

    @pytest.mark.parametrize("case", CRONUTILS["invalid"], ids=_ids(CRONUTILS["invalid"]))
    def test_invalid(self, case: dict[str, Any]) -> None:
        """Refused."""
        with pytest.raises(ValueError, match=r"\w"):
            parse_cron(case["expression"])


def _days_fired(expression: str, days: int) -> list[datetime]:
    start = _utc("2024-01-01T00:00:00")
    schedule = parse_cron(expression)
    fires = []
    current = start
    while (following := schedule.next_after(current)) is not None:
        if following >= start + timedelta(days=days):
            break
        fires.append(following)
        current = following.replace(hour=23, minute=59, second=59)
    return fires


class TestUnixCases:
    """cronsim's tests in cronie's syntax, and cronie's own rules."""

    @pytest.mark.parametrize("case", UNIX["sequences"], ids=_ids(UNIX["sequences"]))
    def test_sequence(self, case: dict[str, Any]) -> None:
        """Chained next fire times."""
        fires = parse_cron(case["expression"]).upcoming(_utc(case["now"]), len(case["expected"]))
        assert fires == [_utc(text) for text in case["expected"]]

    @pytest.mark.parametrize("case", UNIX["minute_sets"], ids=_ids(UNIX["minute_sets"]))
    def test_minutes(self, case: dict[str, Any]) -> None:
        """The minutes of an hour a minute field names."""
        fires = parse_cron(case["expression"]).upcoming(_utc("2023-12-31T23:59:59"), 61)
        assert sorted({fire.minute for fire in fires if fire.hour == 0}) == case["minutes"]

    @pytest.mark.parametrize("case", UNIX["weekday_sets"], ids=_ids(UNIX["weekday_sets"]))
    def test_weekdays(self, case: dict[str, Any]) -> None:
        """The weekdays (0=Sunday) a day-of-week field names, over two weeks."""
        fired = {fire.isoweekday() % 7 for fire in _days_fired(case["expression"], 14)}
        assert sorted(fired) == case["weekdays"]

    @pytest.mark.parametrize("case", UNIX["month_sets"], ids=_ids(UNIX["month_sets"]))
    def test_months(self, case: dict[str, Any]) -> None:
        """The months a month field names, over a year."""
        fires = parse_cron(case["expression"]).upcoming(_utc("2024-01-01T00:00:00"), 3)
        assert sorted({fire.month for fire in fires}) == case["months"]

    @pytest.mark.parametrize(
        "expression",
        [
            pattern % value
            for pattern in UNIX["invalid_patterns"]["patterns"]
            for value in UNIX["invalid_patterns"]["values"]
        ],
    )
    def test_bad_values(self, expression: str) -> None:
        """cronsim's product of patterns and bad values: each one refused."""
        with pytest.raises(ValueError, match=r"\w"):
            parse_cron(expression)

    @pytest.mark.parametrize("case", UNIX["invalid"], ids=_ids(UNIX["invalid"]))
    def test_invalid(self, case: dict[str, Any]) -> None:
        """Refused with a message."""
        with pytest.raises(ValueError, match=r"\w"):
            parse_cron(case["expression"])


def _zoneinfo(name: str, wall: datetime) -> datetime:
    return wall.replace(tzinfo=ZoneInfo(name))


def _dateutil(name: str, wall: datetime) -> datetime:
    zone = dateutil_tz.gettz(name)
    assert zone is not None
    return wall.replace(tzinfo=zone)


def _pytz(name: str, wall: datetime) -> datetime:
    # cronsim's moments are first occurrences (fold=0): pytz says so with is_dst=True.
    return pytz.timezone(name).localize(wall, is_dst=True)


LOCALISERS: dict[str, Callable[[str, datetime], datetime]] = {
    "zoneinfo": _zoneinfo,
    "dateutil": _dateutil,
    "pytz": _pytz,
}


@pytest.mark.parametrize("library", list(LOCALISERS))
@pytest.mark.parametrize("case", UNIX["dst"], ids=_ids(UNIX["dst"]))
def test_cronsim_dst_cases(library: str, case: dict[str, Any]) -> None:
    """cronsim's daylight-saving cases in Europe/Riga, with zoneinfo, dateutil and pytz zones:
    a skipped time fires once at the end of the gap, a repeated one once, at its first pass."""
    now = LOCALISERS[library]("Europe/Riga", datetime.fromisoformat(case["now"]))
    fires = parse_cron(case["expression"]).upcoming(now, len(case["expected"]))
    assert [fire.isoformat() for fire in fires] == case["expected"]
    zone: tzinfo | None = now.tzinfo
    assert zone is not None
    assert all(
        fire.utcoffset() == fire.astimezone(UTC).astimezone(zone).utcoffset() for fire in fires
    )
