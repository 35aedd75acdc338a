"""Where tasks and their run history live: the `TaskStore` protocol, with an atomic
compare-and-set for starting a run, and `MemoryTaskStore` (`SqliteTaskStore` is in .sqlite)."""

from __future__ import annotations

import builtins
import collections
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Protocol

from .._model.task import BackupTask, Page, RunSummary, TaskState
from ..exceptions import TaskNotFoundError, TaskRunningError
from . import rules
from .rules import DEFAULT_RUN_HISTORY, MAX_PAGE_SIZE, RunLease
from .sqlite import SqliteTaskStore

__all__ = [
    "DEFAULT_RUN_HISTORY",
    "MAX_PAGE_SIZE",
    "MemoryTaskStore",
    "RunLease",
    "SqliteTaskStore",
    "TaskStore",
    "all_tasks",
]


class TaskStore(Protocol):
    """Persistence of tasks. Every state change is atomic; `start` is a compare-and-set.

    Every method that takes a *task_id* raises TaskNotFoundError when no task has it. Times
    passed in (*now*, a task's created_date) must be timezone-aware (ValueError otherwise).
    """

    def create(self, task: BackupTask) -> None:
        """Store a new task. ValueError if its id is unset or exists already, if it has no
        aware created_date, or if it claims to be RUNNING (a run starts only through `start`)."""
        ...

    def get(self, task_id: str) -> BackupTask:
        """The task; TaskNotFoundError if absent."""
        ...

    def list(
        self,
        state: TaskState | None = None,
        page_number: int = 1,
        page_size: int = 20,
        *,
        last_run_state: TaskState | str | None = None,
    ) -> Page[BackupTask]:
        """Tasks newest first (by created date, then id), only those in *state* and only
        those whose last run ended in *last_run_state* when given (a task that never ran has
        no last run state). ValidationError for a page size outside 1..1000 (``$.pageSize``),
        a page number below 1 (``$.pageNumber``) or an unknown state (``$.state``,
        ``$.lastRunState``); a page past the end is empty and still carries the totals."""
        ...

    def start(
        self,
        task_id: str,
        *,
        owner: str,
        now: datetime,
        unless_started_since: datetime | None = None,
    ) -> BackupTask:
        """Atomically move a non-RUNNING task to RUNNING (start_date=now, end_date=None,
        last_modified_date=now) and record *owner* with heartbeat *now*. TaskRunningError if
        it is RUNNING already, also when another process holds it, or when it was started at
        or after *unless_started_since* (a due run another scheduler already made);
        TaskNotFoundError if absent."""
        ...

    def heartbeat(self, task_id: str, *, owner: str, now: datetime) -> bool:
        """Refresh the lease; False when *owner* no longer holds the task."""
        ...

    def finish(
        self, task_id: str, *, owner: str, state: TaskState, summary: RunSummary, now: datetime
    ) -> BackupTask | None:
        """If *owner* still holds the RUNNING task: set *state* (FINISHED, FAILED, or PENDING
        for a recurring task), end_date=now, last_run=summary, last_modified_date=now, append
        *summary* to the run history, drop the lease, and return the task. Else None.
        ValueError for any other *state* or a summary of another task."""
        ...

    def leases(self) -> Sequence[RunLease]:
        """The leases of every RUNNING task, by task id."""
        ...

    def runs(self, task_id: str, limit: int = DEFAULT_RUN_HISTORY) -> builtins.list[RunSummary]:
        """Run history of the task, newest first, at most *limit* (the store keeps a bounded
        number per task, 50 unless configured)."""
        ...

    def update(self, task: BackupTask) -> None:
        """Replace the stored task's fields, except those that record its history (state,
        start_date, end_date, last_run, created_by and created_date stay as stored) and
        ``enabled``, which only `set_enabled` changes."""
        ...

    def set_enabled(
        self, task_id: str, enabled: bool, *, now: datetime, user: str | None = None
    ) -> BackupTask:
        """Set whether schedulers may start the task, with last_modified_date=now (and
        last_modified_by=user when given); return the task. A run under way goes on.
        ValueError unless *enabled* is a bool."""
        ...

    def delete(self, task_id: str) -> None:
        """Remove the task and its run history in one step. TaskRunningError while it is
        RUNNING (here or in another process); TaskNotFoundError if absent."""
        ...


def all_tasks(store: TaskStore) -> Iterator[BackupTask]:
    """Every task of *store*, newest first, a page of `MAX_PAGE_SIZE` at a time."""
    number = 1
    while True:
        page = store.list(None, number, MAX_PAGE_SIZE)
        yield from page.records
        if number >= page.total_pages:
            return
        number += 1


