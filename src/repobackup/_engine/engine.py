"""`Engine`: creates, lists and runs backup and restore tasks.

Claims and heartbeats live in `lease`, the ending of dead runs in `recovery`.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import datetime, tzinfo
from typing import Any

import attrs

from .._archive.layout import task_folder
from .._archive.retention import Policy, RetentionDecision, apply_retention, plan_retention
from .._archive.sealing import Passphrase, passphrase_scope
from .._archive.verify import VerifyReport, verify
from .._backends.protocols import Source, Target
from .._model.convert import from_json, parse_new_task, to_json
from .._model.ids import TASK_ID, new_task_id
from .._model.task import (
    BackupTask,
    ExecutionStrategy,
    Page,
    RunSummary,
    TaskState,
    TaskType,
)
from .._model.times import local_zone
from .._pipeline.backup import run_backup
from .._pipeline.context import RunContext, default_workers
from .._pipeline.restore import run_restore
from .._pipeline.resume import wait_for_cleanups
from .._pipeline.tally import CancelFlag, Phase, Progress, RunState
from .._tasks.store import MemoryTaskStore, TaskStore
from ..exceptions import RepoBackupError, TaskNotFoundError
from .lease import Leases
from .recovery import Recovery

__all__ = ["Engine"]

log = logging.getLogger("repobackup")

#: How a run was started, as `on_start` is told: `execute` or `submit` called directly (the
#: command line's backup, restore and run), a `Scheduler` that found the task due, or the
#: JSON/HTTP adapter's execute.
MANUAL = "manual"
SCHEDULE = "schedule"
API = "api"

HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 60.0


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
        on_start: Callable[[BackupTask, str], None] | None = None,
        storage_options: Mapping[str, Mapping[str, Any]] | None = None,
        tz: tzinfo | None = None,
        user: str = "anonymous",
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_after: float = STALE_AFTER_SECONDS,
        passphrase: Passphrase | None = None,
        processes: bool = False,
    ) -> None:
        self.source = source
        #: What opens (and first creates) the keys of encrypted tasks: a str, bytes, or a
        #: zero-argument callable returning one, called when a run needs it.
        self.passphrase = passphrase
        if target is None and isinstance(source, Target):
            target = source
        self.target = target
        self.tasks: TaskStore = tasks if tasks is not None else MemoryTaskStore()
        self.tz = tz or local_zone()
        self._clock = clock
        # None: each run chooses by its store (every core on a local disk, more on an
        # object store); the task pool and verify use every core.
        self._run_workers = max_workers
        self.max_workers = max_workers or default_workers()
        self.executor = executor
        # A process pool's workers import the program's main module: only a program that
        # guards it (as the command line does) may let the engine start one by itself.
        self.processes = processes
        self.on_progress = on_progress
        self.storage_options = dict(storage_options or {})
        self.user = user
        self.on_finish = on_finish
        #: Called in the run's thread as each run starts, with the task and how the run was
        #: started (`MANUAL`, `SCHEDULE` or `API`), before any progress event and its end.
        self.on_start = on_start
        #: Seconds between two heartbeats of a run this engine holds.
        self.heartbeat_seconds = heartbeat_seconds
        #: Seconds without a heartbeat after which a run is taken for dead, wherever it runs.
        self.stale_after = stale_after
        self._runner: ThreadPoolExecutor | None = None
        self._runner_lock = threading.Lock()
        self._leases = Leases(self.tasks, self.now, lambda: self.heartbeat_seconds)
        # The runs of this engine that are claimed and not yet ended, by task id.
        self._active: dict[str, CancelFlag] = {}
        self._idle = threading.Condition()

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
            enabled=parsed.enabled,
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

    def update_task(
        self, task_id: str, changes: BackupTask | Mapping[str, Any], *, user: str | None = None
    ) -> BackupTask:
        """Give an existing task new content, settings, name or store location, validated as
        a new task would be; its id, creation, state and run history stay. Returns the task.

        *changes* is a whole task (object or JSON mapping); engine-owned fields in it are
        ignored. Raise TaskNotFoundError or ValidationError."""
        stored = self.get_task(task_id)
        data = to_json(changes) if isinstance(changes, BackupTask) else changes
        parsed = parse_new_task(data, tz=self.tz)
        updated = attrs.evolve(
            stored,
            name=parsed.name,
            store_location=parsed.store_location,
            content=parsed.content,
            type=parsed.type,
            backup_setting=parsed.backup_setting,
            last_modified_by=user or self.user,
            last_modified_date=self.now(),
        )
        self.tasks.update(updated)
        return self.tasks.get(task_id)

    def get_task(self, task_id: str) -> BackupTask:
        """The task with *task_id*; TaskNotFoundError if there is none."""
        if not isinstance(task_id, str) or not TASK_ID.match(task_id):
            raise TaskNotFoundError(task_id)
        return self.tasks.get(task_id)

    def list_tasks(
        self,
        state: TaskState | str | None = None,
        page_number: int = 1,
        page_size: int = 20,
        *,
        last_run_state: TaskState | str | None = None,
    ) -> Page[BackupTask]:
        """One page of tasks, newest first, optionally only those in *state* and only those
        whose last run ended in *last_run_state* (a recurring task whose last run failed is
        PENDING again, and found with ``last_run_state="FAILED"``)."""
        if isinstance(state, str) and not isinstance(state, TaskState):
            state = from_json(TaskState, state)
        if last_run_state is None:
            return self.tasks.list(state, page_number, page_size)
        # The store checks it, naming $.lastRunState.
        return self.tasks.list(state, page_number, page_size, last_run_state=last_run_state)

    # ----------------------------------------------------------------------------------------
    # Running

    def execute(self, task_id: str, *, trigger: str = MANUAL) -> RunSummary:
        """Run the task now, in this thread, whatever its execution strategy; return the
        summary. The task ends FINISHED or FAILED (a recurring task goes back to PENDING),
        never stuck in RUNNING. TaskRunningError if it is running already. *trigger* is
        what `on_start` is told of how the run started."""
        task, owner = self._claim(task_id)
        return self._run_claimed(task, owner, trigger)

    def submit(
        self,
        task_id: str,
        *,
        unless_started_since: datetime | None = None,
        trigger: str = MANUAL,
    ) -> Future[RunSummary]:
        """Start the task in the background and return a future of its summary.

        The task is claimed before this returns, so TaskNotFoundError and TaskRunningError
        are raised here, not through the future. With *unless_started_since* (a scheduler's
        due time), a task started at or after it is not started again: TaskRunningError.
        *trigger* is what `on_start` is told of how the run started."""
        task, owner = self._claim(task_id, unless_started_since=unless_started_since)
        try:
            with self._runner_lock:
                if self._runner is None:
                    self._runner = ThreadPoolExecutor(
                        max_workers=self._run_workers, thread_name_prefix="repobackup-task"
                    )
                return self._runner.submit(self._run_claimed, task, owner, trigger)
        except BaseException as exc:
            # Claimed but never started (e.g. the engine is shutting down): end it now.
            self._leases.release(owner)
            self._ended(task_id)
            run = RunState(task, None)
            run.fail_run(f"could not start the run: {exc}")
            self._finish(
                task,
                owner=owner,
                run=run,
                started=task.start_date or self.now(),
                location=None,
                state=TaskState.FAILED,
            )
            raise

    def verify(
        self, location: str, *, on_progress: Callable[[Progress], None] | None = None
    ) -> VerifyReport:
        """Check the backup at *location* (a backup folder or zip, or a task folder) without
        restoring it: every member's and blob's hash, every record line, nothing outside the
        tree. The report's ``ok`` is False with each problem named. *on_progress* (default:
        the engine's) receives `Progress` events whose ``task_id`` is None."""
        with passphrase_scope(self.passphrase):
            return verify(
                location,
                self.storage_options,
                max_workers=self.max_workers,
                on_progress=on_progress or self.on_progress,
            )

    def cancel(self, task_id: str, *, reason: str = "Engine.cancel was called") -> bool:
        """Ask the run of *task_id* under way in this engine to stop; False when none is.

        The run stops at the next record or blob it counts (blob copies in flight finish
        first) and ends FAILED with an error saying it was cancelled and why (*reason*).
        Nothing it leaves looks complete: an unfinished backup is removed, or, for a folder
        backup, kept hidden for the next run to resume from, as after a crash. A restore
        keeps what it restored so far. Returns at once; the run's future (or `execute`)
        gives its summary when it has ended."""
        with self._idle:
            flag = self._active.get(task_id)
        if flag is None:
            return False
        flag.set(reason)
        return True

    def running(self) -> list[str]:
        """The ids of the tasks whose runs are under way in this engine."""
        with self._idle:
            return list(self._active)

    def runs(self, task_id: str, limit: int = 50) -> list[RunSummary]:
        """The run history of the task, newest first."""
        self.get_task(task_id)
        return self.tasks.runs(task_id, limit)

    def close(
        self,
        *,
        cancel: bool = False,
        reason: str = "the engine closed",
        timeout: float | None = None,
    ) -> bool:
        """Wait for the runs under way to end and release the engine's threads; with
        *cancel*, `cancel` each of them first (with *reason*). With *timeout*, wait at most
        that many seconds: False when runs were still going then (they go on, and their
        threads are left to end on their own), else True."""
        if cancel:
            for task_id in self.running():
                self.cancel(task_id, reason=reason)
        if timeout is not None:
            with self._idle:
                if not self._idle.wait_for(lambda: not self._active, timeout):
                    return False
        with self._runner_lock:
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.shutdown(wait=True)
        wait_for_cleanups()
        return True

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _claim(
        self, task_id: str, *, unless_started_since: datetime | None = None
    ) -> tuple[BackupTask, str]:
        self.get_task(task_id)
        claimed = self._leases.claim(task_id, unless_started_since=unless_started_since)
        with self._idle:
            self._active[task_id] = CancelFlag()
        return claimed

    def _ended(self, task_id: str) -> None:
        with self._idle:
            self._active.pop(task_id, None)
            self._idle.notify_all()

    def _run_claimed(self, task: BackupTask, owner: str, trigger: str = MANUAL) -> RunSummary:
        try:
            return self._run(task, owner, trigger)
        finally:
            assert task.id is not None
            self._ended(task.id)

    def _run(self, task: BackupTask, owner: str, trigger: str) -> RunSummary:
        assert task.id is not None
        started = task.start_date or self.now()
        task_id = task.id
        with self._idle:
            flag = self._active.get(task_id)
        run = RunState(
            task,
            self.on_progress,
            holds_lease=lambda: self._leases.holds(task_id, owner),
            cancel=flag,
        )
        location: str | None = None
        state = TaskState.FAILED
        try:
            self._hook("on_start", self.on_start, task, trigger)
            run.check_cancelled()  # cancelled while it waited for a thread
            with passphrase_scope(self.passphrase):
                if task.type is TaskType.DATA_RESTORE:
                    location = run_restore(self._context(), task, run)
                else:
                    location = run_backup(self._context(), task, run, started)
                    self._retain(task, run, location)
            state = TaskState.FINISHED
        except RepoBackupError as exc:
            run.fail_run(exc.message)
        except Exception as exc:
            log.exception("task %s failed unexpectedly", task.id)
            run.fail_run(f"{type(exc).__name__}: {exc}")
        except BaseException:
            # KeyboardInterrupt, SystemExit: end the task FAILED, then let it through.
            run.fail_run("interrupted")
            self._finish(
                task, owner=owner, run=run, started=started, location=None, state=TaskState.FAILED
            )
            raise
        finally:
            self._leases.release(owner)
        return self._finish(
            task, owner=owner, run=run, started=started, location=location, state=state
        )

    def _context(self) -> RunContext:
        return RunContext(
            source=self.source,
            target=self.target,
            storage_options=self.storage_options,
            executor=self.executor,
            max_workers=self._run_workers,
            tz=self.tz,
            now=self.now,
            history=self.tasks.runs,
            processes=self.processes,
        )

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
        run.progress(Phase.DONE, force=True)
        self._notify(finished or task, summary)
        return summary

    @staticmethod
    def _hook(
        name: str, hook: Callable[..., object] | None, task: BackupTask, *args: object
    ) -> None:
        """Call the *name* hook, if set. A broken notification is logged: it must neither
        stop a run nor undo one that is recorded."""
        if hook is None:
            return
        try:
            hook(task, *args)
        except Exception:
            log.exception("%s callback failed for task %s", name, task.id)

    def _notify(self, task: BackupTask, summary: RunSummary) -> None:
        """``on_finish``, for a run ended here or by recovery."""
        self._hook("on_finish", self.on_finish, task, summary)

    # ----------------------------------------------------------------------------------------
    # Retention and crash recovery (see `recovery`)

    def _retain(self, task: BackupTask, run: RunState, location: str) -> None:
        """Apply the task's retention after its backup at *location* completed; what it
        removed, or why it did not, goes into the run's notes. Never raises."""
        policy = _policy(task)
        if policy is None:
            return
        if run.errors:
            run.notes.append(
                "retention skipped: this run recorded errors, so the older backups are kept"
            )
            return
        try:
            fs, folder = task_folder(task.store_location, task.name, self.storage_options)
            removed = apply_retention(
                fs,
                folder,
                policy,
                task_id=task.id,
                tz=self.tz,
                keep=[posixpath.basename(location.rstrip("/"))],
            )
        except Exception as exc:
            log.warning("task %s: retention failed: %s", task.id, exc)
            run.notes.append(f"retention failed, the older backups are kept: {exc}")
            return
        if removed:
            names = ", ".join(posixpath.basename(path) for path in removed)
            run.notes.append(
                f"retention ({policy.describe()}) removed {len(removed)} older backup(s): {names}"
            )

    def plan_retention(self, task_id: str) -> list[RetentionDecision]:
        """What the task's retention would keep and remove in its task folder now, newest
        first, each `RetentionDecision` with its reasons; nothing is removed (a dry run).

        Only the backups this task wrote (their manifest's ``taskId``) are ever removed;
        another task's in the same folder are listed as kept. ValueError when the task has
        no retention rule; TaskNotFoundError for an unknown id."""
        task = self.get_task(task_id)
        policy = _policy(task)
        if policy is None:
            raise ValueError(f"task {task_id} has no retention rule (backupSetting.retention)")
        fs, folder = task_folder(task.store_location, task.name, self.storage_options)
        return plan_retention(fs, folder, policy, task_id=task.id, tz=self.tz)

    def recover_interrupted(self, now: datetime | None = None) -> list[str]:
        """End the runs whose process died; return the ids of the tasks it ended.

        A RUNNING task is taken for interrupted when its owner ran on this host and that
        process is gone (seen at once), or when its heartbeat is older than `stale_after`
        seconds (any host). It ends FAILED (a recurring task goes back to PENDING) with a run
        summary whose error is "interrupted"; what the run left unfinished in the store is
        removed, and the task can run again. Runs of this engine are never touched. Safe to
        call from several processes at once: each interrupted run is ended by one of them.
        """
        if now is None:
            now = self.now()
        elif now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"now: must be a timezone-aware datetime, got {now!r}")
        if not self.stale_after > self.heartbeat_seconds:
            raise ValueError(
                f"stale_after ({self.stale_after} s) must be longer than heartbeat_seconds "
                f"({self.heartbeat_seconds} s), or live runs would be taken for dead"
            )
        recovery = Recovery(
            self.tasks, self.tz, self.storage_options, self._notify, target=self.target
        )
        with passphrase_scope(self.passphrase):
            return recovery.recover(now, self.stale_after, self._leases.owners())

    # ----------------------------------------------------------------------------------------
    # Task management

    def set_enabled(self, task_id: str, enabled: bool, *, user: str | None = None) -> BackupTask:
        """Enable or disable the task and return it. A disabled task is never started by a
        `Scheduler`; `execute` and `submit` still run it, and a run under way goes on.
        TaskNotFoundError for an unknown id; ValueError unless *enabled* is a bool."""
        self.get_task(task_id)
        return self.tasks.set_enabled(task_id, enabled, now=self.now(), user=user or self.user)

    def delete_task(self, task_id: str) -> None:
        """Remove the task and its run history from the task store. Its backups stay where
        they are (delete those in the store itself). TaskRunningError while it runs;
        TaskNotFoundError for an unknown id."""
        self.get_task(task_id)
        self.tasks.delete(task_id)


def _policy(task: BackupTask) -> Policy | None:
    """The task's retention rules, or None when it has none."""
    retention = task.backup_setting.retention
    if retention is None:
        return None
    policy = Policy(
        last=retention.keep_last,
        daily=retention.keep_daily,
        weekly=retention.keep_weekly,
        monthly=retention.keep_monthly,
        yearly=retention.keep_yearly,
    )
    return None if policy.empty else policy
