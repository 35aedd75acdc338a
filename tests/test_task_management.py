"""Tests for managing tasks through the engine: enabling and disabling (the scheduler starts
no disabled task), deleting a task with its history but never its backups, and finding tasks
by the state of their last run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from helpers import Clock, make_repository
from repobackup import (
    BackupTask,
    Engine,
    MemoryRepository,
    Scheduler,
    SqliteTaskStore,
    TaskNotFoundError,
    TaskRunningError,
    TaskState,
    ValidationError,
    from_json,
    to_json,
)

SHANGHAI = timezone(timedelta(hours=8))
START = datetime(2024, 1, 1, 10, 0, tzinfo=SHANGHAI)


def task_body(store: Path, strategy: str = "IMMEDIATELY", **setting: Any) -> dict[str, Any]:
    """A backup task of the demo project; *setting* adds to its backupSetting."""
    plan: dict[str, Any] = {}
    if strategy == "CRON_EXPRESSION":
        plan = {"executeImmediately": False, "cronExpression": "0 2 * * *"}
    return {
        "name": "nightly",
        "storeLocation": str(store),
        "content": {"projects": [{"projectId": "demo"}]},
        "backupSetting": {"executionStrategy": strategy, "executionPlan": plan, **setting},
    }


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock(START)


@pytest.fixture(name="engine")
def _engine(clock: Clock, tmp_path: Path) -> Iterator[Engine]:
    tasks = SqliteTaskStore(tmp_path / "tasks.db")
    with Engine(make_repository(), tasks=tasks, clock=clock, tz=SHANGHAI, user="admin") as engine:
        yield engine
    tasks.close()


class TestEnabled:
    def test_new_task_is_enabled(self, engine: Engine, tmp_path: Path) -> None:
        """A created task is enabled; its JSON leaves the default out, as the spec shows it."""
        task = engine.get_task(engine.create_task(task_body(tmp_path / "store")))
        assert task.enabled is True
        assert "enabled" not in to_json(task)

    def test_task_created_disabled_stays_disabled(
        self, engine: Engine, clock: Clock, tmp_path: Path
    ) -> None:
        """``"enabled": false`` at creation is kept: the scheduler never starts the task."""
        task_id = engine.create_task({**task_body(tmp_path / "store"), "enabled": False})
        task = engine.get_task(task_id)
        assert task.enabled is False
        assert to_json(task)["enabled"] is False
        assert Scheduler(engine).run_pending() == []
        assert engine.runs(task_id) == []

    def test_disable_and_enable(self, engine: Engine, clock: Clock, tmp_path: Path) -> None:
        """set_enabled returns the changed task, stamped with who and when; it is stored."""
        task_id = engine.create_task(task_body(tmp_path / "store"))
        clock.advance(minutes=5)
        off = engine.set_enabled(task_id, False, user="operator")
        assert (off.enabled, off.last_modified_by, off.last_modified_date) == (
            False,
            "operator",
            clock.now,
        )
        assert engine.get_task(task_id) == off
        assert to_json(off)["enabled"] is False
        assert engine.set_enabled(task_id, True).enabled is True
        assert engine.get_task(task_id).last_modified_by == "admin"

    def test_json_round_trip(self) -> None:
        """enabled reads from JSON and a non-boolean is refused naming $.enabled."""
        body = {"name": "n", "storeLocation": "/s", "content": {"commonData": True}}
        assert from_json(BackupTask, body | {"enabled": False}).enabled is False
        with pytest.raises(ValidationError) as caught:
            from_json(BackupTask, body | {"enabled": "no"})
        assert "$.enabled" in [p.path for p in caught.value.problems]

    def test_unknown_id(self, engine: Engine) -> None:
        """Enabling an unknown or malformed id raises TaskNotFoundError."""
        with pytest.raises(TaskNotFoundError):
            engine.set_enabled("0" * 24, False)
        with pytest.raises(TaskNotFoundError):
            engine.set_enabled("not-an-id", False)

    def test_needs_a_bool(self, engine: Engine, tmp_path: Path) -> None:
        """Anything but True or False is refused, and the task stays as it was."""
        task_id = engine.create_task(task_body(tmp_path / "store"))
        with pytest.raises(ValueError, match="enabled"):
            engine.set_enabled(task_id, "false")  # type: ignore[arg-type]
        assert engine.get_task(task_id).enabled is True

    def test_update_keeps_disabled(self, engine: Engine, tmp_path: Path) -> None:
        """Editing a disabled task's settings leaves it disabled."""
        task_id = engine.create_task(task_body(tmp_path / "store"))
        engine.set_enabled(task_id, False)
        engine.update_task(task_id, task_body(tmp_path / "other"))
        task = engine.get_task(task_id)
        assert (task.store_location, task.enabled) == (str(tmp_path / "other"), False)


