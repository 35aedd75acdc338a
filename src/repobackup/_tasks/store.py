"""Where tasks and their run history live: `MemoryTaskStore` and `SqliteTaskStore` behind the
`TaskStore` protocol, with an atomic compare-and-set for starting a run."""

from __future__ import annotations

import builtins
import collections
import errno
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import attrs

from .._model.convert import converter, to_json
from .._model.sqlitedb import transaction
from .._model.task import BackupTask, Page, RunSummary, TaskState
from ..exceptions import Problem, TaskNotFoundError, TaskRunningError, ValidationError

__all__ = ["MemoryTaskStore", "RunLease", "SqliteTaskStore", "TaskStore"]

MAX_PAGE_SIZE = 1000
DEFAULT_RUN_HISTORY = 50
SCHEMA_VERSION = 1

# The states a run can end in: FINISHED or FAILED, or PENDING for a recurring task that
# waits for its next fire time.
_END_STATES = frozenset({TaskState.FINISHED, TaskState.FAILED, TaskState.PENDING})


@attrs.frozen
class RunLease:
    """Who holds a RUNNING task and when they last said they were alive."""

    task_id: str
    owner: str
    heartbeat: datetime


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
        self, state: TaskState | None = None, page_number: int = 1, page_size: int = 20
    ) -> Page[BackupTask]:
        """Tasks newest first (by created date, then id); ValidationError for a page size
        outside 1..1000 (``$.pageSize``) or a page number below 1 (``$.pageNumber``); a page
        past the end is empty and still carries the totals."""
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
        """Replace the stored task's fields, except those that record its history: state,
        start_date, end_date, last_run, created_by and created_date stay as stored."""
        ...


# Rules both stores share, so that they cannot drift apart.


def _require_aware(value: datetime | None, name: str) -> datetime:
    if value is None or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value


def _check_new(task: BackupTask) -> str:
    if task.id is None:
        raise ValueError("a task must have an id before it is stored")
    _require_aware(task.created_date, "created_date")
    if task.state is TaskState.RUNNING:
        raise ValueError(f"task {task.id!r} cannot be stored as RUNNING: runs begin with start()")
    return task.id


def _check_page(page_number: int, page_size: int) -> None:
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


def _check_state(state: TaskState | str | None) -> TaskState | None:
    if state is None:
        return None
    try:
        return TaskState(state)
    except ValueError:
        allowed = ", ".join(member.value for member in TaskState)
        raise ValidationError(
            [Problem("$.state", f"unknown value {state!r}, expected one of {allowed}")]
        ) from None


def _newest_key(task: BackupTask) -> tuple[datetime, str]:
    # create() refused tasks without these, so every stored task has both.
    assert task.created_date is not None
    assert task.id is not None
    return task.created_date, task.id


def _page(
    records: Sequence[BackupTask], page_number: int, page_size: int, total: int
) -> Page[BackupTask]:
    return Page(
        page_number=page_number,
        page_size=page_size,
        total_records=total,
        total_pages=math.ceil(total / page_size),
        records=tuple(records),
    )


def _check_startable(task: BackupTask, unless_started_since: datetime | None) -> None:
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


def _started(task: BackupTask, now: datetime) -> BackupTask:
    return attrs.evolve(
        task, state=TaskState.RUNNING, start_date=now, end_date=None, last_modified_date=now
    )


def _check_finish(task_id: str, state: TaskState, summary: RunSummary, now: datetime) -> None:
    _require_aware(now, "now")
    if state not in _END_STATES:
        raise ValueError(f"a run ends in FINISHED, FAILED or PENDING, not {state!r}")
    if summary.task_id != task_id:
        raise ValueError(f"the summary is of task {summary.task_id!r}, not of {task_id!r}")


def _finished(task: BackupTask, state: TaskState, summary: RunSummary, now: datetime) -> BackupTask:
    return attrs.evolve(task, state=state, end_date=now, last_run=summary, last_modified_date=now)


