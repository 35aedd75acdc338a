"""The task-store conformance tests of runs: the compare-and-set start, leases, heartbeats,
finishing and the bounded history (see `repobackup.testing.TaskStoreConformance`)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import attrs
import pytest

from .._model.task import (
    BackupTask,
    TaskState,
)
from .._tasks.rules import DEFAULT_RUN_HISTORY, RunLease
from .._tasks.store import TaskStore
from ..exceptions import TaskNotFoundError, TaskRunningError
from .taskdata import CREATED, LATER, NOT_RUNNING, Fixtures, make_summary, make_task, run_times


class _Start(Fixtures):
    @pytest.mark.parametrize("state", NOT_RUNNING)
    def test_start(self, store: TaskStore, state: TaskState) -> None:
        """Starting a non-RUNNING task makes it RUNNING now, clears its end, and leases it."""
        task = attrs.evolve(make_task(state=state), end_date=CREATED, start_date=CREATED)
        store.create(task)
        assert task.id is not None
        started = store.start(task.id, owner="alpha", now=LATER)
        assert started.state is TaskState.RUNNING
        assert (started.start_date, started.end_date, started.last_modified_date) == (
            LATER,
            None,
            LATER,
        )
        assert store.get(task.id) == started
        assert store.leases() == [RunLease(task.id, "alpha", LATER)]

    def test_start_running(self, store: TaskStore, running: BackupTask) -> None:
        """Starting a RUNNING task raises TaskRunningError and leaves the first lease alone."""
        assert running.id is not None
        with pytest.raises(TaskRunningError, match=running.id):
            store.start(running.id, owner="beta", now=LATER + timedelta(minutes=1))
        assert store.leases() == [RunLease(running.id, "alpha", LATER)]
        assert store.get(running.id) == running

    def test_same_owner_cannot_start_twice(self, store: TaskStore, running: BackupTask) -> None:
        """Even the lease holder cannot start its running task a second time."""
        assert running.id is not None
        with pytest.raises(TaskRunningError):
            store.start(running.id, owner="alpha", now=LATER)

    def test_unless_started_since(self, store: TaskStore) -> None:
        """A task started at or after the given moment is not started again; one started
        before it is."""
        task = attrs.evolve(make_task(state=TaskState.FINISHED), start_date=LATER)
        store.create(task)
        assert task.id is not None
        with pytest.raises(TaskRunningError):
            store.start(task.id, owner="beta", now=LATER, unless_started_since=LATER)
        assert store.get(task.id).state is TaskState.FINISHED
        later = LATER + timedelta(seconds=1)
        started = store.start(task.id, owner="beta", now=later, unless_started_since=later)
        assert started.start_date == later

    def test_unknown_id(self, store: TaskStore) -> None:
        """Starting an id that was never stored raises TaskNotFoundError."""
        with pytest.raises(TaskNotFoundError):
            store.start("f" * 24, owner="alpha", now=LATER)

    def test_naive_now(self, store: TaskStore) -> None:
        """A naive time is refused before anything changes."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        with pytest.raises(ValueError, match="now"):
            store.start(task.id, owner="alpha", now=datetime(2024, 12, 24))
        assert store.get(task.id).state is TaskState.PENDING
        assert store.leases() == []

    def test_leases_of_several_tasks(self, store: TaskStore) -> None:
        """leases() lists the lease of every RUNNING task, ordered by task id."""
        ids = ["3" * 24, "1" * 24, "2" * 24]
        for task_id in ids:
            store.create(make_task(task_id=task_id))
            store.start(task_id, owner=f"owner-{task_id[0]}", now=LATER)
        assert [(lease.task_id, lease.owner) for lease in store.leases()] == [
            ("1" * 24, "owner-1"),
            ("2" * 24, "owner-2"),
            ("3" * 24, "owner-3"),
        ]


