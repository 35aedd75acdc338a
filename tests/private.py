"""The units below the public API that a few tests exercise directly, named in one place.

The registry (how the command line names backends), the task parser of create_task and the
bk-repo reader have no public import path; tests reach them through this module only, so
that moving a private module changes this file and no test.
"""

from repobackup._archive.bkrepo import (
    BkrepoBackup,
    BkrepoProblem,
    detect,
    find_bkrepo,
    open_bkrepo,
)
from repobackup._backends.registry import (
    ENTRY_POINT_GROUP,
    UnknownBackendError,
    available_backends,
    load_backend,
    open_repository,
    split_spec,
    sqlite_path,
)
from repobackup._model.convert import parse_new_task

__all__ = [
    "ENTRY_POINT_GROUP",
    "BkrepoBackup",
    "BkrepoProblem",
    "UnknownBackendError",
    "available_backends",
    "detect",
    "find_bkrepo",
    "load_backend",
    "open_bkrepo",
    "open_repository",
    "parse_new_task",
    "split_spec",
    "sqlite_path",
]
