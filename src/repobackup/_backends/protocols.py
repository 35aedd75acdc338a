"""What a repository server plugs in: `Record`, and the `Source` and `Target` protocols.

A record is one document of the server (a project, a repository, a node, a user, ...). Its
identity is ``(collection, project_id, repo_name, key)``. Documents are JSON objects kept
verbatim: no field is ever dropped or added on the way through a backup.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, BinaryIO, Protocol, runtime_checkable

import attrs

from .._model.task import ConflictStrategy

__all__ = [
    "MeasuredSource",
    "Outcome",
    "Record",
    "Scope",
    "ScopeSize",
    "Source",
    "Target",
    "record_identity",
]


@attrs.frozen
class Scope:
    """Where records live: common data (both None), a project, or a repository of a project."""

    project_id: str | None = None
    repo_name: str | None = None

    @property
    def kind(self) -> str:
        """``common``, ``project`` or ``repository``."""
        if self.project_id is None:
            return "common"
        return "project" if self.repo_name is None else "repository"

    def __attrs_post_init__(self) -> None:
        if self.project_id is None and self.repo_name is not None:
            raise ValueError("a repository scope needs its project_id")


@attrs.frozen
class Record:
    """One document of the repository server, with the blob it points at (if any).

    *modified* is aware. *blob* is the sha256 (lowercase hex) of the content a file node
    carries, *size* its length. A *deleted* record is a tombstone: it says the key was removed
    at *modified*, so that an incremental backup can carry the deletion.
    """

    collection: str
    key: str
    document: Mapping[str, Any]
    modified: datetime
    project_id: str | None = None
    repo_name: str | None = None
    blob: str | None = None
    size: int = 0
    deleted: bool = False

    @property
    def scope(self) -> Scope:
        """The scope this record belongs to."""
        return Scope(self.project_id, self.repo_name)


def record_identity(record: Record) -> tuple[str, str | None, str | None, str]:
    """The identity of *record*: two records with the same identity are the same thing."""
    return (record.collection, record.project_id, record.repo_name, record.key)


class Outcome(enum.StrEnum):
    """What a `Target` did with one record of a batch."""

    WRITTEN = "WRITTEN"  # created, replaced, or (for a tombstone) deleted
    SKIPPED = "SKIPPED"  # left alone under ConflictStrategy.SKIP


@runtime_checkable
class Source(Protocol):
    """Where a backup reads from."""

    def projects(self, *, since: datetime | None = None) -> Iterator[str]:
        """Every live project id; with *since*, every project with a record (tombstones
        included) modified at or after it, so an increment can carry a deleted project."""
        ...

    def repositories(self, project_id: str, *, since: datetime | None = None) -> Iterator[str]:
        """Every live repository name of *project_id*; with *since*, as for `projects`."""
        ...

    def collections(self, scope: Scope) -> Iterator[str]:
        """The collections that hold records in *scope* (tombstones included)."""
        ...

    def records(
        self, scope: Scope, collection: str, *, since: datetime | None = None
    ) -> Iterator[Record]:
        """The records of *collection* in *scope*, in key order.

        Without *since*: live records only. With *since*: records modified at or after it,
        tombstones included. Must stream: never hold a whole collection in memory.
        """
        ...

    def open_blob(self, sha256: str) -> BinaryIO:
        """A binary file object reading the blob; FileNotFoundError when it is absent."""
        ...

    def reopener(self) -> Callable[[], Source] | None:
        """A picklable callable that opens this same source in another process, or None
        when it cannot be reopened elsewhere (its blobs then move on threads)."""
        ...


@attrs.frozen
class ScopeSize:
    """What a backup of one scope would read: its records, the characters of their keys,
    and the live records among them that carry a blob, with those blobs' bytes."""

    records: int = 0
    blobs: int = 0
    key_chars: int = 0
    blob_bytes: int = 0


@runtime_checkable
class MeasuredSource(Protocol):
    """A `Source` that can size a scope without reading its records (the space check of a
    backup otherwise reads every record once before the backup reads it again)."""

    def measure(self, scope: Scope, *, since: datetime | None = None) -> ScopeSize:
        """The size of what `Source.records` gives for every collection of *scope*, with
        the same meaning of *since*."""
        ...


@runtime_checkable
class Target(Protocol):
    """Where a restore writes to."""

    def apply(self, records: Sequence[Record], conflict: ConflictStrategy) -> list[Outcome]:
        """Write a batch of records (tombstones delete) in one transaction; one outcome each.

        Under SKIP a record whose identity already exists is left alone; under OVERWRITE it
        is replaced. A tombstone for an absent record is WRITTEN (nothing to delete).
        """
        ...

    def has_blob(self, sha256: str) -> bool:
        """Whether the blob is already stored."""
        ...

    def write_blob(self, sha256: str, chunks: Iterable[bytes]) -> int:
        """Store the blob from *chunks*; return its size.

        Must be atomic: if iterating *chunks* raises (the engine's hash check raises at the
        end when the content does not match *sha256*), nothing is stored under *sha256*.
        """
        ...
