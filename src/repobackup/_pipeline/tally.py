"""The tally of one run: its counts, errors, notes and phase, shared by its blob workers.

Counts are typed (`Counts`), phases and error scopes are enums, the error list is bounded.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

import attrs

from .._archive.problems import Bounded
from .._model.task import BackupTask, ErrorStrategy, RunCounts, RunError
from ..exceptions import RepoBackupError

__all__ = ["Counts", "ErrorScope", "FastFail", "Phase", "Progress", "RunState"]

MAX_ERRORS = 100
#: Failed records and blobs a backup's manifest lists at most (each): the manifest stays
#: well under its 16 MiB limit, and a run's memory bounded.
MAX_FAILED = 50_000
# Blobs whose file is remembered for an error message: far more than a pump holds in flight.
_BLOB_FILES = 65_536
PROGRESS_EVERY = 0.25  # seconds between progress events


class Phase(enum.StrEnum):
    """Where a run is; progress events name it."""

    ESTIMATE = "estimate"
    RECORDS = "records"
    BLOBS = "blobs"
    COMMIT = "commit"
    RESTORE = "restore"
    DONE = "done"


class ErrorScope(enum.StrEnum):
    """What an error of a run concerns; its key names the one that failed."""

    TASK = "task"
    PROJECT = "project"
    REPOSITORY = "repository"
    MEMBER = "member"
    RECORD = "record"
    BLOB = "blob"


@attrs.frozen
class Progress:
    """A progress event: what phase a run is in and how far it got (totals where known)."""

    task_id: str
    phase: Phase
    records: int
    bytes: int
    total_bytes: int | None = None


class FastFail(RepoBackupError):
    """Stops a FAST_FAIL run at its first error (the error itself is in the summary)."""


@attrs.define
class Counts:
    """The running figures of one run; `freeze` gives the summary's `RunCounts`."""

    records_written: int = 0
    records_skipped: int = 0
    records_failed: int = 0
    blobs_written: int = 0
    blobs_reused: int = 0
    blobs_failed: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    def freeze(self) -> RunCounts:
        return RunCounts(**attrs.asdict(self))


class RunState:
    """The mutable tally of one run, shared by the pipeline and its blob workers."""

    def __init__(
        self,
        task: BackupTask,
        on_progress: Callable[[Progress], None] | None,
        *,
        holds_lease: Callable[[], bool] | None = None,
    ) -> None:
        assert task.id is not None
        self.task = task
        self.task_id = task.id
        self.fast_fail = task.backup_setting.error_strategy is ErrorStrategy.FAST_FAIL
        self.counts = Counts()
        self._errors: Bounded[RunError] = Bounded(MAX_ERRORS)
        self.notes: list[str] = []
        self.total_bytes: int | None = None
        self.since: datetime | None = None
        self.phase = Phase.RECORDS
        self._lock = threading.Lock()
        self._on_progress = on_progress
        # Asked before a backup commits: a run taken for dead must not make it look complete.
        self.holds_lease = holds_lease or (lambda: True)
        self._last_progress = 0.0
        self._failed: dict[ErrorScope, list[str]] = {ErrorScope.BLOB: [], ErrorScope.RECORD: []}
        #: Failures past `MAX_FAILED` that the manifest could not list.
        self.failed_dropped = 0
        self._blob_files: OrderedDict[str, str] = OrderedDict()

    @property
    def errors(self) -> list[RunError]:
        """The errors kept so far (at most `MAX_ERRORS`)."""
        return self._errors.items

    @property
    def errors_dropped(self) -> int:
        """How many errors were left out because the list was full."""
        return self._errors.dropped

    def add(
        self,
        *,
        records_written: int = 0,
        records_skipped: int = 0,
        records_failed: int = 0,
        blobs_written: int = 0,
        blobs_reused: int = 0,
        blobs_failed: int = 0,
        bytes_read: int = 0,
        bytes_written: int = 0,
    ) -> None:
        with self._lock:
            counts = self.counts
            counts.records_written += records_written
            counts.records_skipped += records_skipped
            counts.records_failed += records_failed
            counts.blobs_written += blobs_written
            counts.blobs_reused += blobs_reused
            counts.blobs_failed += blobs_failed
            counts.bytes_read += bytes_read
            counts.bytes_written += bytes_written
        self.progress()

    def note_blob(self, sha256: str, where: str) -> None:
        """Remember which file (project/repository/path) a blob being copied belongs to, so
        that its error names the file as well as the sha256."""
        with self._lock:
            files = self._blob_files
            files[sha256] = where
            files.move_to_end(sha256)
            if len(files) > _BLOB_FILES:
                files.popitem(last=False)

    def fail(self, scope: ErrorScope, key: str, message: str) -> None:
        """Record one failure; under FAST_FAIL, stop the run. A blob's error names its file
        when `note_blob` told it."""
        with self._lock:
            if scope is ErrorScope.BLOB and (where := self._blob_files.get(key)):
                message = f"{message} (file {where})"
            failed = self._failed.get(scope)
            if failed is not None:
                if len(failed) < MAX_FAILED:
                    failed.append(key)
                else:
                    self.failed_dropped += 1
            self._errors.add(RunError(scope.value, key, message))
        if self.fast_fail:
            raise FastFail(f"stopped at the first error (FAST_FAIL): {scope} {key}: {message}")

    def fail_run(self, message: str) -> None:
        """Record what ended the run; it is always kept, even when the list is full."""
        with self._lock:
            if any(error.message == message for error in self._errors.items):
                return
            self._errors.add_last(RunError(ErrorScope.TASK.value, self.task_id, message))

    def failed_blobs(self) -> list[str]:
        """The sha256 of every blob whose copy failed (up to `MAX_FAILED`), in order."""
        with self._lock:
            return list(dict.fromkeys(self._failed[ErrorScope.BLOB]))

    def failed_records(self) -> list[str]:
        """The key of every record that failed (up to `MAX_FAILED`), in order."""
        with self._lock:
            return list(dict.fromkeys(self._failed[ErrorScope.RECORD]))

    def progress(self, phase: Phase | None = None, *, force: bool = False) -> None:
        if phase is not None:
            self.phase = phase
        if self._on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_EVERY:
            return
        self._last_progress = now
        counts = self.counts
        done = counts.records_written + counts.records_skipped
        self._on_progress(
            Progress(self.task_id, self.phase, done, counts.bytes_read, self.total_bytes)
        )

    def frozen_counts(self) -> RunCounts:
        return self.counts.freeze()
