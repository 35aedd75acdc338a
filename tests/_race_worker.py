"""Work for the processes of the task store's race tests: each opens the SQLite store itself.

Spawned processes import their target by module name, so it lives here and not in a test file.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from repobackup import SqliteTaskStore, TaskRunningError
from repobackup.testing import make_task

STARTED = "started"
RUNNING = "running"


def start_rounds(path: str, task_ids: list[str], barrier: Any, results: Any) -> None:
    """For each task in turn: wait until every process is ready, then try to start it."""
    owner = f"process-{os.getpid()}"
    with SqliteTaskStore(path) as store:
        for task_id in task_ids:
            barrier.wait(timeout=60)
            try:
                store.start(task_id, owner=owner, now=datetime.now(UTC))
            except TaskRunningError:
                outcome = RUNNING
            except Exception as exc:
                outcome = f"error: {exc!r}"
            else:
                outcome = STARTED
            results.put((task_id, owner, outcome))


def open_and_create(path: str, barrier: Any, results: Any) -> None:
    """Wait until every process is ready, then open the (new) store and add one task."""
    barrier.wait(timeout=60)
    now = datetime.now(UTC)
    task = make_task(name=f"from-{os.getpid()}", created=now)
    try:
        with SqliteTaskStore(path) as store:
            store.create(task)
    except Exception as exc:
        results.put(f"error: {exc!r}")
    else:
        results.put(task.id)
