"""`RunContext`: the small frozen context one run receives from the engine.

What a run reads and writes, where and on what; the pipeline never sees the engine itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import datetime, tzinfo
from typing import Any

import attrs

from .._backends.protocols import Source, Target
from .._model.task import RunSummary

__all__ = ["RunContext"]


@attrs.frozen
class RunContext:
    """What a backup or restore run needs from the engine that started it."""

    source: Source
    target: Target | None
    #: fsspec options by protocol, for the stores the run opens.
    storage_options: Mapping[str, Mapping[str, Any]]
    #: Where blob copies go when the source can be reopened elsewhere; None: threads here.
    executor: Executor | None
    max_workers: int
    tz: tzinfo
    #: The engine's clock: an aware datetime in the engine's zone.
    now: Callable[[], datetime]
    #: The run history of a task, newest first (incremental backups follow the last one).
    history: Callable[[str], Sequence[RunSummary]]
