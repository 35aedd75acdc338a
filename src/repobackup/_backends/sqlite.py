"""`SqliteRepository`: records in one SQLite database, blobs content-addressed on any fsspec URL;
plus `RepositoryBase`, the convenience methods and record checks every built-in repository shares.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import json
import os
import posixpath
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypedDict, cast

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .._model.sqlitedb import transaction
from .._model.task import ConflictStrategy
from .._model.times import utcnow
from .protocols import Outcome, Record, Scope, record_identity

__all__ = ["Identity", "RepositoryBase", "Snapshot", "SqliteRepository"]

Identity = tuple[str, str | None, str | None, str]
"""``(collection, project_id, repo_name, key)``, as `record_identity` returns it."""

PROJECT = "project"
REPOSITORY = "repository"
NODE = "node"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


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


def check_scope(scope: Scope) -> Scope:
    """*scope* if its ids are usable (non-empty strings or None), else ValueError."""
    if not isinstance(scope, Scope):
        raise TypeError(f"scope: expected a Scope, got {type(scope).__name__}")
    _check_id(scope.project_id, "scope.project_id")
    _check_id(scope.repo_name, "scope.repo_name")
    return scope


def encode_document(document: object, field: str = "document") -> str:
    """The JSON text of *document*, exactly as `json.loads` gives it back.

    ASCII output keeps lone surrogates and control characters as escapes, so any str the
    server holds survives a trip through SQLite's UTF-8 text.
    """
    if not isinstance(document, Mapping):
        raise ValueError(f"{field}: expected a JSON object, got {type(document).__name__}")
    try:
        return json.dumps(dict(document), ensure_ascii=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: not JSON-compatible: {exc}") from None


def check_record(record: object, where: str = "") -> str:
    """Check one record of a batch; return its document's JSON text. ValueError names the
    field (prefixed with *where*, e.g. ``records[3].``)."""
    if not isinstance(record, Record):
        raise ValueError(f"{where or 'record'}: expected a Record, got {type(record).__name__}")
    for field in ("collection", "key"):
        value = getattr(record, field)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}{field}: expected a non-empty string, got {value!r}")
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
    return encode_document(record.document, f"{where}document")


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

        *modified* defaults to now (UTC).
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

        Without *document* it is ``{"name": pid}``.
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
        nodes are not created.
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


# --- SqliteRepository ----------------------------------------------------------------------------

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS records (
        collection TEXT NOT NULL,
        project_id TEXT NOT NULL,   -- '' for common data (None in a Record)
        repo_name TEXT NOT NULL,    -- '' outside a repository (None in a Record)
        key TEXT NOT NULL,
        document TEXT NOT NULL,     -- the JSON object, verbatim
        modified INTEGER NOT NULL,  -- microseconds since the Unix epoch, UTC
        blob TEXT,                  -- sha256 of the content, or NULL
        size INTEGER NOT NULL,
        deleted INTEGER NOT NULL,   -- 1 for a tombstone
        created INTEGER NOT NULL    -- when this repository first stored the identity
    )
    """,
    # Identity. None is stored as '' because SQLite's UNIQUE treats NULLs as distinct; the
    # scope comes first so that a scope's collections and its keys in order are index ranges.
    """
    CREATE UNIQUE INDEX IF NOT EXISTS records_identity
        ON records (project_id, repo_name, collection, key)
    """,
    # An incremental backup asks one scope and collection for rows modified since a time.
    """
    CREATE INDEX IF NOT EXISTS records_scope_modified
        ON records (project_id, repo_name, collection, modified)
    """,
    # Finds the projects and repositories touched since a time without scanning everything.
    """
    CREATE INDEX IF NOT EXISTS records_modified
        ON records (modified, project_id, repo_name)
    """,
    # Listing live projects and repositories seeks this index once per id (a skip scan).
    """
    CREATE INDEX IF NOT EXISTS records_live_scope
        ON records (project_id, repo_name) WHERE deleted = 0
    """,
)

_COLUMNS = "collection, project_id, repo_name, key, document, modified, blob, size, deleted"

