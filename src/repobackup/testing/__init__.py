"""Conformance suites for code built on repobackup: `SourceConformance` and
`TargetConformance` for repository backends, `TaskStoreConformance` for task stores.

Each is a pytest class to subclass in a test module, with one fixture to provide: ``backend``
(a fresh, empty repository) for the first two, ``make_task_store`` (a callable returning a
fresh, empty task store) for the third. Requires pytest. See `repobackup.testing.backends` and
`repobackup.testing.tasks` for what each checks.
"""

from .backends import (
    AWKWARD_DOCUMENTS,
    NOT_JSON_DOCUMENTS,
    SourceConformance,
    TargetConformance,
    make_record,
)
from .tasks import CREATED, TaskStoreConformance, make_summary, make_task, run_times

__all__ = [
    "AWKWARD_DOCUMENTS",
    "CREATED",
    "NOT_JSON_DOCUMENTS",
    "SourceConformance",
    "TargetConformance",
    "TaskStoreConformance",
    "make_record",
    "make_summary",
    "make_task",
    "run_times",
]
