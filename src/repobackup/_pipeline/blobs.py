"""Blob copies of a run: small-blob groups, the bounded pump and where the jobs run.

Jobs (see `jobs`) run on the run's executor when the backend can be reopened, else on
threads here; the parent only tallies, and for a zip appends the finished members.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import posixpath
import queue
import shutil
import sqlite3
import tempfile
import uuid
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from .._archive.layout import BackupWriter, FolderWriter
from .._archive.sealing import sealing_of
from .._archive.zipwriter import ZipWriter
from .._backends.protocols import Source
from ..exceptions import RepoBackupError, store_errors
from .context import RunContext
from .jobs import BackupJob, BlobCodec, Here, Packed, Stored, VerifiedChunks, run_job
from .tally import ErrorScope, FastFail, RunState

__all__ = [
    "BlobPump",
    "BlobTransfer",
    "SeenBlobs",
    "SmallBlobs",
    "VerifiedChunks",
    "reason",
]

SMALL_BLOB = 256 * 1024  # blobs up to this size are copied several to a job
BLOBS_PER_JOB = 16
BYTES_PER_JOB = 1 << 20
#: A job sent to another process or machine takes a round trip through pipes or the network
#: to start and to report: larger groups there keep its workers from waiting for work.
REMOTE_BLOBS_PER_JOB = 64
REMOTE_BYTES_PER_JOB = 4 << 20


class SmallBlobs:
    """Gathers small blobs into groups copied by one job each: handing a job from one thread
    to another costs about as much as copying a small blob does."""

    def __init__(self, *, remote: bool = False) -> None:
        self._group: list[str] = []
        self._bytes = 0
        self._most = REMOTE_BLOBS_PER_JOB if remote else BLOBS_PER_JOB
        self._most_bytes = REMOTE_BYTES_PER_JOB if remote else BYTES_PER_JOB

    def add(self, sha256: str, size: int) -> list[str] | None:
        """Add a blob of *size* bytes (as its record says); return a group ready to go, which
        is the blob alone when it is not small."""
        if size > SMALL_BLOB:
            return [sha256]
        self._group.append(sha256)
        self._bytes += size
        if len(self._group) >= self._most or self._bytes >= self._most_bytes:
            return self.take()
        return None

    def take(self) -> list[str]:
        """The blobs gathered so far (maybe none), leaving none."""
        group, self._group, self._bytes = self._group, [], 0
        return group


class BlobPump:
    """Runs blob jobs on an executor with a bounded number in flight, small blobs several to
    a job (see `SmallBlobs`); tallies what they did and appends a zip's finished members."""

    def __init__(self, run: RunState, transfer: BlobTransfer, limit: int) -> None:
        self.run = run
        self.transfer = transfer
        self.limit = max(1, limit)
        self.pending: dict[Future[Any], list[str]] = {}
        # Jobs report here as they finish, in whatever order: waiting for the oldest would
        # leave the other workers idle behind one large blob.
        self._finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self._small = SmallBlobs(remote=transfer.remote)
        self._sizes: dict[str, int] = {}
        #: Blobs (and their bytes) an interrupted run had stored and this one moved in.
        self.resumed = 0
        self.resumed_bytes = 0

    def add(self, sha256: str, size: int) -> None:
        """Copy the blob *sha256*, of *size* bytes as its record says, into the backup."""
        if self.transfer.reuse(sha256):
            self.resumed += 1
            self.resumed_bytes += size
            self.run.add(blobs_reused=1)
            return
        self._sizes[sha256] = size
        if group := self._small.add(sha256, size):
            self._submit(group)

    def _submit(self, group: list[str]) -> None:
        # What has finished is taken at once: a zip's members wait in memory until then.
        with contextlib.suppress(queue.Empty):
            while self.pending:
                self._reap(self._finished.get_nowait())
        while len(self.pending) >= self.limit:
            self._reap(self._finished.get())
        shas = tuple((sha, self._sizes.pop(sha)) for sha in group)
        future = self.transfer.submit(shas)
        self.pending[future] = group
        future.add_done_callback(self._finished.put)

    def _reap(self, future: Future[Any]) -> None:
        keys = self.pending.pop(future)
        try:
            outcomes: list[Any] = future.result()
        except FastFail:
            raise
        except Exception as exc:
            outcomes = [exc] * len(keys)
        for key, result in zip(keys, outcomes, strict=True):
            outcome = result
            if isinstance(result, Packed):
                try:
                    self.transfer.append(result)
                except RepoBackupError as exc:
                    outcome = exc
            if isinstance(outcome, Exception):
                self.run.add(blobs_failed=1)
                self.run.fail(ErrorScope.BLOB, key, reason(outcome))
            elif isinstance(outcome, Stored) and outcome.reused:
                self.resumed += 1
                self.resumed_bytes += outcome.read
                self.run.add(blobs_reused=1, bytes_reused=outcome.read)
            else:
                written = outcome.written if isinstance(outcome, Stored) else outcome.size
                self.run.add(blobs_written=1, bytes_read=outcome.read, bytes_written=written)

    def drain(self) -> None:
        if group := self._small.take():
            self._submit(group)
        while self.pending:
            self._reap(self._finished.get())

    def cancel(self) -> None:
        self._small.take()
        for future in self.pending:
            future.cancel()
        for future in self.pending:
            if not future.cancelled():
                with contextlib.suppress(BaseException):
                    future.result()
        self.pending.clear()


