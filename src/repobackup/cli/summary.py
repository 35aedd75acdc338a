"""Running a task now and reporting its run: the summary table (or JSON), its errors, and
the exit code that says the same as the summary does."""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any

from .._model.convert import to_json
from .._model.task import RunSummary
from .exits import EXIT_FAILED, EXIT_PARTIAL, run_outcome
from .output import Output, plural, size, when

if TYPE_CHECKING:
    from .._engine.engine import Engine

__all__ = ["MAX_ERRORS_SHOWN", "execute", "report", "summary_json"]

MAX_ERRORS_SHOWN = 20

# Notes that only --verbose shows: true of every run on such a store, so not news each night.
_VERBOSE_NOTES = ("cannot be known",)


def execute(engine: Engine, task_id: str, args: argparse.Namespace, out: Output) -> int:
    """Run the task in this process and report it; return the run's exit code.

    Ctrl-C or SIGTERM goes through (the engine ends the run FAILED first); with --json the
    run it recorded is printed before, so that a script sees the same outcome."""
    began = engine.now()
    try:
        summary = engine.execute(task_id)
    except KeyboardInterrupt:
        if args.json:
            with contextlib.suppress(Exception):
                last = engine.get_task(task_id).last_run
                # Only this run's summary: an interrupt before it started leaves the last one.
                if last is not None and last.ended is not None and last.ended >= began:
                    out.json_line(summary_json(last))
        raise
    return report(summary, args, out)


def summary_json(summary: RunSummary) -> dict[str, Any]:
    """The run summary as --json's last line: restic's ``summary`` message, after the
    ``status`` lines of the run (`progress.json_status`)."""
    return {"messageType": "summary", **to_json(summary)}


def _pairs(summary: RunSummary) -> list[tuple[str, str]]:
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
        ("bytes", f"{size(counts.bytes_read)} read, {size(counts.bytes_written)} written"),
        ("time", f"{seconds:.1f} s"),
    ]
    if summary.since is not None:
        pairs.append(("since", when(summary.since)))
    return pairs


def report(summary: RunSummary, args: argparse.Namespace, out: Output) -> int:
    """Print *summary* (a table, or its JSON) and its errors; return its exit code."""
    code = run_outcome(summary)
    out.end_progress()  # the bar's clean last line, then the summary under it
    if args.json:
        out.json_line(summary_json(summary))
    else:
        out.fields("run summary", _pairs(summary))
        for note in summary.notes:
            if any(marker in note for marker in _VERBOSE_NOTES):
                out.info(f"note: {note}")
            else:
                out.say(f"note: {note}")
    errors = len(summary.errors) + summary.errors_dropped
    shown = summary.errors[:MAX_ERRORS_SHOWN]
    more = errors - len(shown)
    if code == EXIT_FAILED:
        out.error(f"task {summary.task_id} FAILED")
    elif code == EXIT_PARTIAL:
        out.note(f"warning: finished with {plural(errors, 'error')}")
    tell = out.detail if code == EXIT_FAILED else out.note
    for problem in shown:
        tell(f"  {problem.scope} {problem.key}: {problem.message}")
    if more > 0:
        tell(f"  … and {more} more (--json lists every error the summary holds)")
    return code
