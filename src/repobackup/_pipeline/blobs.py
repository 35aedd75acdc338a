"""Blob copies of a run: verified chunks, small-blob groups and the bounded pump.

Copies run on the run's executor as picklable jobs, or on threads here; memory stays flat.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import IO, Any, TypeVar

from .._archive.layout import CHUNK, BackupWriter, FolderWriter
from .._archive.store import retrying_whole
from .._backends.protocols import Source
from ..exceptions import ArchiveError, RepoBackupError, backend_errors, store_errors
from .context import RunContext
from .tally import ErrorScope, FastFail, RunState

__all__ = [
    "BlobPump",
    "BlobTransfer",
    "SeenBlobs",
    "SmallBlobs",
    "VerifiedChunks",
    "each",
    "reason",
]

T = TypeVar("T")

SMALL_BLOB = 256 * 1024  # blobs up to this size are copied several to a job, on threads
BLOBS_PER_JOB = 16
BYTES_PER_JOB = 1 << 20


class VerifiedChunks:
    """Chunks of a blob, hashed on the way; raises at the end if they do not match."""

    def __init__(self, file: IO[bytes], sha256: str, what: str) -> None:
        self.file = file
        self.sha256 = sha256
        self.what = what
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        while chunk := self.file.read(CHUNK):
            digest.update(chunk)
            self.size += len(chunk)
            yield chunk
        if digest.hexdigest() != self.sha256:
            raise ArchiveError(
                f"{self.what}: content does not match its sha256 {self.sha256} "
                f"(got {digest.hexdigest()})"
            )


class SmallBlobs:
    """Gathers small blobs into groups copied by one job each: handing a job from one thread
    to another costs about as much as copying a small blob does."""

    def __init__(self) -> None:
        self._group: list[str] = []
        self._bytes = 0

    def add(self, sha256: str, size: int) -> list[str] | None:
        """Add a blob of *size* bytes (as its record says); return a group ready to go, which
        is the blob alone when it is not small."""
        if size > SMALL_BLOB:
            return [sha256]
        self._group.append(sha256)
        self._bytes += size
        if len(self._group) >= BLOBS_PER_JOB or self._bytes >= BYTES_PER_JOB:
            return self.take()
        return None

    def take(self) -> list[str]:
        """The blobs gathered so far (maybe none), leaving none."""
        group, self._group, self._bytes = self._group, [], 0
        return group


class BlobPump:
    """Runs blob copies on an executor with a bounded number of jobs in flight; on threads,
    small blobs go several to a job (see `SmallBlobs`)."""

    def __init__(self, run: RunState, transfer: BlobTransfer, limit: int) -> None:
        self.run = run
        self.transfer = transfer
        self.limit = max(1, limit)
        # Each job's blobs, and whether the job copies a batch (and so returns a list).
        self.pending: dict[Future[Any], tuple[list[str], bool]] = {}
        # Copies report here as they finish, in whatever order: waiting for the oldest would
        # leave the other workers idle behind one large blob, and `wait` over every pending
        # future costs more than a small blob's copy.
        self._finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self._small = SmallBlobs()
        self._stop = threading.Event()

    def add(self, sha256: str, size: int) -> None:
        """Copy the blob *sha256*, of *size* bytes as its record says, into the backup."""
        if self.transfer.reopen is not None:
            job, args = self.transfer.job(sha256)
            self._submit([sha256], False, job, *args)
        elif group := self._small.add(sha256, size):
            self._submit_group(group)

    def _submit_group(self, group: list[str]) -> None:
        copy = functools.partial(_copy_blob, self.transfer.source, self.transfer.writer)
        stop = self._stop if self.run.fast_fail else None
        self._submit(group, True, each, copy, group, stop)

    def _submit(self, keys: list[str], batched: bool, job: Callable[..., Any], *args: Any) -> None:
        while len(self.pending) >= self.limit:
            self._reap(self._finished.get())
        future = self.transfer.executor.submit(job, *args)
        self.pending[future] = (keys, batched)
        future.add_done_callback(self._finished.put)

    def _reap(self, future: Future[Any]) -> None:
        keys, batched = self.pending.pop(future)
        try:
            result = future.result()
        except FastFail:
            raise
        except Exception as exc:
            outcomes: list[Any] = [exc] * len(keys)
        else:
            outcomes = result if batched else [result]
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self.run.add(blobs_failed=1)
                self.run.fail(ErrorScope.BLOB, key, reason(outcome))
            else:
                read, written = outcome
                self.run.add(blobs_written=1, bytes_read=read, bytes_written=written)

    def drain(self) -> None:
        if group := self._small.take():
            self._submit_group(group)
        while self.pending:
            self._reap(self._finished.get())

    def cancel(self) -> None:
        self._stop.set()  # running groups end after the blob they are copying
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
    """The blobs a backup already holds, on disk in a temporary SQLite table: memory stays
    flat with a million distinct blobs."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", check_same_thread=False)
        self._db.execute("CREATE TABLE seen (sha BLOB PRIMARY KEY) WITHOUT ROWID")

    def add(self, sha256: str) -> bool:
        """Record *sha256*; True when it was not seen before."""
        cursor = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (bytes.fromhex(sha256),))
        return cursor.rowcount == 1

    def close(self) -> None:
        self._db.close()


