"""Code that is only type-checked (mypy strict): the public API as users write it."""

from __future__ import annotations

from concurrent.futures import Future
from datetime import UTC, datetime

import repobackup
from repobackup import (
    BackupContent,
    BackupTask,
    Engine,
    Page,
    ProjectContentInfo,
    RunSummary,
    SqliteRepository,
    SqliteTaskStore,
    TaskState,
    from_json,
    to_json,
)


def use_the_engine(path: str, store: str) -> None:
    repo = SqliteRepository(path)
    engine = Engine(repo, tasks=SqliteTaskStore(path + ".tasks"), clock=lambda: datetime.now(UTC))
    task = BackupTask(
        name="nightly",
        store_location=store,
        content=BackupContent(common_data=True, projects=(ProjectContentInfo(project_regex="*"),)),
    )
    task_id: str = engine.create_task(task)
    same_id: str = engine.create_task(to_json(task))
    summary: RunSummary = engine.execute(task_id)
    future: Future[RunSummary] = engine.submit(same_id)
    page: Page[BackupTask] = engine.list_tasks(TaskState.FINISHED, page_number=1, page_size=10)
    parsed: BackupTask = from_json(BackupTask, to_json(page.records[0]))
    history: list[RunSummary] = engine.runs(task_id)
    print(summary.counts.bytes_written, future.result().state, parsed.id, len(history))


def errors_have_codes() -> int:
    try:
        raise repobackup.TaskNotFoundError("x")
    except repobackup.RepoBackupError as exc:
        return exc.code
