"""The task-store conformance tests of storing, listing, updating, enabling and deleting
tasks (see `repobackup.testing.TaskStoreConformance`)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from .._model.task import (
    BackupContent,
    BackupSetting,
    BackupTask,
    ConflictStrategy,
    ExecutionPlan,
    ExecutionStrategy,
    ProjectContentInfo,
    TaskState,
    TaskType,
)
from .._tasks.rules import RunLease
from .._tasks.store import TaskStore
from ..exceptions import TaskNotFoundError, TaskRunningError, ValidationError
from .taskdata import CREATED, LATER, NOT_RUNNING, Fixtures, make_summary, make_task, ran, run_times


class _CreateAndGet(Fixtures):
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


class _List(Fixtures):
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

    @pytest.mark.parametrize("seed", range(20))
    def test_pages_cover_every_task_once(
        self, make_task_store: Callable[[], TaskStore], seed: int
    ) -> None:
        """Concatenating every page gives each matching task once, newest first, with the
        totals right on every page and an empty page past the end (random stores, seeded)."""
        rng = random.Random(seed)
        store = make_task_store()
        page_size = rng.randint(1, 15)
        state = rng.choice([None, *NOT_RUNNING])
        tasks = []
        for _ in range(rng.randint(0, 40)):
            # Few distinct minutes, so that ties happen; offsets, so instants compare across zones.
            moment = (CREATED + timedelta(minutes=rng.randint(0, 5))).astimezone(
                timezone(timedelta(hours=rng.randint(-12, 14)))
            )
            task = make_task(created=moment, state=rng.choice(NOT_RUNNING))
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


class _Update(Fixtures):
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


class _Enabled(Fixtures):
    def test_new_tasks_are_enabled(self, store: TaskStore) -> None:
        """A task stored without saying otherwise is enabled, and comes back so."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        assert store.get(task.id).enabled is True

    def test_disabled_task_round_trips(self, store: TaskStore) -> None:
        """A task stored disabled comes back disabled."""
        task = attrs.evolve(make_task(), enabled=False)
        store.create(task)
        assert task.id is not None
        assert store.get(task.id) == task

    def test_set_enabled(self, store: TaskStore) -> None:
        """set_enabled changes only enabled and the last modification (who, when), and
        returns the task as stored; enabling again works."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        off = store.set_enabled(task.id, False, now=LATER, user="operator")
        assert off == attrs.evolve(
            task, enabled=False, last_modified_date=LATER, last_modified_by="operator"
        )
        assert store.get(task.id) == off
        later = LATER + timedelta(minutes=1)
        on = store.set_enabled(task.id, True, now=later)
        assert (on.enabled, on.last_modified_date, on.last_modified_by) == (True, later, "operator")
        assert store.get(task.id) == on

    def test_set_enabled_while_running(self, store: TaskStore, running: BackupTask) -> None:
        """A running task can be disabled: the run and its lease go on, and it still finishes."""
        assert running.id is not None
        off = store.set_enabled(running.id, False, now=LATER)
        assert (off.enabled, off.state) == (False, TaskState.RUNNING)
        assert [lease.owner for lease in store.leases()] == ["alpha"]
        summary = make_summary(running.id)
        done = store.finish(
            running.id, owner="alpha", state=TaskState.FINISHED, summary=summary, now=LATER
        )
        assert done is not None
        assert done.enabled is False

    def test_update_keeps_enabled(self, store: TaskStore) -> None:
        """update leaves enabled as stored: only set_enabled changes it."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        store.set_enabled(task.id, False, now=LATER)
        store.update(attrs.evolve(task, name="renamed", enabled=True))
        stored = store.get(task.id)
        assert (stored.name, stored.enabled) == ("renamed", False)

    @pytest.mark.parametrize("value", [0, 1, "false", None])
    def test_set_enabled_needs_a_bool(self, store: TaskStore, value: Any) -> None:
        """Anything but True or False is refused naming enabled, and changes nothing."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        with pytest.raises(ValueError, match="enabled"):
            store.set_enabled(task.id, value, now=LATER)
        assert store.get(task.id) == task

    def test_set_enabled_naive_now(self, store: TaskStore) -> None:
        """A naive time is refused before anything changes."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        with pytest.raises(ValueError, match="now"):
            store.set_enabled(task.id, False, now=datetime(2024, 12, 24))
        assert store.get(task.id).enabled is True

    def test_set_enabled_unknown_id(self, store: TaskStore) -> None:
        """Enabling an id that was never stored raises TaskNotFoundError."""
        with pytest.raises(TaskNotFoundError):
            store.set_enabled("a" * 24, False, now=LATER)


