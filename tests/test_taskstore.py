"""Tests for the task stores: both pass `TaskStoreConformance`; the SQLite store also keeps
its data in a file, migrates older files and holds its compare-and-set across processes."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import _race_worker
from repobackup import (
    MemoryTaskStore,
    SqliteTaskStore,
    TaskRunningError,
    TaskState,
    TaskStore,
    to_json,
)
from repobackup.testing import CREATED, TaskStoreConformance, make_summary, make_task, run_times

LATER = CREATED + timedelta(hours=1)
NOT_RUNNING = [TaskState.PENDING, TaskState.FINISHED, TaskState.FAILED]


class TestMemoryTaskStore(TaskStoreConformance):
    """MemoryTaskStore passes the task-store conformance suite."""

    @pytest.fixture(name="make_task_store")
    def _make_task_store(self) -> Callable[[], TaskStore]:
        return MemoryTaskStore


class TestSqliteTaskStore(TaskStoreConformance):
    """SqliteTaskStore passes the task-store conformance suite."""

    @pytest.fixture(name="make_task_store")
    def _make_task_store(self, tmp_path: Path) -> Iterator[Callable[[], TaskStore]]:
        opened: list[SqliteTaskStore] = []

        def make() -> TaskStore:
            opened.append(SqliteTaskStore(tmp_path / f"tasks-{len(opened)}.db"))
            return opened[-1]

        yield make
        for store in opened:
            store.close()


def _leases(store: TaskStore) -> list[tuple[str, str, Any]]:
    return [(lease.task_id, lease.owner, lease.heartbeat) for lease in store.leases()]


class TestSqliteFile:
    def test_survives_reopening(self, tmp_path: Path) -> None:
        """Tasks, leases and run history are still there when the file is opened again."""
        path = tmp_path / "tasks.db"
        task = make_task()
        assert task.id is not None
        with SqliteTaskStore(path) as store:
            store.create(task)
            [summary] = run_times(store, task.id, 1)
            store.start(task.id, owner="alpha", now=LATER)
            expected = store.get(task.id)
        with SqliteTaskStore(str(path)) as store:
            assert store.get(task.id) == expected
            assert store.runs(task.id) == [summary]
            assert _leases(store) == [(task.id, "alpha", LATER)]

    def test_write_ahead_log(self, tmp_path: Path) -> None:
        """The database runs in WAL mode, so readers do not block the writer."""
        path = tmp_path / "tasks.db"
        SqliteTaskStore(path).close()
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    def test_missing_folder(self, tmp_path: Path) -> None:
        """A database in a folder that does not exist is an error naming the path."""
        path = tmp_path / "absent" / "tasks.db"
        with pytest.raises(FileNotFoundError, match="absent"):
            SqliteTaskStore(path)
        assert not path.parent.exists()

    def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not SQLite is refused with the path in the error."""
        path = tmp_path / "notes.txt"
        path.write_text("not a database, just some notes that are long enough" * 20)
        with pytest.raises(sqlite3.DatabaseError) as caught:
            SqliteTaskStore(path)
        assert any(str(path) in note for note in caught.value.__notes__)

    def test_newer_schema(self, tmp_path: Path) -> None:
        """A database written by a newer schema version is refused, not misread."""
        path = tmp_path / "tasks.db"
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version = 99")
        with pytest.raises(ValueError, match="schema version 99"):
            SqliteTaskStore(path)

    def test_closed(self, tmp_path: Path) -> None:
        """A closed store says so instead of failing obscurely."""
        store = SqliteTaskStore(tmp_path / "tasks.db")
        store.close()
        store.close()
        with pytest.raises(ValueError, match="closed"):
            store.list()

    def test_two_objects_one_file(self, tmp_path: Path) -> None:
        """Two store objects on one file see each other's writes and share the compare-and-set."""
        path = tmp_path / "tasks.db"
        with SqliteTaskStore(path) as first, SqliteTaskStore(path) as second:
            task = make_task()
            first.create(task)
            assert task.id is not None
            second.start(task.id, owner="beta", now=LATER)
            with pytest.raises(TaskRunningError):
                first.start(task.id, owner="alpha", now=LATER)
            assert first.get(task.id).state is TaskState.RUNNING


