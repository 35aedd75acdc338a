"""`SqliteRepository`: the built-in repository, records in one SQLite database and blobs
content-addressed on any fsspec URL (a folder beside the database by default).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import pathlib
import posixpath
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .._model.sqlitedb import transaction
from .._model.task import ConflictStrategy
from .._model.times import utcnow
from .base import (
    Identity,
    RepositoryBase,
    Snapshot,
    check_aware,
    check_record,
    check_scope,
    check_sha256,
    from_micros,
    to_micros,
)
from .protocols import Outcome, Record, Scope, ScopeSize

__all__ = ["Snapshot", "SqliteRepository"]

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
FOLDERS_KEPT = 1 << 14  # blob folders remembered as made, at most


# What `write_blob` names a blob while it is written: ``<sha256>.<uuid4 hex>.tmp``.
_TEMPORARY = re.compile(r"[0-9a-f]{64}\.[0-9a-f]{32}\.tmp")


def _has_records_table(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'"
    ).fetchall()
    return bool(found)


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


def _records_where(
    scope: Scope, collection: str | None, since: datetime | None
) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of the records `SqliteRepository.records`
    yields, of *collection* or (None) of every collection of *scope*: live ones, or with
    *since* those modified at or after it, tombstones included."""
    check_scope(scope)
    params: list[Any] = [scope.project_id or "", scope.repo_name or ""]
    where = "project_id = ? AND repo_name = ?"
    if collection is not None:
        where += " AND collection = ?"
        params.append(collection)
    if since is None:
        where += " AND deleted = 0"
    else:
        where += " AND modified >= ?"
        params.append(to_micros(check_aware(since, "since")))
    return where, params


