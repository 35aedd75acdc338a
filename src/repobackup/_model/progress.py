"""The progress event of runs and verifies (`Progress`, its `Phase`), and `ProgressMeter`,
which sends them to a callback at most every quarter of a second."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import attrs

__all__ = ["PROGRESS_EVERY", "Phase", "Progress", "ProgressMeter"]

PROGRESS_EVERY = 0.25  # seconds between progress events


class Phase(enum.StrEnum):
    """Where a run (or a verify) is; progress events name it."""

    ESTIMATE = "estimate"
    RECORDS = "records"
    BLOBS = "blobs"
    COMMIT = "commit"
    RESTORE = "restore"
    DONE = "done"


@attrs.frozen
class Progress:
    """A progress event: what phase a run or a verify is in and how far it got.

    ``records`` record lines and ``files`` blobs (file contents) done, ``bytes`` of blobs
    done; ``total_bytes`` and ``total_files`` are what the work holds, where known before
    it ends (a backup knows them once its space check sized the content; a restore and a
    verify from the manifests), else None. ``task_id`` is None for a verify, which belongs
    to no task.
    """

    task_id: str | None
    phase: Phase
    records: int
    bytes: int
    total_bytes: int | None = None
    files: int = 0
    total_files: int | None = None


class ProgressMeter:
    """Sends `Progress` events to *on_progress*: a forced one at once (a phase begins or
    ends), the others at most every `PROGRESS_EVERY` seconds, so that a callback that
    draws a bar costs nothing however many records go by."""

    def __init__(self, on_progress: Callable[[Progress], None] | None) -> None:
        self.on_progress = on_progress
        self._last = 0.0

    def due(self, *, force: bool = False) -> bool:
        """Whether an event goes out now (and, if so, that one just did)."""
        if self.on_progress is None:
            return False
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY:
            return False
        self._last = now
        return True

    def send(self, event: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(event)