# The schema of version 1, as earlier releases wrote it.
_SCHEMA_V1 = """
CREATE TABLE task (id TEXT PRIMARY KEY, state TEXT NOT NULL, created_us INTEGER NOT NULL,
    lease_owner TEXT, lease_heartbeat TEXT, body TEXT NOT NULL);
CREATE INDEX task_newest ON task (created_us DESC, id DESC);
CREATE INDEX task_state_newest ON task (state, created_us DESC, id DESC);
CREATE TABLE run (seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL REFERENCES task (id),
    body TEXT NOT NULL);
CREATE INDEX run_of_task ON run (task_id, seq);
PRAGMA user_version = 1;
"""


class TestSchemaMigration:
    def test_version_1_file_is_migrated(self, tmp_path: Path) -> None:
        """A task store written by schema version 1 opens with its tasks and runs, and its
        tasks are found by the state of their last run."""
        path = tmp_path / "tasks.db"
        failed = make_task(name="failed")
        fresh = make_task(name="fresh", created=CREATED + timedelta(minutes=1))
        assert failed.id is not None
        assert fresh.id is not None
        summary = make_summary(failed.id, state=TaskState.FAILED)
        ran = to_json(failed) | {"lastRun": to_json(summary)}
        conn = sqlite3.connect(path)
        with conn:
            conn.executescript(_SCHEMA_V1)
            for task, body in ((failed, ran), (fresh, to_json(fresh))):
                assert task.created_date is not None
                micros = int(task.created_date.timestamp() * 1_000_000)
                conn.execute(
                    "INSERT INTO task (id, state, created_us, body) VALUES (?, ?, ?, ?)",
                    (task.id, task.state.value, micros, json.dumps(body)),
                )
            conn.execute(
                "INSERT INTO run (task_id, body) VALUES (?, ?)",
                (failed.id, json.dumps(to_json(summary))),
            )
        conn.close()
        with SqliteTaskStore(path) as store:
            assert [t.id for t in store.list().records] == [fresh.id, failed.id]
            by_last_run = store.list(last_run_state=TaskState.FAILED)
            assert [t.id for t in by_last_run.records] == [failed.id]
            assert store.runs(failed.id) == [summary]
            assert store.get(fresh.id).enabled is True
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        conn.close()


def _collect(results: Any, count: int) -> list[Any]:
    return [results.get(timeout=120) for _ in range(count)]


def _join(processes: list[Any]) -> None:
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * len(processes)


class TestProcessRace:
    def test_one_process_wins(self, tmp_path: Path) -> None:
        """When 6 processes start the same task at once, exactly one wins, round after round."""
        path = tmp_path / "tasks.db"
        processes_count = 6
        with SqliteTaskStore(path) as store:
            task_ids = []
            # Every kind of non-RUNNING task can be won, and only once.
            for index, state in enumerate([*NOT_RUNNING, TaskState.PENDING, TaskState.PENDING]):
                task = make_task(state=state, created=CREATED + timedelta(minutes=index))
                assert task.id is not None
                store.create(task)
                task_ids.append(task.id)

            context = multiprocessing.get_context("spawn")
            barrier = context.Barrier(processes_count)
            results = context.Queue()
            processes = [
                context.Process(
                    target=_race_worker.start_rounds, args=(str(path), task_ids, barrier, results)
                )
                for _ in range(processes_count)
            ]
            for process in processes:
                process.start()
            outcomes = _collect(results, processes_count * len(task_ids))
            _join(processes)

            leases = {lease.task_id: lease.owner for lease in store.leases()}
            for task_id in task_ids:
                mine = [(owner, outcome) for tid, owner, outcome in outcomes if tid == task_id]
                winners = [owner for owner, outcome in mine if outcome == _race_worker.STARTED]
                losers = [owner for owner, outcome in mine if outcome == _race_worker.RUNNING]
                assert len(winners) == 1, mine
                assert len(losers) == processes_count - 1, mine
                assert leases[task_id] == winners[0]
                assert store.get(task_id).state is TaskState.RUNNING

    def test_processes_open_a_new_file_together(self, tmp_path: Path) -> None:
        """Processes that create the same new database at once all succeed and all tasks land."""
        path = tmp_path / "fresh.db"
        processes_count = 6
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(processes_count)
        results = context.Queue()
        processes = [
            context.Process(target=_race_worker.open_and_create, args=(str(path), barrier, results))
            for _ in range(processes_count)
        ]
        for process in processes:
            process.start()
        created = _collect(results, processes_count)
        _join(processes)
        assert not [c for c in created if c.startswith("error")], created
        with SqliteTaskStore(path) as store:
            listed = store.list(page_size=10)
        assert sorted(t.id for t in listed.records if t.id) == sorted(created)
