"""What the task-store conformance suite is made of: sample tasks and run summaries, the
fixtures its classes share, and helpers that run a task through the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from .._model.ids import new_task_id
from .._model.task import (
    BackupContent,
    BackupTask,
    RunCounts,
    RunError,
    RunSummary,
    TaskState,
)
from .._tasks.store import TaskStore

__all__ = [
    "CREATED",
    "LATER",
    "NOT_RUNNING",
    "Fixtures",
    "make_summary",
    "make_task",
    "ran",
    "run_times",
]

SHANGHAI = timezone(timedelta(hours=8))
CREATED = datetime(2024, 12, 24, 17, 13, 54, tzinfo=SHANGHAI)
"""When `make_task` says a task was created (in +08:00, as the spec's examples are)."""
LATER = CREATED + timedelta(hours=1)
NOT_RUNNING = [TaskState.PENDING, TaskState.FINISHED, TaskState.FAILED]


def make_task(
    *,
    created: datetime = CREATED,
    state: TaskState = TaskState.PENDING,
    name: str = "nightly",
    task_id: str | None = None,
) -> BackupTask:
    """A valid task as the engine would store it, with a fresh time-ordered id."""
    return BackupTask(
        name=name,
        store_location="/backups",
        content=BackupContent(common_data=True),
        id=task_id or new_task_id(created.timestamp()),
        created_date=created,
        created_by="admin",
        last_modified_by="admin",
        last_modified_date=created,
        state=state,
    )


def make_summary(task_id: str, n: int = 0, *, state: TaskState = TaskState.FINISHED) -> RunSummary:
    """The summary of the *n*-th run of a task (started *n* minutes after `CREATED` + 1 h)."""
    started = LATER + timedelta(minutes=n)
    return RunSummary(
        task_id=task_id,
        started=started,
        ended=started + timedelta(seconds=30),
        state=state,
        location=f"/backups/nightly/nightly-{n}",
        counts=RunCounts(records_written=n, bytes_written=10 * n),
        errors=(RunError(scope="blob", key=f"{n:064x}", message="sha256 mismatch"),),
    )


class Fixtures:
    """The fixtures every class of the suite uses; ``make_task_store`` comes from the user."""

    @pytest.fixture(name="store")
    def _store(self, make_task_store: Callable[[], TaskStore]) -> TaskStore:
        """One fresh, empty store."""
        return make_task_store()

    @pytest.fixture(name="running")
    def _running(self, store: TaskStore) -> BackupTask:
        """A task that owner "alpha" has started."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        return store.start(task.id, owner="alpha", now=LATER)


def run_times(store: TaskStore, task_id: str, count: int) -> list[RunSummary]:
    """Run the stored task *count* times, each run FINISHED; return the summaries, oldest
    first."""
    summaries = []
    for n in range(count):
        store.start(task_id, owner=f"run-{n}", now=LATER + timedelta(minutes=n))
        summary = make_summary(task_id, n)
        assert store.finish(
            task_id, owner=f"run-{n}", state=TaskState.FINISHED, summary=summary, now=LATER
        )
        summaries.append(summary)
    return summaries


def ran(store: TaskStore, task: BackupTask, *, run: TaskState, ends: TaskState) -> str:
    """Store *task*, run it once with a run that ended in *run*, the task left in *ends*."""
    store.create(task)
    assert task.id is not None
    store.start(task.id, owner="alpha", now=LATER)
    summary = make_summary(task.id, state=run)
    assert store.finish(task.id, owner="alpha", state=ends, summary=summary, now=LATER)
    return task.id
