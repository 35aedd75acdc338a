"""The tally of one run: its counts, errors, notes and phase, shared by its blob workers.

Counts are typed (`Counts`), phases and error scopes are enums, the error list is bounded.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

import attrs

from .._archive.problems import Bounded
from .._model.progress import PROGRESS_EVERY, Phase, Progress, ProgressMeter
from .._model.task import BackupTask, ErrorStrategy, RunCounts, RunError, TaskType
from ..exceptions import RepoBackupError

__all__ = [
    "PROGRESS_EVERY",
    "CancelFlag",
    "Cancelled",
    "Counts",
    "ErrorScope",
    "FastFail",
    "Phase",
    "Progress",
    "RunState",
]

MAX_ERRORS = 100
#: Failed records and blobs a backup's manifest lists at most (each): the manifest stays
#: well under its 16 MiB limit, and a run's memory bounded.
MAX_FAILED = 50_000
# Blobs whose file is remembered for an error message: far more than a pump holds in flight.
_BLOB_FILES = 65_536


class ErrorScope(enum.StrEnum):
    """What an error of a run concerns; its key names the one that failed."""

    TASK = "task"
    PROJECT = "project"
    REPOSITORY = "repository"
    MEMBER = "member"
    RECORD = "record"
    BLOB = "blob"


class FastFail(RepoBackupError):
    """Stops a FAST_FAIL run at its first error (the error itself is in the summary)."""


class Cancelled(RepoBackupError):
    """Stops a run whose cancellation was asked for (`Engine.cancel`), at the next record
    or blob it counts; the run ends FAILED with this message."""


class CancelFlag:
    """Set to cancel one run; the run looks at it each time it counts a record or a blob."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


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
        cancel: CancelFlag | None = None,
    ) -> None:
        assert task.id is not None
        self.task = task
        self.task_id = task.id
        self.fast_fail = task.backup_setting.error_strategy is ErrorStrategy.FAST_FAIL
        self.counts = Counts()
        self._errors: Bounded[RunError] = Bounded(MAX_ERRORS)
        self.notes: list[str] = []
        #: What the run's progress is measured against, where known: blob bytes and files.
        self.total_bytes: int | None = None
        self.total_files: int | None = None
        # Blobs not copied because they were there already count as done for progress.
        self._reused_bytes = 0
        self.cancel = cancel or CancelFlag()
        self.since: datetime | None = None
        self.phase = Phase.RECORDS
        self._lock = threading.Lock()
        self._meter = ProgressMeter(on_progress)
        # Asked before a backup commits: a run taken for dead must not make it look complete.
        self.holds_lease = holds_lease or (lambda: True)
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
        bytes_reused: int = 0,
    ) -> None:
        """Count what the run did; *bytes_reused* are the bytes of blobs it did not copy
        (there already), done as far as progress goes. Raises `Cancelled` once the run's
        cancellation was asked for."""
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
            self._reused_bytes += bytes_reused
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

    def check_cancelled(self) -> None:
        """Raise `Cancelled` if the run's cancellation was asked for."""
        if self.cancel.is_set():
            done = (
                "what it restored so far stays"
                if self.task.type is TaskType.DATA_RESTORE
                else "no backup was committed"
            )
            raise Cancelled(
                f"cancelled ({self.cancel.reason}): the run stopped before it completed; {done}"
            )

    def progress(self, phase: Phase | None = None, *, force: bool = False) -> None:
        """Send a progress event (at most every `PROGRESS_EVERY` seconds unless *force*);
        *phase* begins. Raises `Cancelled` once cancellation was asked for, except for the
        last event (`Phase.DONE`) of a run that ended."""
        if phase is not None:
            self.phase = phase
        if self.phase is not Phase.DONE:
            self.check_cancelled()
        if self._meter.due(force=force):
            self._meter.send(self.snapshot())
            if self.phase is not Phase.DONE:
                self.check_cancelled()  # the callback itself may have asked

    def snapshot(self) -> Progress:
        """The progress event for where the run is now."""
        with self._lock:
            counts = self.counts
            records = counts.records_written + counts.records_skipped
            files = counts.blobs_written + counts.blobs_reused + counts.blobs_failed
            done = counts.bytes_read + self._reused_bytes
        total_files, total_bytes = self.total_files, self.total_bytes
        # A blob two batches of a restore share counts twice; never past what is known.
        if total_files is not None:
            files = min(files, total_files)
        if total_bytes is not None:
            done = min(done, total_bytes)
        return Progress(self.task_id, self.phase, records, done, total_bytes, files, total_files)

    def frozen_counts(self) -> RunCounts:
        return self.counts.freeze()
