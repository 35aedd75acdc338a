"""Where a command writes: results on stdout, notes, errors and progress on stderr.

rich draws tables and progress bars on a terminal when installed; pipes and logs get plain text.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import attrs

from .._model.task import BackupTask, ExecutionStrategy
from .words import plural, size

if TYPE_CHECKING:
    from .._pipeline.tally import Progress

__all__ = ["Column", "Output", "plural", "schedule", "size", "when"]

PLAIN_WIDTH = 120
"""The width a plain table is fitted to, so that a listing reads in a 120-column terminal."""
MIN_CUT = 4  # a column cut narrower than this says nothing


def when(value: Any) -> str:
    """An aware datetime to the second, or "" for None."""
    return "" if value is None else value.isoformat(timespec="seconds")


def schedule(task: BackupTask) -> str:
    """A task's execution plan in a few words: ``cron 0 2 * * *``, ``at <time>``, or
    ``immediately``."""
    setting = task.backup_setting
    plan = setting.execution_plan
    if setting.execution_strategy is ExecutionStrategy.CRON_EXPRESSION:
        return f"cron {plan.cron_expression}"
    if setting.execution_strategy is ExecutionStrategy.SPECIFIED_TIME:
        return f"at {when(plan.execute_time)}"
    return "immediately"


@attrs.frozen
class Column:
    """A table heading; *shrink* columns give up width (cut with ``…``) to fit the table."""

    title: str
    shrink: bool = False
    min_width: int = 8
    keep_end: bool = False  # cut the start instead: the end of a path says the most


def _cut(text: str, width: int, *, keep_end: bool) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return "…" + text[-(width - 1) :] if keep_end else text[: width - 1] + "…"


def _natural_widths(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[int]:
    widths = [len(c.title) for c in columns]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return widths


def _fit(
    columns: Sequence[Column], widths: list[int], limit: int, *, overhead: int = 2
) -> list[int]:
    """Narrow the widest shrinkable columns until the table fits *limit* characters, each
    column taking *overhead* more (the gap of plain text, the borders and padding of rich).
    Down to each column's `min_width` first; below it only when the table still does not
    fit (a narrow terminal)."""
    widths = list(widths)
    for floor in (None, MIN_CUT):
        while sum(widths) + overhead * len(widths) + 1 > limit:
            candidates = [
                i
                for i, c in enumerate(columns)
                if c.shrink and widths[i] > (c.min_width if floor is None else floor)
            ]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1
    return widths


class Output:
    """Where a command writes.

    With rich installed (the ``cli`` extra), *plain* false and a terminal to draw on, tables
    and progress bars are drawn by rich; otherwise (a pipe, a log, no rich) the same
    information comes out as plain, aligned text that scripts can read. A reader that goes
    away (``| head``) ends the output quietly: `closed` turns true and the rest is dropped.
    """

    def __init__(
        self, *, plain: bool = False, quiet: bool = False, verbose: bool = False, json: bool = False
    ) -> None:
        self.quiet = quiet
        self.json_mode = json
        self._live: Any = None
        self._finish_live: Callable[[], None] | None = None
        self.plain = plain
        self.verbose = verbose
        self.stdout: IO[str] = sys.stdout
        self.stderr: IO[str] = sys.stderr
        self.closed = False
        self._lock = threading.Lock()
        self._out: Any = None
        if not plain and _isatty(self.stdout) and _rich_installed():
            from rich.console import Console

            self._out = Console(file=self.stdout, highlight=False, markup=False, emoji=False)

    def _write(self, stream: IO[str], text: str) -> None:
        with self._lock:
            if self.closed and stream is self.stdout:
                return
            try:
                if self._live is not None and (stream is self.stderr or _isatty(stream)):
                    self._live.print(text, soft_wrap=True)
                    return
                print(text, file=stream, flush=True)
            except BrokenPipeError:
                self._reader_gone(stream)

    def _reader_gone(self, stream: IO[str]) -> None:
        """The reader of *stream* closed its end: send the rest to the null device, so that
        neither this write nor the interpreter's last flush reports a broken pipe."""
        if stream is self.stdout:
            self.closed = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, stream.fileno())
            os.close(null)

    def say(self, text: str = "") -> None:
        """A line of the result, on stdout."""
        self._write(self.stdout, text)

    def note(self, text: str) -> None:
        """A message about what is happening, on stderr (not with --quiet)."""
        if not self.quiet:
            self._write(self.stderr, text)

    def info(self, text: str) -> None:
        """A message only --verbose asks for, on stderr."""
        if self.verbose and not self.quiet:
            self._write(self.stderr, text)

    def error(self, text: str) -> None:
        """An error, on stderr (always)."""
        self._write(self.stderr, f"error: {text}")

    def detail(self, text: str) -> None:
        """A line following an error, on stderr (always)."""
        self._write(self.stderr, text)

    def json(self, data: Any) -> None:
        """*data* as indented JSON on stdout, for scripts."""
        self.say(json.dumps(data, indent=2, ensure_ascii=False))

    def json_line(self, data: Any) -> None:
        """*data* as one line of JSON on stdout (a stream of them reads as JSON lines)."""
        self.say(json.dumps(data, ensure_ascii=False, separators=(",", ":")))

    def table(
        self,
        title: str,
        columns: Sequence[str | Column],
        rows: Sequence[Sequence[str]],
    ) -> None:
        """Rows under column headings; fitted to the terminal (rich) or to 120 columns."""
        specs = [c if isinstance(c, Column) else Column(c) for c in columns]
        if self._out is not None:
            self._rich_table(title, specs, rows)
            return
        widths = _fit(specs, _natural_widths(specs, rows), PLAIN_WIDTH)
        titles = [c.title for c in specs]
        self.say(title)
        for row in [titles, ["-" * w for w in widths], *rows]:
            cells = [
                _cut(cell, w, keep_end=c.keep_end).ljust(w)
                for cell, w, c in zip(row, widths, specs, strict=True)
            ]
            self.say(("  " + "  ".join(cells)).rstrip())

    def _rich_table(
        self, title: str, specs: Sequence[Column], rows: Sequence[Sequence[str]]
    ) -> None:
        import rich.table

        table = rich.table.Table(title=title, title_justify="left")
        if any(spec.shrink for spec in specs):
            # Fitted here, to fixed widths: rich left to itself squeezes the narrow columns
            # to nothing before it cuts the long ones.
            widths = _fit(specs, _natural_widths(specs, rows), self._out.width, overhead=3)
            for spec, width in zip(specs, widths, strict=True):
                table.add_column(spec.title, no_wrap=True, width=width)
            rows = [
                [
                    _cut(c, w, keep_end=s.keep_end)
                    for c, w, s in zip(row, widths, specs, strict=True)
                ]
                for row in rows
            ]
        else:
            for spec in specs:
                table.add_column(spec.title, overflow="fold")
        for row in rows:
            table.add_row(*row)
        self.end_progress()  # a table is a result: the bar ends above it
        with self._lock:
            try:
                self._out.print(table)
            except BrokenPipeError:
                self._reader_gone(self.stdout)

    def fields(self, title: str, pairs: Sequence[tuple[str, str]]) -> None:
        """Named values under a title."""
        self.table(title, ["field", "value"], [list(pair) for pair in pairs])

    @contextlib.contextmanager
    def live(self, console: Any, finish: Callable[[], None]) -> Iterator[None]:
        """While inside, lines for the terminal go through *console*, the rich console a live
        progress bar draws on, so that they print above the bar instead of breaking it.
        *finish* draws the bar's last line and stops it: at `end_progress`, else on leaving."""
        self._live = console
        self._finish_live = finish
        try:
            yield
        finally:
            self.end_progress()

    def end_progress(self) -> None:
        """Draw the progress bar's last line and stop it (before a summary is printed)."""
        finish, self._finish_live = self._finish_live, None
        self._live = None
        if finish is not None:
            finish()

    @contextlib.contextmanager
    def progress(self, what: str = "backup") -> Iterator[Callable[[Progress], None] | None]:
        """A callback for `Engine(on_progress=...)` or `verify`: with --json, restic-style
        status lines on stdout; else a bar on stderr when it is a terminal (one line per phase
        without rich); None with --quiet or when stderr is a log or a pipe."""
        from . import progress

        if self.quiet:
            yield None
        elif self.json_mode:
            yield progress.json_status(self)
        elif not _isatty(self.stderr):
            yield None
        elif self.plain or not _rich_installed():
            yield progress.plain_progress(self)
        else:
            with progress.rich_progress(self, self.stderr, what) as update:
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