class _Heartbeat(Fixtures):
    def test_owner_refreshes(self, store: TaskStore, running: BackupTask) -> None:
        """The holder's heartbeat moves the lease's time forward."""
        assert running.id is not None
        beat = LATER + timedelta(seconds=30)
        assert store.heartbeat(running.id, owner="alpha", now=beat) is True
        assert store.leases() == [RunLease(running.id, "alpha", beat)]

    def test_other_owner_refused(self, store: TaskStore, running: BackupTask) -> None:
        """Someone else's heartbeat returns False and changes nothing."""
        assert running.id is not None
        assert store.heartbeat(running.id, owner="beta", now=LATER + timedelta(1)) is False
        assert store.leases() == [RunLease(running.id, "alpha", LATER)]

    def test_after_finish(self, store: TaskStore, running: BackupTask) -> None:
        """Once the run is finished, the former holder's heartbeat returns False."""
        assert running.id is not None
        store.finish(
            running.id,
            owner="alpha",
            state=TaskState.FINISHED,
            summary=make_summary(running.id),
            now=LATER,
        )
        assert store.heartbeat(running.id, owner="alpha", now=LATER) is False
        assert store.leases() == []

    def test_not_started(self, store: TaskStore) -> None:
        """A task that is not running has no lease to refresh."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        assert store.heartbeat(task.id, owner="alpha", now=LATER) is False

    def test_unknown_id(self, store: TaskStore) -> None:
        """A heartbeat for an id that was never stored raises TaskNotFoundError."""
        with pytest.raises(TaskNotFoundError):
            store.heartbeat("e" * 24, owner="alpha", now=LATER)


class _Finish(Fixtures):
    @pytest.mark.parametrize("state", NOT_RUNNING)
    def test_owner_finishes(self, store: TaskStore, running: BackupTask, state: TaskState) -> None:
        """The holder ends the run: state, end date, last run, history, and no lease."""
        assert running.id is not None
        summary = make_summary(running.id, state=state)
        end = LATER + timedelta(minutes=5)
        finished = store.finish(running.id, owner="alpha", state=state, summary=summary, now=end)
        assert finished is not None
        assert finished.state is state
        assert (finished.start_date, finished.end_date) == (LATER, end)
        assert (finished.last_run, finished.last_modified_date) == (summary, end)
        assert store.get(running.id) == finished
        assert store.runs(running.id) == [summary]
        assert store.leases() == []

    def test_other_owner_refused(self, store: TaskStore, running: BackupTask) -> None:
        """Someone who does not hold the lease cannot finish the run; nothing changes."""
        assert running.id is not None
        result = store.finish(
            running.id,
            owner="beta",
            state=TaskState.FAILED,
            summary=make_summary(running.id),
            now=LATER,
        )
        assert result is None
        assert store.get(running.id) == running
        assert store.runs(running.id) == []
        assert store.leases() == [RunLease(running.id, "alpha", LATER)]

    def test_finish_twice(self, store: TaskStore, running: BackupTask) -> None:
        """A run ends once: the second finish by the same owner is refused."""
        assert running.id is not None
        summary = make_summary(running.id)
        first = store.finish(
            running.id, owner="alpha", state=TaskState.FINISHED, summary=summary, now=LATER
        )
        again = store.finish(
            running.id, owner="alpha", state=TaskState.FAILED, summary=summary, now=LATER
        )
        assert first is not None
        assert again is None
        assert store.get(running.id).state is TaskState.FINISHED
        assert len(store.runs(running.id)) == 1

    def test_not_started(self, store: TaskStore) -> None:
        """A task that was never started cannot be finished."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        summary = make_summary(task.id)
        assert (
            store.finish(task.id, owner="alpha", state=TaskState.FAILED, summary=summary, now=LATER)
            is None
        )
        assert store.get(task.id) == task

    def test_cannot_finish_as_running(self, store: TaskStore, running: BackupTask) -> None:
        """RUNNING is not a state a run can end in."""
        assert running.id is not None
        with pytest.raises(ValueError, match="RUNNING"):
            store.finish(
                running.id,
                owner="alpha",
                state=TaskState.RUNNING,
                summary=make_summary(running.id),
                now=LATER,
            )

    def test_summary_of_another_task(self, store: TaskStore, running: BackupTask) -> None:
        """A summary of another task is refused rather than filed under this one."""
        assert running.id is not None
        with pytest.raises(ValueError, match="summary"):
            store.finish(
                running.id,
                owner="alpha",
                state=TaskState.FINISHED,
                summary=make_summary("0" * 24),
                now=LATER,
            )
        assert store.get(running.id) == running

    def test_unknown_id(self, store: TaskStore) -> None:
        """Finishing an id that was never stored raises TaskNotFoundError."""
        with pytest.raises(TaskNotFoundError):
            store.finish(
                "d" * 24,
                owner="alpha",
                state=TaskState.FINISHED,
                summary=make_summary("d" * 24),
                now=LATER,
            )


class _Runs(Fixtures):
    def test_bounded_newest_first(self, store: TaskStore) -> None:
        """The history keeps the newest 50 runs, newest first; older ones are dropped."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        summaries = run_times(store, task.id, DEFAULT_RUN_HISTORY + 5)
        history = store.runs(task.id, limit=1000)
        assert history == summaries[::-1][:DEFAULT_RUN_HISTORY]
        assert store.get(task.id).last_run == summaries[-1]

    def test_limit(self, store: TaskStore) -> None:
        """At most *limit* runs come back, the newest ones."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        summaries = run_times(store, task.id, 4)
        assert store.runs(task.id, limit=2) == [summaries[3], summaries[2]]
        assert store.runs(task.id, limit=0) == []

    def test_negative_limit(self, store: TaskStore) -> None:
        """A negative limit is refused naming the argument."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        with pytest.raises(ValueError, match="limit"):
            store.runs(task.id, limit=-1)

    def test_histories_are_per_task(self, store: TaskStore) -> None:
        """The runs of one task never show in another's history."""
        one, two = make_task(name="one"), make_task(name="two")
        store.create(one)
        store.create(two)
        assert one.id is not None
        assert two.id is not None
        ones = run_times(store, one.id, 2)
        assert store.runs(two.id) == []
        assert store.runs(one.id) == ones[::-1]

    def test_unknown_id(self, store: TaskStore) -> None:
        """The history of an id that was never stored raises TaskNotFoundError."""
        with pytest.raises(TaskNotFoundError):
            store.runs("c" * 24)


def _race_threads(store: TaskStore, task_id: str, threads: int) -> list[str]:
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        barrier.wait(timeout=30)
        try:
            store.start(task_id, owner=f"thread-{n}", now=LATER)
            outcome = f"started thread-{n}"
        except TaskRunningError:
            outcome = "running"
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=attempt, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return outcomes


class _ThreadRace(Fixtures):
    def test_one_thread_wins(self, store: TaskStore) -> None:
        """When 8 threads start the same task at once, exactly one wins and holds the lease."""
        for _ in range(10):
            task = make_task()
            store.create(task)
            assert task.id is not None
            outcomes = _race_threads(store, task.id, 8)
            winners = [o.removeprefix("started ") for o in outcomes if o.startswith("started")]
            assert len(outcomes) == 8
            assert len(winners) == 1
            assert outcomes.count("running") == 7
            assert [lease.owner for lease in store.leases() if lease.task_id == task.id] == winners
