"""Tests for the task stores: both run the same suite through one fixture, plus real races."""

from __future__ import annotations

import itertools
import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _race_worker
from repobackup import (
    BackupContent,
    BackupSetting,
    BackupTask,
    ConflictStrategy,
    ExecutionPlan,
    ExecutionStrategy,
    MemoryTaskStore,
    ProjectContentInfo,
    RunCounts,
    RunError,
    RunSummary,
    SqliteTaskStore,
    TaskNotFoundError,
    TaskRunningError,
    TaskState,
    TaskType,
    ValidationError,
)
from repobackup._model.ids import new_task_id
from repobackup._tasks.store import DEFAULT_RUN_HISTORY, RunLease, TaskStore

SHANGHAI = timezone(timedelta(hours=8))
CREATED = datetime(2024, 12, 24, 17, 13, 54, tzinfo=SHANGHAI)
LATER = CREATED + timedelta(hours=1)
NOT_RUNNING = [TaskState.PENDING, TaskState.FINISHED, TaskState.FAILED]

StoreFactory = Callable[[], TaskStore]


def make_task(
    *,
    created: datetime = CREATED,
    state: TaskState = TaskState.PENDING,
    name: str = "nightly",
    task_id: str | None = None,
) -> BackupTask:
    """A valid task as the engine would store it."""
    return BackupTask(
        name=name,
        store_location="/backups",
        content=BackupContent(common_data=True),
        id=task_id or new_task_id(created.timestamp()),
        created_date=created,
        created_by="admin",
        last_modified_by="admin",
        last_modified_date=created,
        state=state,
    )


def make_summary(task_id: str, n: int = 0, *, state: TaskState = TaskState.FINISHED) -> RunSummary:
    """The summary of the *n*-th run of a task."""
    started = LATER + timedelta(minutes=n)
    return RunSummary(
        task_id=task_id,
        started=started,
        ended=started + timedelta(seconds=30),
        state=state,
        location=f"/backups/nightly/nightly-{n}",
        counts=RunCounts(records_written=n, bytes_written=10 * n),
        errors=(RunError(scope="blob", key=f"{n:064x}", message="sha256 mismatch"),),
    )


