"""Crash recovery: ending the runs whose process died, and removing what they left.

A run is dead when its owner's process on this host is gone, or its heartbeat is stale.
"""

from __future__ import annotations

import logging
import os
import posixpath
import socket
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, tzinfo
from typing import Any

import attrs
from fsspec.implementations.local import LocalFileSystem

from .._archive.layout import STAMP_FORMAT, task_folder
from .._archive.retention import abort_uploads, remove_leftovers
from .._model.task import BackupTask, ExecutionStrategy, RunError, RunSummary, TaskState, TaskType
from .._pipeline.resume import find_leftover, keep_for_resume, keep_zip_for_resume
from .._tasks.store import TaskStore
from ..exceptions import TaskNotFoundError

__all__ = ["Recovery", "owner_is_gone"]

log = logging.getLogger("repobackup")


@attrs.frozen
class Recovery:
    """What recovery needs from the engine: its task store, zone, stores and callback."""

    tasks: TaskStore
    tz: tzinfo
    storage_options: Mapping[str, Mapping[str, Any]]
    notify: Callable[[BackupTask, RunSummary], None]
    #: The engine's target: a killed restore leaves temporary blob files in it.
    target: Any = None

    def recover(self, now: datetime, stale_after: float, ours: set[str]) -> list[str]:
        """End every run not in *ours* whose process is gone or whose heartbeat is older
        than *stale_after* seconds; return the ids of the tasks it ended."""
        limit = timedelta(seconds=stale_after)
        recovered = []
        for lease in self.tasks.leases():
            if lease.owner in ours:
                continue
            if owner_is_gone(lease.owner):
                why = f"its process {lease.owner} is gone"
            elif now - lease.heartbeat > limit:
                why = f"no heartbeat from {lease.owner} since {lease.heartbeat.isoformat()}"
            else:
                continue
            if self.end(lease.task_id, lease.owner, why, now):
                recovered.append(lease.task_id)
        return recovered

    def end(self, task_id: str, owner: str, why: str, now: datetime) -> bool:
        """End the interrupted run of *task_id* held by *owner*; False when another process
        ended it first or it finished after all."""
        try:
            task = self.tasks.get(task_id)
        except TaskNotFoundError:
            return False
        # An owner never gets a lease back once it lost it: if *owner* still holds the task,
        # the task just read is its run, not a new one another process started since.
        if not any(
            lease.task_id == task_id and lease.owner == owner for lease in self.tasks.leases()
        ):
            return False
        started = task.start_date or now
        notes = [f"the run was interrupted: {why}"]
        if task.type is TaskType.DATA_BACKUP:
            # Cleaned while the dead owner still holds the task, so that no new run of it can
            # be writing meanwhile; the finish below confirms it held the task throughout.
            notes.extend(self._remove_leftovers(task, started, now))
        elif task.type is TaskType.DATA_RESTORE:
            notes.extend(self._remove_temporary_blobs(task_id, started, now))
        summary = RunSummary(
            task_id=task_id,
            started=started,
            ended=now,
            state=TaskState.FAILED,
            errors=(RunError("task", task_id, "interrupted"),),
            notes=tuple(notes),
        )
        recurring = task.backup_setting.execution_strategy is ExecutionStrategy.CRON_EXPRESSION
        final = TaskState.PENDING if recurring else TaskState.FAILED
        # A compare-and-set on the dead owner: None when it finished after all, or when
        # another process ended the run first.
        finished = self.tasks.finish(task_id, owner=owner, state=final, summary=summary, now=now)
        if finished is None:
            return False
        log.warning("task %s: ended its interrupted run (%s)", task_id, why)
        self.notify(finished, summary)
        return True

    def _remove_leftovers(self, task: BackupTask, started: datetime, now: datetime) -> list[str]:
        try:
            fs, folder = task_folder(task.store_location, task.name, self.storage_options)
            kept = None
            stamp = started.astimezone(self.tz).strftime(STAMP_FORMAT)
            if task.content.compression and not task.content.encryption:
                # A zip on a local disk waits for the next run to continue it (an encrypted
                # one's members are bound to their own backup: it goes).
                kept = keep_zip_for_resume(fs, folder, task.name, since=stamp)
            elif not task.content.compression and not task.content.encryption:
                # A folder backup's blobs are kept for the next run to resume from (an
                # encrypted one's are bound to their own backup: they go).
                if isinstance(fs, LocalFileSystem):
                    kept = keep_for_resume(fs, folder, task.name, since=stamp)
                elif find_leftover(fs, folder, task.name) is not None:
                    return ["kept what the interrupted run stored for the next run to resume"]
            removed = remove_leftovers(fs, folder, task.name, started, self.tz, until=now)
            removed += abort_uploads(fs, folder, task.name, started, self.tz, until=now)
        except Exception as exc:
            log.warning("task %s: could not remove what its interrupted run left: %s", task.id, exc)
            return [f"could not remove what the interrupted run left: {exc}"]
        notes = []
        if kept is not None:
            notes.append(f"kept what the interrupted run stored for the next run ({kept})")
        if removed:
            names = ", ".join(posixpath.basename(path) for path in removed)
            notes.append(f"removed what the interrupted run left: {names}")
        return notes

    def _remove_temporary_blobs(self, task_id: str, started: datetime, now: datetime) -> list[str]:
        """Remove the ``*.tmp`` files a killed restore left in the target's blob store. With
        no other run under way, every one is the dead run's or older; else only those
        older than its start, since a live run's write has one too."""
        remove = getattr(self.target, "remove_temporary_blobs", None)
        if not callable(remove):
            return []
        others = [lease for lease in self.tasks.leases() if lease.task_id != task_id]
        try:
            removed = remove(older_than=started if others else now)
        except Exception as exc:
            log.warning("task %s: could not remove temporary blob files: %s", task_id, exc)
            return [f"could not remove the temporary blob files the run left: {exc}"]
        if not removed:
            return []
        return [f"removed {len(removed)} temporary blob file(s) the interrupted run left"]


def owner_is_gone(owner: str) -> bool:
    """Whether *owner* (host:pid:nonce) ran on this host in a process that has ended.
    False whenever that cannot be known: the heartbeat then decides."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid() or sys.platform == "win32":
        # On Windows os.kill(pid, 0) would terminate the process, not probe it.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # e.g. PermissionError: alive, owned by another user
    # A zombie (ended, not yet reaped by its parent) still answers signal 0.
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return False
    return bool(fields) and fields[0] in (b"Z", b"X")
