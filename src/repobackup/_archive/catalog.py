"""The catalog of backups: opening one backup, and a task folder's complete backups.

Restore's choice of the newest complete backup (and its increment chain) lives here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from datetime import tzinfo
from typing import Any

import attrs
import fsspec

from ..exceptions import ArchiveError, DecryptionError, StoreError, store_errors
from .bkrepo import detect as is_bkrepo
from .bkrepo import find_bkrepo
from .bkrepo_reader import open_reader
from .layout import BACKUP_NAME, BackupReader, FolderReader, open_store
from .manifest import MANIFEST
from .store import Store, parse_partial
from .zipreader import ZipReader

__all__ = [
    "Entry",
    "complete_backups",
    "describe",
    "entries",
    "list_names",
    "open_backup",
    "open_backup_chain",
]


def open_backup(fs: fsspec.AbstractFileSystem, path: str, location: str) -> BackupReader:
    """The backup at *path* (a folder or a zip), opened and its manifest read."""
    if path.endswith(".zip"):
        return ZipReader(fs, path, location)
    return FolderReader(fs, path, location)


@attrs.frozen
class Entry:
    """A task folder's entry named like a backup (``<task>-<stamp>[.zip]``), complete or not."""

    name: str  # as listed, with ``.zip`` for a zip
    path: str
    task: str
    stamp: str

    @property
    def backup_name(self) -> str:
        """``<task>-<stamp>``, the name a manifest's ``follows`` uses."""
        return self.name.removesuffix(".zip")


def list_names(fs: fsspec.AbstractFileSystem, task_dir: str) -> list[str]:
    """Every entry of *task_dir*, by name (none when it is not a folder)."""
    # Listed fresh: a stale cached listing of an object store could hide a new backup.
    return Store(fs).names(task_dir, fresh=True)


def entries(
    fs: fsspec.AbstractFileSystem, task_dir: str, *, task_name: str | None = None
) -> list[Entry]:
    """The entries of *task_dir* named like backups (of *task_name* only, when given),
    newest first. Whether each is complete is `open_backup`'s to say."""
    task_dir = task_dir.rstrip("/")
    found = []
    for name in list_names(fs, task_dir):
        match = BACKUP_NAME.match(name)
        if match is None or (task_name is not None and match["name"] != task_name):
            continue
        found.append(Entry(name, posixpath.join(task_dir, name), match["name"], match["stamp"]))
    found.sort(key=lambda entry: (entry.stamp, entry.name), reverse=True)
    return found


def complete_backups(
    fs: fsspec.AbstractFileSystem, task_dir: str, *, location: str | None = None
) -> list[BackupReader]:
    """The complete backups of *task_dir*, newest first, each opened (close them). A zip
    counts only when its end record and manifest read back; *location* names them."""
    base = (location or task_dir).rstrip("/")
    readers = []
    for entry in entries(fs, task_dir):
        try:
            readers.append(open_backup(fs, entry.path, f"{base}/{entry.name}"))
        except DecryptionError:
            # No passphrase, a wrong one, or an altered manifest: say so, never fall back.
            for reader in readers:
                reader.close()
            raise
        except ArchiveError:
            continue  # incomplete or damaged: not a backup to restore from
    return readers


