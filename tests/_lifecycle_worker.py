"""Work for the processes of the lifecycle tests: engines that share one SQLite task store.

Spawned processes import their target by module name, so it lives here and not in a test file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, BinaryIO

from repobackup import (
    Engine,
    Record,
    Scheduler,
    Scope,
    Source,
    SqliteRepository,
    SqliteTaskStore,
    TaskRunningError,
)

RAN = "ran"
RUNNING = "running"


class SlowBlobs:
    """A `Source` whose blob reads each take *delay* seconds: a backup long enough to race
    against, or to kill in the middle of."""

    def __init__(self, source: Source, delay: float) -> None:
        self.source = source
        self.delay = delay

    def projects(self, *, since: datetime | None = None) -> Iterator[str]:
        return self.source.projects(since=since)

    def repositories(self, project_id: str, *, since: datetime | None = None) -> Iterator[str]:
        return self.source.repositories(project_id, since=since)

    def collections(self, scope: Scope) -> Iterator[str]:
        return self.source.collections(scope)

    def records(
        self, scope: Scope, collection: str, *, since: datetime | None = None
    ) -> Iterator[Record]:
        return self.source.records(scope, collection, since=since)

    def open_blob(self, sha256: str) -> BinaryIO:
        time.sleep(self.delay)
        return self.source.open_blob(sha256)

    def reopener(self) -> Callable[[], Source] | None:
        return None  # the delay must stay on the threads of this process


def fill_repository(path: str, files: int = 3) -> None:
    """A repository with one project, one repository and *files* distinct files."""
    with SqliteRepository(path) as repo:
        repo.put_project("demo")
        repo.put_repository("demo", "libs")
        for n in range(files):
            repo.put_file("demo", "libs", f"/lib-{n}.jar", f"content {n}".encode() * 100)


def _engine(store_path: str, repo_path: str, delay: float) -> Engine:
    source = SlowBlobs(SqliteRepository(repo_path), delay)
    return Engine(source, tasks=SqliteTaskStore(store_path))


def execute_once(
    *, store_path: str, repo_path: str, task_id: str, delay: float, barrier: Any, results: Any
) -> None:
    """Wait until every process is ready, then try to run the task."""
    engine = _engine(store_path, repo_path, delay)
    barrier.wait(timeout=60)
    try:
        summary = engine.execute(task_id)
    except TaskRunningError:
        outcome = RUNNING
    except Exception as exc:
        outcome = f"error: {exc!r}"
    else:
        outcome = f"{RAN} {summary.state.value}"
    results.put((os.getpid(), outcome))


def schedule_once(
    store_path: str, repo_path: str, delay: float, barrier: Any, results: Any
) -> None:
    """Wait until every process is ready, then look for due tasks once and wait for the runs."""
    engine = _engine(store_path, repo_path, delay)
    barrier.wait(timeout=60)
    try:
        started: list[str] | str = Scheduler(engine).run_pending()
        engine.close()
    except Exception as exc:
        started = f"error: {exc!r}"
    results.put((os.getpid(), started))


def execute_slowly(*, store_path: str, repo_path: str, task_id: str, delay: float) -> None:
    """Run the task with slow blob reads (the parent kills this process midway)."""
    engine = _engine(store_path, repo_path, delay)
    engine.heartbeat_seconds = 0.1
    engine.execute(task_id)
