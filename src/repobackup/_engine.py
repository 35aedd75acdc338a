"""`Engine`: creates, lists and runs backup and restore tasks."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import datetime, tzinfo
from typing import Any

from ._backend import Source, Target
from ._ids import TASK_ID, new_task_id
from ._json import from_json, parse_new_task, to_json
from ._model import (
    BackupTask,
    ExecutionStrategy,
    Page,
    RunError,
    RunSummary,
    TaskState,
    TaskType,
)
from ._run import Progress, RunState, run_backup, run_restore
from ._taskstore import MemoryTaskStore, TaskStore
from ._time import local_zone
from .exceptions import RepoBackupError, TaskNotFoundError

__all__ = ["Engine"]

log = logging.getLogger("repobackup")

HEARTBEAT_SECONDS = 5.0


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
        on_progress: Callable[[Progress], None] | None = None,
        on_finish: Callable[[BackupTask, RunSummary], None] | None = None,
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
        self.on_finish = on_finish
        self.heartbeat_seconds = HEARTBEAT_SECONDS
        self._runner: ThreadPoolExecutor | None = None
        self._runner_lock = threading.Lock()

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
        parsed = parse_new_task(data, tz=self.tz)
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
            state = from_json(TaskState, state)
        return self.tasks.list(state, page_number, page_size)

    # ----------------------------------------------------------------------------------------
    # Running

    def execute(self, task_id: str) -> RunSummary:
        """Run the task now, in this thread, whatever its execution strategy; return the
        summary. The task ends FINISHED or FAILED (a recurring task goes back to PENDING),
        never stuck in RUNNING. TaskRunningError if it is running already."""
        task, owner = self._claim(task_id)
        return self._run_claimed(task, owner)

    def submit(self, task_id: str) -> Future[RunSummary]:
        """Start the task in the background and return a future of its summary.

        The task is claimed before this returns, so TaskNotFoundError and TaskRunningError
        are raised here, not through the future."""
        task, owner = self._claim(task_id)
        with self._runner_lock:
            if self._runner is None:
                self._runner = ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="repobackup-task"
                )
            return self._runner.submit(self._run_claimed, task, owner)

    def runs(self, task_id: str, limit: int = 50) -> list[RunSummary]:
        """The run history of the task, newest first."""
        self.get_task(task_id)
        return self.tasks.runs(task_id, limit)

    def close(self) -> None:
        """Wait for background runs to end and release the engine's threads."""
        with self._runner_lock:
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.shutdown(wait=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _claim(self, task_id: str) -> tuple[BackupTask, str]:
        self.get_task(task_id)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        task = self.tasks.start(task_id, owner=owner, now=self.now())
        return task, owner

    def _run_claimed(self, task: BackupTask, owner: str) -> RunSummary:
        assert task.id is not None
        started = task.start_date or self.now()
        run = RunState(task, self.on_progress)
        stop_heartbeat = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(task.id, owner, stop_heartbeat), daemon=True
        )
        beat.start()
        location: str | None = None
        state = TaskState.FAILED
        try:
            if task.type is TaskType.DATA_RESTORE:
                location = run_restore(self, task, run)
            else:
                location = run_backup(self, task, run, started)
            state = TaskState.FINISHED
        except RepoBackupError as exc:
            self._record_fatal(run, task.id, exc.message)
        except Exception as exc:
            log.exception("task %s failed unexpectedly", task.id)
            self._record_fatal(run, task.id, f"{type(exc).__name__}: {exc}")
        except BaseException:
            # KeyboardInterrupt, SystemExit: end the task FAILED, then let it through.
            self._record_fatal(run, task.id, "interrupted")
            self._finish(
                task, owner=owner, run=run, started=started, location=None, state=TaskState.FAILED
            )
            raise
        finally:
            stop_heartbeat.set()
        return self._finish(
            task, owner=owner, run=run, started=started, location=location, state=state
        )

    @staticmethod
    def _record_fatal(run: RunState, task_id: str, message: str) -> None:
        if not any(error.message == message for error in run.errors):
            if len(run.errors) >= 100:
                run.errors.pop()
            run.errors.append(RunError("task", task_id, message))

    def _finish(
        self,
        task: BackupTask,
        *,
        owner: str,
        run: RunState,
        started: datetime,
        location: str | None,
        state: TaskState,
    ) -> RunSummary:
        assert task.id is not None
        now = self.now()
        summary = RunSummary(
            task_id=task.id,
            started=started,
            ended=now,
            state=state,
            location=location,
            counts=run.frozen_counts(),
            errors=tuple(run.errors),
            errors_dropped=run.errors_dropped,
            notes=tuple(run.notes),
            since=run.since,
        )
        recurring = task.backup_setting.execution_strategy is ExecutionStrategy.CRON_EXPRESSION
        final = TaskState.PENDING if recurring else state
        finished = self.tasks.finish(task.id, owner=owner, state=final, summary=summary, now=now)
        if finished is None:
            log.warning("task %s: the run ended but its lease was taken over", task.id)
        run.progress("done", force=True)
        if self.on_finish is not None:
            try:
                self.on_finish(finished or task, summary)
            except Exception:
                log.exception("on_finish callback failed for task %s", task.id)
        return summary

    def _heartbeat(self, task_id: str, owner: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_seconds):
            try:
                if not self.tasks.heartbeat(task_id, owner=owner, now=self.now()):
                    return
            except Exception:
                log.exception("heartbeat failed for task %s", task_id)
