"""The ``repobackup`` command line: demo, backup, restore, run, verify, ls, tasks and serve.

`main(argv)` returns the exit code; rich draws tables and progress bars when it is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import ipaddress
import json
import logging
import os
import signal
import socketserver
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn
from wsgiref.simple_server import WSGIServer

from .._model.convert import to_json
from .._model.task import BackupTask, RunSummary, TaskState
from ..exceptions import (
    RepoBackupError,
    TaskNotFoundError,
    ValidationError,
)

if TYPE_CHECKING:
    from .._engine.engine import Engine
    from .._pipeline.tally import Progress
    from .._tasks.store import TaskStore


__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "TOKEN_ENV",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1  # a task FAILED, a backup did not verify, or any other error
EXIT_USAGE = 2  # bad options or an invalid task (every problem is listed)
EXIT_NOT_FOUND = 3  # no task with that id
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it

TOKEN_ENV = "REPOBACKUP_TOKEN"
MIN_TOKEN = 16
DEFAULT_PORT = 8080
MAX_ERRORS_SHOWN = 20

log = logging.getLogger("repobackup")


class UsageError(Exception):
    """A command line that cannot work as given; exit code 2."""


# --------------------------------------------------------------------------------------------
# Output: rich when installed and wanted, plain text otherwise.


class Output:
    """Where a command writes: results to stdout, messages and progress to stderr.

    With rich installed (the ``cli`` extra), *plain* false and a terminal to draw on, tables
    and progress bars are drawn by rich; otherwise (a pipe, a log, no rich) the same
    information comes out as plain, aligned text that scripts can read.
    """

    def __init__(self, *, plain: bool = False, quiet: bool = False) -> None:
        self.quiet = quiet
        self.plain = plain
        self.stdout: IO[str] = sys.stdout
        self.stderr: IO[str] = sys.stderr
        self._lock = threading.Lock()
        self._out: Any = None
        if not plain and _isatty(self.stdout) and _rich_installed():
            from rich.console import Console

            self._out = Console(file=self.stdout, highlight=False, markup=False, emoji=False)

    def say(self, text: str = "") -> None:
        """A line of the result, on stdout."""
        with self._lock:
            print(text, file=self.stdout, flush=True)

    def note(self, text: str) -> None:
        """A message about what is happening, on stderr (not with --quiet)."""
        if not self.quiet:
            with self._lock:
                print(text, file=self.stderr, flush=True)

    def error(self, text: str) -> None:
        """An error, on stderr (always)."""
        with self._lock:
            print(f"error: {text}", file=self.stderr, flush=True)

    def detail(self, text: str) -> None:
        """A line following an error, on stderr (always)."""
        with self._lock:
            print(text, file=self.stderr, flush=True)

    def json(self, data: Any) -> None:
        """*data* as indented JSON on stdout, for scripts."""
        self.say(json.dumps(data, indent=2, ensure_ascii=False))

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Rows under column headings."""
        if self._out is not None:
            import rich.table

            table = rich.table.Table(title=title, title_justify="left")
            for column in columns:
                table.add_column(column, overflow="fold")
            for row in rows:
                table.add_row(*row)
            self._out.print(table)
            return
        self.say(title)
        widths = [len(c) for c in columns]
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        for row in [columns, ["-" * w for w in widths], *rows]:
            self.say(
                "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )

    def fields(self, title: str, pairs: Sequence[tuple[str, str]]) -> None:
        """Named values under a title."""
        self.table(title, ["field", "value"], [list(pair) for pair in pairs])

    @contextlib.contextmanager
    def progress(self) -> Iterator[Callable[[Progress], None] | None]:
        """A callback for `Engine(on_progress=...)` drawing progress on stderr, or None when
        stderr is not a terminal (logs and pipes get the summary only) or with --quiet."""
        if self.quiet or not _isatty(self.stderr):
            yield None
            return
        if self.plain or not _rich_installed():
            yield _PlainProgress(self).update
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as Bar

        bar = Bar(
            SpinnerColumn(),
            TextColumn("{task.description:<8}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[records]} records"),
            TimeElapsedColumn(),
            console=Console(file=self.stderr),
            transient=True,
        )
        job = bar.add_task("starting", total=None, records=0)

        def update(event: Progress) -> None:
            bar.update(
                job,
                description=event.phase,
                completed=event.bytes,
                total=event.total_bytes,
                records=event.records,
            )

        with bar:
            yield update


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False


def _rich_installed() -> bool:
    try:
        import rich.console  # noqa: F401 - only asking whether it imports
    except ImportError:
        return False
    return True


class _PlainProgress:
    """Progress as one line per phase, for a terminal without rich."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.phase: str | None = None

    def update(self, event: Progress) -> None:
        if event.phase != self.phase:
            self.phase = event.phase
            self.output.note(f"… {event.phase}: {event.records} records, {_size(event.bytes)}")


def _size(count: int | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _when(value: Any) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# The parser


def _json_argument(text: str) -> Any:
    """``--content-json``: JSON text, or the path of a file holding it (read when the command
    runs, so that the parser alone never touches the disk)."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        source = "--content-json"
        raw = text
    else:
        source = text
        try:
            raw = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--content-json: cannot read {text!r}: {exc.strerror}") from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"--content-json: {source} is not valid JSON: {exc}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0 picks a free port), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``repobackup`` (also used to check the documented commands)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given before the subcommand is not reset by the subcommand's default.
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logging",
    )
    common.add_argument(
        "--plain",
        action="store_true",
        default=argparse.SUPPRESS,
        help="plain text output even when rich is installed",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress or notes on stderr",
    )

    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", help="print the result as JSON (for scripts)"
    )

    repository = argparse.ArgumentParser(add_help=False)
    repository.add_argument(
        "--repository",
        "-r",
        required=True,
        metavar="REPO",
        help="a SQLite repository path, or NAME:ARG for a backend registered under the "
        "entry-point group repobackup.backends (built in: sqlite:PATH, memory:)",
    )
    repository.add_argument(
        "--tasks-db",
        metavar="PATH",
        help="the task database (default: REPO.tasks.sqlite beside a SQLite repository, "
        "else kept in memory)",
    )
    repository.add_argument(
        "--workers", type=_positive, metavar="N", help="blob copies in parallel (default 4)"
    )

    task = argparse.ArgumentParser(add_help=False)
    task.add_argument(
        "--store",
        required=True,
        metavar="LOCATION",
        help="storeLocation: a folder or fsspec URL (s3://bucket/path)",
    )
    select = task.add_argument_group("content (one projects entry; --content-json for any number)")
    select.add_argument("--all", action="store_true", help="common data and every project")
    select.add_argument("--common-data", action="store_true", help="commonData: true")
    select.add_argument("--project-id", metavar="ID", help="projectId")
    select.add_argument("--project-regex", metavar="PATTERN", help="projectRegex")
    select.add_argument("--repo", action="append", metavar="NAME", help="repoList (repeatable)")
    select.add_argument("--repo-regex", metavar="PATTERN", help="repoRegex")
    select.add_argument(
        "--exclude-project", action="append", metavar="ID", help="excludeProjects (repeatable)"
    )
    select.add_argument(
        "--exclude-repo", action="append", metavar="NAME", help="excludeRepos (repeatable)"
    )
    select.add_argument(
        "--content-json",
        metavar="FILE|JSON",
        help="a projects array, or a whole content object, as JSON text or a file",
    )
    setting = task.add_argument_group("setting")
    setting.add_argument(
        "--error-strategy",
        choices=["CONTINUE", "FAST_FAIL"],
        type=str.upper,
        help="errorStrategy (default CONTINUE)",
    )
    setting.add_argument("--no-space-check", action="store_true", help="spaceCapCheck: false")
    schedule = setting.add_mutually_exclusive_group()
    schedule.add_argument(
        "--cron",
        metavar="EXPR",
        help="create a CRON_EXPRESSION task (Unix or Quartz cron) for `serve` to run",
    )
    schedule.add_argument(
        "--at", metavar="TIME", help="create a SPECIFIED_TIME task (ISO 8601) for `serve` to run"
    )

    parser = argparse.ArgumentParser(
        prog="repobackup",
        description="Back up and restore an artifact repository: projects, repositories, "
        "files and common data.",
        parents=[common],
    )
    parser.set_defaults(debug=False, plain=False, quiet=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="build a sample repository, back it up, restore and verify it",
        description="Build a sample repository in DIR (recreated each run), back it up "
        "compressed, restore it into a fresh repository and check both match.",
    )
    demo.add_argument(
        "--dir",
        default="repobackup-demo",
        type=Path,
        help="where to work (default ./repobackup-demo)",
    )

    backup = commands.add_parser(
        "backup",
        parents=[common, as_json, repository, task],
        help="back up a repository now (or schedule it with --cron/--at)",
        description="Create a DATA_BACKUP task and run it now, or with --cron/--at store it "
        "for `repobackup serve` to run.",
    )
    backup.add_argument("--name", required=True, help="name: the backup folder under --store")
    backup.add_argument("--compress", action="store_true", help="compression: one .zip file")
    backup.add_argument("--increment", action="store_true", help="increment: true")
    backup.add_argument("--increment-date", metavar="TIME", help="incrementDate (ISO 8601)")
    backup.add_argument(
        "--keep-last", type=_positive, metavar="N", help="keep the N newest backups only"
    )

    restore = commands.add_parser(
        "restore",
        parents=[common, as_json, repository, task],
        help="restore a backup into a repository",
        description="Create a DATA_RESTORE task and run it now. --store names a backup "
        "folder, a backup .zip, or a task folder (its newest backup, increments applied).",
    )
    restore.add_argument("--name", default="restore", help="name of the task (default restore)")
    restore.add_argument(
        "--conflict",
        choices=["SKIP", "OVERWRITE"],
        type=str.upper,
        help="conflictStrategy for records that exist already (default OVERWRITE)",
    )

    run = commands.add_parser(
        "run",
        parents=[common, as_json, repository],
        help="run an existing task now",
    )
    run.add_argument("task_id", metavar="TASK_ID")

    verify = commands.add_parser(
        "verify",
        parents=[common, as_json],
        help="check every member and blob of a backup against its hashes",
    )
    verify.add_argument("location", metavar="LOCATION")

    ls = commands.add_parser(
        "ls",
        parents=[common, as_json],
        help="show what a backup holds",
        description="Show a backup's manifest, members with record counts and its blobs. For "
        "a task folder: its backups, then the ones a restore from it would apply.",
    )
    ls.add_argument("location", metavar="LOCATION")

    tasks = commands.add_parser(
        "tasks",
        parents=[common, as_json],
        help="list tasks, or show one with its runs",
    )
    tasks.add_argument("task_id", nargs="?", metavar="TASK_ID", help="show this task")
    where = tasks.add_mutually_exclusive_group(required=True)
    where.add_argument("--tasks-db", metavar="PATH", help="the task database")
    where.add_argument(
        "--repository",
        "-r",
        metavar="REPO",
        help="a SQLite repository: its task database REPO.tasks.sqlite",
    )
    tasks.add_argument("--state", choices=[s.value for s in TaskState], type=str.upper)
    tasks.add_argument("--page", type=_positive, default=1, metavar="N", help="page number")
    tasks.add_argument(
        "--page-size", type=_positive, default=20, metavar="N", help="tasks per page"
    )

    serve = commands.add_parser(
        "serve",
        parents=[common, repository],
        help="serve the JSON API and run scheduled tasks",
        description="Serve the backup API over HTTP and run due tasks. Binds 127.0.0.1; any "
        f"other address needs a bearer token (--token or {TOKEN_ENV}).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    serve.add_argument(
        "--token",
        help=f"bearer token callers must send (prefer the {TOKEN_ENV} environment variable: "
        "a command line is visible to other users)",
    )
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("repobackup")
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------
# Opening repositories, task stores and engines


