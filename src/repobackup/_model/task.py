"""The task model of the backup API: attrs classes and enums mirroring the spec's JSON.

Field names are snake_case here and camelCase in JSON (see `repobackup._json`).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Generic, TypeVar

import attrs

__all__ = [
    "BackupContent",
    "BackupSetting",
    "BackupTask",
    "ConflictStrategy",
    "ErrorStrategy",
    "ExecutionPlan",
    "ExecutionStrategy",
    "Page",
    "ProjectContentInfo",
    "Retention",
    "RunCounts",
    "RunError",
    "RunSummary",
    "TaskState",
    "TaskType",
]


class TaskType(enum.StrEnum):
    """What a task does."""

    DATA_BACKUP = "DATA_BACKUP"
    DATA_RESTORE = "DATA_RESTORE"


class TaskState(enum.StrEnum):
    """Where a task is in its life: PENDING → RUNNING → FINISHED or FAILED."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


class ConflictStrategy(enum.StrEnum):
    """On restore, what happens to a record whose key already exists in the target."""

    SKIP = "SKIP"
    OVERWRITE = "OVERWRITE"


class ErrorStrategy(enum.StrEnum):
    """Whether a failed record or blob stops the run (FAST_FAIL) or is recorded (CONTINUE)."""

    CONTINUE = "CONTINUE"
    FAST_FAIL = "FAST_FAIL"


class ExecutionStrategy(enum.StrEnum):
    """When a task runs."""

    IMMEDIATELY = "IMMEDIATELY"
    SPECIFIED_TIME = "SPECIFIED_TIME"
    CRON_EXPRESSION = "CRON_EXPRESSION"


@attrs.frozen
class ProjectContentInfo:
    """Which projects and repositories one entry selects (see `repobackup.select`)."""

    project_id: str | None = None
    project_regex: str | None = None
    repo_list: tuple[str, ...] | None = None
    repo_regex: str | None = None
    exclude_projects: tuple[str, ...] | None = None
    exclude_repos: tuple[str, ...] | None = None


@attrs.frozen
class BackupContent:
    """What a task backs up or restores."""

    common_data: bool = False
    compression: bool = False
    increment: bool | None = None
    increment_date: datetime | None = None
    projects: tuple[ProjectContentInfo, ...] | None = None
    #: Encrypt and authenticate every backup of the task (docs/format.md, format 2).
    encryption: bool = False


@attrs.frozen
class ExecutionPlan:
    """When a task runs, read together with `BackupSetting.execution_strategy`."""

    execute_immediately: bool = True
    execute_time: datetime | None = None
    cron_expression: str | None = None


@attrs.frozen
class Retention:
    """Which complete backups of a task to keep (extension field ``retention``, restic's rules).

    The newest *keep_last*, and the newest of each of the newest *keep_daily* days,
    *keep_weekly* ISO weeks, *keep_monthly* months and *keep_yearly* years, in the engine's
    zone (see docs/scheduling.md).
    """

    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None


@attrs.frozen
class BackupSetting:
    """How a task runs: conflicts, errors, schedule, space check."""

    conflict_strategy: ConflictStrategy = ConflictStrategy.OVERWRITE
    error_strategy: ErrorStrategy = ErrorStrategy.CONTINUE
    execution_strategy: ExecutionStrategy = ExecutionStrategy.IMMEDIATELY
    execution_plan: ExecutionPlan = attrs.Factory(ExecutionPlan)
    space_cap_check: bool = True
    retention: Retention | None = None


@attrs.frozen
class RunError:
    """One failure recorded during a run: scope (e.g. ``blob``, ``record``), key, message."""

    scope: str
    key: str
    message: str


@attrs.frozen
class RunCounts:
    """What a run did, in figures."""

    records_written: int = 0
    records_skipped: int = 0
    records_failed: int = 0
    blobs_written: int = 0
    blobs_reused: int = 0
    blobs_failed: int = 0
    bytes_read: int = 0
    bytes_written: int = 0


@attrs.frozen
class RunSummary:
    """The outcome of one run of a task."""

    task_id: str
    started: datetime
    ended: datetime | None = None
    state: TaskState = TaskState.RUNNING
    location: str | None = None
    counts: RunCounts = attrs.Factory(RunCounts)
    errors: tuple[RunError, ...] = ()
    errors_dropped: int = 0
    notes: tuple[str, ...] = ()
    since: datetime | None = None


@attrs.frozen
class BackupTask:
    """A backup or restore task as the API creates, stores and lists it.

    *name* is required when a task is created; it defaults to "" only so that a listed
    record without it (as the spec's own listing example shows) can still be read. A task
    that is not *enabled* is never started by a `Scheduler`; `Engine.execute` still runs it.
    """

    store_location: str
    content: BackupContent
    name: str = ""
    id: str | None = None
    type: TaskType = TaskType.DATA_BACKUP
    backup_setting: BackupSetting = attrs.Factory(BackupSetting)
    state: TaskState = TaskState.PENDING
    created_by: str | None = None
    created_date: datetime | None = None
    last_modified_by: str | None = None
    last_modified_date: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    last_run: RunSummary | None = None
    enabled: bool = True


T = TypeVar("T")


@attrs.frozen
class Page(Generic[T]):
    """One page of a listing; JSON also carries ``count`` (= totalRecords) and ``page``."""

    page_number: int
    page_size: int
    total_records: int
    total_pages: int
    records: tuple[T, ...]
