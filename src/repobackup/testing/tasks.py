"""`TaskStoreConformance`: what every `TaskStore` must do, as tests a store's author runs by
subclassing it and providing one fixture, ``make_task_store``.

Usage (requires pytest)::

    import pytest
    from repobackup.testing import TaskStoreConformance

    @pytest.fixture(name="make_task_store")
    def _make_task_store(tmp_path):
        stores = []
        def make():                      # a fresh, empty store at each call
            stores.append(MyTaskStore(tmp_path / f"tasks-{len(stores)}.db"))
            return stores[-1]
        yield make
        for store in stores:
            store.close()

    class TestMyTaskStore(TaskStoreConformance): ...

What it checks, through the `TaskStore` methods only: tasks come back equal (nested settings,
aware dates in their own offset, ``enabled``); listings are newest first with exact pages and
totals, filtered by state and by the state of the last run; `start` is a compare-and-set (one
winner among 8 threads); leases, heartbeats, `finish` by the holder only; bounded run history;
`update` keeps history and ``enabled``; `set_enabled`; `delete` removes a task with its history
and refuses a running one; every bad argument is refused naming it.
"""

from __future__ import annotations

from .taskdata import CREATED, make_summary, make_task, run_times
from .tasklisting import _CreateAndGet, _Delete, _Enabled, _LastRunState, _List, _Update
from .taskruns import _Finish, _Heartbeat, _Runs, _Start, _ThreadRace

__all__ = ["CREATED", "TaskStoreConformance", "make_summary", "make_task", "run_times"]


class TaskStoreConformance(
    _CreateAndGet,
    _List,
    _Start,
    _Heartbeat,
    _Finish,
    _Runs,
    _Update,
    _ThreadRace,
    _Enabled,
    _Delete,
    _LastRunState,
):
    """What every `TaskStore` must do. Subclass it in a test module and provide the fixture
    ``make_task_store``: a callable that returns a fresh, empty store at each call (and closes
    them at teardown)."""
