"""`repobackup run`: run a stored task now, whatever its schedule, by id, id prefix or name."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from .._model.task import TaskType
from .opening import open_engine, open_existing_task_store, recover, resolve_task
from .options import Parents
from .output import Output
from .passwords import add_password_option
from .summary import execute

__all__ = ["register"]


def register(commands: Any, parents: Parents) -> None:
    """Add `run` to the subparsers *commands*."""
    run = commands.add_parser(
        "run",
        parents=[parents.common, parents.repository],
        help="run an existing task now",
        description="Run a task of the task database now, whatever its schedule (a "
        "--cron or --at task, or one created over HTTP). TASK is its id, a prefix of the "
        "id that no other task shares, or its name when no other task has that name.",
    )
    run.add_argument("task_id", metavar="TASK", help="task id, unique id prefix, or name")
    add_password_option(run)
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace, out: Output) -> int:
    with contextlib.ExitStack() as stack:
        tasks = open_existing_task_store(stack, args.tasks_db, args.repository)
        task_id = resolve_task(tasks, args.task_id)
        task = tasks.get(task_id)
        # Only a restore may create the repository it writes; a backup's must exist.
        restore = task.type is TaskType.DATA_RESTORE
        bar = stack.enter_context(out.progress("restore" if restore else "backup"))
        engine = open_engine(stack, args, restore=restore, on_progress=bar, tasks=tasks)
        recover(engine, out)
        return execute(engine, task_id, args, out)
