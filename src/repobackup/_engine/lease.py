"""Leases of running tasks: claiming a task for one run and keeping its heartbeat alive.

An owner is ``host:pid:nonce``; crash recovery (`recovery`) reads it to tell a dead run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime

from .._model.task import BackupTask
from .._tasks.store import TaskStore

__all__ = ["Leases", "new_owner"]

log = logging.getLogger("repobackup")


def new_owner() -> str:
    """A fresh owner name; host:pid lets recovery see at once that its process is gone."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Leases:
    """The runs one engine holds, each with a heartbeat thread, by owner."""

    def __init__(
        self,
        tasks: TaskStore,
        now: Callable[[], datetime],
        heartbeat_seconds: Callable[[], float],
    ) -> None:
        self.tasks = tasks
        self.now = now
        self.heartbeat_seconds = heartbeat_seconds
        self._lock = threading.Lock()
        self._heartbeats: dict[str, threading.Event] = {}

    def claim(
        self, task_id: str, *, unless_started_since: datetime | None = None
    ) -> tuple[BackupTask, str]:
        """Start *task_id* (RUNNING) under a new owner and start its heartbeat."""
        owner = new_owner()
        task = self.tasks.start(
            task_id, owner=owner, now=self.now(), unless_started_since=unless_started_since
        )
        # The heartbeat starts with the claim, not with the run: a run that `submit` queues
        # behind busy workers must not look dead to another process meanwhile.
        stop = threading.Event()
        with self._lock:
            self._heartbeats[owner] = stop
        threading.Thread(
            target=self._beat,
            args=(task_id, owner, stop),
            name=f"repobackup-heartbeat-{task_id}",
            daemon=True,
        ).start()
        return task, owner

    def holds(self, task_id: str, owner: str) -> bool:
        """Renew the lease now; False when *owner* lost it."""
        return self.tasks.heartbeat(task_id, owner=owner, now=self.now())

    def release(self, owner: str) -> None:
        """Stop the heartbeat of *owner*'s run."""
        with self._lock:
            stop = self._heartbeats.pop(owner, None)
        if stop is not None:
            stop.set()

    def owners(self) -> set[str]:
        """The owners of the runs held now."""
        with self._lock:
            return set(self._heartbeats)

    def _beat(self, task_id: str, owner: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_seconds()):
            try:
                if not self.holds(task_id, owner):
                    log.warning("task %s: its run lost its lease (taken for dead)", task_id)
                    return
            except Exception:
                # A busy or briefly unreachable store: the next beat tries again.
                log.exception("heartbeat failed for task %s", task_id)