def _race_delete_and_start(store: TaskStore, task_id: str) -> dict[str, str]:
    """Start and delete *task_id* from two threads at once; what each of them saw."""
    barrier = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def start() -> None:
        barrier.wait(timeout=30)
        try:
            store.start(task_id, owner="alpha", now=LATER)
            outcome["start"] = "started"
        except TaskNotFoundError:
            outcome["start"] = "not found"

    def delete() -> None:
        barrier.wait(timeout=30)
        try:
            store.delete(task_id)
            outcome["delete"] = "deleted"
        except TaskRunningError:
            outcome["delete"] = "running"

    workers = [threading.Thread(target=start), threading.Thread(target=delete)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return outcome


class _Delete(Fixtures):
    def test_delete_removes_task_and_history(self, store: TaskStore) -> None:
        """delete removes the task and its runs; other tasks and their runs stay."""
        gone, kept = make_task(name="gone"), make_task(name="kept")
        store.create(gone)
        store.create(kept)
        assert gone.id is not None
        assert kept.id is not None
        run_times(store, gone.id, 3)
        kept_runs = run_times(store, kept.id, 2)
        store.delete(gone.id)
        with pytest.raises(TaskNotFoundError):
            store.get(gone.id)
        with pytest.raises(TaskNotFoundError):
            store.runs(gone.id)
        assert [t.id for t in store.list().records] == [kept.id]
        assert store.runs(kept.id) == kept_runs[::-1]

    def test_delete_running_refused(self, store: TaskStore, running: BackupTask) -> None:
        """A RUNNING task cannot be deleted: TaskRunningError, and it keeps running."""
        assert running.id is not None
        with pytest.raises(TaskRunningError, match=running.id):
            store.delete(running.id)
        assert store.get(running.id) == running
        assert [lease.owner for lease in store.leases()] == ["alpha"]

    def test_delete_after_the_run(self, store: TaskStore, running: BackupTask) -> None:
        """Once its run has ended, the task can be deleted."""
        assert running.id is not None
        summary = make_summary(running.id)
        store.finish(running.id, owner="alpha", state=TaskState.FAILED, summary=summary, now=LATER)
        store.delete(running.id)
        assert store.list().total_records == 0
        assert store.leases() == []

    def test_delete_unknown_id(self, store: TaskStore) -> None:
        """Deleting an id that was never stored (or twice) raises TaskNotFoundError."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        store.delete(task.id)
        with pytest.raises(TaskNotFoundError):
            store.delete(task.id)

    def test_delete_racing_start(self, store: TaskStore) -> None:
        """A delete and a start of the same task at once: either the start wins (the delete
        raises TaskRunningError and the task runs) or the delete does (the start raises
        TaskNotFoundError and the task is gone), round after round."""
        for _ in range(10):
            task = make_task()
            store.create(task)
            assert task.id is not None
            task_id = task.id
            outcome = _race_delete_and_start(store, task_id)
            if outcome == {"start": "started", "delete": "running"}:
                assert store.get(task_id).state is TaskState.RUNNING
            else:
                assert outcome == {"start": "not found", "delete": "deleted"}
                with pytest.raises(TaskNotFoundError):
                    store.get(task_id)

    def test_id_can_be_stored_again(self, store: TaskStore) -> None:
        """After a delete, a task with the same id can be stored afresh, with no history."""
        task = make_task()
        store.create(task)
        assert task.id is not None
        run_times(store, task.id, 2)
        store.delete(task.id)
        store.create(task)
        assert store.get(task.id) == task
        assert store.runs(task.id) == []


class _LastRunState(Fixtures):
    def test_filter_by_last_run(self, store: TaskStore) -> None:
        """last_run_state lists the tasks whose last run ended so, newest first: a recurring
        task that failed (PENDING again) is found under FAILED; a task that never ran is not."""
        never = make_task(created=CREATED, name="never")
        store.create(never)
        failed_recurring = ran(
            store,
            make_task(created=CREATED + timedelta(minutes=1)),
            run=TaskState.FAILED,
            ends=TaskState.PENDING,
        )
        failed = ran(
            store,
            make_task(created=CREATED + timedelta(minutes=2)),
            run=TaskState.FAILED,
            ends=TaskState.FAILED,
        )
        finished = ran(
            store,
            make_task(created=CREATED + timedelta(minutes=3)),
            run=TaskState.FINISHED,
            ends=TaskState.FINISHED,
        )
        page = store.list(last_run_state=TaskState.FAILED)
        assert [t.id for t in page.records] == [failed, failed_recurring]
        assert page.total_records == 2
        assert [t.id for t in store.list(last_run_state=TaskState.FINISHED).records] == [finished]
        assert store.list(last_run_state=TaskState.RUNNING).total_records == 0
        assert store.list().total_records == 4

    def test_with_state_and_pages(self, store: TaskStore) -> None:
        """last_run_state combines with state, and pages count only what matches."""
        ids = [
            ran(
                store,
                make_task(created=CREATED + timedelta(minutes=n)),
                run=TaskState.FAILED,
                ends=TaskState.PENDING if n % 2 else TaskState.FAILED,
            )
            for n in range(5)
        ]
        pending = store.list(TaskState.PENDING, last_run_state="FAILED", page_size=1)
        assert (pending.total_records, pending.total_pages) == (2, 2)
        assert [t.id for t in pending.records] == [ids[3]]
        second = store.list(TaskState.PENDING, 2, 1, last_run_state=TaskState.FAILED)
        assert [t.id for t in second.records] == [ids[1]]

    def test_last_run_follows_the_newest_run(self, store: TaskStore) -> None:
        """A task whose run failed and then finished is listed under FINISHED only."""
        task_id = ran(store, make_task(), run=TaskState.FAILED, ends=TaskState.FAILED)
        store.start(task_id, owner="beta", now=LATER)
        summary = make_summary(task_id, 1, state=TaskState.FINISHED)
        store.finish(task_id, owner="beta", state=TaskState.FINISHED, summary=summary, now=LATER)
        assert store.list(last_run_state=TaskState.FAILED).total_records == 0
        assert [t.id for t in store.list(last_run_state=TaskState.FINISHED).records] == [task_id]

    def test_stored_with_a_last_run(self, store: TaskStore) -> None:
        """A task stored with a last run already (e.g. copied from elsewhere) is found by it."""
        task = attrs.evolve(make_task(), last_run=make_summary("0" * 24, state=TaskState.FAILED))
        store.create(task)
        assert [t.id for t in store.list(last_run_state=TaskState.FAILED).records] == [task.id]

    def test_unknown_last_run_state(self, store: TaskStore) -> None:
        """A state name that does not exist is refused naming $.lastRunState."""
        with pytest.raises(ValidationError) as caught:
            store.list(last_run_state="BROKEN")
        assert [p.path for p in caught.value.problems] == ["$.lastRunState"]
