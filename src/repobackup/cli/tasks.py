"""`repobackup tasks`: the tasks of a task database with their last run (`tasks`, `tasks
list`), one task in detail (`tasks show TASK`), and `tasks rm|enable|disable TASK`."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Sequence
from typing import Any

from .._model.convert import to_json
from .._model.task import BackupTask, RunSummary, TaskState
from .._tasks.store import TaskStore, all_tasks
from .exits import EXIT_OK
from .opening import open_existing_task_store, resolve_task
from .options import Parents, positive
from .output import Column, Output, plural, schedule, when

__all__ = ["register", "short_ids"]

MIN_ID = 8  # the shortest id prefix shown, as git shows 7 characters of a commit


def _where() -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_argument_group("task database (one of)")
    # SUPPRESS: given before `list`/`show` or after, either way counts.
    group.add_argument(
        "--tasks-db", metavar="PATH", default=argparse.SUPPRESS, help="the task database"
    )
    group.add_argument(
        "--repository",
        "-r",
        metavar="REPO",
        default=argparse.SUPPRESS,
        help="a SQLite repository: its task database REPO.tasks.sqlite",
    )
    return where


def _list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        choices=[s.value for s in TaskState],
        type=str.upper,
        default=argparse.SUPPRESS,
        help="only tasks in this state",
    )
    parser.add_argument(
        "--last-run-state",
        choices=[s.value for s in TaskState],
        type=str.upper,
        default=argparse.SUPPRESS,
        help="only tasks whose last run ended in this state (FAILED finds a recurring task "
        "whose last run failed: it is PENDING again)",
    )
    parser.add_argument(
        "--page", type=positive, default=argparse.SUPPRESS, metavar="N", help="page number"
    )
    parser.add_argument(
        "--page-size",
        type=positive,
        default=argparse.SUPPRESS,
        metavar="N",
        help="tasks per page (default 20)",
    )


def register(commands: Any, parents: Parents) -> None:
    """Add `tasks` (with `list` and `show`) to the subparsers *commands*."""
    # Two copies of the database options: `set_defaults` below changes the actions of the
    # parser it is called on, and must not reset what `list` and `show` were given.
    where = _where()
    tasks = commands.add_parser(
        "tasks",
        parents=[parents.common, _where()],
        help="list tasks with their last run, or show one",
        description="List the tasks of a task database, newest first, with their last run "
        "(`tasks` or `tasks list`), or show one task (`tasks show TASK`). TASK is an id, a "
        "unique prefix of one, or a task name that no other task has.",
    )
    _list_options(tasks)
    tasks.set_defaults(
        handler=_list,
        repository=None,
        tasks_db=None,
        state=None,
        last_run_state=None,
        page=1,
        page_size=20,
    )
    actions = tasks.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser(
        "list", parents=[parents.common, where], help="list tasks (the default)"
    )
    _list_options(listing)
    listing.set_defaults(handler=_list)
    show = actions.add_parser(
        "show",
        parents=[parents.common, where],
        help="show one task: its schedule, its last run and its run history",
    )
    show.add_argument("task_id", metavar="TASK", help="task id, unique id prefix, or name")
    show.set_defaults(handler=_show)
    changes = [
        ("rm", "remove a task and its run history (its backups stay in the store)", _remove),
        ("enable", "let the scheduler start the task again", _enable),
        ("disable", "keep the scheduler from starting the task (`run` still runs it)", _disable),
    ]
    for name, text, handler in changes:
        change = actions.add_parser(name, parents=[parents.common, where], help=text)
        change.add_argument("task_id", metavar="TASK", help="task id, unique id prefix, or name")
        change.set_defaults(handler=handler)


def _list(args: argparse.Namespace, out: Output) -> int:
    with contextlib.ExitStack() as stack:
        store = open_existing_task_store(stack, args.tasks_db, args.repository)
        state = TaskState(args.state) if args.state else None
        page = store.list(state, args.page, args.page_size, last_run_state=args.last_run_state)
        if args.json:
            out.json(to_json(page))
            return EXIT_OK
        shown = short_ids(store)
    out.table(
        f"tasks (page {page.page_number} of {max(page.total_pages, 1)}, "
        f"{page.total_records} in all)",
        [
            "id",
            Column("name", shrink=True, min_width=12),
            "type",
            "state",
            Column("last run", shrink=True, min_width=44),
            Column("location", shrink=True, min_width=12, keep_end=True),
        ],
        [
            [
                shown.get(t.id or "", t.id or ""),
                t.name,
                "backup" if t.type.value == "DATA_BACKUP" else "restore",
                t.state.value if t.enabled else f"{t.state.value} (disabled)",
                _last_run(t.last_run),
                (t.last_run.location if t.last_run and t.last_run.location else t.store_location),
            ]
            for t in page.records
        ],
    )
    return EXIT_OK


def _last_run(run: RunSummary | None) -> str:
    if run is None:
        return "never"
    ended = run.ended.strftime("%Y-%m-%d %H:%M") if run.ended else ""
    text = f"{run.state.value} {ended}".strip()
    if run.errors:
        text += f": {run.errors[0].message}"
    return text


def short_ids(store: TaskStore) -> dict[str, str]:
    """Each task id of *store* cut to the shortest prefix no other id starts with (at least
    `MIN_ID` characters), so that what the list shows can be given back to `run`."""
    ids = sorted(t.id for t in all_tasks(store) if t.id)
    shown = {}
    for index, task_id in enumerate(ids):
        length = MIN_ID
        for neighbour in ids[max(index - 1, 0) : index + 2]:
            if neighbour == task_id:
                continue
            common = 0
            while common < len(task_id) and task_id[common] == neighbour[common]:
                common += 1
            length = max(length, common + 1)
        shown[task_id] = task_id[: min(length, len(task_id))]
    return shown


def _show(args: argparse.Namespace, out: Output) -> int:
    with contextlib.ExitStack() as stack:
        store = open_existing_task_store(stack, args.tasks_db, args.repository)
        task = store.get(resolve_task(store, args.task_id))
        assert task.id is not None
        runs = store.runs(task.id)
    if args.json:
        out.json({"task": to_json(task), "runs": to_json(list(runs))})
        return EXIT_OK
    out.fields(f"task {task.id}", _task_pairs(task))
    _run_table(runs, out)
    return EXIT_OK


def _task_pairs(task: BackupTask) -> list[tuple[str, str]]:
    run = task.last_run
    pairs = [
        ("name", task.name),
        ("type", task.type.value),
        ("state", task.state.value),
        ("schedule", schedule(task) + ("" if task.enabled else " (disabled)")),
        ("storeLocation", task.store_location),
        ("content", json.dumps(to_json(task.content), ensure_ascii=False)),
        ("created", f"{when(task.created_date)} by {task.created_by or ''}"),
        ("last run", "never" if run is None else run.state.value),
    ]
    if run is not None:
        errors = len(run.errors) + run.errors_dropped
        pairs.append(("last run ended", when(run.ended)))
        pairs.append(("last run location", run.location or ""))
        pairs.append(("last run errors", plural(errors, "error")))
        if run.errors:
            first = run.errors[0]
            pairs.append(("first error", f"{first.scope} {first.key}: {first.message}"))
    return pairs


def _run_table(runs: Sequence[RunSummary], out: Output) -> None:
    out.table(
        "runs (newest first)",
        ["started", "ended", "state", "records", "blobs", "errors", "location"],
        [
            [
                when(r.started),
                when(r.ended),
                r.state.value,
                str(r.counts.records_written),
                str(r.counts.blobs_written),
                str(len(r.errors) + r.errors_dropped),
                r.location or "",
            ]
            for r in runs
        ],
    )


def _remove(args: argparse.Namespace, out: Output) -> int:
    with contextlib.ExitStack() as stack:
        store = open_existing_task_store(stack, args.tasks_db, args.repository)
        task = store.get(resolve_task(store, args.task_id))
        assert task.id is not None
        # TaskRunningError (exit 1) while it runs, here or in another process.
        store.delete(task.id)
    if args.json:
        out.json({"removed": task.id, "name": task.name})
    else:
        out.say(f"removed task {task.id} ({task.name!r}) and its run history")
        out.note(f"its backups stay in {task.store_location}")
    return EXIT_OK


def _enable(args: argparse.Namespace, out: Output) -> int:
    return _switch(args, out, enabled=True)


def _disable(args: argparse.Namespace, out: Output) -> int:
    return _switch(args, out, enabled=False)


def _switch(args: argparse.Namespace, out: Output, *, enabled: bool) -> int:
    from datetime import datetime

    from .._model.times import local_zone
    from .opening import os_user

    with contextlib.ExitStack() as stack:
        store = open_existing_task_store(stack, args.tasks_db, args.repository)
        task_id = resolve_task(store, args.task_id)
        task = store.set_enabled(task_id, enabled, now=datetime.now(local_zone()), user=os_user())
    if args.json:
        out.json(to_json(task) | {"enabled": task.enabled})
        return EXIT_OK
    if enabled:
        out.say(f"enabled task {task_id} ({task.name!r}): the scheduler starts it when due")
    else:
        out.say(
            f"disabled task {task_id} ({task.name!r}): the scheduler leaves it alone; "
            "`repobackup run` still runs it"
        )
    return EXIT_OK
