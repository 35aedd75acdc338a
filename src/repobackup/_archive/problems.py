"""`Bounded`: a list that keeps its first entries up to a limit and counts the rest.

Runs, verify and the zip reader report through it, so a hostile input never grows memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Bounded"]

T = TypeVar("T")


class Bounded(Generic[T]):
    """The first *limit* entries added, and how many more were dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[T] = []
        self.dropped = 0

    def add(self, item: T) -> bool:
        """Keep *item* if there is room; True when it was kept."""
        if len(self.items) < self.limit:
            self.items.append(item)
            return True
        self.dropped += 1
        return False

    def add_last(self, item: T) -> None:
        """Keep *item* whatever happens, dropping the newest entry kept when full."""
        if len(self.items) >= self.limit:
            self.items.pop()
            self.dropped += 1
        self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)