def describe(
    location: str, storage_options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[tuple[str, str]]:
    """Every entry of the task folder *location* named like a backup or a backup's work in
    progress, by name, with its status: ``complete``, ``zip`` (a zip whose end record and
    manifest read back) or why it is incomplete."""
    fs, path = open_store(location, storage_options)
    path = path.rstrip("/")
    found = []
    names = list_names(fs, path)
    # The original server's backups: nothing marks them complete, so they are named as such.
    bkrepo = [posixpath.basename(bk) for bk in (find_bkrepo(fs, path) if names else ())]
    for name in names:
        final = parse_partial(name)
        if not BACKUP_NAME.match(final if final is not None else name) or name in bkrepo:
            continue
        entry = posixpath.join(path, name)
        if final is not None:
            found.append((name, "incomplete (being written or abandoned)"))
            continue
        try:
            open_backup(fs, entry, f"{location.rstrip('/')}/{name}").close()
        except DecryptionError:
            found.append((name, "encrypted (not opened: no passphrase, or not this one)"))
            continue
        except ArchiveError as exc:
            found.append((name, f"incomplete ({_why(exc)})"))
            continue
        found.append((name, "zip" if name.endswith(".zip") else "complete"))
    found.extend((name, "bk-repo (no completeness marker)") for name in bkrepo)
    return found


def _why(exc: ArchiveError) -> str:
    if "no manifest.json" in exc.message:
        return "no manifest.json"
    return exc.message.rpartition(": ")[2] or exc.message


def _is_single_backup(fs: fsspec.AbstractFileSystem, path: str) -> tuple[bool, bool]:
    """Whether *path* is one backup (not a task folder), and whether it exists at all."""
    store = Store(fs)
    kind = store.kind(path)
    single = path.endswith(".zip") or (
        kind == "directory" and store.kind(posixpath.join(path, MANIFEST)) == "file"
    )
    return single, kind is not None


def _open_one(
    fs: fsspec.AbstractFileSystem, path: str, location: str, zone: tzinfo | None
) -> BackupReader:
    """One backup of ours, or else a zip of the original server's."""
    try:
        return open_backup(fs, path, location)
    except ArchiveError:
        # Not one of ours (a store failure is not an ArchiveError and goes on up).
        if path.endswith(".zip") and _is_bkrepo_zip(fs, path):
            return open_reader(fs, path, location, zone)
        raise


def _is_bkrepo_zip(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        return is_bkrepo(fs, path)
    except StoreError:
        return False  # our own reader, which retries, then reports it by its location


def _bkrepo_at(
    fs: fsspec.AbstractFileSystem, path: str, location: str, zone: tzinfo | None
) -> BackupReader | None:
    """The folder *path* opened as a bk-repo backup, or the newest such backup in it; None
    when it is neither. Asked only once no backup of ours is found there."""
    if is_bkrepo(fs, path):
        return open_reader(fs, path, location, zone)
    found = find_bkrepo(fs, path)
    if not found:
        return None
    return open_reader(
        fs, found[-1], f"{location.rstrip('/')}/{posixpath.basename(found[-1])}", zone
    )


def open_backup_chain(
    location: str,
    storage_options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    zone: tzinfo | None = None,
) -> list[BackupReader]:
    """The backups a restore from *location* applies, oldest first.

    A backup folder or zip is restored alone. A task folder restores its newest complete
    backup and, when that is an increment, the backups it follows back to a full one.
    A backup of the original server (bk-repo), recognised by its layout, is opened as a
    `BkrepoReader`, its offset-less times in *zone* (None: this machine's); a task folder
    holding only such backups gives its newest.
    """
    fs, path = open_store(location, storage_options)
    path = path.rstrip("/")
    with store_errors(f"reading {location!r}"):
        single, exists = _is_single_backup(fs, path)
        if single or not exists:
            if not exists:
                raise ArchiveError(f"no backup at {location!r}")
            return [_open_one(fs, path, location, zone)]
        if Store(fs).kind(path) != "directory":
            raise ArchiveError(f"no backup at {location!r}")
    readers = complete_backups(fs, path, location=location)
    if not readers and (bkrepo := _bkrepo_at(fs, path, location, zone)) is not None:
        return [bkrepo]
    if not readers:
        if BACKUP_NAME.match(posixpath.basename(path)):
            # Named like a backup, holding none: a backup folder that never completed.
            raise ArchiveError(f"{location}: no manifest.json, not a complete backup")
        raise ArchiveError(f"no complete backup in {location!r}")
    complete = {posixpath.basename(r.location.rstrip("/")).removesuffix(".zip"): r for r in readers}
    chain = [readers[0]]
    try:
        while (follows := chain[-1].manifest.get("follows")) is not None:
            previous = complete.get(str(follows))
            if previous is None:
                raise ArchiveError(
                    f"{chain[-1].location} is an increment of {follows!r}, "
                    "which is missing or incomplete"
                )
            chain.append(previous)
    finally:
        for reader in readers:
            if reader not in chain:
                reader.close()
    return chain[::-1]
