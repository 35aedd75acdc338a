"""Errors raised by repobackup: one root, a stable numeric ``code`` on each class.

The tree::

    RepoBackupError                     250102  system error (root, unexpected failures)
    ├── ValidationError                 250105  a task or request is invalid (all problems)
    │   └── MalformedRequestError       250106  request body is not valid JSON
    ├── TaskNotFoundError               250108  no task with that id (also a LookupError)
    ├── TaskRunningError                250128  the task is already running
    ├── InsufficientSpaceError          250901  the store has less free space than the run needs
    ├── ArchiveError                    250902  a backup is missing, incomplete, corrupt or hostile
    │   └── DecryptionError             250905  wrong passphrase, or a member fails its tag
    ├── StoreError                      250903  the store location failed (I/O, network, access)
    └── BackendError                    250904  the repository backend (Source/Target) failed

Codes 2501xx are the repository server's common message codes; 2509xx are this library's own.
A code never changes meaning once released.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import attrs

__all__ = [
    "ArchiveError",
    "BackendError",
    "DecryptionError",
    "InsufficientSpaceError",
    "MalformedRequestError",
    "Problem",
    "RepoBackupError",
    "StoreError",
    "TaskNotFoundError",
    "TaskRunningError",
    "ValidationError",
    "backend_errors",
    "store_errors",
]


class RepoBackupError(Exception):
    """Root of every error this library raises on purpose."""

    code: ClassVar[int] = 250102

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.frozen
class Problem:
    """One thing wrong with an input: where (a JSON path, ``$.content.projects[0]``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ValidationError(RepoBackupError, ValueError):
    """An input is invalid; ``problems`` lists every problem found, each with its JSON path."""

    code: ClassVar[int] = 250105

    def __init__(self, problems: Iterable[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("$", problems)]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid input")


class MalformedRequestError(ValidationError):
    """A request body that is not valid JSON (or not UTF-8)."""

    code: ClassVar[int] = 250106


class TaskNotFoundError(RepoBackupError, LookupError):
    """No task has the given id."""

    code: ClassVar[int] = 250108

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task not found: {task_id!r}")
        self.task_id = task_id


class TaskRunningError(RepoBackupError):
    """The task is already running (here or in another process sharing the task store)."""

    code: ClassVar[int] = 250128

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task is already running: {task_id!r}")
        self.task_id = task_id


class InsufficientSpaceError(RepoBackupError):
    """The run needs more bytes than the store has free; both figures are on the error."""

    code: ClassVar[int] = 250901

    def __init__(self, location: str, needed: int, available: int) -> None:
        super().__init__(
            f"not enough free space at {location!r}: the run needs {needed} bytes, "
            f"{available} bytes are free"
        )
        self.location = location
        self.needed = needed
        self.available = available


class ArchiveError(RepoBackupError):
    """A backup is missing, incomplete, corrupt, or holds a member that escapes its tree."""

    code: ClassVar[int] = 250902


class DecryptionError(ArchiveError):
    """No passphrase opens the keys, or an encrypted member failed authentication."""

    code: ClassVar[int] = 250905


class StoreError(RepoBackupError, OSError):
    """Reading from or writing to the store location failed."""

    code: ClassVar[int] = 250903


class BackendError(RepoBackupError):
    """The repository backend (a Source or Target) failed."""

    code: ClassVar[int] = 250904


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Turn any failure of the store (fsspec, OS, network) into a `StoreError` naming *what*.

    This is the one boundary where store exceptions become ours.
    """
    try:
        yield
    except RepoBackupError:
        raise
    except Exception as exc:
        raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc


@contextmanager
def backend_errors(what: str) -> Iterator[None]:
    """Turn any failure of a repository backend into a `BackendError` naming *what*."""
    try:
        yield
    except RepoBackupError:
        raise
    except Exception as exc:
        raise BackendError(f"{what}: {type(exc).__name__}: {exc}") from exc
