"""Tests for a task's life: states and history, notification, crash recovery, retention, and
exclusivity across real processes."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import posixpath
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from hypothesis import given
from hypothesis import strategies as st

import _lifecycle_worker
from helpers import MANIFEST, Clock, apply_retention, make_repository, remove_leftovers
from repobackup import (
    BackupTask,
    Engine,
    MemoryRepository,
    MemoryTaskStore,
    RunSummary,
    SqliteRepository,
    SqliteTaskStore,
    TaskRunningError,
    TaskState,
)

SHANGHAI = timezone(timedelta(hours=8))
START = datetime(2024, 3, 1, 2, 0, tzinfo=SHANGHAI)
STAMP = "%Y%m%d.%H%M%S"


def task_body(store: Path | str, name: str = "nightly", **setting: Any) -> dict[str, Any]:
    """A backup task of the demo project, run only when executed."""
    content = setting.pop("content", {})
    return {
        "name": name,
        "storeLocation": str(store),
        "content": {"projects": [{"projectId": "demo"}], **content},
        "backupSetting": {"executionPlan": {"executeImmediately": False}, **setting},
    }


def backups(task_dir: Path) -> list[str]:
    """The visible entries of a task folder, sorted."""
    if not task_dir.is_dir():
        return []
    return sorted(p.name for p in task_dir.iterdir() if not p.name.startswith("."))


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock(START)


@pytest.fixture(name="repo")
def _repo() -> MemoryRepository:
    return make_repository()


@pytest.fixture(name="engine")
def _engine(repo: MemoryRepository, clock: Clock) -> Iterator[Engine]:
    with Engine(repo, clock=clock, tz=SHANGHAI) as engine:
        yield engine


class TestStates:
    """PENDING → RUNNING → FINISHED or FAILED, with dates, last run and history."""

    def test_pending_running_finished(
        self, repo: MemoryRepository, clock: Clock, tmp_path: Path
    ) -> None:
        """A new task is PENDING; during its run RUNNING since its start; then FINISHED with its
        end date and last run."""
        seen: list[BackupTask] = []
        with Engine(
            repo,
            clock=clock,
            tz=SHANGHAI,
            on_progress=lambda _: seen.append(engine.get_task(task_id)),
        ) as engine:
            task_id = engine.create_task(task_body(tmp_path))
            created = engine.get_task(task_id)
            assert created.state is TaskState.PENDING
            assert (created.start_date, created.end_date, created.last_run) == (None, None, None)
            clock.advance(minutes=5)
            began = clock.now
            summary = engine.execute(task_id)
        assert len(seen) > 1
        assert all(t.state is TaskState.RUNNING and t.start_date == began for t in seen[:-1])
        assert seen[-1].state is TaskState.FINISHED
        task = engine.get_task(task_id)
        assert task.state is TaskState.FINISHED
        assert (task.start_date, task.end_date) == (began, began)
        assert task.last_run == summary == engine.runs(task_id)[0]
        assert summary.state is TaskState.FINISHED

    def test_failed_task_runs_again(
        self, engine: Engine, repo: MemoryRepository, clock: Clock, tmp_path: Path
    ) -> None:
        """A run that fails leaves the task FAILED; once the cause is gone it runs again."""
        task_id = engine.create_task(task_body(tmp_path, errorStrategy="FAST_FAIL"))
        repo.fail_blobs.update(repo.snapshot()["blobs"])
        failed = engine.execute(task_id)
        assert failed.state is TaskState.FAILED
        assert engine.get_task(task_id).state is TaskState.FAILED
        assert failed.errors
        repo.fail_blobs.clear()
        clock.advance(minutes=1)
        assert engine.execute(task_id).state is TaskState.FINISHED
        assert engine.get_task(task_id).state is TaskState.FINISHED

    def test_history_is_newest_first_and_bounded(
        self, repo: MemoryRepository, clock: Clock, tmp_path: Path
    ) -> None:
        """FINISHED tasks run again; the history keeps the newest runs, newest first."""
        with Engine(repo, tasks=MemoryTaskStore(run_history=3), clock=clock, tz=SHANGHAI) as engine:
            task_id = engine.create_task(task_body(tmp_path))
            starts = []
            for _ in range(5):
                starts.append(clock.advance(minutes=1))
                engine.execute(task_id)
            assert [run.started for run in engine.runs(task_id)] == starts[:1:-1]
            assert [run.started for run in engine.runs(task_id, limit=2)] == starts[:2:-1]

    def test_a_running_task_cannot_run_again(self, engine: Engine, tmp_path: Path) -> None:
        """execute and submit of a RUNNING task raise TaskRunningError and change nothing."""
        task_id = engine.create_task(task_body(tmp_path))
        engine.tasks.start(task_id, owner="elsewhere:1:abc", now=START)
        with pytest.raises(TaskRunningError):
            engine.execute(task_id)
        with pytest.raises(TaskRunningError):
            engine.submit(task_id)
        assert [lease.owner for lease in engine.tasks.leases()] == ["elsewhere:1:abc"]


class TestOnFinish:
    """The on_finish notification."""

    def test_called_with_the_final_task_and_summary(
        self, repo: MemoryRepository, clock: Clock, tmp_path: Path
    ) -> None:
        """Each run ends with one call carrying the task as stored after the run."""
        calls: list[tuple[BackupTask, RunSummary]] = []
        with Engine(
            repo, clock=clock, tz=SHANGHAI, on_finish=lambda t, s: calls.append((t, s))
        ) as engine:
            task_id = engine.create_task(task_body(tmp_path))
            summary = engine.execute(task_id)
            clock.advance(seconds=5)
            engine.submit(task_id).result()
        assert len(calls) == 2
        task, notified = calls[0]
        assert notified == summary
        assert task.state is TaskState.FINISHED
        assert task.last_run == summary

    def test_a_failing_callback_is_logged_and_harmless(
        self, repo: MemoryRepository, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A callback that raises is logged; the run and the task still end FINISHED."""

        def broken(task: BackupTask, summary: RunSummary) -> None:
            raise RuntimeError("mail server down")

        with Engine(repo, clock=clock, tz=SHANGHAI, on_finish=broken) as engine:
            task_id = engine.create_task(task_body(tmp_path))
            with caplog.at_level(logging.ERROR, logger="repobackup"):
                summary = engine.execute(task_id)
        assert summary.state is TaskState.FINISHED
        assert engine.get_task(task_id).state is TaskState.FINISHED
        assert any("on_finish" in r.getMessage() and r.exc_info for r in caplog.records)