class MemoryTaskStore:
    """Tasks in this process's memory; for tests, notebooks and single-process use.

    Safe to share between threads: one lock makes every method atomic.
    """

    def __init__(self, *, run_history: int = DEFAULT_RUN_HISTORY) -> None:
        self._run_history = rules.check_history(run_history)
        self._lock = threading.Lock()
        self._tasks: dict[str, BackupTask] = {}
        self._leases: dict[str, RunLease] = {}
        self._runs: dict[str, collections.deque[RunSummary]] = {}

    def __repr__(self) -> str:
        return f"<MemoryTaskStore tasks={len(self._tasks)}>"

    def _task(self, task_id: str) -> BackupTask:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise TaskNotFoundError(task_id) from None

    def create(self, task: BackupTask) -> None:
        """Store a new task; see `TaskStore.create`."""
        task_id = rules.check_new(task)
        with self._lock:
            if task_id in self._tasks:
                raise ValueError(f"a task with id {task_id!r} exists already")
            self._tasks[task_id] = task
            self._runs[task_id] = collections.deque(maxlen=self._run_history)

    def get(self, task_id: str) -> BackupTask:
        """The task; TaskNotFoundError if absent."""
        with self._lock:
            return self._task(task_id)

    def list(
        self,
        state: TaskState | None = None,
        page_number: int = 1,
        page_size: int = 20,
        *,
        last_run_state: TaskState | str | None = None,
    ) -> Page[BackupTask]:
        """One page of tasks newest first; see `TaskStore.list`."""
        rules.check_page(page_number, page_size)
        wanted = rules.check_state(state)
        last = rules.check_state(last_run_state, "$.lastRunState")
        with self._lock:
            tasks = [
                t
                for t in self._tasks.values()
                if (wanted is None or t.state is wanted)
                and (last is None or rules.last_run_state(t) is last)
            ]
        tasks.sort(key=rules.newest_key, reverse=True)
        offset = (page_number - 1) * page_size
        return rules.page(tasks[offset : offset + page_size], page_number, page_size, len(tasks))

    def start(
        self,
        task_id: str,
        *,
        owner: str,
        now: datetime,
        unless_started_since: datetime | None = None,
    ) -> BackupTask:
        """Compare-and-set the task to RUNNING for *owner*; see `TaskStore.start`."""
        rules.require_aware(now, "now")
        with self._lock:
            task = self._task(task_id)
            rules.check_startable(task, unless_started_since)
            started = self._tasks[task_id] = rules.started(task, now)
            self._leases[task_id] = RunLease(task_id, owner, now)
            return started

    def heartbeat(self, task_id: str, *, owner: str, now: datetime) -> bool:
        """Refresh *owner*'s lease; False when it no longer holds the task."""
        rules.require_aware(now, "now")
        with self._lock:
            self._task(task_id)
            lease = self._leases.get(task_id)
            if lease is None or lease.owner != owner:
                return False
            self._leases[task_id] = RunLease(task_id, owner, now)
            return True

    def finish(
        self, task_id: str, *, owner: str, state: TaskState, summary: RunSummary, now: datetime
    ) -> BackupTask | None:
        """End *owner*'s run of the task; see `TaskStore.finish`."""
        rules.check_finish(task_id, state, summary, now)
        with self._lock:
            task = self._task(task_id)
            lease = self._leases.get(task_id)
            if lease is None or lease.owner != owner:
                return None
            finished = self._tasks[task_id] = rules.finished(task, state, summary, now)
            del self._leases[task_id]
            self._runs[task_id].append(summary)
            return finished

    def leases(self) -> Sequence[RunLease]:
        """The leases of every RUNNING task, by task id."""
        with self._lock:
            return sorted(self._leases.values(), key=lambda lease: lease.task_id)

    def runs(self, task_id: str, limit: int = DEFAULT_RUN_HISTORY) -> builtins.list[RunSummary]:
        """Run history of the task, newest first, at most *limit*."""
        rules.check_limit(limit)
        with self._lock:
            self._task(task_id)
            history = builtins.list(reversed(self._runs[task_id]))
        return history[:limit]

    def update(self, task: BackupTask) -> None:
        """Replace the task's own fields, keeping its history; see `TaskStore.update`."""
        if task.id is None:
            raise ValueError("cannot update a task without an id")
        with self._lock:
            stored = self._task(task.id)
            self._tasks[task.id] = rules.updated(stored, task)

    def set_enabled(
        self, task_id: str, enabled: bool, *, now: datetime, user: str | None = None
    ) -> BackupTask:
        """Enable or disable the task; see `TaskStore.set_enabled`."""
        rules.check_enabled(enabled)
        rules.require_aware(now, "now")
        with self._lock:
            task = self._task(task_id)
            changed = self._tasks[task_id] = rules.with_enabled(task, enabled, now, user)
            return changed

    def delete(self, task_id: str) -> None:
        """Remove the task and its run history; see `TaskStore.delete`."""
        with self._lock:
            if self._task(task_id).state is TaskState.RUNNING:
                raise TaskRunningError(task_id)
            del self._tasks[task_id]
            del self._runs[task_id]
            self._leases.pop(task_id, None)