def reason(exc: BaseException) -> str:
    if isinstance(exc, RepoBackupError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class SeenBlobs:
    """The blobs a backup already holds: the latest in a set of bounded size, the rest on
    disk in a temporary SQLite table, so memory stays flat with a million distinct blobs and
    a backup of fewer than `MEMORY` never asks SQLite at all."""

    #: Blobs kept in memory before they move to the table, in one transaction.
    MEMORY = 1 << 16

    def __init__(self) -> None:
        self._recent: set[bytes] = set()
        self._db: sqlite3.Connection | None = None

    def add(self, sha256: str) -> bool:
        """Record *sha256*; True when it was not seen before."""
        key = bytes.fromhex(sha256)
        if key in self._recent or self._stored(key):
            return False
        self._recent.add(key)
        if len(self._recent) >= self.MEMORY:
            self._spill()
        return True

    def __contains__(self, sha256: str) -> bool:
        try:
            key = bytes.fromhex(sha256)
        except ValueError:
            return False
        return key in self._recent or self._stored(key)

    def _stored(self, key: bytes) -> bool:
        if self._db is None:
            return False
        return self._db.execute("SELECT 1 FROM seen WHERE sha = ?", (key,)).fetchone() is not None

    def _spill(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect("", check_same_thread=False)
            self._db.execute("CREATE TABLE seen (sha BLOB PRIMARY KEY) WITHOUT ROWID")
        with self._db:
            rows = ((key,) for key in self._recent)
            self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", rows)
        self._recent.clear()

    def close(self) -> None:
        self._recent.clear()
        if self._db is not None:
            self._db.close()


#: A run given no executor that moves at least this many bytes of blobs between local
#: folders runs its blob jobs on a process pool of its own (see `own_pool`).
OWN_POOL_BYTES = 256 << 20


def own_pool(context: RunContext, total_bytes: int | None, fs: Any) -> Executor | None:
    """A process pool of the run's own for its blob jobs, or None for threads here.

    Measured on two cores, a pool copies a large run's blobs 20-30% faster than threads
    do: each copy is mostly hashing, compressing and system calls, but the Python between
    them holds the one lock threads share. A pool costs about half a second to start, so it
    is for large runs only, and for local disks, where threads wait on that lock, not on a
    network as they do on an object store. It is made only when the engine has no executor
    of its own and was let (`Engine(processes=True)`: each worker imports the program's main
    module, which must keep its work under ``if __name__ == "__main__":``); the caller shuts
    it down."""
    if not context.processes or context.executor is not None:
        return None
    if total_bytes is None or total_bytes < OWN_POOL_BYTES:
        return None
    workers = context.workers(fs)
    if not isinstance(fs, LocalFileSystem) or workers < 2:
        return None
    # A fork server's children start clean: never a copy of this process's threads and locks.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))


def source_is_local(backend: Any) -> bool:
    """Whether *backend* keeps its blobs on a local disk (`SqliteRepository.local_blobs`):
    one a process of this machine reopens and finds the same."""
    return getattr(backend, "local_blobs", False) is True


class BlobTransfer:
    """Decides where blob jobs run: on the engine's executor when the source can be
    reopened elsewhere (or on a pool of the run's own, see `own_pool`), else on threads here
    (the same jobs, given the source itself)."""

    def __init__(
        self,
        context: RunContext,
        source: Source,
        writer: BackupWriter,
        run: RunState,
        *,
        workers: int,
        leftover: tuple[Any, str] | None = None,
    ) -> None:
        self.writer = writer
        self.fast_fail = run.fast_fail
        self.codec = BlobCodec(compress=writer.compressed, sealing=sealing_of(writer))
        self.leftover = leftover
        self._own: Executor | None = None
        self._spool_dir: str | None = None
        reopen = source.reopener()
        pool = None
        if reopen is not None and source_is_local(source):
            pool = own_pool(context, run.total_bytes, getattr(writer, "fs", None))
        given = context.executor or pool
        if given is not None and reopen is not None:
            self.executor: Executor = given
            self.source: Any = reopen
            self.remote = True
            self._own = pool
        else:
            if context.executor is not None:
                run.notes.append(
                    "blobs moved on threads, not on the given executor: "
                    "the source cannot be reopened elsewhere"
                )
            self._own = ThreadPoolExecutor(
                context.max_workers, thread_name_prefix="repobackup-blob"
            )
            self.executor = self._own
            self.source = Here(source)
            self.remote = False
        self.spool = self._make_spool() if isinstance(writer, ZipWriter) else None

    def _make_spool(self) -> tuple[Any, str]:
        """Where workers leave large finished members: a local temporary folder for threads
        or a pool of this machine, else a hidden folder beside the backup on its store,
        which workers elsewhere reach."""
        assert isinstance(self.writer, ZipWriter)
        if not self.remote or self._own is not None:
            self._spool_dir = tempfile.mkdtemp(prefix="repobackup-spool-")
            return LocalFileSystem(), self._spool_dir
        fs = self.writer.fs
        final = self.writer.final_path
        folder = posixpath.join(
            posixpath.dirname(final), f".{posixpath.basename(final)}.{uuid.uuid4().hex[:12]}.spool"
        )
        with store_errors(f"creating {folder}"):
            fs.makedirs(folder, exist_ok=True)
        self._spool_dir = folder
        return fs, folder

    def reuse(self, sha256: str) -> bool:
        """Whether the zip this run continues holds the blob already (see `ZipWriter.reuse`):
        nothing to copy."""
        return isinstance(self.writer, ZipWriter) and self.writer.reuse(sha256)

    def submit(self, shas: tuple[tuple[str, int], ...]) -> Future[Any]:
        folder = None
        if isinstance(self.writer, FolderWriter):
            folder = (self.writer.fs, self.writer.root)
        job = BackupJob(
            self.source,
            shas,
            self.codec,
            folder=folder,
            spool=self.spool,
            leftover=self.leftover,
            fast_fail=self.fast_fail,
        )
        return self.executor.submit(run_job, job)

    def append(self, packed: Packed) -> None:
        """Append a member a worker finished into the zip, and drop its spool."""
        assert isinstance(self.writer, ZipWriter)
        assert self.spool is not None
        if packed.data is not None:
            self.writer.append_member(
                packed.member, packed.crc, packed.size, io.BytesIO(packed.data)
            )
            return
        assert packed.spool is not None
        fs = self.spool[0]
        try:
            with (
                store_errors(f"reading the spool of {packed.member}"),
                fs.open(packed.spool, "rb") as file,
            ):
                self.writer.append_member(packed.member, packed.crc, packed.size, file)
        finally:
            with contextlib.suppress(Exception):
                fs.rm(packed.spool)

    def shutdown(self) -> None:
        if self._own is not None:
            self._own.shutdown(wait=True)
        if self._spool_dir is not None and self.spool is not None:
            fs = self.spool[0]
            if isinstance(fs, LocalFileSystem) and os.path.isdir(self._spool_dir):
                shutil.rmtree(self._spool_dir, ignore_errors=True)
            else:
                with contextlib.suppress(Exception):
                    fs.rm(self._spool_dir, recursive=True)
