"""A bk-repo backup presented where our own `BackupReader` goes: the catalog, restore, verify
and ``ls`` take it through `BkrepoReader`, which wraps a `BkrepoBackup`.

Its manifest is a summary made from the layout (``format: "bk-repo"``): nothing in it was read
from the backup, which carries none.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator, Sequence
from datetime import tzinfo
from typing import IO, Any

import fsspec

from .bkrepo import BkrepoBackup, BkrepoProblem, open_bkrepo

__all__ = ["FORMAT", "UNMARKED", "BkrepoReader", "open_reader"]

FORMAT = "bk-repo"
UNMARKED = (
    "a bk-repo backup carries no manifest, checksums or completeness marker: its records "
    "and blobs were checked, but nothing tells whether the server wrote all of them"
)

Listener = Callable[[BkrepoProblem], None]


class BkrepoReader:
    """One bk-repo backup as a `BackupReader`: ``location``, a summary ``manifest``,
    ``problems`` (the entries refused so far), ``exists``/``open`` of its entries.

    `backup` is the `BkrepoBackup` that restore, verify and ``ls`` walk. `listen` sends every
    problem found from then on (and those found before) to one callback.
    """

    def __init__(self, backup: BkrepoBackup, listeners: list[Listener]) -> None:
        self.backup = backup
        self.location = backup.location
        self._listeners = listeners
        tree = backup.tree()
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "name": posixpath.basename(backup.location.rstrip("/")),
            "stamp": backup.stamp,
            "started": backup.started.isoformat() if backup.started else None,
            "compression": backup.compressed,
            "commonData": any(scope.project_id is None for scope in backup.scopes()),
            "projects": tree,
            "members": [],
        }

    def __repr__(self) -> str:
        return f"<BkrepoReader {self.location!r}>"

    def listen(self, listener: Listener) -> None:
        """Call *listener* with each problem found so far, then with each one as found."""
        for problem in self.backup.problems:
            listener(problem)
        self._listeners.append(listener)

    @property
    def problems(self) -> Sequence[tuple[str, str]]:
        """(entry, why) for every entry refused so far (hostile names, links)."""
        return [(p.where, p.message) for p in self.backup.problems if p.kind == "hostile"]

    def members(self) -> Iterator[str]:
        """The blob entries (the record files are walked by scope, through `backup`)."""
        for sha256 in self.backup.blobs():
            yield self.backup.blob_entry(sha256)

    def exists(self, member: str) -> bool:
        return self.backup.exists(member)

    def open(self, member: str) -> IO[bytes]:
        """The entry's content as stored (a blob unchecked: the caller hashes it)."""
        return self.backup.open_entry(member)

    def blob_member(self, sha256: str) -> str:
        """Where the blob *sha256* is: ``bk+store/<sha[0:2]>/<sha[2:4]>/<sha>``."""
        return self.backup.blob_entry(sha256)

    def close(self) -> None:
        self.backup.close()


def open_reader(
    fs: fsspec.AbstractFileSystem, path: str, location: str, zone: tzinfo | None
) -> BkrepoReader:
    """The bk-repo backup at *path* (a ``<stamp>/`` folder or a zip), opened."""
    listeners: list[Listener] = []

    def dispatch(problem: BkrepoProblem) -> None:
        for listener in listeners:
            listener(problem)

    backup = open_bkrepo(fs, path, zone=zone, location=location, on_problem=dispatch)
    try:
        return BkrepoReader(backup, listeners)
    except BaseException:
        backup.close()
        raise