class TestSchedulerSkipsDisabled:
    def test_due_task_not_started_while_disabled(
        self, engine: Engine, clock: Clock, tmp_path: Path
    ) -> None:
        """A disabled task that is due is not started and has no next run; once enabled it
        is started on the next pass."""
        scheduler = Scheduler(engine)
        task_id = engine.create_task(task_body(tmp_path / "store"))
        engine.set_enabled(task_id, False)
        assert scheduler.next_run(task_id) is None
        assert scheduler.run_pending() == []
        assert engine.get_task(task_id).state is TaskState.PENDING
        assert engine.runs(task_id) == []
        engine.set_enabled(task_id, True)
        assert scheduler.next_run(task_id) is not None
        assert scheduler.run_pending() == [task_id]

    def test_disabled_cron_task_skips_its_fire_times(
        self, engine: Engine, clock: Clock, tmp_path: Path
    ) -> None:
        """A disabled recurring task is passed over at its fire time; others still run."""
        scheduler = Scheduler(engine)
        disabled = engine.create_task(task_body(tmp_path / "a", "CRON_EXPRESSION"))
        enabled = engine.create_task(task_body(tmp_path / "b", "CRON_EXPRESSION"))
        fire = scheduler.next_run(enabled)
        assert fire is not None
        engine.set_enabled(disabled, False)
        clock.now = fire
        assert scheduler.run_pending() == [enabled]

    def test_execute_runs_a_disabled_task(self, engine: Engine, tmp_path: Path) -> None:
        """execute still runs a disabled task, which stays disabled."""
        task_id = engine.create_task(task_body(tmp_path / "store"))
        engine.set_enabled(task_id, False)
        summary = engine.execute(task_id)
        assert summary.state is TaskState.FINISHED
        task = engine.get_task(task_id)
        assert (task.state, task.enabled) == (TaskState.FINISHED, False)


class _BlockingRepository(MemoryRepository):
    """A repository whose blob reads wait until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = threading.Event()
        self.go_on = threading.Event()

    def open_blob(self, sha256: str) -> BinaryIO:
        self.reading.set()
        self.go_on.wait(timeout=30)
        return super().open_blob(sha256)


class TestDelete:
    def test_removes_task_and_history_keeps_backups(self, engine: Engine, tmp_path: Path) -> None:
        """delete_task removes the task and its runs; the backup it wrote stays in the store."""
        store = tmp_path / "store"
        task_id = engine.create_task(task_body(store))
        summary = engine.execute(task_id)
        assert summary.state is TaskState.FINISHED
        assert summary.location is not None
        before = sorted(p.relative_to(store) for p in store.rglob("*"))
        engine.delete_task(task_id)
        with pytest.raises(TaskNotFoundError):
            engine.get_task(task_id)
        with pytest.raises(TaskNotFoundError):
            engine.runs(task_id)
        assert engine.list_tasks().total_records == 0
        assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
        assert engine.verify(summary.location).ok

    def test_running_task_cannot_be_deleted(self, tmp_path: Path) -> None:
        """While a run is under way delete_task raises TaskRunningError; after it ends the
        task can be deleted."""
        source = _BlockingRepository()
        source.put_project("demo")
        source.put_repository("demo", "libs")
        source.put_file("demo", "libs", "/a.jar", b"alpha")
        with Engine(source, tz=SHANGHAI) as engine:
            task_id = engine.create_task(task_body(tmp_path / "store"))
            future = engine.submit(task_id)
            assert source.reading.wait(timeout=30)
            with pytest.raises(TaskRunningError):
                engine.delete_task(task_id)
            assert engine.get_task(task_id).state is TaskState.RUNNING
            source.go_on.set()
            assert future.result(timeout=60).state is TaskState.FINISHED
            engine.delete_task(task_id)
            assert engine.list_tasks().total_records == 0

    def test_unknown_id(self, engine: Engine) -> None:
        """Deleting an unknown or malformed id raises TaskNotFoundError."""
        with pytest.raises(TaskNotFoundError):
            engine.delete_task("0" * 24)
        with pytest.raises(TaskNotFoundError):
            engine.delete_task("../etc")


class TestLastRunState:
    def test_failed_recurring_task_is_found(self, tmp_path: Path, clock: Clock) -> None:
        """A recurring task whose run failed is PENDING again: list_tasks(state="FAILED")
        misses it, list_tasks(last_run_state="FAILED") finds it."""
        source = make_repository()
        source.fail_records.add("/a.jar")
        with Engine(source, clock=clock, tz=SHANGHAI) as engine:
            failing = engine.create_task(
                task_body(tmp_path / "store", "CRON_EXPRESSION", errorStrategy="FAST_FAIL")
            )
            clock.advance(seconds=1)
            fine = engine.create_task(task_body(tmp_path / "other"))
            assert engine.execute(failing).state is TaskState.FAILED
            assert engine.get_task(failing).state is TaskState.PENDING
            assert engine.list_tasks("FAILED").total_records == 0
            found = engine.list_tasks(last_run_state="FAILED")
            assert [t.id for t in found.records] == [failing]
            both = engine.list_tasks(TaskState.PENDING, last_run_state=TaskState.FAILED)
            assert [t.id for t in both.records] == [failing]
            assert engine.list_tasks(last_run_state="FINISHED").total_records == 0
            assert {t.id for t in engine.list_tasks().records} == {failing, fine}

    def test_unknown_state(self, engine: Engine) -> None:
        """An unknown last-run state is refused naming $.lastRunState."""
        with pytest.raises(ValidationError) as caught:
            engine.list_tasks(last_run_state="BROKEN")
        assert [p.path for p in caught.value.problems] == ["$.lastRunState"]
