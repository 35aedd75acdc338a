"""`Scheduler`: starts the tasks of an `Engine` when their execution plan says they are due,
from a background thread or from a loop the host already runs."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, tzinfo

from .._model.cron import parse_cron
from .._model.task import BackupTask, ExecutionStrategy, TaskState
from .._tasks.store import all_tasks
from ..exceptions import TaskNotFoundError, TaskRunningError
from .engine import SCHEDULE, Engine

__all__ = ["Scheduler", "due_at"]

log = logging.getLogger("repobackup")

POLL_SECONDS = 1.0


def due_at(task: BackupTask, tz: tzinfo) -> datetime | None:
    """When *task* is next due by its execution plan, or None when the scheduler never starts
    it (it runs only through `Engine.execute`). The time may be past: the task is due now.

    Read from the task alone (its created date and the start of its latest run), so every
    scheduler sharing the task store agrees, after a restart too:

    - IMMEDIATELY with executeImmediately: at creation, if it never ran.
    - IMMEDIATELY without it: never (None).
    - SPECIFIED_TIME: at executeTime, unless a run started at or after executeTime.
    - CRON_EXPRESSION: the first fire time after its latest start (after its creation if it
      never ran), in zone *tz*. However many fire times passed since, that is one run.
    """
    setting = task.backup_setting
    plan = setting.execution_plan
    started = task.start_date or (task.last_run.started if task.last_run else None)
    strategy = setting.execution_strategy
    if strategy is ExecutionStrategy.IMMEDIATELY:
        return task.created_date if plan.execute_immediately and started is None else None
    if strategy is ExecutionStrategy.SPECIFIED_TIME:
        at = plan.execute_time
        return None if at is None or (started is not None and started >= at) else at
    since = started or task.created_date
    if plan.cron_expression is None or since is None:
        return None
    return parse_cron(plan.cron_expression).next_after(since.astimezone(tz))


class Scheduler:
    """Starts the due tasks of *engine*; see `due_at` for when a task is due.

    Either call `run_pending` from a loop you own (a host's timer, a cron job), or `start` a
    background thread that calls it every *poll_seconds* and `stop` it at shutdown. Due runs
    go through `Engine.submit`, so a long backup does not hold up the others. Several
    schedulers, in one process or in many sharing a `SqliteTaskStore`, may run at once: a
    task is started by exactly one of them, and the others skip it. A disabled task
    (``enabled`` false) is never started here.
    """

    def __init__(self, engine: Engine, *, poll_seconds: float = POLL_SECONDS) -> None:
        if not poll_seconds > 0:
            raise ValueError(f"poll_seconds: must be more than 0, got {poll_seconds!r}")
        self.engine = engine
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def __repr__(self) -> str:
        running = self._thread is not None and self._thread.is_alive()
        return f"<Scheduler engine={self.engine!r} running={running}>"

    def next_run(self, task_id: str) -> datetime | None:
        """When the task is next due, in the engine's zone; None when the scheduler will not
        start it. A past time means it is due now. TaskNotFoundError for an unknown id."""
        task = self.engine.get_task(task_id)
        moment = due_at(task, self.engine.tz) if task.enabled else None
        return moment.astimezone(self.engine.tz) if moment is not None else None

    def run_pending(self, now: datetime | None = None) -> list[str]:
        """Recover runs whose process died, then start every task due at *now* (default: the
        engine's clock); return the ids of the tasks started, in the order listed.

        A task another scheduler started first is skipped without a word.
        """
        engine = self.engine
        if now is None:
            now = engine.now()
        elif now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"now: must be a timezone-aware datetime, got {now!r}")
        now = now.astimezone(engine.tz)
        engine.recover_interrupted(now)
        started = []
        for task in all_tasks(self.engine.tasks):
            assert task.id is not None
            due = self._due(task, now)
            if due is None:
                continue
            try:
                # The start is a compare-and-set on the due time: a run another scheduler
                # made for this due time, even one already finished, is never repeated.
                engine.submit(task.id, unless_started_since=due, trigger=SCHEDULE)
            except (TaskRunningError, TaskNotFoundError):
                continue
            started.append(task.id)
        return started

    def _due(self, task: BackupTask, now: datetime) -> datetime | None:
        """When *task* fell due, if it is due at *now*; else None."""
        if task.state is TaskState.RUNNING or not task.enabled:
            return None
        try:
            moment = due_at(task, self.engine.tz)
        except ValueError:
            # Validation at creation makes this unreachable for tasks the engine created; a
            # task written to the store some other way must not stop the others.
            log.exception("task %s: cannot read its execution plan", task.id)
            return None
        return moment if moment is not None and moment <= now else None

    # ----------------------------------------------------------------------------------------
    # Background thread

    def start(self) -> None:
        """Start the background thread (a no-op when it is running already)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(self._stopping,), name="repobackup-scheduler", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background thread and wait for it (at most *timeout* seconds).

        Runs already started go on in the engine; `Engine.close` waits for them.
        """
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the background thread is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                self.run_pending()
            except Exception:
                # A task store that is briefly unavailable must not end the scheduling.
                log.exception("scheduler: looking for due tasks failed")
            stopping.wait(self.poll_seconds)