def _copy_blob(source: Source, writer: BackupWriter, sha256: str) -> tuple[int, int]:
    """Copy one blob into the backup on a thread; return bytes read and written. A write
    that fails transiently is copied again whole, from the source."""
    return retrying_whole(f"writing blob {sha256}", lambda: _copy_once(source, writer, sha256))


def _copy_once(source: Source, writer: BackupWriter, sha256: str) -> tuple[int, int]:
    with backend_errors(f"opening blob {sha256}"):
        file = source.open_blob(sha256)
    with file:
        chunks = VerifiedChunks(file, sha256, f"source blob {sha256}")
        written = writer.write_blob(sha256, chunks)
    return chunks.size, written


def each(
    copy: Callable[[str], T], shas: list[str], stop: threading.Event | None = None
) -> list[T | Exception]:
    """*copy* done for several blobs in turn, on one thread; for each, its result or error.
    With *stop* (FAST_FAIL), the first error sets it, and once it is set no further blob of
    any group is tried: a run that stops never waits for a whole group of retries."""
    outcomes: list[T | Exception] = []
    for sha256 in shas:
        if stop is not None and stop.is_set():
            outcomes.append(RepoBackupError("not copied: the run stopped at its first error"))
            continue
        try:
            outcomes.append(copy(sha256))
        except Exception as exc:
            outcomes.append(exc)
            if stop is not None:
                stop.set()
    return outcomes


_reopened: dict[str, Source] = {}
_reopened_lock = threading.Lock()


def copy_blob_job(reopen: Callable[[], Source], sha256: str, fs: Any, path: str) -> tuple[int, int]:
    """Copy one blob into a backup folder, in whatever process an executor runs it.

    Everything it needs comes in its arguments, all picklable: how to reopen the source,
    which blob, and where to write. A failed copy leaves no file behind.
    """
    with _reopened_lock:
        source = _reopened.get(repr(reopen))
        if source is None:
            source = _reopened[repr(reopen)] = reopen()
    with backend_errors(f"opening blob {sha256}"):
        file = source.open_blob(sha256)
    size = 0
    try:
        with file, store_errors(f"writing blob {sha256}"), fs.open(path, "wb") as out:
            chunks = VerifiedChunks(file, sha256, f"source blob {sha256}")
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(path)
        raise
    return size, size


class BlobTransfer:
    """Decides where blob copies run: on the engine's executor as picklable jobs when the
    source can be reopened elsewhere and the backup is a folder, else on threads here."""

    def __init__(
        self, context: RunContext, source: Source, writer: BackupWriter, run: RunState
    ) -> None:
        self.source = source
        self.writer = writer
        self._own: ThreadPoolExecutor | None = None
        reopen = source.reopener() if context.executor is not None else None
        self.reopen = reopen if isinstance(writer, FolderWriter) else None
        if context.executor is not None and self.reopen is not None:
            self.executor: Executor = context.executor
        else:
            if context.executor is not None:
                why = (
                    "the source cannot be reopened elsewhere"
                    if reopen is None
                    else ("a compressed backup is one stream")
                )
                run.notes.append(f"blobs moved on threads, not on the given executor: {why}")
            self._own = ThreadPoolExecutor(
                context.max_workers, thread_name_prefix="repobackup-blob"
            )
            self.executor = self._own

    def job(self, sha256: str) -> tuple[Callable[..., tuple[int, int]], tuple[Any, ...]]:
        if self.reopen is not None:
            assert isinstance(self.writer, FolderWriter)
            fs, path = self.writer.blob_destination(sha256)
            return copy_blob_job, (self.reopen, sha256, fs, path)
        return _copy_blob, (self.source, self.writer, sha256)

    def shutdown(self) -> None:
        if self._own is not None:
            self._own.shutdown(wait=True)
