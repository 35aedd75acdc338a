"""Cron expressions in the Unix (5 fields) and Quartz (6-7 fields, seconds first) dialects."""

from __future__ import annotations

from datetime import datetime

import attrs

__all__ = ["CronSchedule", "parse_cron"]


@attrs.frozen
class CronSchedule:
    """A parsed cron expression; `next_after` gives fire times in the zone of its argument."""

    expression: str

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after *moment* (aware), in *moment*'s zone."""
        raise NotImplementedError


def parse_cron(expression: str) -> CronSchedule:
    """Parse *expression*; raise ValueError saying what is wrong when it cannot be honoured."""
    if not expression.strip():
        raise ValueError("empty cron expression")
    return CronSchedule(expression)
