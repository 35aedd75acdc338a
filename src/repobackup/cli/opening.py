"""Opening what a command works on: the repository (never created where it was to be read),
the task database, the engine (after ending the runs that died), and tasks by id or name."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._model.ids import TASK_ID
from .._model.task import BackupTask, RunSummary
from .._tasks.store import all_tasks
from ..exceptions import RepoBackupError, TaskNotFoundError
from .exits import UsageError
from .output import Output
from .passwords import read_passphrase

if TYPE_CHECKING:
    from .._engine.engine import Engine
    from .._pipeline.tally import Progress
    from .._tasks.store import TaskStore

__all__ = [
    "MissingRepositoryError",
    "default_tasks_db",
    "open_engine",
    "open_existing_task_store",
    "open_repository",
    "open_task_store",
    "os_user",
    "recover",
    "resolve_task",
]


class MissingRepositoryError(RepoBackupError):
    """A repository to read from does not exist; nothing was created in its place."""

    def __init__(self, spec: str, path: str) -> None:
        super().__init__(
            f"repository {spec!r} does not exist (no file {path}); nothing was created. "
            "Check the path (is the volume mounted?)"
        )
        self.path = path


def default_tasks_db(repository: str | None) -> str | None:
    """The task database beside a SQLite repository, ``REPO.tasks.sqlite``; else None."""
    from .._backends.registry import sqlite_path

    if repository is None:
        return None
    database = sqlite_path(repository)
    return f"{database}.tasks.sqlite" if database else None


def open_task_store(
    stack: contextlib.ExitStack, tasks_db: str | None, repository: str | None
) -> TaskStore:
    """The task database *tasks_db* names, or the one beside the repository (created when
    missing); a store in memory for a repository that has no place for one."""
    from .._tasks.store import MemoryTaskStore, SqliteTaskStore

    path = tasks_db if tasks_db is not None else default_tasks_db(repository)
    if path is None:
        return MemoryTaskStore()
    store = SqliteTaskStore(path)
    stack.callback(store.close)
    return store


def open_existing_task_store(
    stack: contextlib.ExitStack, tasks_db: str | None, repository: str | None
) -> TaskStore:
    """Like `open_task_store`, for a command that only reads tasks: a database that does
    not exist is a usage error, and is not created where a typo pointed."""
    from .._tasks.store import SqliteTaskStore

    path = tasks_db if tasks_db is not None else default_tasks_db(repository)
    if path is None:
        if repository is None:
            raise UsageError("name the task database: --tasks-db PATH or --repository REPO")
        raise UsageError(f"{repository!r} is not a SQLite repository: give --tasks-db PATH")
    if not Path(path).is_file():
        raise UsageError(
            f"no task database at {path!r}; a backup or restore with that repository "
            "creates it (or name it with --tasks-db)"
        )
    store = SqliteTaskStore(path)
    stack.callback(store.close)
    return store


def open_repository(stack: contextlib.ExitStack, spec: str, *, create: bool) -> Any:
    """The repository *spec* names; a Target when *create* (a restore may make a new one),
    else a Source that must exist already: a missing SQLite file is an error, not an empty
    repository that a backup would then report as a good backup of nothing."""
    from .._backends.protocols import Source, Target
    from .._backends.registry import UnknownBackendError, sqlite_path
    from .._backends.registry import open_repository as open_named

    try:
        repository = open_named(spec, create=create)
    except FileNotFoundError:
        # Only with create=False: the backend found no repository and created none.
        database = sqlite_path(spec)
        raise MissingRepositoryError(spec, os.path.abspath(database or spec)) from None
    except UnknownBackendError as exc:
        raise UsageError(exc.message) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if callable(getattr(repository, "close", None)):
        stack.callback(repository.close)
    if not isinstance(repository, Source):
        raise UsageError(f"repository {spec!r} cannot be read from: it is not a Source")
    if create and not isinstance(repository, Target):
        raise UsageError(f"repository {spec!r} cannot be restored into: it is not a Target")
    return repository


def os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "cli"


def open_engine(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    *,
    restore: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_finish: Callable[[BackupTask, RunSummary], None] | None = None,
    on_start: Callable[[BackupTask, str], None] | None = None,
    tasks: TaskStore | None = None,
) -> Engine:
    """An engine on the repository and task database the options name."""
    from .._engine.engine import Engine
    from .buckets import storage_options

    repository = open_repository(stack, args.repository, create=restore)
    if tasks is None:
        tasks = open_task_store(stack, args.tasks_db, args.repository)
    engine = Engine(
        repository,
        tasks=tasks,
        max_workers=args.workers,
        executor=dask_executor(
            stack, getattr(args, "dask_scheduler", None), getattr(args, "dask_timeout", 30)
        ),
        on_progress=on_progress,
        on_finish=on_finish,
        on_start=on_start,
        storage_options=storage_options(args),
        user=os_user(),
        passphrase=read_passphrase(args),
        # A bk-repo backup's offset-less times are read in the engine's zone.
        tz=getattr(args, "source_zone", None),
        # The command line's entry points keep their work under a main guard, so a large
        # local run may copy on a process pool of its own.
        processes=True,
    )
    stack.callback(engine.close)
    return engine


#: dask retries a job whose worker died this many times; a job run twice does no harm.
DASK_RETRIES = 3


def dask_executor(
    stack: contextlib.ExitStack, address: str | None, timeout: float
) -> Executor | None:
    """``--dask-scheduler``: an executor on the dask.distributed cluster at *address*,
    reached within *timeout* seconds."""
    if not address:
        return None
    try:
        import distributed
    except ImportError:
        raise UsageError(
            "--dask-scheduler needs dask.distributed: pip install 'repobackup[dask]'"
        ) from None
    try:
        client = distributed.Client(  # type: ignore[no-untyped-call]
            address, timeout=timeout, set_as_default=False
        )
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"--dask-scheduler: cannot reach {address!r}: {exc}") from None
    stack.callback(client.close)
    executor: Executor = client.get_executor(  # type: ignore[no-untyped-call]
        pure=False, retries=DASK_RETRIES
    )
    return executor


def recover(engine: Engine, out: Output) -> None:
    """End the runs of the task database whose process died (a SIGKILL, a power cut), as
    the scheduler does, so that their tasks can run again now."""
    for task_id in engine.recover_interrupted():
        out.note(f"task {task_id}: ended its earlier run, whose process is gone (FAILED)")


def resolve_task(store: TaskStore, text: str) -> str:
    """The id of the one task that *text* names: its id, a unique prefix of it, or its name
    when no other task has that name. UsageError listing the candidates when several
    match; TaskNotFoundError when none does."""
    wanted = text.strip()
    if TASK_ID.match(wanted):
        return wanted
    if not wanted:
        raise TaskNotFoundError(text)
    prefix = wanted.lower()
    by_id = [t for t in all_tasks(store) if (t.id or "").startswith(prefix)]
    if len(by_id) == 1 and by_id[0].id is not None:
        return by_id[0].id
    by_name = [t for t in all_tasks(store) if t.name == wanted] if not by_id else []
    found = by_id or by_name
    if not found:
        raise TaskNotFoundError(text)
    if len(found) == 1 and found[0].id is not None:
        return found[0].id
    shown = "\n".join(f"  {t.id}  {t.name}  {t.type.value}  {t.state.value}" for t in found[:20])
    more = f"\n  … and {len(found) - 20} more" if len(found) > 20 else ""
    kind = "id prefix" if by_id else "task name"
    raise UsageError(
        f"{kind} {text!r} is ambiguous: {len(found)} tasks match; give more of the id:\n"
        f"{shown}{more}"
    )
