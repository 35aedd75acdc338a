"""Task ids: 24 lowercase hex characters, time-ordered, like a MongoDB ObjectId."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time

__all__ = ["TASK_ID", "new_task_id"]

TASK_ID = re.compile(r"^[0-9a-f]{24}$")

_process_random = os.urandom(5)
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_lock = threading.Lock()
_pid = os.getpid()


def new_task_id(now: float | None = None) -> str:
    """A new id: 4 bytes of seconds since the epoch, 5 random bytes per process, a 3-byte counter."""
    global _process_random, _pid
    with _lock:
        if os.getpid() != _pid:  # forked: never share the random part with the parent
            _pid = os.getpid()
            _process_random = os.urandom(5)
        count = next(_counter) & 0xFFFFFF
        seconds = int(time.time() if now is None else now) & 0xFFFFFFFF
        return (seconds.to_bytes(4, "big") + _process_random + count.to_bytes(3, "big")).hex()
