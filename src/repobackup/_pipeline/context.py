"""`RunContext`: the small frozen context one run receives from the engine.

What a run reads and writes, where and on what; the pipeline never sees the engine itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import datetime, tzinfo
from typing import Any

import attrs
from fsspec.implementations.local import LocalFileSystem

from .._backends.protocols import Source, Target
from .._model.task import RunSummary

__all__ = ["RunContext", "default_workers"]


@attrs.frozen
class RunContext:
    """What a backup or restore run needs from the engine that started it."""

    source: Source
    target: Target | None
    #: fsspec options by protocol, for the stores the run opens.
    storage_options: Mapping[str, Mapping[str, Any]]
    #: Where blob copies go when the source can be reopened elsewhere; None: threads here.
    executor: Executor | None
    #: Blob jobs in flight at once; None: `default_workers` for the run's store.
    max_workers: int | None
    tz: tzinfo
    #: The engine's clock: an aware datetime in the engine's zone.
    now: Callable[[], datetime]
    #: The run history of a task, newest first (incremental backups follow the last one).
    history: Callable[[str], Sequence[RunSummary]]
    #: Whether a large local run given no executor may start a process pool of its own.
    processes: bool = False

    def workers(self, fs: Any) -> int:
        """How many blob jobs run at once for a run writing to or reading from *fs*."""
        return self.max_workers or default_workers(fs)


#: An object store answers each request after tens of milliseconds: many requests in flight
#: hide that wait, while a local disk is bound by the cores that hash and compress.
OBJECT_STORE_FACTOR = 4
OBJECT_STORE_MAX = 64


def default_workers(fs: Any = None) -> int:
    """Blob jobs in flight by default: every core on a local disk, more on an object store."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    if fs is None or isinstance(fs, LocalFileSystem):
        return cores
    return min(OBJECT_STORE_MAX, max(16, cores * OBJECT_STORE_FACTOR))
