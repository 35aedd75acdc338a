"""`repobackup backup`: a DATA_BACKUP task from the options, run now (the same task again
for the same name and store), or stored for later with --cron or --at."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._model.convert import to_json
from .._model.task import BackupTask, ExecutionStrategy, TaskType
from .._tasks.store import all_tasks
from .exits import EXIT_OK, UsageError
from .opening import open_engine, recover
from .options import Parents, positive
from .output import Output, when
from .passwords import add_password_option
from .summary import execute
from .taskjson import task_json

if TYPE_CHECKING:
    from .._engine.engine import Engine

__all__ = ["register", "run_task_command"]


def register(commands: Any, parents: Parents) -> None:
    """Add `backup` to the subparsers *commands*."""
    backup = commands.add_parser(
        "backup",
        parents=[parents.common, parents.repository, parents.task],
        help="back up a repository now (or schedule it with --cron/--at)",
        description="Create a DATA_BACKUP task and run it now, or with --cron/--at store it "
        "for `repobackup scheduler` (or `serve`) to run. The repository must exist: a "
        "missing one is an error, never an empty backup.",
    )
    backup.add_argument("--name", required=True, help="name: the backup folder under --store")
    backup.add_argument("--compress", action="store_true", help="compression: one .zip file")
    backup.add_argument(
        "--encrypt",
        action="store_true",
        help="encryption: encrypt and authenticate the backup (needs --password-file or "
        "REPOBACKUP_PASSWORD)",
    )
    add_password_option(backup)
    backup.add_argument("--increment", action="store_true", help="increment: true")
    backup.add_argument("--increment-date", metavar="TIME", help="incrementDate (ISO 8601)")
    backup.add_argument(
        "--create-bucket",
        action="store_true",
        help="create the s3:// bucket of --store if it does not exist (else that is an error)",
    )
    backup.add_argument(
        "--keep-last", type=positive, metavar="N", help="keepLast: keep the N newest backups"
    )
    for unit in ("daily", "weekly", "monthly", "yearly"):
        backup.add_argument(
            f"--keep-{unit}",
            type=positive,
            metavar="N",
            help=f"keep{unit.capitalize()}: the newest backup of each of the N newest "
            f"{'days' if unit == 'daily' else unit.removesuffix('ly') + 's'} that have one",
        )
    backup.set_defaults(handler=lambda args, out: run_task_command(args, out, backup=True))


def run_task_command(args: argparse.Namespace, out: Output, *, backup: bool) -> int:
    """`backup` or `restore`: build the task, then run it now or store it for later."""
    data = task_json(args, backup=backup)
    scheduled = args.cron is not None or args.at is not None
    if scheduled and args.tasks_db is None:
        from .._backends.registry import sqlite_path

        if sqlite_path(args.repository) is None:
            raise UsageError(
                "a scheduled task needs a task database that outlives this command: "
                "give --tasks-db PATH"
            )
    if backup:
        from .buckets import check_bucket

        check_bucket(data["storeLocation"], args)
    with contextlib.ExitStack() as stack:
        what = "backup" if backup else "restore"
        bar = stack.enter_context(out.progress(what)) if not scheduled else None
        engine = open_engine(stack, args, restore=not backup, on_progress=bar)
        recover(engine, out)
        earlier = _backup_series(engine, data) if backup and not scheduled else None
        task_id = engine.create_task(data) if earlier is None else _renew(engine, earlier, data)
        if scheduled:
            return _created(engine, task_id, args, out)
        out.note(
            f"task {task_id}: {'backup' if backup else 'restore'} {data['name']!r} running"
            + ("" if earlier is None else " again")
        )
        return execute(engine, task_id, args, out)


def _backup_series(engine: Engine, data: Mapping[str, Any]) -> BackupTask | None:
    """The task an earlier `repobackup backup` made with the same name and store, if any.

    Running it again, rather than making a new task each time, keeps one run history per
    backup series, and that history is what an increment's since time and the backup it
    follows come from. Tasks scheduled by cron or time are left alone.
    """
    for task in all_tasks(engine.tasks):
        if (
            task.type is TaskType.DATA_BACKUP
            and task.name == data["name"]
            and task.store_location == data["storeLocation"]
            and task.backup_setting.execution_strategy is ExecutionStrategy.IMMEDIATELY
        ):
            return task
    return None


def _renew(engine: Engine, task: BackupTask, data: Mapping[str, Any]) -> str:
    """Give *task* this command's content and setting (checked as a new task would be)."""
    assert task.id is not None
    engine.update_task(task.id, data)
    return task.id


def _created(engine: Engine, task_id: str, args: argparse.Namespace, out: Output) -> int:
    from .._engine.scheduler import due_at

    task: BackupTask = engine.get_task(task_id)
    if args.json:
        out.json(to_json(task))
        return EXIT_OK
    due = due_at(task, engine.tz)
    out.say(f"created task {task_id} ({task.backup_setting.execution_strategy.value})")
    out.say(f"next run: {when(due) or 'never'}")
    tasks_db = args.tasks_db or f"{args.repository}.tasks.sqlite"
    where = f"--repository {args.repository}" + (
        "" if args.tasks_db is None else f" --tasks-db {tasks_db}"
    )
    out.say(
        f"it runs while `repobackup scheduler {where}` (or `serve`) is running, from "
        f"`repobackup scheduler {where} --once` in cron or a systemd timer, or now with "
        f"`repobackup run {task_id} --repository {args.repository}`"
    )
    return EXIT_OK
