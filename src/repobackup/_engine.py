"""`Engine`: creates, lists and runs backup and restore tasks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from datetime import datetime, tzinfo
from typing import Any

from ._backend import Source, Target
from ._ids import TASK_ID, new_task_id
from ._json import from_json, to_json
from ._model import BackupTask, Page, TaskState
from ._taskstore import MemoryTaskStore, TaskStore
from ._time import local_zone
from .exceptions import TaskNotFoundError

__all__ = ["Engine", "ProgressEvent"]

ProgressEvent = Mapping[str, Any]


class Engine:
    """Runs backup and restore tasks between a repository (`Source`/`Target`) and stores."""

    def __init__(
        self,
        source: Source,
        *,
        target: Target | None = None,
        tasks: TaskStore | None = None,
        clock: Callable[[], datetime] | None = None,
        max_workers: int | None = None,
        executor: Executor | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        storage_options: Mapping[str, Mapping[str, Any]] | None = None,
        tz: tzinfo | None = None,
        user: str = "anonymous",
    ) -> None:
        self.source = source
        if target is None and isinstance(source, Target):
            target = source
        self.target = target
        self.tasks: TaskStore = tasks if tasks is not None else MemoryTaskStore()
        self.tz = tz or local_zone()
        self._clock = clock
        self.max_workers = max_workers or 4
        self._executor = executor
        self.on_progress = on_progress
        self.storage_options = dict(storage_options or {})
        self.user = user

    def __repr__(self) -> str:
        return f"<Engine source={type(self.source).__name__} tasks={type(self.tasks).__name__}>"

    def now(self) -> datetime:
        """The engine's clock: an aware datetime in the engine's zone."""
        moment = self._clock() if self._clock is not None else datetime.now(self.tz)
        if moment.tzinfo is None:
            raise ValueError("the engine's clock must return an aware datetime")
        return moment

    def create_task(self, task: BackupTask | Mapping[str, Any], *, user: str | None = None) -> str:
        """Validate and store a new task; return its id. Raise ValidationError listing every
        problem. Fields the engine owns (id, state, dates, lastRun) are set here."""
        data = to_json(task) if isinstance(task, BackupTask) else task
        parsed = from_json(BackupTask, data, tz=self.tz)
        now = self.now()
        who = user or self.user
        created = BackupTask(
            name=parsed.name,
            store_location=parsed.store_location,
            content=parsed.content,
            type=parsed.type,
            backup_setting=parsed.backup_setting,
            id=new_task_id(now.timestamp()),
            state=TaskState.PENDING,
            created_by=who,
            created_date=now,
            last_modified_by=who,
            last_modified_date=now,
        )
        assert created.id is not None
        self.tasks.create(created)
        return created.id

    def get_task(self, task_id: str) -> BackupTask:
        """The task with *task_id*; TaskNotFoundError if there is none."""
        if not isinstance(task_id, str) or not TASK_ID.match(task_id):
            raise TaskNotFoundError(task_id)
        return self.tasks.get(task_id)

    def list_tasks(
        self, state: TaskState | str | None = None, page_number: int = 1, page_size: int = 20
    ) -> Page[BackupTask]:
        """One page of tasks, newest first, optionally only those in *state*."""
        if isinstance(state, str) and not isinstance(state, TaskState):
            state = from_json(TaskState, state)  # type: ignore[type-abstract]
        return self.tasks.list(state, page_number, page_size)
