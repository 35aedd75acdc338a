"""`SqliteTaskStore`: tasks and their run history in one SQLite database, safe across processes
(WAL, IMMEDIATE transactions), with the atomic compare-and-set that starts a run."""

from __future__ import annotations

import builtins
import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .._model.convert import converter, to_json
from .._model.sqlitedb import transaction
from .._model.task import BackupTask, Page, RunSummary, TaskState
from ..exceptions import TaskNotFoundError, TaskRunningError
from . import rules
from .rules import DEFAULT_RUN_HISTORY, RunLease

__all__ = ["SCHEMA_VERSION", "SqliteTaskStore"]

SCHEMA_VERSION = 2

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS task (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    lease_owner TEXT,
    lease_heartbeat TEXT,
    body TEXT NOT NULL,
    last_run_state TEXT  -- the state of lastRun in body, NULL before the first run
);
CREATE INDEX IF NOT EXISTS task_newest ON task (created_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS task_state_newest ON task (state, created_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS task_last_run_newest
    ON task (last_run_state, created_us DESC, id DESC);
CREATE TABLE IF NOT EXISTS run (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL REFERENCES task (id),
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS run_of_task ON run (task_id, seq);
PRAGMA user_version = {SCHEMA_VERSION};
"""

# Version 1 had no last_run_state column: add it and fill it from each task's body.
_FROM_VERSION_1 = (
    "ALTER TABLE task ADD COLUMN last_run_state TEXT",
    "UPDATE task SET last_run_state = json_extract(body, '$.lastRun.state')",
)

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


def _last_run_state(task: BackupTask) -> str | None:
    state = rules.last_run_state(task)
    return None if state is None else state.value


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


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
        self._run_history = rules.check_history(run_history)
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
            with transaction(conn):
                self._prepare_schema(conn)
        except sqlite3.Error as exc:
            conn.close()
            exc.add_note(f"task store: {self._path}")
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare_schema(self, conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"task store {self._path} has schema version {version}; this version of "
                f"repobackup reads up to {SCHEMA_VERSION}"
            )
        stored_before = _has_column(conn, "task", "body")
        if stored_before and not _has_column(conn, "task", "last_run_state"):
            for statement in _FROM_VERSION_1:
                conn.execute(statement)
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)

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
        task_id = rules.check_new(task)
        assert task.created_date is not None
        with self._transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO task (id, state, created_us, body, last_run_state)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        task_id,
                        task.state.value,
                        _micros(task.created_date),
                        _dump(task),
                        _last_run_state(task),
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"a task with id {task_id!r} exists already") from None

    def get(self, task_id: str) -> BackupTask:
        """The task; TaskNotFoundError if absent."""
        with self._transaction("BEGIN") as conn:
            _, _, body = self._row(conn, task_id)
        return _load_task(body)

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
        conditions = []
        params: builtins.list[Any] = []
        wanted = rules.check_state(state)
        if wanted is not None:
            conditions.append("state = ?")
            params.append(wanted.value)
        last = rules.check_state(last_run_state, "$.lastRunState")
        if last is not None:
            conditions.append("last_run_state = ?")
            params.append(last.value)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
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
        return rules.page([_load_task(body) for (body,) in bodies], page_number, page_size, total)

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
        with self._transaction() as conn:
            _, _, body = self._row(conn, task_id)
            task = _load_task(body)
            rules.check_startable(task, unless_started_since)
            started = rules.started(task, now)
            conn.execute(
                "UPDATE task SET state = ?, lease_owner = ?, lease_heartbeat = ?, body = ? "
                "WHERE id = ?",
                (started.state.value, owner, now.isoformat(), _dump(started), task_id),
            )
        return started

    def heartbeat(self, task_id: str, *, owner: str, now: datetime) -> bool:
        """Refresh *owner*'s lease; False when it no longer holds the task."""
        rules.require_aware(now, "now")
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
        rules.check_finish(task_id, state, summary, now)
        with self._transaction() as conn:
            current, holder, body = self._row(conn, task_id)
            if current != TaskState.RUNNING.value or holder != owner:
                return None
            finished = rules.finished(_load_task(body), state, summary, now)
            conn.execute(
                "UPDATE task SET state = ?, lease_owner = NULL, lease_heartbeat = NULL, body = ?, "
                "last_run_state = ? WHERE id = ?",
                (state.value, _dump(finished), summary.state.value, task_id),
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
        rules.check_limit(limit)
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
            updated = rules.updated(_load_task(body), task)
            conn.execute("UPDATE task SET body = ? WHERE id = ?", (_dump(updated), task.id))

    def set_enabled(
        self, task_id: str, enabled: bool, *, now: datetime, user: str | None = None
    ) -> BackupTask:
        """Enable or disable the task; see `TaskStore.set_enabled`."""
        rules.check_enabled(enabled)
        rules.require_aware(now, "now")
        with self._transaction() as conn:
            _, _, body = self._row(conn, task_id)
            changed = rules.with_enabled(_load_task(body), enabled, now, user)
            conn.execute("UPDATE task SET body = ? WHERE id = ?", (_dump(changed), task_id))
        return changed

    def delete(self, task_id: str) -> None:
        """Remove the task and its run history; see `TaskStore.delete`."""
        with self._transaction() as conn:
            state, _, _ = self._row(conn, task_id)
            if state == TaskState.RUNNING.value:
                raise TaskRunningError(task_id)
            conn.execute("DELETE FROM run WHERE task_id = ?", (task_id,))
            conn.execute("DELETE FROM task WHERE id = ?", (task_id,))
