"""Wall-clock times and instants in any `tzinfo` (zoneinfo, dateutil, pytz, fixed offsets), by
converting instants to wall times only, the one conversion every time-zone library gets right."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

__all__ = ["fire_instant", "in_zone", "local_wall", "repeat_end", "to_utc"]

_EPOCH = datetime(1970, 1, 1)
# Offsets in effect within this distance of a wall time are the only ones that can map it to an
# instant: no zone's offset is larger than a day, and no two changes come closer than this.
_PROBES = tuple(timedelta(hours=hours) for hours in (-30, -15, 0, 15, 30))


def to_utc(moment: datetime) -> datetime:
    """*moment* (aware) as a naive UTC datetime."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def local_wall(instant: datetime, zone: tzinfo) -> datetime:
    """The naive wall time in *zone* at naive UTC *instant*.

    `astimezone` calls the zone's own `fromutc`, which pytz implements as well as zoneinfo and
    dateutil do; attaching a zone to a wall time (`replace(tzinfo=...)`) is what pytz gets
    wrong, so nothing here does it.
    """
    return instant.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)


def in_zone(instant: datetime, zone: tzinfo) -> datetime:
    """Naive UTC *instant* as an aware datetime in *zone* (pytz: with its normalised offset)."""
    return instant.replace(tzinfo=UTC).astimezone(zone)


def _occurrences(wall: datetime, zone: tzinfo) -> list[datetime]:
    """Every naive UTC instant whose wall time in *zone* is *wall*, earliest first: none in a
    spring-forward gap, two in an hour a fall-back repeats."""
    offsets = set()
    for probe in _PROBES:
        offset = (wall + probe).replace(tzinfo=UTC).astimezone(zone).utcoffset()
        if offset is not None:
            offsets.add(offset)
    found = {wall - offset for offset in offsets if local_wall(wall - offset, zone) == wall}
    return sorted(found)


def _first_second(low: datetime, high: datetime, changed: Callable[[datetime], bool]) -> datetime:
    """The first whole second in (low, high] (naive UTC) for which ``changed(second)`` holds,
    given that it fails at *low* and holds at *high* and flips once between them."""
    low_s = math.floor((low - _EPOCH).total_seconds())
    high_s = math.ceil((high - _EPOCH).total_seconds())
    while high_s - low_s > 1:
        middle = (low_s + high_s) // 2
        if changed(_EPOCH + timedelta(seconds=middle)):
            high_s = middle
        else:
            low_s = middle
    return _EPOCH + timedelta(seconds=high_s)


def fire_instant(wall: datetime, zone: tzinfo) -> datetime:
    """The naive UTC instant at which naive *wall* fires in *zone*: its only or first
    occurrence, or, for a wall time the clocks skip, the first instant after the gap.

    Later wall times never fire at earlier instants under this rule, so the first matching wall
    time after a moment gives the first fire time after it.
    """
    found = _occurrences(wall, zone)
    if found:
        return found[0]
    offsets = sorted(
        offset
        for probe in _PROBES
        if (offset := (wall + probe).replace(tzinfo=UTC).astimezone(zone).utcoffset()) is not None
    )
    # Before the gap the smaller offset applies, after it the larger one: the instant that reads
    # `wall` with the larger offset comes before the change, the one with the smaller after it.
    return _first_second(
        wall - offsets[-1], wall - offsets[0], lambda second: local_wall(second, zone) > wall
    )


def repeat_end(instant: datetime, zone: tzinfo) -> datetime | None:
    """When naive UTC *instant* lies in the second pass of an hour a fall-back repeats, the naive
    wall time at which the repetition ends (every wall time before it has fired by then);
    else None."""
    wall = local_wall(instant, zone).replace(microsecond=0)
    found = _occurrences(wall, zone)
    second = instant.replace(microsecond=0)
    if len(found) < 2 or second == found[0]:
        return None
    first = found[0]
    old = in_zone(first, zone).utcoffset()
    change = _first_second(first, second, lambda moment: in_zone(moment, zone).utcoffset() != old)
    assert old is not None
    return change + old