def _task_store(
    stack: contextlib.ExitStack, tasks_db: str | None, repository: str | None
) -> TaskStore:
    from .._backends.registry import sqlite_path
    from .._tasks.store import MemoryTaskStore, SqliteTaskStore

    path = tasks_db
    if path is None and repository is not None:
        database = sqlite_path(repository)
        path = f"{database}.tasks.sqlite" if database else None
    if path is None:
        return MemoryTaskStore()
    store = SqliteTaskStore(path)
    stack.callback(store.close)
    return store


def _open_repository(stack: contextlib.ExitStack, spec: str, *, restore: bool) -> Any:
    from .._backends.protocols import Source, Target
    from .._backends.registry import UnknownBackendError, open_repository

    try:
        repository = open_repository(spec)
    except UnknownBackendError as exc:
        raise UsageError(exc.message) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if callable(getattr(repository, "close", None)):
        stack.callback(repository.close)
    if not isinstance(repository, Source):
        raise UsageError(f"repository {spec!r} cannot be read from: it is not a Source")
    if restore and not isinstance(repository, Target):
        raise UsageError(f"repository {spec!r} cannot be restored into: it is not a Target")
    return repository


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "cli"


def _engine(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    *,
    restore: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> Engine:
    from .._engine.engine import Engine

    repository = _open_repository(stack, args.repository, restore=restore)
    tasks = _task_store(stack, args.tasks_db, args.repository)
    engine = Engine(
        repository,
        tasks=tasks,
        max_workers=args.workers,
        on_progress=on_progress,
        user=_os_user(),
    )
    stack.callback(engine.close)
    return engine


# --------------------------------------------------------------------------------------------
# Task JSON from options


def _content(args: argparse.Namespace, *, backup: bool) -> dict[str, Any]:
    content: dict[str, Any] = {}
    projects: list[Any] = []
    given = None if args.content_json is None else _json_argument(args.content_json)
    if isinstance(given, list):
        projects.extend(given)
    elif isinstance(given, dict):
        content.update(given)
        if isinstance(content.get("projects"), list):
            projects.extend(content["projects"])
    elif given is not None:
        raise UsageError("--content-json must hold a projects array or a content object")
    if args.all:
        content["commonData"] = True
        projects.append({"projectRegex": "*"})
    if args.common_data:
        content["commonData"] = True
    entry = {
        "projectId": args.project_id,
        "projectRegex": args.project_regex,
        "repoList": args.repo,
        "repoRegex": args.repo_regex,
        "excludeProjects": args.exclude_project,
        "excludeRepos": args.exclude_repo,
    }
    entry = {key: value for key, value in entry.items() if value is not None}
    if entry:
        projects.append(entry)
    if projects or "projects" in content:
        content["projects"] = projects
    if backup:
        if args.compress:
            content["compression"] = True
        if args.increment:
            content["increment"] = True
        if args.increment_date is not None:
            content["incrementDate"] = args.increment_date
    return content


def _task_json(args: argparse.Namespace, *, backup: bool) -> dict[str, Any]:
    setting: dict[str, Any] = {}
    if args.error_strategy:
        setting["errorStrategy"] = args.error_strategy
    if args.no_space_check:
        setting["spaceCapCheck"] = False
    if not backup and args.conflict:
        setting["conflictStrategy"] = args.conflict
    if backup and args.keep_last is not None:
        setting["retention"] = {"keepLast": args.keep_last}
    if args.cron is not None:
        setting["executionStrategy"] = "CRON_EXPRESSION"
        setting["executionPlan"] = {"executeImmediately": False, "cronExpression": args.cron}
    elif args.at is not None:
        setting["executionStrategy"] = "SPECIFIED_TIME"
        setting["executionPlan"] = {"executeImmediately": False, "executeTime": args.at}
    else:
        # This process runs the task itself; a `serve` sharing the task database must not
        # pick it up as due at creation and run it a second time.
        setting["executionPlan"] = {"executeImmediately": False}
    return {
        "name": args.name,
        "storeLocation": _store_location(args.store),
        "type": "DATA_BACKUP" if backup else "DATA_RESTORE",
        "content": _content(args, backup=backup),
        "backupSetting": setting,
    }


def _store_location(location: str) -> str:
    """A local folder as an absolute path: a task stored in the task database for a later run
    must not depend on the folder this command ran in. URLs pass through as given."""
    if not location.strip() or "://" in location or location.startswith("file:"):
        return location
    return os.path.abspath(location)


_CONTENT_OPTIONS = "--all, --common-data, a --project-… or --repo… option, or --content-json"


# --------------------------------------------------------------------------------------------
# Commands


def _cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from .demo import run_demo

    return run_demo(args.dir, out)


def _cmd_task(args: argparse.Namespace, out: Output, *, backup: bool) -> int:
    data = _task_json(args, backup=backup)
    scheduled = args.cron is not None or args.at is not None
    if scheduled and args.tasks_db is None:
        from .._backends.registry import sqlite_path

        if sqlite_path(args.repository) is None:
            raise UsageError(
                "a scheduled task needs a task database that outlives this command: "
                "give --tasks-db PATH"
            )
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(out.progress()) if not scheduled else None
        engine = _engine(stack, args, restore=not backup, on_progress=bar)
        earlier = _backup_series(engine, data) if backup and not scheduled else None
        task_id = engine.create_task(data) if earlier is None else _renew(engine, earlier, data)
        if scheduled:
            return _created(engine, task_id, args, out)
        out.note(
            f"task {task_id}: {'backup' if backup else 'restore'} {args.name!r} running"
            + ("" if earlier is None else " again")
        )
        summary = engine.execute(task_id)
    return _summary(summary, args, out)


def _backup_series(engine: Engine, data: Mapping[str, Any]) -> BackupTask | None:
    """The task an earlier `repobackup backup` made with the same name and store, if any.

    Running it again, rather than making a new task each time, keeps one run history per
    backup series, and that history is what an increment's since time and the backup it
    follows come from. Tasks scheduled by cron or time are left alone.
    """
    from .._model.task import ExecutionStrategy, TaskType

    page_number = 1
    while True:
        page = engine.list_tasks(page_number=page_number, page_size=1000)
        for task in page.records:
            if (
                task.type is TaskType.DATA_BACKUP
                and task.name == data["name"]
                and task.store_location == data["storeLocation"]
                and task.backup_setting.execution_strategy is ExecutionStrategy.IMMEDIATELY
            ):
                return task
        if page_number >= page.total_pages:
            return None
        page_number += 1


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
    out.say(f"next run: {_when(due) or 'never'}")
    tasks_db = args.tasks_db or f"{args.repository}.tasks.sqlite"
    out.say(
        f"it runs while `repobackup serve --repository {args.repository}"
        f"{'' if args.tasks_db is None else ' --tasks-db ' + tasks_db}` is running, "
        f"or now with `repobackup run {task_id} --repository {args.repository}`"
    )
    return EXIT_OK


def _summary(summary: RunSummary, args: argparse.Namespace, out: Output) -> int:
    failed = summary.state is TaskState.FAILED
    if args.json:
        out.json(to_json(summary))
    else:
        counts = summary.counts
        seconds = (summary.ended - summary.started).total_seconds() if summary.ended else 0.0
        pairs = [
            ("task", summary.task_id),
            ("state", summary.state.value),
            ("location", summary.location or ""),
            (
                "records",
                f"{counts.records_written} written, {counts.records_skipped} skipped, "
                f"{counts.records_failed} failed",
            ),
            (
                "blobs",
                f"{counts.blobs_written} written, {counts.blobs_reused} reused, "
                f"{counts.blobs_failed} failed",
            ),
            ("bytes", f"{_size(counts.bytes_read)} read, {_size(counts.bytes_written)} written"),
            ("time", f"{seconds:.1f} s"),
        ]
        if summary.since is not None:
            pairs.append(("since", _when(summary.since)))
        out.fields("run summary", pairs)
        for note in summary.notes:
            out.say(f"note: {note}")
    shown = summary.errors[:MAX_ERRORS_SHOWN]
    more = len(summary.errors) - len(shown) + summary.errors_dropped
    if failed:
        out.error(f"task {summary.task_id} FAILED")
    elif shown:
        out.note(f"warning: finished with {len(summary.errors) + summary.errors_dropped} errors")
    tell = out.detail if failed else out.note
    for problem in shown:
        tell(f"  {problem.scope} {problem.key}: {problem.message}")
    if more > 0:
        tell(f"  … and {more} more (--json lists every error the summary holds)")
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_run(args: argparse.Namespace, out: Output) -> int:
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(out.progress())
        engine = _engine(stack, args, restore=True, on_progress=bar)
        # A restore task needs a Target; a backup task only a Source. Check after reading it.
        task: BackupTask = engine.get_task(args.task_id)
        if task.type.value == "DATA_RESTORE" and engine.target is None:
            raise UsageError(f"repository {args.repository!r} cannot be restored into")
        summary = engine.execute(args.task_id)
    return _summary(summary, args, out)


def _cmd_verify(args: argparse.Namespace, out: Output) -> int:
    from .._archive.verify import verify

    report = verify(args.location)
    if args.json:
        out.json(to_json(report))
    elif report.ok:
        out.say(
            f"ok: {args.location}: {report.members} members, {report.records} records and "
            f"{report.blobs} blobs match their hashes"
            + (f" ({len(report.backups)} backups)" if len(report.backups) > 1 else "")
        )
    else:
        out.table(
            f"{len(report.problems) + report.problems_dropped} problem(s) in {args.location}",
            ["backup", "member", "problem"],
            [[p.backup, p.member, p.message] for p in report.problems],
        )
        if report.problems_dropped:
            out.say(f"… and {report.problems_dropped} more")
    if not report.ok:
        out.error(f"{args.location} did not verify")
    return EXIT_OK if report.ok else EXIT_FAILED


def _backups_in(location: str) -> list[tuple[str, str]]:
    """The backups in a task folder by name, with whether each is complete."""
    from .._archive.catalog import describe

    return describe(location)


def _cmd_ls(args: argparse.Namespace, out: Output) -> int:
    from .._archive.catalog import open_backup_chain

    chain = open_backup_chain(args.location)
    try:
        if args.json:
            out.json([{"location": r.location, "manifest": r.manifest} for r in chain])
            return EXIT_OK
        is_folder = len(chain) > 1 or chain[-1].location.rstrip("/") != args.location.rstrip("/")
        if is_folder:
            out.table(
                f"backups in {args.location}",
                ["backup", "status"],
                [list(row) for row in _backups_in(args.location)],
            )
            out.say(f"a restore from {args.location} applies, oldest first:")
        for reader in chain:
            _show_backup(reader.location, reader.manifest, out)
    finally:
        for reader in chain:
            reader.close()
    return EXIT_OK


def _show_backup(location: str, manifest: Mapping[str, Any], out: Output) -> None:
    blobs = manifest.get("blobs") if isinstance(manifest.get("blobs"), dict) else {}
    assert isinstance(blobs, dict)
    projects = manifest.get("projects") if isinstance(manifest.get("projects"), dict) else {}
    assert isinstance(projects, dict)
    members = [m for m in manifest.get("members", []) if isinstance(m, dict)]
    failed = blobs.get("failed") or []
    pairs = [
        ("location", location),
        ("task", f"{manifest.get('taskName', '')} ({manifest.get('taskId', '')})"),
        ("kind", str(manifest.get("kind", ""))),
        ("created", str(manifest.get("created", ""))),
        ("completed", str(manifest.get("completed", ""))),
        ("compression", str(manifest.get("compression", False)).lower()),
        ("common data", str(manifest.get("commonData", False)).lower()),
        ("projects", f"{len(projects)} ({sum(len(r) for r in projects.values())} repositories)"),
        ("records", str(sum(int(m.get("records", 0)) for m in members))),
        ("blobs", f"{blobs.get('count', 0)} ({_size(int(blobs.get('bytes', 0)))})"),
    ]
    if manifest.get("since"):
        pairs.append(("since", str(manifest["since"])))
        pairs.append(("follows", str(manifest.get("follows") or "")))
    if failed:
        pairs.append(("failed blobs", str(len(failed))))
    pairs.append(("format", f"{manifest.get('format')} ({manifest.get('generator', '')})"))
    out.fields(str(manifest.get("name", location)), pairs)
    out.table(
        "members",
        ["member", "records", "tombstones", "size"],
        [
            [
                str(m.get("path", "")),
                str(m.get("records", "")),
                str(m.get("tombstones", "")),
                _size(int(m.get("size", 0))),
            ]
            for m in members
        ],
    )


def _cmd_tasks(args: argparse.Namespace, out: Output) -> int:
    from .._backends.registry import sqlite_path
    from .._tasks.store import SqliteTaskStore

    path = args.tasks_db
    if path is None:
        database = sqlite_path(args.repository)
        if database is None:
            raise UsageError(
                f"{args.repository!r} is not a SQLite repository: give --tasks-db PATH"
            )
        path = f"{database}.tasks.sqlite"
    if not Path(path).is_file():
        # Listing must not create an empty database where a typo pointed.
        raise UsageError(
            f"no task database at {path!r}; a backup or restore with that repository "
            "creates it (or name it with --tasks-db)"
        )
    with SqliteTaskStore(path) as store:
        if args.task_id is not None:
            return _show_task(store.get(args.task_id), store.runs(args.task_id), args, out)
        state = TaskState(args.state) if args.state else None
        page = store.list(state, args.page, args.page_size)
    if args.json:
        out.json(to_json(page))
        return EXIT_OK
    out.table(
        f"tasks (page {page.page_number} of {max(page.total_pages, 1)}, "
        f"{page.total_records} in all)",
        ["id", "name", "type", "state", "created", "ended", "location"],
        [
            [
                t.id or "",
                t.name,
                "backup" if t.type.value == "DATA_BACKUP" else "restore",
                t.state.value,
                _when(t.created_date),
                _when(t.end_date),
                (t.last_run.location if t.last_run and t.last_run.location else t.store_location),
            ]
            for t in page.records
        ],
    )
    return EXIT_OK


def _show_task(
    task: BackupTask, runs: Sequence[RunSummary], args: argparse.Namespace, out: Output
) -> int:
    if args.json:
        out.json({"task": to_json(task), "runs": to_json(list(runs))})
        return EXIT_OK
    setting = task.backup_setting
    out.fields(
        f"task {task.id}",
        [
            ("name", task.name),
            ("type", task.type.value),
            ("state", task.state.value),
            ("storeLocation", task.store_location),
            ("content", json.dumps(to_json(task.content), ensure_ascii=False)),
            ("strategy", setting.execution_strategy.value),
            ("created", f"{_when(task.created_date)} by {task.created_by or ''}"),
        ],
    )
    out.table(
        "runs (newest first)",
        ["started", "ended", "state", "records", "blobs", "errors", "location"],
        [
            [
                _when(r.started),
                _when(r.ended),
                r.state.value,
                str(r.counts.records_written),
                str(r.counts.blobs_written),
                str(len(r.errors) + r.errors_dropped),
                r.location or "",
            ]
            for r in runs
        ],
    )
    return EXIT_OK


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request, so a slow client does not block the rest."""

    daemon_threads = True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Stop(BaseException):
    """SIGTERM: leave the serving loop the way Ctrl-C does."""


def _cmd_serve(args: argparse.Namespace, out: Output) -> int:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from .._engine.scheduler import Scheduler
    from ..adapters.wsgi import bearer_token_authorizer, make_app

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and len(token.strip()) < MIN_TOKEN:
        raise UsageError(f"the bearer token must be at least {MIN_TOKEN} characters")
    if token is None and not _is_loopback(args.host):
        raise UsageError(
            f"refusing to serve on {args.host} without a bearer token: anyone who reaches it "
            f"could restore over your data. Set {TOKEN_ENV} (or --token) and send "
            "'Authorization: Bearer <token>'"
        )
    with contextlib.ExitStack() as stack:
        engine = _engine(stack, args, restore=False)
        authorize = bearer_token_authorizer(token) if token is not None else None
        app = make_app(engine, authorize=authorize)
        try:
            server = make_server(
                args.host,
                args.port,
                app,
                server_class=_ThreadingServer,
                handler_class=WSGIRequestHandler,
            )
        except OSError as exc:
            raise UsageError(f"cannot bind {args.host}:{args.port}: {exc.strerror}") from None
        stack.callback(server.server_close)
        scheduler = Scheduler(engine)
        scheduler.start()
        stack.callback(scheduler.stop)
        host, port = str(server.server_address[0]), int(server.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        out.say(f"serving http://{shown}:{port}/job/api/job/backup")
        out.note(
            "scheduler running; "
            + ("bearer token required" if token else "no token: local callers only")
            + "; Ctrl-C stops"
        )
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            server.serve_forever()
        except (KeyboardInterrupt, _Stop):
            out.note("stopping: waiting for running tasks to end")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def _raise_stop(signum: int, frame: FrameType | None) -> NoReturn:
    raise _Stop


# --------------------------------------------------------------------------------------------
# Entry point


class _LogFormatter(logging.Formatter):
    """Log lines as ``warning: message``; the traceback only with --debug."""

    def __init__(self, debug: bool) -> None:
        super().__init__("%(levelname)s: %(message)s")
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            if self.debug:
                return text + "\n" + self.formatException(record.exc_info)
            error = record.exc_info[1]
            text += f" ({type(error).__name__}: {error})"
        return text


_COMMANDS: dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "demo": _cmd_demo,
    "backup": lambda args, out: _cmd_task(args, out, backup=True),
    "restore": lambda args, out: _cmd_task(args, out, backup=False),
    "run": _cmd_run,
    "verify": _cmd_verify,
    "ls": _cmd_ls,
    "tasks": _cmd_tasks,
    "serve": _cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with *argv* (default: ``sys.argv[1:]``); return the exit code.

    0 success; 1 a task FAILED, a backup did not verify, or another error; 2 bad options or
    an invalid task (every problem listed with its JSON path); 3 no such task; 130 Ctrl-C.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse reported
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(plain=args.plain, quiet=args.quiet)
    handler = logging.StreamHandler(out.stderr)
    handler.setFormatter(_LogFormatter(args.debug))
    previous_level, previous_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    log.propagate = False
    try:
        return _run(args, out)
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)
        log.propagate = previous_propagate


def _run(args: argparse.Namespace, out: Output) -> int:  # noqa: PLR0911 - one exit per error kind
    try:
        return _COMMANDS[args.command](args, out)
    except KeyboardInterrupt:
        out.error("interrupted; an unfinished backup is removed, never left looking complete")
        return EXIT_INTERRUPTED
    except UsageError as exc:
        out.error(str(exc))
        return EXIT_USAGE
    except ValidationError as exc:
        out.error(f"invalid {args.command} task ({len(exc.problems)} problem(s)):")
        for problem in exc.problems:
            out.detail(f"  {problem.path}: {problem.message}")
            if problem.path == "$.content" and args.command in ("backup", "restore"):
                out.detail(f"    (give {_CONTENT_OPTIONS})")
        return EXIT_USAGE
    except TaskNotFoundError as exc:
        out.error(exc.message)
        return EXIT_NOT_FOUND
    except RepoBackupError as exc:
        out.error(exc.message)
        _debug_trace(args, out)
        return EXIT_FAILED
    except OSError as exc:
        out.error(str(exc))
        _debug_trace(args, out)
        return EXIT_FAILED
    except Exception as exc:
        out.error(
            f"{type(exc).__name__}: {exc}"
            + ("" if args.debug else " (--debug shows the traceback)")
        )
        _debug_trace(args, out)
        return EXIT_FAILED


def _debug_trace(args: argparse.Namespace, out: Output) -> None:
    if args.debug:
        out.detail(traceback.format_exc().rstrip())


if __name__ == "__main__":
    sys.exit(main())