class SqliteRepository(RepositoryBase):
    """The built-in repository: records in the SQLite database *path*, blobs content-addressed
    under the fsspec URL *blobs* as ``<blobs>/<sha[0:2]>/<sha[2:4]>/<sha256>``.

    *blobs* defaults to the folder ``<path>.blobs`` beside the database (``repo.db`` keeps its
    blobs in ``repo.db.blobs``). *storage_options* go to fsspec for that URL. Implements
    `Source` and `Target`. The database runs in WAL mode, so it must be on a local disk, not a
    network share.

    With *create* (the default) a missing database is created, with its folder. With
    ``create=False`` a missing database raises FileNotFoundError and nothing is created (no
    file, no folder, no blob folder), and an existing file without the repository's table is
    refused (ValueError) unchanged: open a repository to back up this way, so that a path that
    is wrong or not mounted fails instead of giving an empty backup.

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
        create: bool = True,
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
        #: Blob folders this object made or found, so that each is made once (bounded).
        self._folders: set[str] = set()
        # A local store is remembered by its absolute path, so a reopener works from any cwd.
        self._blobs = self._root if self._local else url
        self._lock = threading.Lock()
        self._closed = False
        self._idle: list[sqlite3.Connection] = []
        if create:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
        elif not os.path.exists(self._path):
            raise FileNotFoundError(
                errno.ENOENT, "no repository database (nothing was created)", self._path
            )
        # Once the file exists, every connection opens it read-write only: a database deleted
        # meanwhile is an error, never an empty new one.
        self._uri = pathlib.Path(self._path).as_uri() + "?mode=rw"
        self._writer = self._connect() if not create else self._connect_creating()
        try:
            self._writer.execute("PRAGMA journal_mode = WAL")
            with self._transaction() as conn:
                if not create and not _has_records_table(conn):
                    raise ValueError(
                        f"path: {self._path} is not a repository database (it has no records "
                        "table); nothing was changed"
                    )
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

    @property
    def local_blobs(self) -> bool:
        """Whether the blobs are on a local disk, which other processes of this machine reach
        as this one does (a run may copy them on a process pool)."""
        return self._local

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
            self._uri, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False, uri=True
        )

    def _connect_creating(self) -> sqlite3.Connection:
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
        where, params = _records_where(scope, collection, since)
        sql = f"SELECT {_COLUMNS} FROM records WHERE {where} ORDER BY key"
        return map(_row_to_record, self._stream(sql, params))

    def measure(self, scope: Scope, *, since: datetime | None = None) -> ScopeSize:
        """What `records` gives for every collection of *scope* (with *since* as there),
        counted in one query: the space check sizes a backup without decoding a document."""
        where, params = _records_where(scope, None, since)
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(blob IS NOT NULL AND deleted = 0), 0),"
            " COALESCE(SUM(LENGTH(key)), 0),"
            " COALESCE(SUM(CASE WHEN blob IS NOT NULL AND deleted = 0 THEN size END), 0)"
            f" FROM records WHERE {where}"
        )
        ((records, blobs, key_chars, blob_bytes),) = list(self._stream(sql, params))
        return ScopeSize(records, blobs, key_chars, blob_bytes)

    def open_blob(self, sha256: str) -> BinaryIO:
        """A binary file object reading the blob; FileNotFoundError when it is absent."""
        path = self._blob_path(sha256)
        if self._local:
            return open(path, "rb")
        return cast(BinaryIO, self._fs.open(path, "rb"))

    def reopener(self) -> Callable[[], SqliteRepository]:
        """A picklable ``functools.partial`` opening this repository (database and blobs)."""
        # create=False: a process that reopens it must find this database, never make a new one.
        if self._storage_options:
            return functools.partial(
                SqliteRepository,
                self._path,
                self._blobs,
                storage_options=self._storage_options,
                create=False,
            )
        return functools.partial(SqliteRepository, self._path, self._blobs, create=False)

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

    def remove_temporary_blobs(self, *, older_than: datetime | None = None) -> list[str]:
        """Remove the temporary files (``<sha256>.<hex>.tmp``) that writes of blobs killed
        midway left beside the blobs; return their paths. Nothing else is touched.

        A write still under way has such a file too: pass *older_than* (aware) to remove only
        those last modified before it, or call this only when no write can be running (the
        recovery of a dead run does so for the runs it knows have ended). Walks the blob
        store one folder at a time.
        """
        cutoff = None if older_than is None else check_aware(older_than, "older_than")
        removed = []
        for path in self._temporary_blobs():
            if cutoff is not None and self._modified(path) >= cutoff:
                continue
            with contextlib.suppress(FileNotFoundError):  # its writer may have just finished
                if self._local:
                    os.remove(path)
                else:
                    self._fs.rm_file(path)
                removed.append(path)
        return removed

    def _temporary_blobs(self) -> Iterator[str]:
        if self._local:
            if not os.path.isdir(self._root):
                return
            for folder, _, files in os.walk(self._root):
                for name in sorted(files):
                    if _TEMPORARY.fullmatch(name):
                        yield os.path.join(folder, name)
            return
        if not self._fs.exists(self._root):
            return
        for folder, _, files in self._fs.walk(self._root):
            for name in sorted(files):
                if _TEMPORARY.fullmatch(name):
                    yield f"{folder.rstrip('/')}/{name}"

    def _modified(self, path: str) -> datetime:
        if self._local:
            return datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
        moment: datetime = self._fs.modified(path)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    def _create(self, path: str) -> BinaryIO:
        """A new file at *path* to write, its folder made when missing."""
        if not self._local:
            self._fs.makedirs(posixpath.dirname(path), exist_ok=True)
            return cast(BinaryIO, self._fs.open(path, "wb"))
        folder = posixpath.dirname(path)
        if folder not in self._folders:
            # A restore makes most blob folders new: one mkdir first costs less than an open
            # that fails and then os.makedirs, which asks whether each parent exists.
            with contextlib.suppress(FileExistsError, FileNotFoundError):
                os.mkdir(folder)
            if len(self._folders) >= FOLDERS_KEPT:
                self._folders.clear()
            self._folders.add(folder)
        try:
            return open(path, "wb")
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
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
