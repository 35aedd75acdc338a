"""`repobackup retention TASK --dry-run`: what the task's retention would keep and remove
in its task folder now, and why (restic's ``forget --dry-run``)."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from .exits import EXIT_OK, UsageError
from .opening import open_engine, open_existing_task_store, resolve_task
from .options import Parents
from .output import Output

__all__ = ["register"]


def register(commands: Any, parents: Parents) -> None:
    """Add `retention` to the subparsers *commands*."""
    retention = commands.add_parser(
        "retention",
        parents=[parents.common, parents.repository],
        help="show what a task's retention would remove (--dry-run)",
        description="List the complete backups in a backup task's folder, newest first, "
        "each with whether the task's retention (keepLast, keepDaily, keepWeekly, "
        "keepMonthly, keepYearly) keeps or removes it and why. Nothing is removed: "
        "retention itself runs after each backup run that ends with no error. Backups "
        "that another task wrote into the same folder are never removed.",
    )
    retention.add_argument("task_id", metavar="TASK", help="task id, unique id prefix, or name")
    retention.add_argument(
        "--dry-run", action="store_true", help="list only (required: nothing is removed here)"
    )
    retention.set_defaults(handler=_retention)


def _retention(args: argparse.Namespace, out: Output) -> int:
    if not args.dry_run:
        raise UsageError(
            "retention removes backups only after a backup run with no error; "
            "give --dry-run to see what it would remove"
        )
    with contextlib.ExitStack() as stack:
        tasks = open_existing_task_store(stack, args.tasks_db, args.repository)
        task_id = resolve_task(tasks, args.task_id)
        engine = open_engine(stack, args, tasks=tasks)
        try:
            decisions = engine.plan_retention(task_id)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.json:
        out.json(
            [
                {
                    "name": d.name,
                    "path": d.path,
                    "created": d.created.isoformat(),
                    "action": "keep" if d.keep else "remove",
                    "reasons": list(d.reasons),
                }
                for d in decisions
            ]
        )
        return EXIT_OK
    kept = [d for d in decisions if d.keep]
    removed = [d for d in decisions if not d.keep]
    out.say(f"keep {len(kept)} backup(s):")
    for d in kept:
        out.say(f"  {d.name}  {', '.join(d.reasons)}")
    out.say(f"remove {len(removed)} backup(s):")
    for d in removed:
        out.say(f"  {d.name}  {', '.join(d.reasons)}")
    return EXIT_OK
