"""`MemoryRepository`: a `Source` and `Target` in plain dicts, a test double for code built on
repobackup, with switches that make chosen blobs or records fail."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import BinaryIO

import attrs

from .._model.task import ConflictStrategy
from .base import (
    Identity,
    RepositoryBase,
    check_aware,
    check_record,
    check_scope,
    check_sha256,
)
from .protocols import Outcome, Record, Scope

__all__ = ["MemoryRepository"]

_Place = tuple[str | None, str | None, str]  # (project_id, repo_name, collection)


@attrs.frozen
class _Stored:
    """One stored record; the document is kept as JSON text, as a real store would keep it."""

    document: str
    modified: datetime
    blob: str | None
    size: int
    deleted: bool

    def record(self, place: _Place, key: str) -> Record:
        project_id, repo_name, collection = place
        return Record(
            collection=collection,
            key=key,
            document=json.loads(self.document),
            modified=self.modified,
            project_id=project_id,
            repo_name=repo_name,
            blob=self.blob,
            size=self.size,
            deleted=self.deleted,
        )


class MemoryRepository(RepositoryBase):
    """A repository in this process's memory, implementing `Source` and `Target` with the same
    rules as `SqliteRepository` (and its convenience methods), for tests and notebooks.

    Documents are stored as JSON text, so a document that is not JSON-compatible fails here as
    it would in a real store, and mutating a dict after storing it changes nothing stored.

    Failure injection, for testing error strategies:

    - ``fail_blobs``: sha256s for which `open_blob` and `write_blob` raise OSError (nothing is
      read from *chunks*, nothing is stored).
    - ``fail_records``: keys for which `apply` raises OSError for the whole batch (nothing of it
      is written) and `records` raises OSError when its stream reaches that key.

    `reopener` returns None: the data cannot be reached from another process.
    """

    def __init__(self) -> None:
        self.fail_blobs: set[str] = set()
        self.fail_records: set[str] = set()
        self._lock = threading.Lock()
        self._places: dict[_Place, dict[str, _Stored]] = {}
        self._blobs: dict[str, bytes] = {}

    def __repr__(self) -> str:
        with self._lock:
            count = sum(len(keys) for keys in self._places.values())
            return f"<MemoryRepository records={count} blobs={len(self._blobs)}>"

    # -- Source

    def projects(self, *, since: datetime | None = None) -> Iterator[str]:
        """Project ids in order: those with a live record. With *since*: those with any record
        modified at or after it, tombstones included."""
        return iter(sorted({place[0] for place in self._places_with(since) if place[0]}))

    def repositories(self, project_id: str, *, since: datetime | None = None) -> Iterator[str]:
        """Repository names of *project_id* in order: those with a live record. With *since*:
        those with any record modified at or after it, tombstones included."""
        check_scope(Scope(project_id))
        names = {repo for pid, repo, _ in self._places_with(since) if pid == project_id and repo}
        return iter(sorted(names))

    def collections(self, scope: Scope) -> Iterator[str]:
        """The collections with any record (tombstones included) in exactly *scope*, in order."""
        check_scope(scope)
        with self._lock:
            found = [
                place[2]
                for place, keys in self._places.items()
                if keys and place[:2] == (scope.project_id, scope.repo_name)
            ]
        return iter(sorted(found))

    def records(
        self, scope: Scope, collection: str, *, since: datetime | None = None
    ) -> Iterator[Record]:
        """The records of *collection* in *scope* in key order, from a snapshot taken when the
        stream starts. Without *since*: live only; with it: modified at or after it, tombstones
        included."""
        check_scope(scope)
        if since is not None:
            check_aware(since, "since")
        return self._records((scope.project_id, scope.repo_name, collection), since)

    def _records(self, place: _Place, since: datetime | None) -> Iterator[Record]:
        with self._lock:
            stored = sorted(self._places.get(place, {}).items())
        for key, row in stored:
            if row.deleted if since is None else row.modified < since:
                continue
            if key in self.fail_records:
                raise OSError(f"injected failure reading record {key!r}")
            yield row.record(place, key)

    def open_blob(self, sha256: str) -> BinaryIO:
        """A binary file object reading the blob; FileNotFoundError when it is absent."""
        check_sha256(sha256)
        if sha256 in self.fail_blobs:
            raise OSError(f"injected failure reading blob {sha256}")
        with self._lock:
            content = self._blobs.get(sha256)
        if content is None:
            raise FileNotFoundError(f"no blob {sha256}")
        return io.BytesIO(content)

    def reopener(self) -> Callable[[], MemoryRepository] | None:
        """None: memory cannot be reopened in another process (blobs move on threads)."""
        return None

    # -- Target

    def apply(self, records: Sequence[Record], conflict: ConflictStrategy) -> list[Outcome]:
        """Write *records* all at once; one outcome each, with the rules of
        `SqliteRepository.apply` (SKIP never changes a live record; a deleted identity counts
        as absent; later records of a batch see earlier ones; ``modified`` is kept)."""
        conflict = ConflictStrategy(conflict)
        rows = [
            (
                (record.project_id, record.repo_name, record.collection),
                record.key,
                _Stored(
                    document=check_record(record, f"records[{index}]."),
                    modified=record.modified,
                    blob=record.blob,
                    size=record.size,
                    deleted=record.deleted,
                ),
            )
            for index, record in enumerate(records)
        ]
        for _, key, _ in rows:
            if key in self.fail_records:
                raise OSError(f"injected failure writing record {key!r}")
        outcomes: list[Outcome] = []
        with self._lock:
            for place, key, row in rows:
                existing = self._places.get(place, {}).get(key)
                if conflict is ConflictStrategy.SKIP and existing and not existing.deleted:
                    outcomes.append(Outcome.SKIPPED)
                    continue
                self._places.setdefault(place, {})[key] = row
                outcomes.append(Outcome.WRITTEN)
        return outcomes

    def has_blob(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        check_sha256(sha256)
        with self._lock:
            return sha256 in self._blobs

    def write_blob(self, sha256: str, chunks: Iterable[bytes]) -> int:
        """Store the blob from *chunks* once all are read; return its size. If iterating
        *chunks* raises, nothing is stored."""
        check_sha256(sha256)
        if sha256 in self.fail_blobs:
            raise OSError(f"injected failure writing blob {sha256}")
        content = b"".join(chunks)
        with self._lock:
            self._blobs[sha256] = content
        return len(content)

    # -- lookups for the convenience methods

    def _places_with(self, since: datetime | None) -> list[_Place]:
        if since is not None:
            check_aware(since, "since")
        with self._lock:
            return [
                place
                for place, keys in self._places.items()
                if any(
                    not row.deleted if since is None else row.modified >= since
                    for row in keys.values()
                )
            ]

    def _lookup(self, identity: Identity) -> Record | None:
        collection, project_id, repo_name, key = identity
        place = (project_id, repo_name, collection)
        with self._lock:
            row = self._places.get(place, {}).get(key)
        return None if row is None else row.record(place, key)

    def _every_record(self) -> Iterator[Record]:
        with self._lock:
            places = {place: dict(keys) for place, keys in self._places.items()}
        for place in sorted(places, key=lambda p: (p[0] or "", p[1] or "", p[2])):
            for key, row in sorted(places[place].items()):
                yield row.record(place, key)