class TestRecovery:
    """`recover_interrupted` ends runs whose process died, and cleans up after them."""

    def test_dead_process_on_this_host_is_recovered_at_once(
        self, repo: MemoryRepository, clock: Clock, tmp_path: Path
    ) -> None:
        """A run owned by an ended process of this host is FAILED "interrupted" at once, the
        owner notified, and the task runs again."""
        calls: list[RunSummary] = []
        with Engine(
            repo, clock=clock, tz=SHANGHAI, on_finish=lambda t, s: calls.append(s)
        ) as engine:
            task_id = engine.create_task(task_body(tmp_path))
            owner = f"{socket.gethostname()}:{dead_pid()}:abc"
            engine.tasks.start(task_id, owner=owner, now=clock.now)
            clock.advance(seconds=1)
            assert engine.recover_interrupted() == [task_id]
            task = engine.get_task(task_id)
            assert task.state is TaskState.FAILED
            assert task.end_date == clock.now
            assert task.last_run is not None
            assert task.last_run.state is TaskState.FAILED
            assert task.last_run.started == START
            assert [(e.scope, e.message) for e in task.last_run.errors] == [("task", "interrupted")]
            assert calls == [task.last_run]
            assert engine.recover_interrupted() == []
            assert engine.execute(task_id).state is TaskState.FINISHED

    def test_other_hosts_are_recovered_after_the_stale_limit(
        self, engine: Engine, clock: Clock, tmp_path: Path
    ) -> None:
        """A run of another host is taken for dead only once its heartbeat is older than
        stale_after."""
        task_id = engine.create_task(task_body(tmp_path))
        engine.tasks.start(task_id, owner="elsewhere:1:abc", now=START)
        assert engine.stale_after == 60
        assert engine.recover_interrupted(START + timedelta(seconds=60)) == []
        engine.tasks.heartbeat(task_id, owner="elsewhere:1:abc", now=START + timedelta(seconds=50))
        assert engine.recover_interrupted(START + timedelta(seconds=100)) == []
        assert engine.recover_interrupted(START + timedelta(seconds=111)) == [task_id]
        assert engine.get_task(task_id).state is TaskState.FAILED

    def test_a_recurring_task_goes_back_to_pending(self, engine: Engine, tmp_path: Path) -> None:
        """An interrupted recurring task waits for its next fire time, its last run FAILED."""
        body = task_body(tmp_path)
        body["backupSetting"] = {
            "executionStrategy": "CRON_EXPRESSION",
            "executionPlan": {"cronExpression": "0 3 * * *"},
        }
        task_id = engine.create_task(body)
        engine.tasks.start(task_id, owner="elsewhere:1:abc", now=START)
        assert engine.recover_interrupted(START + timedelta(hours=1)) == [task_id]
        task = engine.get_task(task_id)
        assert task.state is TaskState.PENDING
        assert task.last_run is not None
        assert task.last_run.state is TaskState.FAILED

    def test_one_of_two_engines_ends_the_run(
        self, repo: MemoryRepository, clock: Clock, tmp_path: Path
    ) -> None:
        """Two engines on one store recovering together end an interrupted run once."""
        store = SqliteTaskStore(tmp_path / "tasks.db")
        with (
            Engine(repo, tasks=store, clock=clock) as first,
            Engine(repo, tasks=SqliteTaskStore(tmp_path / "tasks.db"), clock=clock) as second,
        ):
            task_id = first.create_task(task_body(tmp_path))
            first.tasks.start(task_id, owner="elsewhere:1:abc", now=START)
            later = START + timedelta(minutes=5)
            assert first.recover_interrupted(later) + second.recover_interrupted(later) == [task_id]
            assert len(first.runs(task_id)) == 1

    def test_leftovers_of_the_run_are_removed(self, engine: Engine, tmp_path: Path) -> None:
        """The interrupted run's hidden work in progress goes; complete backups, older
        leftovers and other tasks' files stay."""
        task_id = engine.create_task(task_body(tmp_path))
        task_dir = tmp_path / "nightly"
        stamp = START.strftime(STAMP)
        ours = [task_dir / f".nightly-{stamp}.partial", task_dir / f".nightly-{stamp}.zip.partial"]
        kept = [
            task_dir / f".other-{stamp}.partial",
            task_dir / ".nightly-20240101.000000.partial",
            task_dir / f"nightly-{(START - timedelta(days=1)).strftime(STAMP)}",
        ]
        for folder in [ours[0], *kept]:
            (folder / "blobs").mkdir(parents=True)
        ours[1].write_bytes(b"PK half a zip")
        (kept[2] / MANIFEST).write_text(json.dumps({"format": 1, "members": []}))
        engine.tasks.start(task_id, owner="elsewhere:1:abc", now=START)
        assert engine.recover_interrupted(START + timedelta(hours=1)) == [task_id]
        assert not any(path.exists() for path in ours)
        assert all(path.exists() for path in kept)
        last_run = engine.get_task(task_id).last_run
        assert last_run is not None
        assert any(f"nightly-{stamp}.partial" in note for note in last_run.notes)

    def test_in_place_leftovers_on_an_object_store(self, engine: Engine) -> None:
        """Where backups are written in place, an incomplete one with the run's stamp goes; a
        complete one stays."""
        root = f"memory://recovery-{os.getpid()}-{time.monotonic_ns()}"
        fs = fsspec.filesystem("memory")
        stamp = START.strftime(STAMP)
        incomplete = f"{root}/nightly/nightly-{stamp}"
        complete = f"{root}/nightly/nightly-{(START + timedelta(seconds=1)).strftime(STAMP)}"
        fs.pipe(f"{incomplete}/projects/demo/project.jsonl", b"{}\n")
        fs.pipe(f"{complete}/{MANIFEST}", json.dumps({"format": 1, "members": []}).encode())
        task_id = engine.create_task(task_body(root))
        engine.tasks.start(task_id, owner="elsewhere:1:abc", now=START)
        assert engine.recover_interrupted(START + timedelta(hours=1)) == [task_id]
        assert not fs.exists(incomplete)
        assert fs.exists(f"{complete}/{MANIFEST}")

    def test_live_runs_keep_their_lease(self, tmp_path: Path) -> None:
        """Heartbeats keep running and queued runs from being taken for dead by another
        engine, and an engine never ends its own runs."""
        slow = _lifecycle_worker.SlowBlobs(make_repository(), 1.0)
        tasks = MemoryTaskStore()
        with Engine(slow, tasks=tasks) as running, Engine(make_repository(), tasks=tasks) as other:
            running.heartbeat_seconds = 0.05
            other.heartbeat_seconds = 0.05
            other.stale_after = 0.5
            ids = [running.create_task(task_body(tmp_path / str(n))) for n in range(5)]
            futures = [running.submit(task_id) for task_id in ids]
            # By the last look every lease is older than stale_after: only heartbeats save them,
            # the fifth run's too, while it waits for a worker.
            for _ in range(3):
                time.sleep(0.25)
                assert other.recover_interrupted() == []
                assert running.recover_interrupted(running.now() + timedelta(days=1)) == []
            assert [f.result().state for f in futures] == [TaskState.FINISHED] * 5

    def test_bad_arguments(self, engine: Engine) -> None:
        """A naive `now`, and a stale limit no longer than the heartbeat, are refused."""
        with pytest.raises(ValueError, match="now"):
            engine.recover_interrupted(datetime(2024, 1, 1))
        engine.stale_after = engine.heartbeat_seconds
        with pytest.raises(ValueError, match="stale_after"):
            engine.recover_interrupted()