def _updated(stored: BackupTask, task: BackupTask) -> BackupTask:
    return attrs.evolve(
        task,
        state=stored.state,
        start_date=stored.start_date,
        end_date=stored.end_date,
        last_run=stored.last_run,
        created_by=stored.created_by,
        created_date=stored.created_date,
    )


def _check_limit(limit: int) -> None:
    if not _is_int(limit) or limit < 0:
        raise ValueError(f"limit must be an integer of 0 or more, got {limit!r}")


def _check_history(run_history: int) -> int:
    if not _is_int(run_history) or run_history < 1:
        raise ValueError(f"run_history must be an integer of 1 or more, got {run_history!r}")
    return run_history


class MemoryTaskStore:
    """Tasks in this process's memory; for tests, notebooks and single-process use.

    Safe to share between threads: one lock makes every method atomic.
    """

    def __init__(self, *, run_history: int = DEFAULT_RUN_HISTORY) -> None:
        self._run_history = _check_history(run_history)
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
        task_id = _check_new(task)
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
        self, state: TaskState | None = None, page_number: int = 1, page_size: int = 20
    ) -> Page[BackupTask]:
        """One page of tasks newest first; see `TaskStore.list`."""
        _check_page(page_number, page_size)
        wanted = _check_state(state)
        with self._lock:
            tasks = [t for t in self._tasks.values() if wanted is None or t.state is wanted]
        tasks.sort(key=_newest_key, reverse=True)
        offset = (page_number - 1) * page_size
        return _page(tasks[offset : offset + page_size], page_number, page_size, len(tasks))

    def start(
        self,
        task_id: str,
        *,
        owner: str,
        now: datetime,
        unless_started_since: datetime | None = None,
    ) -> BackupTask:
        """Compare-and-set the task to RUNNING for *owner*; see `TaskStore.start`."""
        _require_aware(now, "now")
        with self._lock:
            task = self._task(task_id)
            _check_startable(task, unless_started_since)
            started = self._tasks[task_id] = _started(task, now)
            self._leases[task_id] = RunLease(task_id, owner, now)
            return started

    def heartbeat(self, task_id: str, *, owner: str, now: datetime) -> bool:
        """Refresh *owner*'s lease; False when it no longer holds the task."""
        _require_aware(now, "now")
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
        _check_finish(task_id, state, summary, now)
        with self._lock:
            task = self._task(task_id)
            lease = self._leases.get(task_id)
            if lease is None or lease.owner != owner:
                return None
            finished = self._tasks[task_id] = _finished(task, state, summary, now)
            del self._leases[task_id]
            self._runs[task_id].append(summary)
            return finished

    def leases(self) -> Sequence[RunLease]:
        """The leases of every RUNNING task, by task id."""
        with self._lock:
            return sorted(self._leases.values(), key=lambda lease: lease.task_id)

    def runs(self, task_id: str, limit: int = DEFAULT_RUN_HISTORY) -> builtins.list[RunSummary]:
        """Run history of the task, newest first, at most *limit*."""
        _check_limit(limit)
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
            self._tasks[task.id] = _updated(stored, task)


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS task (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    lease_owner TEXT,
    lease_heartbeat TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS task_newest ON task (created_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS task_state_newest ON task (state, created_us DESC, id DESC);
CREATE TABLE IF NOT EXISTS run (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL REFERENCES task (id),
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS run_of_task ON run (task_id, seq);
PRAGMA user_version = {SCHEMA_VERSION};
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    # An integer instant sorts tasks created in different offsets by when they really happened.
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _dump(value: BackupTask | RunSummary) -> str:
    return json.dumps(to_json(value), separators=(",", ":"), ensure_ascii=False)


def _load_task(body: str) -> BackupTask:
    return converter.structure(json.loads(body), BackupTask)


def _load_run(body: str) -> RunSummary:
    return converter.structure(json.loads(body), RunSummary)


class SqliteTaskStore:
    """Tasks in one SQLite database, safe across processes (WAL, IMMEDIATE transactions).

    *path* names the database file, created on first use; its folder must exist. Writers in
    other processes are waited for up to *timeout* seconds. One connection per store object,
    guarded by a lock, serves every thread of the process; open a store in each process.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        run_history: int = DEFAULT_RUN_HISTORY,
    ) -> None:
        self._path = Path(path)
        self._timeout = timeout
        self._run_history = _check_history(run_history)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._inherited: builtins.list[sqlite3.Connection] = []
        self._conn: sqlite3.Connection | None = self._open()

    def __repr__(self) -> str:
        return f"<SqliteTaskStore {str(self._path)!r}>"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def __enter__(self) -> SqliteTaskStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _open(self) -> sqlite3.Connection:
        folder = self._path.parent
        if not folder.is_dir():
            raise FileNotFoundError(
                errno.ENOENT,
                f"the folder of the task store does not exist: {folder}",
                str(self._path),
            )
        # isolation_level=None: the module must not open transactions behind our back; every
        # write below says BEGIN IMMEDIATE itself. timeout is SQLite's busy timeout.
        conn = sqlite3.connect(
            self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._enter_wal(conn)
            # In WAL mode NORMAL stays consistent after a crash of the process; only a power
            # cut can lose the last commits, which costs a task store nothing it cannot redo.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                if version > SCHEMA_VERSION:
                    raise ValueError(
                        f"task store {self._path} has schema version {version}; this version of "
                        f"repobackup reads up to {SCHEMA_VERSION}"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            conn.close()
            exc.add_note(f"task store: {self._path}")
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _enter_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL takes its lock without calling the busy handler, so
        # processes that create the file together would fail at once: they wait here instead.
        deadline = time.monotonic() + self._timeout
        delay = 0.001
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"task store {self._path} is closed")
        if self._pid != os.getpid():
            # A connection must not cross a fork. Closing the parent's copy here could disturb
            # the parent's locks, so it is kept (unused) and this process opens its own.
            self._inherited.append(self._conn)
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        # IMMEDIATE (the default) makes the compare-and-set of start one atomic step.
        with self._lock, transaction(self._connection(), begin) as conn:
            yield conn

    def _row(self, conn: sqlite3.Connection, task_id: str) -> tuple[str, str | None, str]:
        row: tuple[str, str | None, str] | None = conn.execute(
            "SELECT state, lease_owner, body FROM task WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None:
            raise TaskNotFoundError(task_id)
        return row

    def create(self, task: BackupTask) -> None:
        """Store a new task; see `TaskStore.create`."""
        task_id = _check_new(task)
        assert task.created_date is not None
        with self._transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO task (id, state, created_us, body) VALUES (?, ?, ?, ?)",
                    (task_id, task.state.value, _micros(task.created_date), _dump(task)),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"a task with id {task_id!r} exists already") from None

    def get(self, task_id: str) -> BackupTask:
        """The task; TaskNotFoundError if absent."""
        with self._transaction("BEGIN") as conn:
            _, _, body = self._row(conn, task_id)
        return _load_task(body)

    def list(
        self, state: TaskState | None = None, page_number: int = 1, page_size: int = 20
    ) -> Page[BackupTask]:
        """One page of tasks newest first; see `TaskStore.list`."""
        _check_page(page_number, page_size)
        wanted = _check_state(state)
        where, params = ("WHERE state = ?", (wanted.value,)) if wanted is not None else ("", ())
        offset = (page_number - 1) * page_size
        # One read transaction: the count and the page come from the same snapshot.
        with self._transaction("BEGIN") as conn:
            (total,) = conn.execute(f"SELECT COUNT(*) FROM task {where}", params).fetchone()
            bodies = []
            if offset < total:
                bodies = conn.execute(
                    f"SELECT body FROM task {where} ORDER BY created_us DESC, id DESC "
                    "LIMIT ? OFFSET ?",
                    (*params, page_size, offset),
                ).fetchall()
        return _page([_load_task(body) for (body,) in bodies], page_number, page_size, total)

    def start(
        self,
        task_id: str,
        *,
        owner: str,
        now: datetime,
        unless_started_since: datetime | None = None,
    ) -> BackupTask:
        """Compare-and-set the task to RUNNING for *owner*; see `TaskStore.start`."""
        _require_aware(now, "now")
        with self._transaction() as conn:
            _, _, body = self._row(conn, task_id)
            task = _load_task(body)
            _check_startable(task, unless_started_since)
            started = _started(task, now)
            conn.execute(
                "UPDATE task SET state = ?, lease_owner = ?, lease_heartbeat = ?, body = ? "
                "WHERE id = ?",
                (started.state.value, owner, now.isoformat(), _dump(started), task_id),
            )
        return started

    def heartbeat(self, task_id: str, *, owner: str, now: datetime) -> bool:
        """Refresh *owner*'s lease; False when it no longer holds the task."""
        _require_aware(now, "now")
        with self._transaction() as conn:
            self._row(conn, task_id)
            cursor = conn.execute(
                "UPDATE task SET lease_heartbeat = ? "
                "WHERE id = ? AND state = ? AND lease_owner = ?",
                (now.isoformat(), task_id, TaskState.RUNNING.value, owner),
            )
            return cursor.rowcount == 1

    def finish(
        self, task_id: str, *, owner: str, state: TaskState, summary: RunSummary, now: datetime
    ) -> BackupTask | None:
        """End *owner*'s run of the task; see `TaskStore.finish`."""
        _check_finish(task_id, state, summary, now)
        with self._transaction() as conn:
            current, holder, body = self._row(conn, task_id)
            if current != TaskState.RUNNING.value or holder != owner:
                return None
            finished = _finished(_load_task(body), state, summary, now)
            conn.execute(
                "UPDATE task SET state = ?, lease_owner = NULL, lease_heartbeat = NULL, body = ? "
                "WHERE id = ?",
                (state.value, _dump(finished), task_id),
            )
            conn.execute("INSERT INTO run (task_id, body) VALUES (?, ?)", (task_id, _dump(summary)))
            # Keep the newest run_history runs: drop every run older than the last one kept.
            conn.execute(
                "DELETE FROM run WHERE task_id = ? AND seq < ("
                " SELECT seq FROM run WHERE task_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (task_id, task_id, self._run_history - 1),
            )
        return finished

    def leases(self) -> Sequence[RunLease]:
        """The leases of every RUNNING task, by task id."""
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(
                "SELECT id, lease_owner, lease_heartbeat FROM task WHERE state = ? ORDER BY id",
                (TaskState.RUNNING.value,),
            ).fetchall()
        return [
            RunLease(task_id, owner, converter.structure(heartbeat, datetime))
            for task_id, owner, heartbeat in rows
        ]

    def runs(self, task_id: str, limit: int = DEFAULT_RUN_HISTORY) -> builtins.list[RunSummary]:
        """Run history of the task, newest first, at most *limit*."""
        _check_limit(limit)
        with self._transaction("BEGIN") as conn:
            self._row(conn, task_id)
            rows = conn.execute(
                "SELECT body FROM run WHERE task_id = ? ORDER BY seq DESC LIMIT ?",
                (task_id, limit),
            ).fetchall()
        return [_load_run(body) for (body,) in rows]

    def update(self, task: BackupTask) -> None:
        """Replace the task's own fields, keeping its history; see `TaskStore.update`."""
        if task.id is None:
            raise ValueError("cannot update a task without an id")
        with self._transaction() as conn:
            _, _, body = self._row(conn, task.id)
            updated = _updated(_load_task(body), task)
            conn.execute("UPDATE task SET body = ? WHERE id = ?", (_dump(updated), task.id))
