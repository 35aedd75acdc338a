"""What the built-in repositories share: `RepositoryBase` (the convenience methods written once
on top of Source/Target) and the checks and conversions of records, ids, times and documents.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypedDict

from .._model.task import ConflictStrategy
from .._model.times import utcnow
from .protocols import Outcome, Record, Scope, record_identity

__all__ = [
    "Identity",
    "RepositoryBase",
    "Snapshot",
    "check_aware",
    "check_record",
    "check_scope",
    "check_sha256",
    "encode_document",
    "from_micros",
    "normalise_path",
    "to_micros",
]

Identity = tuple[str, str | None, str | None, str]
"""``(collection, project_id, repo_name, key)``, as `record_identity` returns it."""

PROJECT = "project"
REPOSITORY = "repository"
NODE = "node"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# One encoder for every document: json.dumps with options builds a new one at each call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_MAX_DEPTH = 1000  # where the search for a problem stops; json.dumps recurses out near it


class Snapshot(TypedDict):
    """Everything a repository holds, as plain comparable values (see `snapshot`)."""

    records: dict[Identity, Record]
    blobs: dict[str, bytes | None]


# --- checks and conversions shared by the built-in repositories -------------------------------


def check_sha256(sha256: object) -> str:
    """*sha256* if it is 64 lowercase hex digits, else ValueError (it becomes part of a path)."""
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"sha256: expected 64 lowercase hex digits, got {sha256!r}")
    return sha256


def check_aware(value: object, field: str) -> datetime:
    """*value* if it is an aware datetime, else ValueError naming *field*."""
    if not isinstance(value, datetime):
        raise ValueError(f"{field}: expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field}: must be timezone-aware, got naive {value.isoformat()}")
    return value


def _check_id(value: object, field: str) -> None:
    # '' would be indistinguishable from None in the SQLite columns, and no server uses it.
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{field}: expected a non-empty string or None, got {value!r}")
    if value is not None:
        _check_utf8(value, field)


def _check_utf8(value: str, field: str) -> None:
    if problem := _surrogate(value, repr(value)):
        raise ValueError(f"{field}: {problem}")


def check_scope(scope: Scope) -> Scope:
    """*scope* if its ids are usable (non-empty strings or None), else ValueError."""
    if not isinstance(scope, Scope):
        raise TypeError(f"scope: expected a Scope, got {type(scope).__name__}")
    _check_id(scope.project_id, "scope.project_id")
    _check_id(scope.repo_name, "scope.repo_name")
    return scope


def encode_document(document: object, field: str = "document", what: str = "") -> str:
    """The JSON text of *document*, which `json.loads` gives back exactly; else ValueError.

    A document that JSON cannot carry is refused rather than changed: NaN and infinities
    (``json.dumps(allow_nan=False)`` refuses them), strings or field names holding a lone
    surrogate (strict UTF-8 cannot encode them), and values of no JSON type. The error names
    *field*, *what* (e.g. the record's collection and key) and the JSON path of the problem.
    """
    if not isinstance(document, Mapping):
        raise ValueError(f"{field}: expected a JSON object, got {type(document).__name__}")
    try:
        text = _ENCODER.encode(dict(document))
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        where = f" ({what})" if what else ""
        problem = _unjsonable(document, "$") or str(exc)
        raise ValueError(f"{field}{where}: cannot be stored as JSON: {problem}") from None
    return text


def _unjsonable(value: object, path: str, depth: int = 0) -> str | None:
    """What in *value* JSON cannot carry, with its path; None if nothing is found."""
    problem: str | None = None
    if isinstance(value, str):
        problem = _surrogate(value, path)
    elif isinstance(value, float):
        problem = None if math.isfinite(value) else f"{path} is {value!r}, which JSON cannot hold"
    elif isinstance(value, Mapping | list | tuple):
        problem = f"{path} nests too deeply" if depth > _MAX_DEPTH else _inside(value, path, depth)
    elif value is not None and not isinstance(value, bool | int):
        problem = f"{path} is of type {type(value).__name__}, which JSON has no form for"
    return problem


def _inside(value: Mapping[Any, Any] | Sequence[Any], path: str, depth: int) -> str | None:
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    for name, item in items:
        if isinstance(name, str) and (found := _surrogate(name, f"the field name at {path}")):
            return found
        if found := _unjsonable(item, f"{path}[{name!r}]", depth + 1):
            return found
    return None


def _surrogate(text: str, subject: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        lone = text[exc.start : exc.end]
        return f"{subject} holds a lone surrogate {lone!r}, which UTF-8 cannot encode"
    return None


def check_record(record: object, where: str = "") -> str:
    """Check one record of a batch; return its document's JSON text. ValueError names the
    field (prefixed with *where*, e.g. ``records[3].``)."""
    if not isinstance(record, Record):
        raise ValueError(f"{where or 'record'}: expected a Record, got {type(record).__name__}")
    for field in ("collection", "key"):
        value = getattr(record, field)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}{field}: expected a non-empty string, got {value!r}")
        _check_utf8(value, f"{where}{field}")
    _check_id(record.project_id, f"{where}project_id")
    _check_id(record.repo_name, f"{where}repo_name")
    if record.project_id is None and record.repo_name is not None:
        raise ValueError(f"{where}repo_name: a repository record needs its project_id")
    check_aware(record.modified, f"{where}modified")
    if record.blob is not None and not _SHA256.fullmatch(str(record.blob)):
        raise ValueError(f"{where}blob: expected 64 lowercase hex digits, got {record.blob!r}")
    if not isinstance(record.size, int) or isinstance(record.size, bool) or record.size < 0:
        raise ValueError(f"{where}size: expected a non-negative int, got {record.size!r}")
    if not isinstance(record.deleted, bool):
        raise ValueError(f"{where}deleted: expected a bool, got {record.deleted!r}")
    what = f"collection {record.collection!r}, key {record.key!r}"
    return encode_document(record.document, f"{where}document", what)


def to_micros(moment: datetime) -> int:
    """*moment* (aware) as integer microseconds since the Unix epoch: exact and sortable."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of *micros* microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def normalise_path(full_path: object) -> str:
    """A file's full path with its leading ``/`` (added when missing), as servers key nodes."""
    if not isinstance(full_path, str) or not full_path.strip("/"):
        raise ValueError(f"full_path: expected a file path such as '/a/b.txt', got {full_path!r}")
    if full_path.endswith("/"):
        raise ValueError(f"full_path: {full_path!r} names a folder, not a file")
    return full_path if full_path.startswith("/") else "/" + full_path


class RepositoryBase(abc.ABC):
    """The convenience methods of the built-in repositories, written once on top of the
    `Source`/`Target` methods and two lookups each repository provides."""

    @abc.abstractmethod
    def apply(self, records: Sequence[Record], conflict: ConflictStrategy) -> list[Outcome]:
        """See `repobackup.Target.apply`."""

    @abc.abstractmethod
    def has_blob(self, sha256: str) -> bool:
        """See `repobackup.Target.has_blob`."""

    @abc.abstractmethod
    def write_blob(self, sha256: str, chunks: Iterable[bytes]) -> int:
        """See `repobackup.Target.write_blob`."""

    @abc.abstractmethod
    def open_blob(self, sha256: str) -> BinaryIO:
        """See `repobackup.Source.open_blob`."""

    @abc.abstractmethod
    def _lookup(self, identity: Identity) -> Record | None:
        """The stored record with *identity* (a tombstone included), or None."""

    @abc.abstractmethod
    def _every_record(self) -> Iterator[Record]:
        """Every stored record, tombstones included, ordered by scope, collection and key."""

    def put_document(
        self,
        collection: str,
        key: str,
        document: Mapping[str, Any],
        *,
        project_id: str | None = None,
        repo_name: str | None = None,
        modified: datetime | None = None,
    ) -> Record:
        """Store *document* under its identity, replacing what was there; return the record.

        *modified* defaults to now (UTC). A document JSON cannot carry exactly is refused with
        ValueError naming the collection, the key and the problem (its JSON path): NaN or an
        infinity, a lone surrogate in a string or a field name, a value of no JSON type.
        Nothing is stored then.
        """
        record = Record(
            collection=collection,
            key=key,
            document=document,
            modified=utcnow() if modified is None else modified,
            project_id=project_id,
            repo_name=repo_name,
        )
        self.apply([record], ConflictStrategy.OVERWRITE)
        return record

    def get_document(
        self,
        collection: str,
        key: str,
        *,
        project_id: str | None = None,
        repo_name: str | None = None,
    ) -> dict[str, Any] | None:
        """The live document with this identity, or None when it is absent or deleted."""
        check_scope(Scope(project_id, repo_name))
        record = self._lookup((collection, project_id, repo_name, key))
        if record is None or record.deleted:
            return None
        return dict(record.document)

    def put_project(
        self,
        pid: str,
        document: Mapping[str, Any] | None = None,
        *,
        modified: datetime | None = None,
    ) -> Record:
        """Store project *pid*: a ``project`` record keyed by *pid* in the project's scope.

        Without *document* it is ``{"name": pid}``. A document JSON cannot carry exactly is
        refused as `put_document` refuses it.
        """
        return self.put_document(
            PROJECT,
            pid,
            {"name": pid} if document is None else document,
            project_id=pid,
            modified=modified,
        )

    def put_repository(
        self,
        pid: str,
        repo: str,
        document: Mapping[str, Any] | None = None,
        *,
        modified: datetime | None = None,
    ) -> Record:
        """Store repository *repo* of project *pid*: a ``repository`` record keyed by *repo*
        in the repository's scope. Without *document* it is ``{"projectId": pid, "name": repo}``.
        A document JSON cannot carry exactly is refused as `put_document` refuses it.
        """
        default = {"projectId": pid, "name": repo}
        return self.put_document(
            REPOSITORY,
            repo,
            default if document is None else document,
            project_id=pid,
            repo_name=repo,
            modified=modified,
        )

    def put_file(
        self,
        pid: str,
        repo: str,
        full_path: str,
        data: bytes,
        *,
        metadata: Mapping[str, Any] | None = None,
        modified: datetime | None = None,
    ) -> Record:
        """Store *data* as the file *full_path* of *repo*; return its ``node`` record.

        The blob is stored under its sha256, then a node keyed by the full path (a leading
        ``/`` is added when missing) points at it, with the fields an artifact server's node
        has: projectId, repoName, fullPath, name, folder, size, sha256, md5, metadata,
        createdDate, lastModifiedDate. Replacing a file keeps its createdDate. Parent folder
        nodes are not created. *metadata* that JSON cannot carry exactly (NaN, an infinity, a
        lone surrogate) is refused with ValueError, as `put_document` refuses it, before the
        blob is stored.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data: expected bytes, got {type(data).__name__}")
        check_scope(Scope(pid, repo))
        path = normalise_path(full_path)
        moment = check_aware(utcnow() if modified is None else modified, "modified")
        content = bytes(data)
        sha256 = hashlib.sha256(content).hexdigest()
        previous = self._lookup((NODE, pid, repo, path))
        created = moment.isoformat()
        if previous is not None and not previous.deleted:
            created = previous.document.get("createdDate", created)
        document = {
            "projectId": pid,
            "repoName": repo,
            "fullPath": path,
            "name": posixpath.basename(path),
            "folder": False,
            "size": len(content),
            "sha256": sha256,
            "md5": hashlib.md5(content, usedforsecurity=False).hexdigest(),
            "metadata": dict(metadata or {}),
            "createdDate": created,
            "lastModifiedDate": moment.isoformat(),
        }
        record = Record(
            collection=NODE,
            key=path,
            document=document,
            modified=moment,
            project_id=pid,
            repo_name=repo,
            blob=sha256,
            size=len(content),
        )
        check_record(record)  # before the blob, so a bad id stores nothing
        self.write_blob(sha256, [content])
        self.apply([record], ConflictStrategy.OVERWRITE)
        return record

    def delete_file(
        self, pid: str, repo: str, full_path: str, *, modified: datetime | None = None
    ) -> Record:
        """Delete the file *full_path*: its node becomes a tombstone modified at *modified*
        (default now) keeping the last document, without a blob (an incremental backup then
        carries the deletion, not the content). FileNotFoundError when there is no such file.
        """
        check_scope(Scope(pid, repo))
        path = normalise_path(full_path)
        moment = check_aware(utcnow() if modified is None else modified, "modified")
        previous = self._lookup((NODE, pid, repo, path))
        if previous is None or previous.deleted:
            raise FileNotFoundError(f"no file {path!r} in repository {pid}/{repo}")
        tombstone = Record(
            collection=NODE,
            key=path,
            document=previous.document,
            modified=moment,
            project_id=pid,
            repo_name=repo,
            deleted=True,
        )
        self.apply([tombstone], ConflictStrategy.OVERWRITE)
        return tombstone

    def read_file(self, pid: str, repo: str, full_path: str) -> bytes:
        """The content of the file *full_path*; FileNotFoundError when absent or deleted."""
        check_scope(Scope(pid, repo))
        path = normalise_path(full_path)
        record = self._lookup((NODE, pid, repo, path))
        if record is None or record.deleted:
            raise FileNotFoundError(f"no file {path!r} in repository {pid}/{repo}")
        if record.blob is None:
            return b""
        with self.open_blob(record.blob) as stream:
            return stream.read()

    def snapshot(self, *, tombstones: bool = False) -> Snapshot:
        """Everything stored, for tests and diagnostics comparing two repositories.

        ``records`` maps each identity to its record (live ones only unless *tombstones*);
        ``blobs`` maps each sha256 those records point at to its bytes, or None when the blob
        is missing. Orphan blobs are left out: a restore does not carry them, so two
        repositories holding the same data compare equal. Holds everything in memory.
        """
        records = {
            record_identity(record): record
            for record in self._every_record()
            if tombstones or not record.deleted
        }
        blobs: dict[str, bytes | None] = {}
        for record in records.values():
            if record.blob is not None and record.blob not in blobs:
                try:
                    with self.open_blob(record.blob) as stream:
                        blobs[record.blob] = stream.read()
                except FileNotFoundError:
                    blobs[record.blob] = None
        return {"records": records, "blobs": blobs}
