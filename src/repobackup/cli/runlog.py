"""`RunLog`: one line when a run starts and one when it ends (state, counts, duration, first
error), as text or JSON lines, with the metrics file rewritten after each run."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._model.task import BackupTask, RunSummary, TaskState
from .exits import run_outcome
from .output import Output, plural, schedule, size

if TYPE_CHECKING:
    from .._engine.engine import Engine

__all__ = ["LOG_FORMATS", "RunLog"]

LOG_FORMATS = ("text", "json")


def _stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now().astimezone()).isoformat(timespec="seconds")


def _kind(task: BackupTask) -> str:
    return "backup" if task.type.value == "DATA_BACKUP" else "restore"


class RunLog:
    """Writes the start and end lines of runs on stdout, where systemd's journal and cron's
    mail pick them up; *json* for one JSON object a line. Give `started` to the engine as
    ``on_start`` and `finished` as ``on_finish``: the engine calls them from the run's own
    thread, as the run starts and as it ends, so that the start of a run always comes
    before its end. The exit code of every run ended is kept in `outcomes` by task id.

    With *metrics_file*, the Prometheus text of the task store is written there (atomically)
    after every run, for node_exporter's textfile collector."""

    def __init__(self, out: Output, *, json: bool = False, metrics_file: str | None = None):
        self.out = out
        self.json = json
        self.metrics_file = metrics_file
        self.engine: Engine | None = None
        self.outcomes: dict[str, int] = {}
        self._lock = threading.Lock()

    def started(self, task: BackupTask, trigger: str) -> None:
        """The line for a run that has just started: the task, its kind, how it was
        started (*trigger*: ``schedule``, ``manual``, ``api``) and its execution plan."""
        if self.json:
            self.out.json_line(
                {
                    "time": _stamp(),
                    "event": "start",
                    "taskId": task.id,
                    "name": task.name,
                    "type": task.type.value,
                    "kind": _kind(task),
                    "trigger": trigger,
                    "plan": schedule(task),
                    "storeLocation": task.store_location,
                }
            )
        else:
            self.out.say(
                f"{_stamp()} start {_kind(task)} {task.name!r} (task {task.id}) "
                f"to {task.store_location}, trigger {trigger} ({schedule(task)})"
            )

    def finished(self, task: BackupTask, summary: RunSummary) -> None:
        """The line for a run that has ended; the engine's ``on_finish``."""
        if self.json:
            self.out.json_line(_end_json(task, summary))
        else:
            self.out.say(_end_text(task, summary))
        if self.metrics_file is not None and self.engine is not None:
            self.write_metrics()
        with self._lock:
            self.outcomes[summary.task_id] = run_outcome(summary)

    def write_metrics(self) -> None:
        """Rewrite the metrics file (a failure is logged, never fatal to the runs)."""
        from ..adapters.metrics import write_metrics_file

        assert self.engine is not None
        assert self.metrics_file is not None
        try:
            write_metrics_file(self.engine.tasks, self.metrics_file)
        except OSError as exc:
            self.out.error(f"cannot write the metrics file {self.metrics_file}: {exc}")

    def note(self, text: str, **fields: Any) -> None:
        """A line about the scheduler itself (started, stopping, nothing due)."""
        if self.json:
            self.out.json_line({"time": _stamp(), "event": "scheduler", "message": text, **fields})
        else:
            self.out.say(f"{_stamp()} {text}")


def _first_error(summary: RunSummary) -> str | None:
    if not summary.errors:
        return None
    first = summary.errors[0]
    if first.scope == "task":  # the run as a whole: the line names the task already
        return first.message
    where = " ".join(part for part in (first.scope, first.key) if part)
    return f"{where}: {first.message}" if where else first.message


def _duration(summary: RunSummary) -> float:
    ended = summary.ended or summary.started
    return round((ended - summary.started).total_seconds(), 3)


def _error_count(summary: RunSummary) -> int:
    return len(summary.errors) + summary.errors_dropped


def _end_text(task: BackupTask, summary: RunSummary) -> str:
    counts = summary.counts
    text = (
        f"{_stamp(summary.ended)} end {_kind(task)} {task.name!r} (task {summary.task_id}) "
        f"{summary.state.value} in {_duration(summary):.1f}s: "
        f"{plural(counts.records_written, 'record')}, {plural(counts.blobs_written, 'blob')} "
        f"({size(counts.bytes_written)} written), {plural(_error_count(summary), 'error')}"
    )
    if summary.state is TaskState.FINISHED and summary.location:
        text += f"; at {summary.location}"
    if (first := _first_error(summary)) is not None:
        text += f"; first error: {first}"
    return text


def _end_json(task: BackupTask, summary: RunSummary) -> dict[str, Any]:
    from .._model.convert import to_json

    return {
        "time": _stamp(summary.ended),
        "event": "end",
        "taskId": summary.task_id,
        "name": task.name,
        "type": task.type.value,
        "state": summary.state.value,
        "exitCode": run_outcome(summary),
        "durationSeconds": _duration(summary),
        "counts": to_json(summary.counts),
        "errors": _error_count(summary),
        "firstError": _first_error(summary),
        "location": summary.location,
    }
