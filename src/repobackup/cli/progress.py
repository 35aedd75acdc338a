"""Progress of a run or a verify while it goes: a rich bar on a terminal (bytes and files
against their totals, rate, ETA, binary units), one line per phase without rich, and
restic-style JSON status lines for --json."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, Protocol

import attrs

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


__all__ = ["Status", "files_text", "json_status", "plain_progress", "rich_progress"]

# What the pipeline's phase names mean to someone watching.
_PHASES = {
    "estimate": "sizing",
    "records": "records",
    "blobs": "files",
    "commit": "committing",
    "restore": "restoring",
    "done": "done",
}


def files_text(event: Progress) -> str:
    """Files done against their total where it is known: ``1,234/12,815 files``, else
    ``1,234 files``; the records instead while no file is done and none is expected."""
    if event.total_files is not None:
        return (
            f"{event.files:,}/{event.total_files:,} {'file' if event.total_files == 1 else 'files'}"
        )
    if event.files == 0 and event.records:
        return plural(event.records, "record")
    return f"{event.files:,} {'file' if event.files == 1 else 'files'}"


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
        TextColumn("{task.description:<17}"),
        BarColumn(bar_width=24),
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
    job = bar.add_task(what, total=None, files="0 files", average=None)
    last: list[Progress] = []

    def update(event: Progress) -> None:
        phase = _PHASES.get(event.phase, event.phase)
        last[:] = [event]
        total = event.total_bytes
        if total is not None and phase != "done" and event.bytes >= total:
            total = event.bytes + 1  # still at work (committing): no ✓ before the end
        bar.update(
            job,
            description=f"{what} {phase}" if phase != "done" else f"{what} done",
            completed=event.bytes,
            total=total,
            files=files_text(event),
        )

    began = time.monotonic()

    def finish() -> None:
        # A clean last line: a full bar at what was reached, with the average rate, and the
        # files reached (a total that was an estimate gives way to what was done).
        reached = bar.tasks[0].completed
        seconds = max(time.monotonic() - began, 1e-3)
        files = bar.tasks[0].fields["files"]
        if last:
            files = files_text(attrs.evolve(last[0], total_files=last[0].files))
            if not last[0].files and last[0].records:
                files = plural(last[0].records, "record")
        bar.update(
            job,
            total=max(reached, 1),
            completed=max(reached, 1),
            average=reached / seconds,
            files=files,
        )
        bar.stop_task(job)
        bar.stop()

    with bar, output.live(console, finish):
        yield update


class _PlainProgress:
    """Progress as one line per phase, for a terminal without rich (or with --plain)."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.phase: str | None = None

    def update(self, event: Progress) -> None:
        if event.phase != self.phase:
            self.phase = event.phase
            total = f" of {size(event.total_bytes)}" if event.total_bytes is not None else ""
            self.output.note(
                f"… {_PHASES.get(event.phase, event.phase)}: {plural(event.records, 'record')}, "
                f"{files_text(event)}, {size(event.bytes)}{total}"
            )


def plain_progress(output: Output) -> Callable[[Progress], None]:
    """The plain-text progress callback."""
    return _PlainProgress(output).update


@attrs.frozen
class Status:
    """One ``status`` line of --json, as restic's status message (in our camelCase): the
    files and bytes done against their totals where known, the fraction done, the seconds
    taken and, while it can be told, the seconds left."""

    message_type: str
    task_id: str | None
    phase: str
    seconds_elapsed: float
    records_done: int
    files_done: int
    bytes_done: int
    total_files: int | None = None
    total_bytes: int | None = None
    percent_done: float | None = None
    seconds_remaining: float | None = None

    @classmethod
    def of(cls, event: Progress, elapsed: float) -> Status:
        done: float | None = None
        if event.total_bytes:
            done = min(event.bytes / event.total_bytes, 1.0)
        elif event.total_files:
            done = min(event.files / event.total_files, 1.0)
        elif event.total_bytes == 0 or event.total_files == 0:
            done = 1.0  # nothing to copy: done as soon as it starts
        remaining = None
        if done is not None and 0 < done < 1:
            remaining = round(elapsed * (1 - done) / done, 1)
        return cls(
            message_type="status",
            task_id=event.task_id,
            phase=event.phase,
            seconds_elapsed=round(elapsed, 3),
            records_done=event.records,
            files_done=event.files,
            bytes_done=event.bytes,
            total_files=event.total_files,
            total_bytes=event.total_bytes,
            percent_done=None if done is None else round(done, 4),
            seconds_remaining=remaining,
        )


def json_status(output: Output) -> Callable[[Progress], None]:
    """Progress as JSON lines on stdout, as restic's ``status`` messages (see `Status`);
    what is not known (a total, the time left, a verify's task id) is left out."""
    from .._model.convert import to_json

    began = time.monotonic()

    def update(event: Progress) -> None:
        line = to_json(Status.of(event, time.monotonic() - began))
        output.json_line({name: value for name, value in line.items() if value is not None})

    return update
