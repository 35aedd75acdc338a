"""What both task stores share, so that they cannot drift apart: the lease record, the limits,
and the checks and state changes behind each `TaskStore` method."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import attrs

from .._model.task import BackupTask, Page, RunSummary, TaskState
from ..exceptions import Problem, TaskRunningError, ValidationError

__all__ = [
    "DEFAULT_RUN_HISTORY",
    "MAX_PAGE_SIZE",
    "RunLease",
    "check_enabled",
    "check_finish",
    "check_history",
    "check_limit",
    "check_new",
    "check_page",
    "check_startable",
    "check_state",
    "finished",
    "last_run_state",
    "newest_key",
    "page",
    "require_aware",
    "started",
    "updated",
    "with_enabled",
]

MAX_PAGE_SIZE = 1000
DEFAULT_RUN_HISTORY = 50

# The states a run can end in: FINISHED or FAILED, or PENDING for a recurring task that
# waits for its next fire time.
_END_STATES = frozenset({TaskState.FINISHED, TaskState.FAILED, TaskState.PENDING})


@attrs.frozen
class RunLease:
    """Who holds a RUNNING task and when they last said they were alive."""

    task_id: str
    owner: str
    heartbeat: datetime


def require_aware(value: datetime | None, name: str) -> datetime:
    """*value* if it is an aware datetime, else ValueError naming *name*."""
    if value is None or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value


def check_new(task: BackupTask) -> str:
    """The id of *task* if it may be stored as a new task; else ValueError."""
    if task.id is None:
        raise ValueError("a task must have an id before it is stored")
    require_aware(task.created_date, "created_date")
    if task.state is TaskState.RUNNING:
        raise ValueError(f"task {task.id!r} cannot be stored as RUNNING: runs begin with start()")
    return task.id


def check_page(page_number: int, page_size: int) -> None:
    """ValidationError naming ``$.pageSize`` and ``$.pageNumber`` when they are out of range."""
    problems = []
    if not _is_int(page_size) or not 1 <= page_size <= MAX_PAGE_SIZE:
        problems.append(
            Problem(
                "$.pageSize", f"must be an integer from 1 to {MAX_PAGE_SIZE}, got {page_size!r}"
            )
        )
    if not _is_int(page_number) or page_number < 1:
        problems.append(
            Problem("$.pageNumber", f"must be an integer of 1 or more, got {page_number!r}")
        )
    if problems:
        raise ValidationError(problems)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_state(state: TaskState | str | None, path: str = "$.state") -> TaskState | None:
    """*state* as a TaskState (None stays None); ValidationError naming *path* otherwise."""
    if state is None:
        return None
    try:
        return TaskState(state)
    except ValueError:
        allowed = ", ".join(member.value for member in TaskState)
        raise ValidationError(
            [Problem(path, f"unknown value {state!r}, expected one of {allowed}")]
        ) from None


def last_run_state(task: BackupTask) -> TaskState | None:
    """The state the task's last run ended in, or None when it never ran."""
    return None if task.last_run is None else task.last_run.state


def newest_key(task: BackupTask) -> tuple[datetime, str]:
    """The sort key of a listing, newest first when reversed: created date, then id."""
    # create() refused tasks without these, so every stored task has both.
    assert task.created_date is not None
    assert task.id is not None
    return task.created_date, task.id


def page(
    records: Sequence[BackupTask], page_number: int, page_size: int, total: int
) -> Page[BackupTask]:
    """One page of a listing of *total* tasks."""
    return Page(
        page_number=page_number,
        page_size=page_size,
        total_records=total,
        total_pages=math.ceil(total / page_size),
        records=tuple(records),
    )


def check_startable(task: BackupTask, unless_started_since: datetime | None) -> None:
    """TaskRunningError unless *task* may start now (the compare of the compare-and-set)."""
    assert task.id is not None
    if task.state is TaskState.RUNNING:
        raise TaskRunningError(task.id)
    if (
        unless_started_since is not None
        and task.start_date is not None
        and task.start_date >= unless_started_since
    ):
        raise TaskRunningError(task.id)


def started(task: BackupTask, now: datetime) -> BackupTask:
    """*task* as `TaskStore.start` leaves it."""
    return attrs.evolve(
        task, state=TaskState.RUNNING, start_date=now, end_date=None, last_modified_date=now
    )


def check_finish(task_id: str, state: TaskState, summary: RunSummary, now: datetime) -> None:
    """ValueError unless a run of *task_id* may end in *state* with *summary*."""
    require_aware(now, "now")
    if state not in _END_STATES:
        raise ValueError(f"a run ends in FINISHED, FAILED or PENDING, not {state!r}")
    if summary.task_id != task_id:
        raise ValueError(f"the summary is of task {summary.task_id!r}, not of {task_id!r}")


def finished(task: BackupTask, state: TaskState, summary: RunSummary, now: datetime) -> BackupTask:
    """*task* as `TaskStore.finish` leaves it."""
    return attrs.evolve(task, state=state, end_date=now, last_run=summary, last_modified_date=now)


def updated(stored: BackupTask, task: BackupTask) -> BackupTask:
    """*task*'s own fields on *stored*'s history (and its ``enabled``, which only
    `TaskStore.set_enabled` changes)."""
    return attrs.evolve(
        task,
        state=stored.state,
        start_date=stored.start_date,
        end_date=stored.end_date,
        last_run=stored.last_run,
        created_by=stored.created_by,
        created_date=stored.created_date,
        enabled=stored.enabled,
    )


def with_enabled(task: BackupTask, enabled: bool, now: datetime, user: str | None) -> BackupTask:
    """*task* as `TaskStore.set_enabled` leaves it."""
    return attrs.evolve(
        task,
        enabled=enabled,
        last_modified_date=now,
        last_modified_by=task.last_modified_by if user is None else user,
    )


def check_enabled(enabled: object) -> bool:
    """*enabled* if it is a bool, else ValueError (``0`` or ``"no"`` are not taken)."""
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled: expected True or False, got {enabled!r}")
    return enabled


def check_limit(limit: int) -> None:
    """ValueError unless *limit* is an integer of 0 or more."""
    if not _is_int(limit) or limit < 0:
        raise ValueError(f"limit must be an integer of 0 or more, got {limit!r}")


def check_history(run_history: int) -> int:
    """*run_history* if it is an integer of 1 or more, else ValueError."""
    if not _is_int(run_history) or run_history < 1:
        raise ValueError(f"run_history must be an integer of 1 or more, got {run_history!r}")
    return run_history
