"""The command line's exit codes (stable, see docs/cli.md), the usage error, and SIGTERM
handled like Ctrl-C so that a stopped run ends FAILED and leaves nothing looking complete."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from .._model.task import RunSummary, TaskState

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Terminated",
    "UsageError",
    "run_outcome",
    "terminate_like_interrupt",
]

EXIT_OK = 0  # finished with no error (verify: the backup is sound)
EXIT_FAILED = 1  # the task ended FAILED, or a fatal error (verify: problems found)
EXIT_USAGE = 2  # bad options, an invalid task, an unknown or ambiguous task id
EXIT_PARTIAL = 3  # finished, but some records or blobs failed (errorStrategy CONTINUE)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM): systemd stop, timeout, kill


class UsageError(Exception):
    """A command line that cannot work as given; exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be: every cleanup that Ctrl-C gets runs for it."""


def run_outcome(summary: RunSummary) -> int:
    """The exit code of a run: 1 FAILED, 3 FINISHED with errors, 0 FINISHED clean."""
    if summary.state is TaskState.FAILED:
        return EXIT_FAILED
    counts = summary.counts
    if summary.errors or summary.errors_dropped or counts.records_failed or counts.blobs_failed:
        return EXIT_PARTIAL
    return EXIT_OK


@contextlib.contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` in the main thread (once: a second SIGTERM
    during the cleanup the first one started is ignored, so the cleanup can finish)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> Any:
        nonlocal fired
        if not fired:
            fired = True
            raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
