"""Resumable backups: where an interrupted run's blobs wait for the next run.

On a local disk in ``.<task>.resume`` (folder) or ``.<task>.zip.resume``; elsewhere in place.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import threading
import uuid
from collections.abc import Callable
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from .._archive.catalog import list_names
from .._archive.layout import BACKUP_NAME, SHA256
from .._archive.manifest import MANIFEST
from .._archive.store import Store, parse_partial

__all__ = [
    "adopt",
    "discard_leftover",
    "prune",
    "find_leftover",
    "find_zip_leftover",
    "keep_for_resume",
    "keep_zip_for_resume",
    "resume_folder",
    "resume_zip",
    "wait_for_cleanups",
]


def resume_folder(task_dir: str, task_name: str) -> str:
    """Where the blobs of an interrupted folder backup wait, on a local disk."""
    return posixpath.join(task_dir.rstrip("/"), f".{task_name}.resume")


def _ours(name: str, task_name: str) -> bool:
    match = BACKUP_NAME.match(name)
    return match is not None and match["name"] == task_name and not name.endswith(".zip")


def keep_for_resume(
    fs: Any, task_dir: str, task_name: str, root: str | None = None, *, since: str = ""
) -> str | None:
    """Keep what an interrupted folder backup of *task_name* stored, for the next run to
    resume from; return what was kept and where it went, or None when nothing was.

    *root* is the run's folder when known; otherwise (a dead process's) the newest hidden
    partial folder of the task stamped *since* or later. On an object store a folder
    written in place stays where it is. Only the newest interrupted run is kept: it is the
    one the next run resumes.
    """
    store = Store(fs)
    if not isinstance(fs, LocalFileSystem):
        return root if root is not None and store.exists(posixpath.join(root, "blobs")) else None
    if root is None:
        partials = sorted(
            entry
            for entry in list_names(fs, task_dir)
            if (final := parse_partial(entry)) is not None
            and _ours(final, task_name)
            and final >= f"{task_name}-{since}"
        )
        if not partials:
            return None
        root = posixpath.join(task_dir, partials[-1])
    if not store.exists(posixpath.join(root, "blobs")):
        return None
    keep = resume_folder(task_dir, task_name)
    with contextlib.suppress(Exception):
        store.remove(keep, recursive=True)
    store.move(root, keep)
    return f"{posixpath.basename(root)}, now {posixpath.basename(keep)}"


def resume_zip(task_dir: str, task_name: str) -> str:
    """Where the partial zip of an interrupted zip backup waits, on a local disk."""
    return posixpath.join(task_dir.rstrip("/"), f".{task_name}.zip.resume")


def keep_zip_for_resume(fs: Any, task_dir: str, task_name: str, *, since: str = "") -> str | None:
    """Keep the partial zip a dead run of *task_name* left on a local disk (the newest one
    stamped *since* or later) for the next run to resume from; return what was kept and
    where it went, or None. Elsewhere nothing is kept: the zip of an upload cut short is
    not there to read (docs/scaling.md)."""
    if not isinstance(fs, LocalFileSystem):
        return None
    partials = sorted(
        entry
        for entry in list_names(fs, task_dir)
        if (final := parse_partial(entry)) is not None
        and (match := BACKUP_NAME.match(final)) is not None
        and match["name"] == task_name
        and match["zip"]
        and final >= f"{task_name}-{since}"
        and os.path.isfile(posixpath.join(task_dir, entry))
    )
    if not partials:
        return None
    keep = resume_zip(task_dir, task_name)
    os.replace(posixpath.join(task_dir, partials[-1]), keep)
    return f"{partials[-1]}, now {posixpath.basename(keep)}"


def find_zip_leftover(fs: Any, task_dir: str, task_name: str) -> str | None:
    """The partial zip of an interrupted backup of *task_name* a new zip backup may
    continue: on a local disk only."""
    if not isinstance(fs, LocalFileSystem):
        return None
    keep = resume_zip(task_dir, task_name)
    return keep if os.path.isfile(keep) else None


DONE = ".done-"
_cleanups: list[threading.Thread] = []
_cleanups_lock = threading.Lock()


def wait_for_cleanups() -> None:
    """Wait until the removals `discard_leftover` started have ended (an engine's close)."""
    with _cleanups_lock:
        threads, _cleanups[:] = list(_cleanups), []
    for thread in threads:
        thread.join()


def discard_leftover(fs: Any, path: str) -> None:
    """Remove what is left of an interrupted run once a resumed one committed.

    On a local disk the folder is renamed out of the way at once and removed on a thread
    of its own: removing thousands of emptied folders takes seconds the run need not wait
    for. Whatever a process that ends first leaves, the next run removes (`find_leftover`).
    """
    store = Store(fs)
    if not isinstance(fs, LocalFileSystem):
        with contextlib.suppress(Exception):
            store.remove(path, recursive=True)
        return
    done = f"{path}{DONE}{uuid.uuid4().hex[:12]}"
    try:
        store.move(path, done)
    except Exception:
        return

    def remove() -> None:
        with contextlib.suppress(Exception):
            store.remove(done, recursive=True)

    thread = threading.Thread(target=remove, name="repobackup-cleanup", daemon=True)
    with _cleanups_lock:
        _cleanups.append(thread)
    thread.start()


def find_leftover(fs: Any, task_dir: str, task_name: str, *, not_named: str = "") -> str | None:
    """The interrupted folder backup of *task_name* a new run (named *not_named*) may take
    blobs from."""
    store = Store(fs)
    if isinstance(fs, LocalFileSystem):
        keep = resume_folder(task_dir, task_name)
        done = posixpath.basename(keep) + DONE
        for entry in list_names(fs, task_dir):
            if entry.startswith(done):
                with contextlib.suppress(Exception):
                    store.remove(posixpath.join(task_dir, entry), recursive=True)
        return keep if store.exists(keep) else None
    # Written in place: the newest folder named like a backup of the task, with no
    # manifest, newer than its newest complete backup.
    for entry in sorted(list_names(fs, task_dir), reverse=True):
        if not _ours(entry, task_name) or entry == not_named:
            continue
        path = posixpath.join(task_dir, entry)
        if store.exists(posixpath.join(path, MANIFEST)):
            return None
        return path if store.exists(posixpath.join(path, "blobs")) else None
    return None


def adopt(fs: Any, leftover: str, root: str) -> bool:
    """On a local disk, make the interrupted run's folder this run's (just made, empty)
    *root*: one rename, and its blobs are checked where they lie. Its records members go:
    this run writes its own. False (nothing done) elsewhere."""
    if not isinstance(fs, LocalFileSystem):
        return False
    for entry in os.listdir(leftover):
        if entry != "blobs":
            Store(fs).remove(posixpath.join(leftover, entry), recursive=True)
    os.rmdir(root)
    os.rename(leftover, root)
    return True


def prune(root: str, wanted: Callable[[str], bool]) -> int:
    """Remove the blob files under an adopted *root* that this run did not back up (the
    interrupted run's selection may have been wider, a write may have been cut short)."""
    removed = 0
    for folder, _, files in os.walk(posixpath.join(root, "blobs")):
        for name in files:
            if not (SHA256.fullmatch(name) and wanted(name)):
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed
