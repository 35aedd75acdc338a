"""Task ids: 24 lowercase hex characters, time-ordered, like a MongoDB ObjectId."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time

__all__ = ["TASK_ID", "new_task_id"]

TASK_ID = re.compile(r"^[0-9a-f]{24}$")

_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_lock = threading.Lock()
# The random part is per process: a forked child draws its own, never sharing the parent's.
_process: dict[int, bytes] = {}


def new_task_id(now: float | None = None) -> str:
    """A new id: 4 bytes of seconds since the epoch, 5 random bytes per process, a counter."""
    with _lock:
        random_part = _process.setdefault(os.getpid(), os.urandom(5))
        count = next(_counter) & 0xFFFFFF
        seconds = int(time.time() if now is None else now) & 0xFFFFFFFF
        return (seconds.to_bytes(4, "big") + random_part + count.to_bytes(3, "big")).hex()
