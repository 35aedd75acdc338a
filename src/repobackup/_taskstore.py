"""Where tasks and their run history live: `MemoryTaskStore` and `SqliteTaskStore` behind the
`TaskStore` protocol, with an atomic compare-and-set for starting a run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import attrs

from ._model import BackupTask, Page, RunSummary, TaskState

__all__ = ["MemoryTaskStore", "RunLease", "SqliteTaskStore", "TaskStore"]

MAX_PAGE_SIZE = 1000
DEFAULT_RUN_HISTORY = 50


@attrs.frozen
class RunLease:
    """Who holds a RUNNING task and when they last said they were alive."""

    task_id: str
    owner: str
    heartbeat: datetime


class TaskStore(Protocol):
    """Persistence of tasks. Every state change is atomic; `start` is a compare-and-set."""

    def create(self, task: BackupTask) -> None:
        """Store a new task (its id is set); ValueError if the id exists."""
        ...

    def get(self, task_id: str) -> BackupTask:
        """The task; TaskNotFoundError if absent."""
        ...

    def list(
        self, state: TaskState | None = None, page_number: int = 1, page_size: int = 20
    ) -> Page[BackupTask]:
        """Tasks newest first (by created date, then id); ValidationError for a page size
        outside 1..1000 or a page number below 1; a page past the end is empty."""
        ...

    def start(self, task_id: str, *, owner: str, now: datetime) -> BackupTask:
        """Atomically move a non-RUNNING task to RUNNING (start_date=now, end_date=None) and
        record *owner* with heartbeat *now*. TaskRunningError if it is RUNNING already,
        also when another process holds it; TaskNotFoundError if absent."""
        ...

    def heartbeat(self, task_id: str, *, owner: str, now: datetime) -> bool:
        """Refresh the lease; False when *owner* no longer holds the task."""
        ...

    def finish(
        self, task_id: str, *, owner: str, state: TaskState, summary: RunSummary, now: datetime
    ) -> BackupTask | None:
        """If *owner* still holds the RUNNING task: set *state* (FINISHED, FAILED, or PENDING
        for a recurring task), end_date=now, last_run=summary, last_modified_date=now, append
        *summary* to the run history, drop the lease, and return the task. Else None."""
        ...

    def leases(self) -> Sequence[RunLease]:
        """The leases of every RUNNING task."""
        ...

    def runs(self, task_id: str, limit: int = DEFAULT_RUN_HISTORY) -> list[RunSummary]:
        """Run history of the task, newest first, at most *limit* (the store keeps a bounded
        number per task)."""
        ...

    def update(self, task: BackupTask) -> None:
        """Replace the stored task's fields other than state, dates of runs and last_run."""
        ...


class MemoryTaskStore:
    """Tasks in this process's memory; for tests, notebooks and single-process use."""


class SqliteTaskStore:
    """Tasks in one SQLite database, safe across processes (WAL, IMMEDIATE transactions)."""

    def __init__(self, path: str) -> None:
        self._path = path
