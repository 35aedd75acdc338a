"""Words and figures every command prints the same way: plurals, and byte counts in binary
units (MiB, as the summary, the progress bar and the logs all say)."""

from __future__ import annotations

__all__ = ["plural", "size"]


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 repository``, ``2 repositories``."""
    if count == 1:
        return f"{count} {singular}"
    return f"{count} {plural_form or singular + 's'}"


def size(count: int | None) -> str:
    """A byte count in binary units (``1.5 MiB``); ``?`` when unknown."""
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
