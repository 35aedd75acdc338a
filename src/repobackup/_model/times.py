"""Datetime helpers: parsing the API's timestamps and the default time zone of naive input."""

from __future__ import annotations

import contextvars
import os
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, tzinfo

__all__ = ["format_datetime", "local_zone", "naive_zone", "parse_datetime", "utcnow"]

_NAIVE_ZONE: contextvars.ContextVar[tzinfo | None] = contextvars.ContextVar(
    "repobackup_naive_zone", default=None
)


def local_zone() -> tzinfo:
    """The machine's local time zone, with its daylight-saving rules where they can be found
    (TZ, then /etc/localtime); else the fixed offset of the current moment."""
    for key in (os.environ.get("TZ", "").lstrip(":"), _localtime_key()):
        if key:
            try:
                return zoneinfo.ZoneInfo(key)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                continue
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def _localtime_key() -> str | None:
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return None
    marker = "/zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else None


@contextmanager
def naive_zone(zone: tzinfo | None) -> Iterator[None]:
    """Within the block, timestamps without an offset are read in *zone* (None: local zone)."""
    token = _NAIVE_ZONE.set(zone)
    try:
        yield
    finally:
        _NAIVE_ZONE.reset(token)


def _attach_zone(value: datetime) -> datetime:
    if value.tzinfo is not None:
        return value
    zone = _NAIVE_ZONE.get()
    if zone is None:
        # astimezone() on a naive value reads it as local time, DST included.
        return value.astimezone()
    return value.replace(tzinfo=zone)


def parse_datetime(value: str) -> datetime:
    """Read an ISO 8601 timestamp (``2024-12-24T17:13:54``, ``...+08:00``, ``...Z``, a bare date,
    or a space instead of ``T``) as an aware datetime. Raises ValueError naming the value."""
    text = value.strip()
    try:
        if len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), time())
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 date or time: {value!r} (expected e.g. 2024-12-24T17:13:54+08:00)"
        ) from None
    return _attach_zone(parsed)


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


def format_datetime(value: datetime) -> str:
    """ISO 8601 with offset; milliseconds when that loses nothing (as Java servers write)."""
    if value.microsecond and value.microsecond % 1000 == 0:
        return value.isoformat(timespec="milliseconds")
    return value.isoformat()
