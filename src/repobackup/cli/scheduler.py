"""`repobackup scheduler`: run due tasks with no HTTP, a line logged as each run starts and
ends; `--once` runs what is due now and exits, for a crontab line or a systemd timer."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from .exits import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TERMINATED,
    Terminated,
    UsageError,
)
from .opening import open_engine
from .options import Parents
from .output import Output, plural
from .passwords import add_password_option
from .runlog import LOG_FORMATS, RunLog

__all__ = ["STOP_TIMEOUT", "register", "scheduling", "stop_runs"]

#: Seconds a stopped scheduler waits for the runs it cancelled to end (below systemd's 90).
STOP_TIMEOUT = 30.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600, got {value}")
    return value


def register(commands: Any, parents: Parents) -> None:
    """Add `scheduler` to the subparsers *commands*."""
    command = commands.add_parser(
        "scheduler",
        parents=[parents.common, parents.repository],
        help="run due tasks (no HTTP); --once for cron or a systemd timer",
        description="Run the tasks of the task database when their schedule says they are "
        "due, logging one line on stdout as each run starts and one as it ends. Without "
        "--once it runs until SIGTERM or Ctrl-C (a run under way is let finish); with "
        "--once it starts what is due now, waits for it and exits: 0 when every run "
        "finished clean (or none was due), 3 when one finished with errors, 1 when one "
        "failed. SIGTERM or Ctrl-C cancels the runs under way (each ends FAILED, leaving "
        "nothing that looks complete) and exits 143 or 130 once they have ended; a second "
        "signal, or --stop-timeout, exits without waiting. Several schedulers may share a "
        "task database: each run is started by one.",
    )
    command.add_argument("--once", action="store_true", help="run what is due now, then exit")
    command.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text lines (default) or JSON lines",
    )
    command.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write the Prometheus metrics here after each run (atomically), for "
        "node_exporter's textfile collector (needs repobackup[metrics])",
    )
    command.add_argument(
        "--poll",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how often to look for due tasks (default 5)",
    )
    command.add_argument(
        "--stop-timeout",
        type=_seconds,
        default=STOP_TIMEOUT,
        metavar="SECONDS",
        help="on SIGTERM or Ctrl-C, how long to wait for the cancelled runs to end before "
        f"exiting anyway (default {STOP_TIMEOUT:g})",
    )
    # Scheduled tasks may write encrypted backups: the passphrase for them.
    add_password_option(command)
    command.set_defaults(handler=_scheduler)


def _check_metrics(path: str | None) -> None:
    if path is None:
        return
    from ..adapters.metrics import INSTALL_HINT

    try:
        import prometheus_client  # noqa: F401 - only asking whether it imports
    except ImportError:
        raise UsageError(f"--metrics-file needs prometheus_client: {INSTALL_HINT}") from None


def _scheduler(args: argparse.Namespace, out: Output) -> int:
    from .._engine.scheduler import Scheduler

    _check_metrics(args.metrics_file)
    log = RunLog(out, json=args.log_format == "json", metrics_file=args.metrics_file)
    code = EXIT_OK
    with contextlib.ExitStack() as stack:
        # The repository is a source of backups: a missing one is an error, never created.
        engine = open_engine(
            stack, args, restore=False, on_start=log.started, on_finish=log.finished
        )
        log.engine = engine
        if args.metrics_file is not None:
            log.write_metrics()
        scheduler = Scheduler(engine, poll_seconds=args.poll)
        started: list[str] = []
        try:
            if args.once:
                started = scheduler.run_pending()
                if not started:
                    log.note("nothing due")
            else:
                log.note(f"scheduler running, looking for due tasks every {args.poll:g}s")
                scheduling(scheduler, log, threading.Event())
            engine.close()  # waits for the runs it started
        except Terminated:
            code = stop_runs(log, engine, "SIGTERM", EXIT_TERMINATED, args.stop_timeout)
        except KeyboardInterrupt:
            code = stop_runs(log, engine, "Ctrl-C", EXIT_INTERRUPTED, args.stop_timeout)
    if code == EXIT_OK and args.once:
        return _once_outcome(log, started)
    return code


def stop_runs(
    log: RunLog,
    engine: Any,
    signal_name: str,
    code: int,
    timeout: float,
    *,
    who: str = "the scheduler",
) -> int:
    """SIGTERM or Ctrl-C: start nothing more, cancel the runs under way and wait for them to
    end (at most *timeout* seconds; each writes its end line, FAILED), then return *code*.

    A second SIGTERM or Ctrl-C while they end, or the timeout, exits with *code* at once,
    as a kill would: a run still going is left RUNNING with its unfinished backup hidden,
    and the next scheduler or command ends it FAILED and removes what it left."""
    running = engine.running()
    log.note(
        f"stopping ({signal_name}): no new runs"
        + (f"; cancelling {plural(len(running), 'run')} under way" if running else "")
    )
    previous = _exit_on_signal(log, code)
    try:
        ended = engine.close(
            cancel=True, reason=f"{who} was stopped by {signal_name}", timeout=timeout
        )
        if not ended:
            _exit_now(log, code, f"runs still under way after {timeout:g}s")
    finally:
        _restore_signals(previous)
    log.note("stopped")
    return code


def _exit_now(log: RunLog, code: int, why: str) -> None:
    left = log.engine.running() if log.engine is not None else []
    log.note(
        f"exiting without waiting ({why}): {', '.join(left) or 'no run'} left; the next "
        "start ends it FAILED and removes what it left"
    )
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    # The run threads cannot be stopped from outside; leaving as a kill would is the
    # documented way out, and recovery makes it safe.
    os._exit(code)


def _exit_on_signal(log: RunLog, code: int) -> dict[int, Any]:
    """Make a second SIGTERM or Ctrl-C exit at once; the handlers it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        _exit_now(log, code, f"a second {signal.Signals(signum).name}")

    return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def scheduling(scheduler: Any, log: RunLog, stopping: threading.Event) -> None:
    """Start due tasks every `poll_seconds` until *stopping* is set; a failure to look (a task
    database briefly locked) is logged and tried again at the next poll."""
    while not stopping.is_set():
        try:
            scheduler.run_pending()
        except Exception as exc:
            log.out.error(f"looking for due tasks failed: {type(exc).__name__}: {exc}")
        stopping.wait(scheduler.poll_seconds)


def _once_outcome(log: RunLog, started: list[str]) -> int:
    codes = [log.outcomes.get(task_id, EXIT_FAILED) for task_id in started]
    if EXIT_FAILED in codes:
        return EXIT_FAILED
    if EXIT_PARTIAL in codes:
        return EXIT_PARTIAL
    return EXIT_OK
