"""Backup and restore for artifact-repository servers.

Projects, repositories, files (nodes) with metadata and content, and common data.
"""

from ._backend import Outcome, Record, Scope, Source, Target
from ._cron import CronSchedule, parse_cron
from ._engine import Engine
from ._json import from_json, to_json
from ._memory_repo import MemoryRepository
from ._model import (
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
from ._run import Progress
from ._scheduler import Scheduler
from ._select import compile_pattern, select
from ._sqlite_repo import SqliteRepository
from ._taskstore import MemoryTaskStore, SqliteTaskStore, TaskStore
from ._verify import VerifyProblem, VerifyReport, verify
from .exceptions import (
    ArchiveError,
    BackendError,
    InsufficientSpaceError,
    RepoBackupError,
    StoreError,
    TaskNotFoundError,
    TaskRunningError,
    ValidationError,
)

__all__ = [
    "ArchiveError",
    "BackendError",
    "BackupContent",
    "BackupSetting",
    "BackupTask",
    "ConflictStrategy",
    "CronSchedule",
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