@pytest.fixture(name="make_store", params=["memory", "sqlite"])
def _make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes fresh, empty stores of one kind; SQLite ones are closed after the test."""
    opened: list[SqliteTaskStore] = []
    numbers = itertools.count()

    def make() -> TaskStore:
        if request.param == "memory":
            return MemoryTaskStore()
        store = SqliteTaskStore(tmp_path / f"tasks-{next(numbers)}.db")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture(name="store")
def _store(make_store: StoreFactory) -> TaskStore:
    """One empty store of each kind (parametrized through make_store)."""
    return make_store()


@pytest.fixture(name="running")
def _running(store: TaskStore) -> BackupTask:
    """A task that owner "alpha" has started."""
    task = make_task()
    store.create(task)
    assert task.id is not None
    return store.start(task.id, owner="alpha", now=LATER)


class TestCreateAndGet:
    def test_round_trip(self, store: TaskStore) -> None:
        """A stored task comes back equal, with every nested setting and aware dates."""
        task = attrs.evolve(
            make_task(),
            type=TaskType.DATA_RESTORE,
            content=BackupContent(
                compression=True,
                increment=True,
                increment_date=datetime(2024, 12, 1, tzinfo=UTC),
                projects=(
                    ProjectContentInfo(project_regex="re:lib-.*", exclude_repos=("tmp",)),
                    ProjectContentInfo(project_id="core", repo_list=("maven", "npm")),
                ),
            ),
            backup_setting=BackupSetting(
                conflict_strategy=ConflictStrategy.SKIP,
                execution_strategy=ExecutionStrategy.CRON_EXPRESSION,
                execution_plan=ExecutionPlan(
                    execute_immediately=False, cron_expression="0 0 2 * * ?"
                ),
            ),
            last_run=make_summary("0" * 24),
        )
        store.create(task)
        assert task.id is not None
        got = store.get(task.id)
        assert got == task
        assert got.created_date is not None
        assert got.created_date.utcoffset() == timedelta(hours=8)

    def test_unknown_id(self, store: TaskStore) -> None:
        """Getting an id that was never stored raises TaskNotFoundError naming it."""
        with pytest.raises(TaskNotFoundError, match="0123456789abcdef01234567"):
            store.get("0123456789abcdef01234567")

    def test_duplicate_id(self, store: TaskStore) -> None:
        """A second task with the same id is refused and the first is kept."""
        task = make_task(name="first")
        store.create(task)
        with pytest.raises(ValueError, match="exists already"):
            store.create(attrs.evolve(task, name="second"))
        assert task.id is not None
        assert store.get(task.id).name == "first"

    def test_missing_id(self, store: TaskStore) -> None:
        """A task without an id cannot be stored."""
        with pytest.raises(ValueError, match="id"):
            store.create(attrs.evolve(make_task(), id=None))

    @pytest.mark.parametrize("created", [None, datetime(2024, 12, 24, 17, 13, 54)])
    def test_created_date_must_be_aware(self, store: TaskStore, created: datetime | None) -> None:
        """A task without an aware created_date cannot be stored: listing orders by it."""
        with pytest.raises(ValueError, match="created_date"):
            store.create(attrs.evolve(make_task(), created_date=created))
        assert store.list().total_records == 0

    def test_cannot_create_running(self, store: TaskStore) -> None:
        """A task cannot enter the store RUNNING, since it would have no lease."""
        with pytest.raises(ValueError, match="RUNNING"):
            store.create(make_task(state=TaskState.RUNNING))


def _newest_first(tasks: list[BackupTask]) -> list[str | None]:
    return [
        t.id
        for t in sorted(
            tasks, key=lambda t: (t.created_date and t.created_date.astimezone(UTC), t.id)
        )[::-1]
    ]


class TestList:
    def test_newest_first_ties_by_id(self, store: TaskStore) -> None:
        """Tasks list newest first; tasks created at the same instant list by id descending."""
        tasks = [
            make_task(created=CREATED, task_id="a" * 24),
            make_task(created=CREATED + timedelta(seconds=1), task_id="b" * 24),
            # The same instant as the first, written in another offset.
            make_task(created=CREATED.astimezone(UTC), task_id="c" * 24),
            make_task(created=CREATED - timedelta(days=1), task_id="d" * 24),
        ]
        for task in tasks:
            store.create(task)
        page = store.list()
        assert [t.id for t in page.records] == ["b" * 24, "c" * 24, "a" * 24, "d" * 24]

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        created=st.lists(
            st.tuples(
                st.integers(0, 5),  # few distinct minutes, so that ties happen
                st.integers(-12, 14),  # offset in hours: instants compare across zones
                st.sampled_from(NOT_RUNNING),
            ),
            max_size=40,
        ),
        page_size=st.integers(1, 15),
        state=st.none() | st.sampled_from(NOT_RUNNING),
    )
    def test_pages_cover_every_task_once(
        self,
        make_store: StoreFactory,
        created: list[tuple[int, int, TaskState]],
        page_size: int,
        state: TaskState | None,
    ) -> None:
        """Concatenating every page gives each matching task once, newest first, with the
        totals right on every page and an empty page past the end."""
        store = make_store()
        tasks = []
        for minute, hours, task_state in created:
            moment = (CREATED + timedelta(minutes=minute)).astimezone(
                timezone(timedelta(hours=hours))
            )
            task = make_task(created=moment, state=task_state)
            store.create(task)
            tasks.append(task)
        expected = _newest_first([t for t in tasks if state is None or t.state is state])
        pages = -(-len(expected) // page_size)

        seen: list[str | None] = []
        for number in range(1, pages + 2):
            page = store.list(state, page_number=number, page_size=page_size)
            assert (page.page_number, page.page_size) == (number, page_size)
            assert (page.total_records, page.total_pages) == (len(expected), pages)
            assert len(page.records) <= page_size
            seen.extend(t.id for t in page.records)
            if number <= pages:
                assert page.records, "a page before the end is never empty"
            else:
                assert page.records == ()
        assert seen == expected

    def test_empty_store(self, store: TaskStore) -> None:
        """With no tasks, the first page is empty and there are zero pages."""
        page = store.list()
        assert (page.total_records, page.total_pages, page.records) == (0, 0, ())

    def test_state_filter(self, store: TaskStore) -> None:
        """Only tasks in the given state are listed and counted."""
        for index, state in enumerate([*NOT_RUNNING, TaskState.PENDING]):
            store.create(make_task(state=state, created=CREATED + timedelta(minutes=index)))
        pending = store.list(TaskState.PENDING)
        assert pending.total_records == 2
        assert {t.state for t in pending.records} == {TaskState.PENDING}
        assert store.list(TaskState.RUNNING).total_records == 0
        assert store.list().total_records == 4

    def test_running_tasks_listed_by_state(self, store: TaskStore, running: BackupTask) -> None:
        """A started task is listed under RUNNING and no longer under PENDING."""
        assert [t.id for t in store.list(TaskState.RUNNING).records] == [running.id]
        assert store.list(TaskState.PENDING).total_records == 0

    @pytest.mark.parametrize("page_size", [0, -1, 1001, 10**6])
    def test_bad_page_size(self, store: TaskStore, page_size: int) -> None:
        """A page size outside 1..1000 is refused naming $.pageSize and the allowed range."""
        with pytest.raises(ValidationError) as caught:
            store.list(page_size=page_size)
        [problem] = caught.value.problems
        assert problem.path == "$.pageSize"
        assert "1 to 1000" in problem.message
        assert str(page_size) in problem.message

    @pytest.mark.parametrize("page_number", [0, -3])
    def test_bad_page_number(self, store: TaskStore, page_number: int) -> None:
        """A page number below 1 is refused naming $.pageNumber and the allowed range."""
        with pytest.raises(ValidationError) as caught:
            store.list(page_number=page_number)
        [problem] = caught.value.problems
        assert problem.path == "$.pageNumber"
        assert "1 or more" in problem.message

    def test_both_bad(self, store: TaskStore) -> None:
        """A bad page size and a bad page number are both reported at once."""
        with pytest.raises(ValidationError) as caught:
            store.list(page_number=0, page_size=0)
        assert [p.path for p in caught.value.problems] == ["$.pageSize", "$.pageNumber"]

    def test_page_number_far_past_the_end(self, store: TaskStore) -> None:
        """A page number far beyond any offset the database could hold gives an empty page."""
        store.create(make_task())
        page = store.list(page_number=2**62, page_size=1000)
        assert (page.records, page.total_records, page.total_pages) == ((), 1, 1)

    def test_unknown_state(self, store: TaskStore) -> None:
        """A state name that does not exist is refused naming $.state."""
        with pytest.raises(ValidationError) as caught:
            store.list("DONE")  # type: ignore[arg-type]
        assert [p.path for p in caught.value.problems] == ["$.state"]


class TestStart:
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


class TestHeartbeat:
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


class TestFinish:
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


def _run_times(store: TaskStore, task_id: str, count: int) -> list[RunSummary]:
    summaries = []
    for n in range(count):
        store.start(task_id, owner=f"run-{n}", now=LATER + timedelta(minutes=n))
        summary = make_summary(task_id, n)
        assert store.finish(
            task_id, owner=f"run-{n}", state=TaskState.FINISHED, summary=summary, now=LATER
        )
        summaries.append(summary)
    return summaries


class TestRuns:
    def test_bounded_newest_first(self, store: TaskStore) -> None:
        """The history keeps the newest 50 runs, newest first; older ones are dropped."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        summaries = _run_times(store, task.id, DEFAULT_RUN_HISTORY + 5)
        history = store.runs(task.id, limit=1000)
        assert history == summaries[::-1][:DEFAULT_RUN_HISTORY]
        assert store.get(task.id).last_run == summaries[-1]

    def test_limit(self, store: TaskStore) -> None:
        """At most *limit* runs come back, the newest ones."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        summaries = _run_times(store, task.id, 4)
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
        ones = _run_times(store, one.id, 2)
        assert store.runs(two.id) == []
        assert store.runs(one.id) == ones[::-1]

    def test_unknown_id(self, store: TaskStore) -> None:
        """The history of an id that was never stored raises TaskNotFoundError."""
        with pytest.raises(TaskNotFoundError):
            store.runs("c" * 24)


class TestUpdate:
    def test_replaces_own_fields(self, store: TaskStore, running: BackupTask) -> None:
        """Update replaces name and settings but keeps state, run dates, last run and creation."""
        assert running.id is not None
        edited = attrs.evolve(
            running,
            name="weekly",
            store_location="s3://bucket/backups",
            backup_setting=BackupSetting(space_cap_check=False),
            last_modified_by="operator",
            last_modified_date=LATER + timedelta(hours=2),
            state=TaskState.FAILED,
            start_date=None,
            end_date=CREATED,
            last_run=make_summary(running.id),
            created_by="intruder",
            created_date=CREATED + timedelta(days=9),
        )
        store.update(edited)
        stored = store.get(running.id)
        assert (stored.name, stored.store_location) == ("weekly", "s3://bucket/backups")
        assert stored.backup_setting == BackupSetting(space_cap_check=False)
        assert (stored.last_modified_by, stored.last_modified_date) == (
            "operator",
            LATER + timedelta(hours=2),
        )
        assert (stored.state, stored.start_date, stored.end_date) == (
            TaskState.RUNNING,
            LATER,
            None,
        )
        assert stored.last_run is None
        assert (stored.created_by, stored.created_date) == ("admin", CREATED)
        assert store.leases() == [RunLease(running.id, "alpha", LATER)]

    def test_unknown_id(self, store: TaskStore) -> None:
        """Updating a task that was never stored raises TaskNotFoundError."""
        with pytest.raises(TaskNotFoundError):
            store.update(make_task())

    def test_missing_id(self, store: TaskStore) -> None:
        """A task without an id cannot be updated."""
        with pytest.raises(ValueError, match="id"):
            store.update(attrs.evolve(make_task(), id=None))


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


class TestThreadRace:
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


class TestSqliteFile:
    def test_survives_reopening(self, tmp_path: Path) -> None:
        """Tasks, leases and run history are still there when the file is opened again."""
        path = tmp_path / "tasks.db"
        task = make_task()
        assert task.id is not None
        with SqliteTaskStore(path) as store:
            store.create(task)
            [summary] = _run_times(store, task.id, 1)
            store.start(task.id, owner="alpha", now=LATER)
            expected = store.get(task.id)
        with SqliteTaskStore(str(path)) as store:
            assert store.get(task.id) == expected
            assert store.runs(task.id) == [summary]
            assert store.leases() == [RunLease(task.id, "alpha", LATER)]

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
