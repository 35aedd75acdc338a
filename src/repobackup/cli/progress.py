"""Progress of a run while it goes: a rich bar on a terminal (bytes and files, total, rate, ETA,
binary units), one line per phase without rich, and restic-style JSON status lines for --json."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, Protocol

from .words import plural, size

if TYPE_CHECKING:
    from .._pipeline.tally import Progress


class Output(Protocol):
    """What progress needs of `output.Output` (named here so the two modules stay apart)."""

    def live(
        self, console: Any, finish: Callable[[], None]
    ) -> contextlib.AbstractContextManager[None]: ...

    def note(self, text: str) -> None: ...

    def json_line(self, data: Any) -> None: ...


__all__ = ["json_status", "plain_progress", "rich_progress", "rich_spinner"]

# What the pipeline's phase names mean to someone watching.
_PHASES = {
    "estimate": "sizing",
    "records": "records",
    "blobs": "files",
    "commit": "committing",
    "restore": "restoring",
    "done": "done",
}


def _binary_speed_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class BinarySpeed(ProgressColumn):  # rich's own TransferSpeedColumn counts in MB
        def render(self, task: Any) -> Text:
            speed = task.fields.get("average") or task.finished_speed or task.speed
            shown = "?" if speed is None else f"{size(int(speed))}/s"
            return Text(shown, style="progress.data.speed")

    return BinarySpeed()


@contextlib.contextmanager
def rich_progress(
    output: Output, stream: IO[str], what: str
) -> Iterator[Callable[[Progress], None]]:
    """A rich bar on *stream* for a run of *what*; notes written meanwhile go above it (the
    bar is never broken), and it ends as one clean line with the figures it reached."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    console = Console(file=stream, highlight=False, markup=False, emoji=False)
    bar = Bar(
        SpinnerColumn(finished_text="✓"),
        TextColumn("{task.description:<10}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        _binary_speed_column(),
        TextColumn("{task.fields[files]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    job = bar.add_task(what, total=None, files=plural(0, "record"), average=None)

    def update(event: Progress) -> None:
        phase = _PHASES.get(event.phase, event.phase)
        bar.update(
            job,
            description=f"{what} {phase}" if phase != "done" else f"{what} done",
            completed=event.bytes,
            total=event.total_bytes,
            files=plural(event.records, "record"),
        )

    began = time.monotonic()

    def finish() -> None:
        # A clean last line: a full bar at what was reached, with the average rate.
        reached = bar.tasks[0].completed
        seconds = max(time.monotonic() - began, 1e-3)
        bar.update(job, total=max(reached, 1), completed=max(reached, 1), average=reached / seconds)
        bar.stop_task(job)
        bar.stop()

    with bar, output.live(console, finish):
        yield update


@contextlib.contextmanager
def rich_spinner(output: Output, stream: IO[str], text: str) -> Iterator[None]:
    """A spinner with the elapsed time, for work that reports no progress (verify)."""
    from rich.console import Console
    from rich.progress import Progress as Bar
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(file=stream, highlight=False, markup=False, emoji=False)
    bar = Bar(
        SpinnerColumn(finished_text="✓"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    job = bar.add_task(text, total=None)

    def finish() -> None:
        bar.update(job, total=1, completed=1)
        bar.stop_task(job)
        bar.stop()

    with bar, output.live(console, finish):
        yield


class _PlainProgress:
    """Progress as one line per phase, for a terminal without rich (or with --plain)."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.phase: str | None = None

    def update(self, event: Progress) -> None:
        if event.phase != self.phase:
            self.phase = event.phase
            total = f" of {size(event.total_bytes)}" if event.total_bytes else ""
            self.output.note(
                f"… {_PHASES.get(event.phase, event.phase)}: "
                f"{plural(event.records, 'record')}, {size(event.bytes)}{total}"
            )


def plain_progress(output: Output) -> Callable[[Progress], None]:
    """The plain-text progress callback."""
    return _PlainProgress(output).update


def json_status(output: Output) -> Callable[[Progress], None]:
    """Progress as JSON lines on stdout, as restic's ``status`` messages: the phase, bytes
    and records done, the total and percent where known, seconds elapsed and remaining."""
    began = time.monotonic()

    def update(event: Progress) -> None:
        elapsed = time.monotonic() - began
        line: dict[str, Any] = {
            "messageType": "status",
            "taskId": event.task_id,
            "phase": event.phase,
            "secondsElapsed": round(elapsed, 3),
            "bytesDone": event.bytes,
            "recordsDone": event.records,
        }
        if event.total_bytes:
            done = min(event.bytes / event.total_bytes, 1.0)
            line["totalBytes"] = event.total_bytes
            line["percentDone"] = round(done, 4)
            if 0 < done < 1:
                line["secondsRemaining"] = round(elapsed * (1 - done) / done, 1)
        output.json_line(line)

    return update