def write_backup(
    task_dir: Path, name: str, stamp: int, *, follows: int | None = None, complete: bool = True
) -> str:
    """A backup folder of task *name* whose stamp is *stamp* minutes after START; its name."""
    backup = f"{name}-{(START + timedelta(minutes=stamp)).strftime(STAMP)}"
    folder = task_dir / backup
    (folder / "common").mkdir(parents=True)
    (folder / "common" / "user.jsonl").write_text("")
    if complete:
        manifest: dict[str, Any] = {"format": 1, "members": [], "kind": "full", "follows": None}
        if follows is not None:
            previous = f"{name}-{(START + timedelta(minutes=follows)).strftime(STAMP)}"
            manifest.update(kind="incremental", follows=previous)
        (folder / MANIFEST).write_text(json.dumps(manifest))
    return backup


# A chain of backups, oldest first: each entry is None (a full backup) or the index of the
# earlier backup an increment follows.
chains = st.integers(min_value=1, max_value=12).flatmap(
    lambda n: st.tuples(
        *[st.none() if i == 0 else st.one_of(st.none(), st.integers(0, i - 1)) for i in range(n)]
    )
)


class TestRetention:
    """`apply_retention` and the engine's use of it after a backup."""

    def test_keeps_the_newest(self, tmp_path: Path) -> None:
        """Full backups beyond keepLast go, oldest ones; the rest of the folder stays."""
        task_dir = tmp_path / "nightly"
        names = [write_backup(task_dir, "nightly", n) for n in range(5)]
        other = write_backup(task_dir, "nightly-eu", 0)
        unfinished = write_backup(task_dir, "nightly", 99, complete=False)
        removed = apply_retention(LocalFileSystem(), str(task_dir), 2)
        assert [posixpath.basename(path) for path in removed] == names[2::-1]
        assert backups(task_dir) == sorted([*names[3:], other, unfinished])

    def test_a_kept_increment_keeps_its_chain(self, tmp_path: Path) -> None:
        """The full backup and increments a kept increment follows are kept."""
        task_dir = tmp_path / "nightly"
        old_full = write_backup(task_dir, "nightly", 0)
        full = write_backup(task_dir, "nightly", 1)
        first = write_backup(task_dir, "nightly", 2, follows=1)
        second = write_backup(task_dir, "nightly", 3, follows=2)
        assert apply_retention(LocalFileSystem(), str(task_dir), 1) == [str(task_dir / old_full)]
        assert backups(task_dir) == [full, first, second]

    def test_named_backups_are_kept(self, tmp_path: Path) -> None:
        """A backup named in *keep* stays even when its stamp is not among the newest."""
        task_dir = tmp_path / "nightly"
        names = [write_backup(task_dir, "nightly", n) for n in range(3)]
        apply_retention(LocalFileSystem(), str(task_dir), 1, keep=[names[0]])
        assert backups(task_dir) == [names[0], names[2]]

    def test_keep_last_must_be_positive(self, tmp_path: Path) -> None:
        """keep_last below 1 is refused, naming the field."""
        with pytest.raises(ValueError, match="keep_last"):
            apply_retention(LocalFileSystem(), str(tmp_path), 0)
        assert apply_retention(LocalFileSystem(), str(tmp_path / "absent"), 1) == []

    @given(chain=chains, keep_last=st.integers(1, 5))
    def test_never_breaks_a_kept_chain(self, chain: tuple[int | None, ...], keep_last: int) -> None:
        """Whatever the chains, the newest keep_last stay, every kept increment keeps what it
        follows, and only backups nothing kept needs are removed."""
        with tempfile.TemporaryDirectory() as tmp:
            task_dir = Path(tmp) / "nightly"
            names = [write_backup(task_dir, "nightly", i, follows=f) for i, f in enumerate(chain)]
            removed = {
                posixpath.basename(p)
                for p in apply_retention(LocalFileSystem(), str(task_dir), keep_last)
            }
            left = set(backups(task_dir))
        assert left == set(names) - removed
        needed = set()
        for index in range(len(names) - 1, max(-1, len(names) - 1 - keep_last), -1):
            current: int | None = index
            while current is not None:
                needed.add(names[current])
                current = chain[current]
        assert left == needed

    def test_engine_applies_retention_after_a_backup(
        self, engine: Engine, clock: Clock, tmp_path: Path
    ) -> None:
        """After each complete backup the engine keeps keepLast backups and says what it removed."""
        task_id = engine.create_task(task_body(tmp_path, retention={"keepLast": 2}))
        summaries = []
        for _ in range(4):
            clock.advance(minutes=1)
            summaries.append(engine.execute(task_id))
        names = [posixpath.basename(s.location or "") for s in summaries]
        assert backups(tmp_path / "nightly") == names[2:]
        assert summaries[1].notes == ()
        assert any(names[0] in note and "keepLast 2" in note for note in summaries[2].notes)

    def test_zip_backups(self, engine: Engine, clock: Clock, tmp_path: Path) -> None:
        """Compressed backups are counted and removed like folders."""
        task_id = engine.create_task(
            task_body(tmp_path, retention={"keepLast": 1}, content={"compression": True})
        )
        locations = []
        for _ in range(3):
            clock.advance(minutes=1)
            locations.append(engine.execute(task_id).location or "")
        assert backups(tmp_path / "nightly") == [posixpath.basename(locations[-1])]
        assert locations[-1].endswith(".zip")

    def test_increments_keep_their_chain(
        self, engine: Engine, clock: Clock, tmp_path: Path
    ) -> None:
        """With keepLast 1, increments keep the backups they follow."""
        task_id = engine.create_task(
            task_body(tmp_path, retention={"keepLast": 1}, content={"increment": True})
        )
        names = []
        for _ in range(3):
            clock.advance(minutes=1)
            names.append(posixpath.basename(engine.execute(task_id).location or ""))
        assert backups(tmp_path / "nightly") == names

    def test_skipped_after_a_run_with_errors(
        self, engine: Engine, repo: MemoryRepository, clock: Clock, tmp_path: Path
    ) -> None:
        """A backup that recorded errors removes nothing older, and says so."""
        task_id = engine.create_task(task_body(tmp_path, retention={"keepLast": 1}))
        clock.advance(minutes=1)
        first = engine.execute(task_id)
        repo.fail_blobs.update(repo.snapshot()["blobs"])
        clock.advance(minutes=1)
        second = engine.execute(task_id)
        assert second.state is TaskState.FINISHED
        assert second.errors
        assert any("retention skipped" in note for note in second.notes)
        assert len(backups(tmp_path / "nightly")) == 2
        assert first.location is not None

    def test_remove_leftovers_ignores_complete_backups(self, tmp_path: Path) -> None:
        """A complete backup with the run's own stamp is never taken for a leftover."""
        task_dir = tmp_path / "nightly"
        name = write_backup(task_dir, "nightly", 0)
        removed = remove_leftovers(LocalFileSystem(), str(task_dir), "nightly", START, SHANGHAI)
        assert removed == []
        assert backups(task_dir) == [name]

    def test_remove_leftovers_stops_at_until(self, tmp_path: Path) -> None:
        """Work in progress stamped after *until* belongs to a later run and stays."""
        task_dir = tmp_path / "nightly"
        early = task_dir / f".nightly-{START.strftime(STAMP)}.partial"
        late = task_dir / f".nightly-{(START + timedelta(seconds=3)).strftime(STAMP)}.partial"
        for folder in (early, late):
            folder.mkdir(parents=True)
        removed = remove_leftovers(
            LocalFileSystem(),
            str(task_dir),
            "nightly",
            START,
            SHANGHAI,
            until=START + timedelta(seconds=2),
        )
        assert removed == [str(early)]
        assert late.exists()


