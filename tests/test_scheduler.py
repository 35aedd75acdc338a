"""Tests for the scheduler: when each execution strategy is due, on an injected clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from helpers import Clock, due_at, make_repository
from repobackup import (
    Engine,
    MemoryTaskStore,
    Scheduler,
    SqliteTaskStore,
    TaskNotFoundError,
    TaskState,
)

SHANGHAI = timezone(timedelta(hours=8))
# A Monday, 10:00 in Shanghai.
START = datetime(2024, 1, 1, 10, 0, tzinfo=SHANGHAI)


def task_body(store: Path, strategy: str = "IMMEDIATELY", **plan: Any) -> dict[str, Any]:
    """A backup task of the demo project with the given execution strategy and plan."""
    return {
        "name": "nightly",
        "storeLocation": str(store),
        "content": {"projects": [{"projectId": "demo"}]},
        "backupSetting": {"executionStrategy": strategy, "executionPlan": plan},
    }


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock(START)


@pytest.fixture(name="engine")
def _engine(clock: Clock) -> Iterator[Engine]:
    with Engine(make_repository(), clock=clock, tz=SHANGHAI) as engine:
        yield engine


@pytest.fixture(name="scheduler")
def _scheduler(engine: Engine) -> Scheduler:
    return Scheduler(engine)


def run_due(scheduler: Scheduler, now: datetime | None = None) -> list[str]:
    """Start what is due and wait for those runs to end."""
    started = scheduler.run_pending(now)
    scheduler.engine.close()
    return started


def fire_times(scheduler: Scheduler, clock: Clock, task_id: str, count: int) -> list[datetime]:
    """Move the clock to each next run in turn and run it there; the times it ran at."""
    fired = []
    for _ in range(count):
        moment = scheduler.next_run(task_id)
        assert moment is not None
        assert run_due(scheduler, moment - timedelta(seconds=1)) == []
        clock.now = moment
        assert run_due(scheduler) == [task_id]
        fired.append(moment)
    return fired


class TestImmediately:
    """IMMEDIATELY tasks: due at creation with executeImmediately, else only by execute."""

    def test_due_at_creation_and_runs_once(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path
    ) -> None:
        """An executeImmediately task is due when created and runs once, however long after."""
        task_id = engine.create_task(task_body(tmp_path, executeImmediately=True))
        assert scheduler.next_run(task_id) == START
        assert run_due(scheduler) == [task_id]
        clock.advance(days=3)
        assert run_due(scheduler) == []
        task = engine.get_task(task_id)
        assert task.state is TaskState.FINISHED
        assert scheduler.next_run(task_id) is None
        assert len(engine.runs(task_id)) == 1

    def test_without_execute_immediately_only_execute_runs_it(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path
    ) -> None:
        """Without executeImmediately the scheduler never starts the task; execute does."""
        task_id = engine.create_task(task_body(tmp_path, executeImmediately=False))
        assert scheduler.next_run(task_id) is None
        clock.advance(days=1)
        assert run_due(scheduler) == []
        assert engine.get_task(task_id).state is TaskState.PENDING
        assert engine.execute(task_id).state is TaskState.FINISHED

    def test_a_failed_first_run_is_not_retried(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path
    ) -> None:
        """A run that failed still counts as the one run an IMMEDIATELY task is due for."""
        blocker = tmp_path / "file"
        blocker.write_text("a file where the store should be a folder")
        task_id = engine.create_task(task_body(blocker, executeImmediately=True))
        assert run_due(scheduler) == [task_id]
        assert engine.get_task(task_id).state is TaskState.FAILED
        clock.advance(hours=1)
        assert run_due(scheduler) == []


class TestSpecifiedTime:
    """SPECIFIED_TIME tasks run once at executeTime."""

    def test_runs_at_execute_time_and_never_again(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path
    ) -> None:
        """Nothing happens before executeTime; at it the task runs once, then never again."""
        at = START + timedelta(hours=2)
        task_id = engine.create_task(
            task_body(tmp_path, "SPECIFIED_TIME", executeTime=at.isoformat())
        )
        assert scheduler.next_run(task_id) == at
        assert run_due(scheduler, at - timedelta(seconds=1)) == []
        clock.now = at
        assert run_due(scheduler) == [task_id]
        assert engine.get_task(task_id).start_date == at
        for later in (at + timedelta(seconds=1), at + timedelta(days=400)):
            assert run_due(scheduler, later) == []
        assert scheduler.next_run(task_id) is None

    def test_execute_time_without_offset_is_in_the_engine_zone(
        self, engine: Engine, scheduler: Scheduler, tmp_path: Path
    ) -> None:
        """An executeTime without an offset is read in the engine's time zone."""
        task_id = engine.create_task(
            task_body(tmp_path, "SPECIFIED_TIME", executeTime="2024-01-01T12:00:00")
        )
        due = datetime(2024, 1, 1, 4, 0, tzinfo=UTC)
        assert scheduler.next_run(task_id) == due
        assert run_due(scheduler, due - timedelta(seconds=1)) == []
        assert run_due(scheduler, due) == [task_id]

    def test_a_time_already_past_runs_at_the_first_look(
        self, engine: Engine, scheduler: Scheduler, tmp_path: Path
    ) -> None:
        """An executeTime that passed before the task was created runs at the first look."""
        at = START - timedelta(days=1)
        task_id = engine.create_task(
            task_body(tmp_path, "SPECIFIED_TIME", executeTime=at.isoformat())
        )
        assert run_due(scheduler) == [task_id]
        assert run_due(scheduler) == []

    def test_a_manual_run_before_the_time_does_not_cancel_it(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path
    ) -> None:
        """Executing the task by hand before executeTime still leaves the scheduled run."""
        at = START + timedelta(hours=1)
        task_id = engine.create_task(
            task_body(tmp_path, "SPECIFIED_TIME", executeTime=at.isoformat())
        )
        clock.advance(minutes=10)
        engine.execute(task_id)
        assert scheduler.next_run(task_id) == at
        clock.now = at
        assert run_due(scheduler) == [task_id]
        assert len(engine.runs(task_id)) == 2


