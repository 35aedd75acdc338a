"""`repobackup restore`: a DATA_RESTORE task from the options, named after the backup it
restores, run now into the repository --repository names (which may be a new one)."""

from __future__ import annotations

from typing import Any

from .backup import run_task_command
from .options import Parents, source_zone
from .passwords import add_password_option

__all__ = ["register"]


def register(commands: Any, parents: Parents) -> None:
    """Add `restore` to the subparsers *commands*."""
    restore = commands.add_parser(
        "restore",
        parents=[parents.common, parents.repository, parents.task],
        help="restore a backup into a repository",
        description="Create a DATA_RESTORE task and run it now. --store names a backup "
        "folder, a backup .zip, or a task folder (its newest backup, increments applied). "
        "A repository that does not exist yet is created.",
    )
    restore.add_argument(
        "--name",
        help="name of the task (default restore-BACKUP, after the last part of --store)",
    )
    restore.add_argument(
        "--conflict",
        choices=["SKIP", "OVERWRITE"],
        type=str.upper,
        help="conflictStrategy for records that exist already (default OVERWRITE)",
    )
    add_password_option(restore)
    source_zone(restore)
    restore.set_defaults(handler=lambda args, out: run_task_command(args, out, backup=False))