def _collect(results: Any, count: int) -> list[Any]:
    items = []
    for _ in range(count):
        try:
            items.append(results.get(timeout=60))
        except queue.Empty:
            pytest.fail(f"only {len(items)} of {count} processes reported")
    return items


def _join(processes: list[Any]) -> None:
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0


@pytest.mark.slow
class TestProcesses:
    """Engines in separate processes sharing one SQLite task store."""

    processes = 4

    def _setup(self, tmp_path: Path, **setting: Any) -> tuple[str, str, str]:
        store_path, repo_path = str(tmp_path / "tasks.db"), str(tmp_path / "repo.db")
        _lifecycle_worker.fill_repository(repo_path)
        with SqliteTaskStore(store_path) as store:
            task_id = Engine(MemoryRepository(), tasks=store).create_task(
                task_body(tmp_path / "store", **setting)
            )
        return store_path, repo_path, task_id

    def test_one_of_many_processes_runs_the_task(self, tmp_path: Path) -> None:
        """Processes executing one task at the same moment: one runs it, the others are told
        it is running."""
        store_path, repo_path, task_id = self._setup(tmp_path)
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(self.processes)
        results = context.Queue()
        workers = [
            context.Process(
                target=_lifecycle_worker.execute_once,
                kwargs={
                    "store_path": store_path,
                    "repo_path": repo_path,
                    "task_id": task_id,
                    "delay": 0.5,
                    "barrier": barrier,
                    "results": results,
                },
            )
            for _ in range(self.processes)
        ]
        for worker in workers:
            worker.start()
        outcomes = sorted(outcome for _, outcome in _collect(results, self.processes))
        _join(workers)
        assert outcomes == ["ran FINISHED"] + [_lifecycle_worker.RUNNING] * (self.processes - 1)
        with SqliteTaskStore(store_path) as store:
            assert len(store.runs(task_id)) == 1

    def test_one_of_many_schedulers_starts_a_due_task(self, tmp_path: Path) -> None:
        """Schedulers in several processes looking at once start a due task exactly once."""
        store_path, repo_path, task_id = self._setup(
            tmp_path, executionPlan={"executeImmediately": True}
        )
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(self.processes)
        results = context.Queue()
        workers = [
            context.Process(
                target=_lifecycle_worker.schedule_once,
                kwargs={
                    "store_path": store_path,
                    "repo_path": repo_path,
                    "delay": 0.1,
                    "barrier": barrier,
                    "results": results,
                },
            )
            for _ in range(self.processes)
        ]
        for worker in workers:
            worker.start()
        started = sorted(s for _, s in _collect(results, self.processes))
        _join(workers)
        assert started == [[]] * (self.processes - 1) + [[task_id]]
        with SqliteTaskStore(store_path) as store:
            assert [run.state for run in store.runs(task_id)] == [TaskState.FINISHED]

    @pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
    def test_killed_in_the_middle_of_a_backup(self, tmp_path: Path) -> None:
        """A backup process killed with SIGKILL: the task is recovered as FAILED
        "interrupted", nothing of it looks complete or is left behind, and it runs again."""
        store_path, repo_path, task_id = self._setup(tmp_path)
        task_dir = tmp_path / "store" / "nightly"
        context = multiprocessing.get_context("spawn")
        child = context.Process(
            target=_lifecycle_worker.execute_slowly,
            kwargs={
                "store_path": store_path,
                "repo_path": repo_path,
                "task_id": task_id,
                "delay": 60,
            },
        )
        child.start()
        with SqliteTaskStore(store_path) as store:
            deadline = time.monotonic() + 30
            while not (
                task_dir.is_dir() and any(p.name.endswith(".partial") for p in task_dir.iterdir())
            ):
                assert child.is_alive(), "the backup process ended before it began writing"
                assert time.monotonic() < deadline, "the backup never began"
                time.sleep(0.02)
            assert store.get(task_id).state is TaskState.RUNNING
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=30)
            assert child.exitcode == -signal.SIGKILL

            with SqliteRepository(repo_path) as repo, Engine(repo, tasks=store) as engine:
                assert engine.recover_interrupted() == [task_id]
                task = engine.get_task(task_id)
                assert task.state is TaskState.FAILED
                assert task.end_date is not None
                assert task.last_run is not None
                assert [e.message for e in task.last_run.errors] == ["interrupted"]
                assert list(task_dir.rglob(MANIFEST)) == []
                assert list(task_dir.iterdir()) == []
                summary = engine.execute(task_id)
                assert summary.state is TaskState.FINISHED
                assert summary.location is not None
                assert (Path(summary.location) / MANIFEST).is_file()