class TestCron:
    """CRON_EXPRESSION tasks run at each fire time, in the engine's zone, in both dialects."""

    def test_fire_time_is_read_in_the_engine_zone(
        self, engine: Engine, scheduler: Scheduler, tmp_path: Path
    ) -> None:
        """02:00 means 02:00 in the engine's zone, whatever zone `now` is given in."""
        task_id = engine.create_task(
            task_body(tmp_path, "CRON_EXPRESSION", cronExpression="0 2 * * *")
        )
        fire = datetime(2024, 1, 2, 2, 0, tzinfo=SHANGHAI)
        assert scheduler.next_run(task_id) == fire
        assert run_due(scheduler, datetime(2024, 1, 1, 17, 59, 59, tzinfo=UTC)) == []
        assert run_due(scheduler, datetime(2024, 1, 1, 18, 0, tzinfo=UTC)) == [task_id]

    def test_goes_back_to_pending_with_its_next_fire_time(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path
    ) -> None:
        """After a run a recurring task is PENDING again, its last run recorded, next fire set."""
        task_id = engine.create_task(
            task_body(tmp_path, "CRON_EXPRESSION", cronExpression="0 0 * * * ?")
        )
        clock.now = START + timedelta(hours=1)
        assert run_due(scheduler) == [task_id]
        task = engine.get_task(task_id)
        assert task.state is TaskState.PENDING
        assert task.last_run is not None
        assert task.last_run.state is TaskState.FINISHED
        assert task.end_date == clock.now
        assert scheduler.next_run(task_id) == START + timedelta(hours=2)

    def test_missed_fires_run_once(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path
    ) -> None:
        """Fires missed while nothing looked (five hours of them) make one run, not five."""
        task_id = engine.create_task(
            task_body(tmp_path, "CRON_EXPRESSION", cronExpression="0 * * * *")
        )
        clock.advance(hours=5, minutes=30)
        assert scheduler.next_run(task_id) == START + timedelta(hours=1)
        assert run_due(scheduler) == [task_id]
        assert run_due(scheduler) == []
        assert len(engine.runs(task_id)) == 1
        assert scheduler.next_run(task_id) == START + timedelta(hours=6)

    @pytest.mark.parametrize(
        ("expression", "days"),
        [
            ("0 0 31 * *", ["2024-01-31", "2024-03-31", "2024-05-31", "2024-07-31"]),
            ("0 0 0 31 * ?", ["2024-01-31", "2024-03-31", "2024-05-31", "2024-07-31"]),
            ("0 0 0 L * ?", ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]),
            ("0 0 1 * *", ["2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]),
        ],
    )
    def test_month_ends(
        self,
        *,
        engine: Engine,
        scheduler: Scheduler,
        clock: Clock,
        tmp_path: Path,
        expression: str,
        days: list[str],
    ) -> None:
        """Month-end schedules skip the months without that day (Unix and Quartz alike) or
        follow each month's own last day (Quartz ``L``), leap February included."""
        task_id = engine.create_task(
            task_body(tmp_path, "CRON_EXPRESSION", cronExpression=expression)
        )
        fired = fire_times(scheduler, clock, task_id, len(days))
        assert [moment.date().isoformat() for moment in fired] == days
        assert all(moment.tzinfo == SHANGHAI and moment.hour == 0 for moment in fired)

    @pytest.mark.parametrize(
        "expression", ["30 9 * * MON-FRI", "30 9 * * 1-5", "0 30 9 ? * MON-FRI", "0 30 9 ? * 2-6"]
    )
    def test_weekday_names_and_numbers(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path, expression: str
    ) -> None:
        """Weekdays by name or by each dialect's own numbers (Quartz counts from SUN=1) skip
        the weekend."""
        task_id = engine.create_task(
            task_body(tmp_path, "CRON_EXPRESSION", cronExpression=expression)
        )
        fired = fire_times(scheduler, clock, task_id, 6)
        assert [moment.strftime("%a %d %H:%M") for moment in fired] == [
            "Tue 02 09:30",
            "Wed 03 09:30",
            "Thu 04 09:30",
            "Fri 05 09:30",
            "Mon 08 09:30",
            "Tue 09 09:30",
        ]

    def test_quartz_last_friday_of_the_month(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path
    ) -> None:
        """Quartz ``6L`` (day 6 is Friday there) fires on the last Friday of each month."""
        task_id = engine.create_task(
            task_body(tmp_path, "CRON_EXPRESSION", cronExpression="0 0 18 ? * 6L")
        )
        fired = fire_times(scheduler, clock, task_id, 3)
        assert [moment.strftime("%a %F") for moment in fired] == [
            "Fri 2024-01-26",
            "Fri 2024-02-23",
            "Fri 2024-03-29",
        ]


class TestRunPending:
    """What `run_pending` does besides finding due tasks."""

    def test_a_running_task_is_skipped_quietly(
        self, engine: Engine, scheduler: Scheduler, tmp_path: Path
    ) -> None:
        """A due task that another process is running is left alone, without an error."""
        task_id = engine.create_task(task_body(tmp_path, executeImmediately=True))
        engine.tasks.start(task_id, owner="elsewhere:1:abc", now=START)
        assert run_due(scheduler) == []
        assert engine.get_task(task_id).state is TaskState.RUNNING

    def test_an_interrupted_recurring_task_is_recovered_and_runs(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path
    ) -> None:
        """A recurring task left RUNNING by a dead process is ended first, then runs when due."""
        task_id = engine.create_task(
            task_body(tmp_path, "CRON_EXPRESSION", cronExpression="*/10 * * * *")
        )
        clock.advance(minutes=10)
        engine.tasks.start(task_id, owner="elsewhere:1:abc", now=clock.now)
        clock.advance(minutes=15)
        assert run_due(scheduler) == [task_id]
        first, interrupted = engine.runs(task_id)
        assert first.state is TaskState.FINISHED
        assert interrupted.state is TaskState.FAILED
        assert [error.message for error in interrupted.errors] == ["interrupted"]

    def test_many_tasks_in_one_look(
        self, engine: Engine, scheduler: Scheduler, clock: Clock, tmp_path: Path
    ) -> None:
        """Every due task starts in one look, and only those."""
        due = [
            engine.create_task(task_body(tmp_path / str(n), executeImmediately=True))
            for n in range(6)
        ]
        engine.create_task(task_body(tmp_path, executeImmediately=False))
        engine.create_task(
            task_body(
                tmp_path, "SPECIFIED_TIME", executeTime=(START + timedelta(days=1)).isoformat()
            )
        )
        assert sorted(run_due(scheduler)) == sorted(due)
        assert all(engine.get_task(task_id).state is TaskState.FINISHED for task_id in due)

    def test_a_new_scheduler_agrees_with_the_old_one(self, clock: Clock, tmp_path: Path) -> None:
        """Due-ness lives in the task store: a scheduler of a new engine on the same SQLite
        store neither repeats a run nor forgets a pending one."""
        path = tmp_path / "tasks.db"
        with Engine(
            make_repository(), tasks=SqliteTaskStore(path), clock=clock, tz=SHANGHAI
        ) as first:
            ran = first.create_task(task_body(tmp_path, executeImmediately=True))
            hourly = first.create_task(
                task_body(tmp_path, "CRON_EXPRESSION", cronExpression="0 * * * *")
            )
            assert run_due(Scheduler(first)) == [ran]
            planned = Scheduler(first).next_run(hourly)
        with Engine(
            make_repository(), tasks=SqliteTaskStore(path), clock=clock, tz=SHANGHAI
        ) as second:
            scheduler = Scheduler(second)
            assert scheduler.next_run(ran) is None
            assert scheduler.next_run(hourly) == planned
            clock.advance(hours=1)
            assert run_due(scheduler) == [hourly]

    def test_bad_arguments(self, engine: Engine, scheduler: Scheduler) -> None:
        """A naive `now`, a poll interval of zero and an unknown task id are refused."""
        with pytest.raises(ValueError, match="now"):
            scheduler.run_pending(datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="poll_seconds"):
            Scheduler(engine, poll_seconds=0)
        with pytest.raises(TaskNotFoundError):
            scheduler.next_run("0" * 24)


class TestDueAt:
    """`due_at` reads due-ness from the task alone."""

    def test_cron_counts_from_the_latest_start(
        self, engine: Engine, clock: Clock, tmp_path: Path
    ) -> None:
        """A manual run moves a recurring task's reference point to its start."""
        task_id = engine.create_task(
            task_body(tmp_path, "CRON_EXPRESSION", cronExpression="0 0 12 * * ?")
        )
        assert due_at(engine.get_task(task_id), SHANGHAI) == START.replace(hour=12)
        clock.now = START.replace(hour=13)
        engine.execute(task_id)
        assert due_at(engine.get_task(task_id), SHANGHAI) == START.replace(hour=12) + timedelta(
            days=1
        )
        # 13:00 in Shanghai is 05:00 UTC: in UTC the next noon is the same day's.
        assert due_at(engine.get_task(task_id), UTC) == datetime(2024, 1, 1, 12, tzinfo=UTC)


class TestBackgroundThread:
    """`start` and `stop` run `run_pending` on a thread of the scheduler's own."""

    def test_starts_due_tasks_and_stops_promptly(self, tmp_path: Path) -> None:
        """The thread starts a due task within a poll, and stop() returns at once even with a
        long poll interval."""
        with Engine(make_repository(), tasks=MemoryTaskStore()) as engine:
            task_id = engine.create_task(task_body(tmp_path, executeImmediately=True))
            scheduler = Scheduler(engine, poll_seconds=30)
            scheduler.start()
            scheduler.start()  # a second start is a no-op, not a second thread
            assert scheduler.running
            deadline = time.monotonic() + 10
            while engine.get_task(task_id).state is not TaskState.FINISHED:
                assert time.monotonic() < deadline, "the due task never ran"
                time.sleep(0.01)
            began = time.monotonic()
            scheduler.stop()
            assert time.monotonic() - began < 1
            assert not scheduler.running
            threads = [t.name for t in threading.enumerate()]
            assert "repobackup-scheduler" not in threads

    def test_context_manager_and_restart(self, tmp_path: Path) -> None:
        """A scheduler stopped by its context manager can be started again."""
        with Engine(make_repository()) as engine:
            scheduler = Scheduler(engine, poll_seconds=0.01)
            with scheduler:
                assert scheduler.running
            assert not scheduler.running
            task_id = engine.create_task(task_body(tmp_path, executeImmediately=True))
            scheduler.start()
            try:
                deadline = time.monotonic() + 10
                while engine.get_task(task_id).state is not TaskState.FINISHED:
                    assert time.monotonic() < deadline, "the due task never ran"
                    time.sleep(0.01)
            finally:
                scheduler.stop()