_UPSERT = """
    INSERT INTO records (collection, project_id, repo_name, key, document, modified, blob, size,
                         deleted, created)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (project_id, repo_name, collection, key) DO UPDATE SET
        document = excluded.document, modified = excluded.modified, blob = excluded.blob,
        size = excluded.size, deleted = excluded.deleted
"""

_IDENTITY_WHERE = "project_id = ? AND repo_name = ? AND collection = ? AND key = ?"

BUSY_TIMEOUT = 60.0  # seconds a writer waits for another process's transaction
FETCH_BATCH = 500  # rows fetched at a time while streaming
MAX_IDLE_READERS = 8


def _row_to_record(row: tuple[Any, ...]) -> Record:
    collection, project_id, repo_name, key, document, modified, blob, size, deleted = row
    return Record(
        collection=collection,
        key=key,
        document=json.loads(document),
        modified=from_micros(modified),
        project_id=project_id or None,
        repo_name=repo_name or None,
        blob=blob,
        size=size,
        deleted=bool(deleted),
    )


class SqliteRepository(RepositoryBase):
    """The built-in repository: records in the SQLite database *path*, blobs content-addressed
    under the fsspec URL *blobs* as ``<blobs>/<sha[0:2]>/<sha[2:4]>/<sha256>``.

    *blobs* defaults to the folder ``<path>.blobs`` beside the database (``repo.db`` keeps its
    blobs in ``repo.db.blobs``). *storage_options* go to fsspec for that URL. Implements
    `Source` and `Target`; the database is created on first use (WAL mode, so it must be on a
    local disk, not a network share).

    Threads: any method may be called from any thread. Writes are serialised on one connection;
    each stream (`records`, listings) reads on a connection of its own, from a consistent
    snapshot, so writing while a stream is open works. Blob methods touch only the blob store.
    Errors of sqlite3 and fsspec come out as they are; the engine wraps them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        blobs: str | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        database = os.fspath(path)
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ValueError(
                f"path: expected the file name of a database, got {database!r} "
                "(use MemoryRepository for a repository in memory)"
            )
        self._path = os.path.abspath(database)
        self._storage_options = dict(storage_options or {})
        url = self._path + ".blobs" if blobs is None else blobs
        fs, root = fsspec.core.url_to_fs(url, **self._storage_options)
        self._fs: Any = fs
        self._root: str = root.rstrip("/")
        # Local blobs go through os and io directly: fsspec's wrappers cost more than reading
        # or writing a small blob does.
        self._local = isinstance(fs, LocalFileSystem)
        # A local store is remembered by its absolute path, so a reopener works from any cwd.
        self._blobs = self._root if self._local else url
        self._lock = threading.Lock()
        self._closed = False
        self._idle: list[sqlite3.Connection] = []
        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        self._writer = self._connect()
        try:
            self._writer.execute("PRAGMA journal_mode = WAL")
            with self._transaction() as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
        except BaseException:
            self._writer.close()
            raise

    def __repr__(self) -> str:
        return f"<SqliteRepository {self._path!r} blobs={self._blobs!r}>"

    def __enter__(self) -> SqliteRepository:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        """The absolute path of the database."""
        return self._path

    @property
    def blobs(self) -> str:
        """Where the blobs live: an absolute local path or the fsspec URL given."""
        return self._blobs

    def close(self) -> None:
        """Close the database connections; streams still open close theirs when they end.

        Calling it again does nothing; any other use afterwards raises ValueError.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- connections

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), so a batch is exactly
        # one transaction and reads never hold a lock longer than their statement.
        return sqlite3.connect(
            self._path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self!r} is closed")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open()
            with transaction(self._writer) as conn:
                yield conn

    def _take_reader(self) -> sqlite3.Connection:
        with self._lock:
            self._check_open()
            if self._idle:
                return self._idle.pop()
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE_READERS:
                self._idle.append(conn)
                return
        conn.close()

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        conn = self._take_reader()
        try:
            cursor = conn.execute(sql, params)
            try:
                while rows := cursor.fetchmany(FETCH_BATCH):
                    yield from rows
            finally:
                cursor.close()
        finally:
            self._give_back(conn)

    def _skip_scan(self, sql: str, params: Sequence[Any]) -> Iterator[str]:
        # One index seek per distinct value; each step is its own short read, so a long
        # listing consumed slowly never pins a snapshot (which would stop WAL checkpoints).
        last = ""
        while True:
            conn = self._take_reader()
            try:
                rows = conn.execute(sql, (*params, last)).fetchall()
            finally:
                self._give_back(conn)
            if not rows:
                return
            last = rows[0][0]
            yield last

    # -- Source

    def projects(self, *, since: datetime | None = None) -> Iterator[str]:
        """Project ids in order: those with a live record (in the project's scope or one of its
        repositories). With *since*: those with any record modified at or after it,
        tombstones included, i.e. the projects an incremental backup has to visit."""
        if since is None:
            return self._skip_scan(
                "SELECT project_id FROM records WHERE deleted = 0 AND project_id > ?"
                " ORDER BY project_id LIMIT 1",
                (),
            )
        micros = to_micros(check_aware(since, "since"))
        return (
            row[0]
            for row in self._stream(
                "SELECT DISTINCT project_id FROM records INDEXED BY records_modified"
                " WHERE modified >= ? AND project_id != ''"
                " ORDER BY project_id",
                (micros,),
            )
        )

    def repositories(self, project_id: str, *, since: datetime | None = None) -> Iterator[str]:
        """Repository names of *project_id* in order: those with a live record. With *since*:
        those with any record modified at or after it, tombstones included."""
        check_scope(Scope(project_id))
        if since is None:
            return self._skip_scan(
                "SELECT repo_name FROM records WHERE deleted = 0 AND project_id = ?"
                " AND repo_name > ? ORDER BY repo_name LIMIT 1",
                (project_id,),
            )
        micros = to_micros(check_aware(since, "since"))
        return (
            row[0]
            for row in self._stream(
                "SELECT DISTINCT repo_name FROM records INDEXED BY records_modified"
                " WHERE modified >= ? AND project_id = ?"
                " AND repo_name != '' ORDER BY repo_name",
                (micros, project_id),
            )
        )

    def collections(self, scope: Scope) -> Iterator[str]:
        """The collections with any record (tombstones included) in exactly *scope*, in order."""
        check_scope(scope)
        return self._skip_scan(
            "SELECT collection FROM records WHERE project_id = ? AND repo_name = ?"
            " AND collection > ? ORDER BY collection LIMIT 1",
            (scope.project_id or "", scope.repo_name or ""),
        )

    def records(
        self, scope: Scope, collection: str, *, since: datetime | None = None
    ) -> Iterator[Record]:
        """The records of *collection* in *scope* in key order, streamed from one snapshot.

        Without *since*: live records only. With *since*: records modified at or after it,
        tombstones included.
        """
        check_scope(scope)
        params: list[Any] = [scope.project_id or "", scope.repo_name or "", collection]
        sql = f"SELECT {_COLUMNS} FROM records WHERE project_id = ? AND repo_name = ?"
        sql += " AND collection = ?"
        if since is None:
            sql += " AND deleted = 0"
        else:
            sql += " AND modified >= ?"
            params.append(to_micros(check_aware(since, "since")))
        return map(_row_to_record, self._stream(sql + " ORDER BY key", params))

    def open_blob(self, sha256: str) -> BinaryIO:
        """A binary file object reading the blob; FileNotFoundError when it is absent."""
        path = self._blob_path(sha256)
        if self._local:
            return open(path, "rb")
        return cast(BinaryIO, self._fs.open(path, "rb"))

    def reopener(self) -> Callable[[], SqliteRepository]:
        """A picklable ``functools.partial`` opening this repository (database and blobs)."""
        if self._storage_options:
            return functools.partial(
                SqliteRepository, self._path, self._blobs, storage_options=self._storage_options
            )
        return functools.partial(SqliteRepository, self._path, self._blobs)

    # -- Target

    def apply(self, records: Sequence[Record], conflict: ConflictStrategy) -> list[Outcome]:
        """Write *records* in one transaction; one outcome each, in order.

        OVERWRITE writes every record (a tombstone replaces the row with a tombstone row).
        SKIP leaves a live record of the same identity alone, tombstone or not: the target's
        live data is never changed; an absent or deleted identity counts as absent and is
        written. Within a batch, later records see the effect of earlier ones. Each record's
        own ``modified`` is stored, so a restore reproduces the source. The batch is checked
        first (ValueError naming ``records[i].<field>``); if writing fails, nothing is written.
        """
        conflict = ConflictStrategy(conflict)
        now = to_micros(utcnow())
        rows = [
            (
                record.collection,
                record.project_id or "",
                record.repo_name or "",
                record.key,
                check_record(record, f"records[{index}]."),
                to_micros(record.modified),
                record.blob,
                record.size,
                int(record.deleted),
                now,
            )
            for index, record in enumerate(records)
        ]
        if not rows:
            return []
        with self._transaction() as conn:
            if conflict is ConflictStrategy.OVERWRITE:
                conn.executemany(_UPSERT, rows)
                return [Outcome.WRITTEN] * len(rows)
            outcomes: list[Outcome] = []
            to_write = []
            live: dict[tuple[Any, ...], bool] = {}
            for row in rows:
                identity = row[:4]
                if identity not in live:
                    # Same order as the index columns: (project_id, repo_name, collection, key).
                    found = conn.execute(
                        f"SELECT deleted FROM records WHERE {_IDENTITY_WHERE}",
                        (row[1], row[2], row[0], row[3]),
                    ).fetchall()
                    live[identity] = bool(found) and not found[0][0]
                if live[identity]:
                    outcomes.append(Outcome.SKIPPED)
                    continue
                outcomes.append(Outcome.WRITTEN)
                to_write.append(row)
                live[identity] = not row[8]
            conn.executemany(_UPSERT, to_write)
            return outcomes

    def has_blob(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        path = self._blob_path(sha256)
        if self._local:
            return os.path.exists(path)
        return bool(self._fs.exists(path))

    def write_blob(self, sha256: str, chunks: Iterable[bytes]) -> int:
        """Store the blob from *chunks*; return its size.

        The content goes to a temporary file beside its final name (``<sha256>.<random>.tmp``)
        and is moved into place only once every chunk is written (os.replace on a local disk),
        so if iterating *chunks* raises, nothing is stored under *sha256* and the error comes
        out unchanged. A process killed midway can leave such a ``.tmp`` file; nothing reads it.
        """
        final = self._blob_path(sha256)
        # Beside the final name, not in one shared folder: a rename within a folder is the
        # cheapest, and concurrent writers do not all queue on one folder's lock.
        temporary = f"{final}.{uuid.uuid4().hex}.tmp"
        fs = self._fs
        size = 0
        try:
            with self._create(temporary) as stream:
                for chunk in chunks:
                    stream.write(chunk)
                    size += len(chunk)
            if self._local:
                os.replace(temporary, final)  # atomic, and replaces on every platform
            else:
                fs.mv(temporary, final)
        except BaseException:
            # The original error matters more than a leftover temporary file.
            with contextlib.suppress(Exception):
                fs.rm(temporary)
            raise
        return size

    def _create(self, path: str) -> BinaryIO:
        """A new file at *path* to write, its folder made when missing."""
        if not self._local:
            self._fs.makedirs(posixpath.dirname(path), exist_ok=True)
            return cast(BinaryIO, self._fs.open(path, "wb"))
        try:
            return open(path, "wb")
        except FileNotFoundError:
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            return open(path, "wb")

    def _blob_path(self, sha256: str) -> str:
        check_sha256(sha256)
        return f"{self._root}/{sha256[0:2]}/{sha256[2:4]}/{sha256}"

    # -- lookups for the convenience methods

    def _lookup(self, identity: Identity) -> Record | None:
        collection, project_id, repo_name, key = identity
        with self._lock:
            self._check_open()
            rows = self._writer.execute(
                f"SELECT {_COLUMNS} FROM records WHERE {_IDENTITY_WHERE}",
                (project_id or "", repo_name or "", collection, key),
            ).fetchall()
        return _row_to_record(rows[0]) if rows else None

    def _every_record(self) -> Iterator[Record]:
        return map(
            _row_to_record,
            self._stream(
                f"SELECT {_COLUMNS} FROM records ORDER BY project_id, repo_name, collection, key",
                (),
            ),
        )
