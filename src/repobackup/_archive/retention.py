"""What a task's folder in the store keeps: `apply_retention` removes old complete backups, and
`remove_leftovers` removes what an interrupted run wrote without completing it."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo

import attrs
import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..exceptions import ArchiveError, DecryptionError, store_errors
from .catalog import entries, list_names, open_backup
from .layout import BACKUP_NAME, STAMP_FORMAT
from .manifest import MANIFEST, follows_of
from .store import Store, parse_partial

__all__ = ["apply_retention", "remove_leftovers"]

# A run takes the next free second when its own is taken (see run_backup), so its backup's
# stamp can be a few seconds after its start.
LEFTOVER_WINDOW = timedelta(seconds=10)


@attrs.frozen
class _Backup:
    """A complete backup in a task folder, as its manifest describes it."""

    name: str  # without ".zip", as manifests name the backup an increment follows
    path: str
    stamp: str
    follows: str | None


def apply_retention(
    fs: fsspec.AbstractFileSystem,
    task_dir: str,
    keep_last: int,
    *,
    keep: Iterable[str] = (),
) -> list[str]:
    """Remove the complete backups in *task_dir* beyond the newest *keep_last*; return the
    paths removed, newest first.

    Only complete backups (manifest present and readable) of the task the folder is named
    after count and are removed; a backup of another task name and an incomplete one (a run
    in progress, or garbage for `remove_leftovers`) are left alone. A kept increment keeps
    the whole chain of backups it follows. The backups named in *keep* (the one a run has
    just completed) are kept whatever their stamp says.
    """
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"keep_last: must be an integer of 1 or more, got {keep_last!r}")
    task_dir = task_dir.rstrip("/")
    backups = _complete_backups(fs, task_dir)
    by_name = {backup.name: backup for backup in backups}
    kept = {backup.name for backup in backups[:keep_last]}
    kept.update(name.removesuffix(".zip") for name in keep)
    # Follow each kept backup's chain back to its full backup: removing a link would leave
    # the increments after it impossible to restore.
    for name in list(kept):
        seen: set[str] = set()
        current = by_name.get(name)
        while current is not None and current.follows and current.follows not in seen:
            seen.add(current.follows)
            kept.add(current.follows)
            current = by_name.get(current.follows)
    removed = []
    # Newest first: an increment goes before the backup it follows, so a removal that stops
    # half way never leaves an increment without its base.
    for backup in backups:
        if backup.name not in kept:
            _remove_backup(fs, backup.path)
            removed.append(backup.path)
    return removed


def remove_leftovers(
    fs: fsspec.AbstractFileSystem,
    task_dir: str,
    task_name: str,
    started: datetime,
    tz: tzinfo,
    *,
    until: datetime | None = None,
) -> list[str]:
    """Remove what a run of *task_name* started at *started* left in *task_dir* without
    completing it; return the paths removed.

    That is its hidden ``.<name>-<stamp>[.zip].<token>.partial`` work in progress, and on stores
    written in place (object stores) a ``<name>-<stamp>[.zip]`` that holds no complete
    backup. The stamp is *started* in zone *tz* (the zone the run named its backup in), or
    a few seconds after it, and not after *until* (a later stamp is a later run's). A
    complete backup is never removed.
    """
    task_dir = task_dir.rstrip("/")
    first = started.astimezone(tz).replace(microsecond=0)
    last = first + LEFTOVER_WINDOW
    if until is not None:
        last = min(last, until.astimezone(tz).replace(microsecond=0))
    stamps = {
        (first + timedelta(seconds=s)).strftime(STAMP_FORMAT)
        for s in range(int((last - first).total_seconds()) + 1)
    }
    in_place = not isinstance(fs, LocalFileSystem)
    removed = []
    for entry in list_names(fs, task_dir):
        final = parse_partial(entry)
        partial = final is not None
        name = final if final is not None else entry
        match = BACKUP_NAME.match(name)
        if match is None or match["name"] != task_name or match["stamp"] not in stamps:
            continue
        path = posixpath.join(task_dir, entry)
        if partial or (in_place and not _is_complete(fs, path)):
            _remove_backup(fs, path)
            removed.append(path)
    return removed


def _complete_backups(fs: fsspec.AbstractFileSystem, task_dir: str) -> list[_Backup]:
    """The complete backups of the task *task_dir* is named after, newest first."""
    backups = []
    for entry in entries(fs, task_dir, task_name=posixpath.basename(task_dir.rstrip("/"))):
        manifest = _manifest(fs, entry.path)
        if manifest is None:
            continue
        backups.append(
            _Backup(
                name=entry.backup_name,
                path=entry.path,
                stamp=entry.stamp,
                follows=follows_of(manifest),
            )
        )
    return backups


def _manifest(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, object] | None:
    """The manifest of the backup at *path*, or None when it is not a complete backup."""
    try:
        reader = open_backup(fs, path, path)
    except ArchiveError:
        return None
    try:
        return reader.manifest
    finally:
        reader.close()


def _is_complete(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        open_backup(fs, path, path).close()
    except DecryptionError:
        return True  # encrypted, and no key here to tell: never removed on a guess
    except ArchiveError:
        return False
    return True


def _remove_backup(fs: fsspec.AbstractFileSystem, path: str) -> None:
    store = Store(fs)
    with store_errors(f"removing {path!r}"):
        kind = store.kind(path)
        if kind == "directory":
            # The manifest goes first: a removal that stops half way leaves an incomplete
            # backup, which nothing mistakes for a complete one.
            store.remove(posixpath.join(path, MANIFEST))
            store.remove(path, recursive=True)
        elif kind is not None:
            store.remove(path)
