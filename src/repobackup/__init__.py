"""Backup and restore for artifact-repository servers.

Projects, repositories, files (nodes) with metadata and content, and common data.
"""

from ._archive.retention import RetentionDecision
from ._archive.verify import VerifyProblem, VerifyReport, verify
from ._backends.memory import MemoryRepository
from ._backends.protocols import Outcome, Record, Scope, Source, Target
from ._backends.sqlite import SqliteRepository
from ._engine.engine import Engine
from ._engine.scheduler import Scheduler
from ._model.convert import from_json, to_json
from ._model.cron import CronSchedule, parse_cron
from ._model.select import compile_pattern, select
from ._model.task import (
    BackupContent,
    BackupSetting,
    BackupTask,
    ConflictStrategy,
    ErrorStrategy,
    ExecutionPlan,
    ExecutionStrategy,
    Page,
    ProjectContentInfo,
    Retention,
    RunCounts,
    RunError,
    RunSummary,
    TaskState,
    TaskType,
)
from ._pipeline.tally import Progress
from ._tasks.store import MemoryTaskStore, SqliteTaskStore, TaskStore
from ._version import __version__
from .exceptions import (
    ArchiveError,
    BackendError,
    DecryptionError,
    InsufficientSpaceError,
    RepoBackupError,
    StoreError,
    TaskNotFoundError,
    TaskRunningError,
    ValidationError,
)

__all__ = [
    "__version__",
    "ArchiveError",
    "BackendError",
    "BackupContent",
    "BackupSetting",
    "BackupTask",
    "ConflictStrategy",
    "CronSchedule",
    "DecryptionError",
    "Engine",
    "ErrorStrategy",
    "ExecutionPlan",
    "ExecutionStrategy",
    "InsufficientSpaceError",
    "MemoryRepository",
    "MemoryTaskStore",
    "Outcome",
    "Page",
    "Progress",
    "ProjectContentInfo",
    "Record",
    "RepoBackupError",
    "Retention",
    "RetentionDecision",
    "RunCounts",
    "RunError",
    "RunSummary",
    "Scheduler",
    "Scope",
    "Source",
    "SqliteRepository",
    "SqliteTaskStore",
    "StoreError",
    "Target",
    "TaskNotFoundError",
    "TaskRunningError",
    "TaskState",
    "TaskStore",
    "TaskType",
    "ValidationError",
    "VerifyProblem",
    "VerifyReport",
    "compile_pattern",
    "from_json",
    "parse_cron",
    "select",
    "to_json",
    "verify",
]
