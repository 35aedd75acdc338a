"""One run of a task: the backup and restore pipelines behind `Engine.execute`.

Records stream through in batches; blobs copy in chunks on a pool, with a bounded number in
flight, so memory stays flat however large the repository is.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import posixpath
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, TypeVar

import attrs
import zstandard

from .._archive.layout import (
    CHUNK,
    FORMAT,
    STAMP_FORMAT,
    BackupReader,
    BackupWriter,
    FolderWriter,
    blob_member,
    free_space,
    line_to_record,
    open_backup_chain,
    record_member,
    record_to_line,
    task_folder,
)
from .._archive.retry import path_type
from .._archive.verify import check_records_member
from .._backends.protocols import Outcome, Record, Scope, Source, Target
from .._model.convert import to_json
from .._model.select import select
from .._model.task import BackupTask, ErrorStrategy, RunCounts, RunError, TaskState
from ..exceptions import (
    ArchiveError,
    InsufficientSpaceError,
    RepoBackupError,
    ValidationError,
    backend_errors,
    store_errors,
)

if TYPE_CHECKING:
    from .._engine.engine import Engine

__all__ = ["FastFail", "Progress", "RunState", "run_backup", "run_restore"]

_package = "repobackup"

MAX_ERRORS = 100
T = TypeVar("T")

BATCH = 500
SMALL_BLOB = 256 * 1024  # blobs up to this size are copied several to a job, on threads
BLOBS_PER_JOB = 16
BYTES_PER_JOB = 1 << 20
PROGRESS_EVERY = 0.25  # seconds between progress events


@attrs.frozen
class Progress:
    """A progress event: what phase a run is in and how far it got (totals where known)."""

    task_id: str
    phase: str  # "estimate", "records", "blobs", "commit", "restore", "done"
    records: int
    bytes: int
    total_bytes: int | None = None


class FastFail(RepoBackupError):
    """Stops a FAST_FAIL run at its first error (the error itself is in the summary)."""


class RunState:
    """The mutable tally of one run, shared by the pipeline and its blob workers."""

    def __init__(
        self,
        task: BackupTask,
        on_progress: Callable[[Progress], None] | None,
        *,
        holds_lease: Callable[[], bool] | None = None,
    ) -> None:
        assert task.id is not None
        self.task = task
        self.task_id = task.id
        self.fast_fail = task.backup_setting.error_strategy is ErrorStrategy.FAST_FAIL
        self.counts: dict[str, int] = dict.fromkeys(attrs.fields_dict(RunCounts), 0)
        self.errors: list[RunError] = []
        self.errors_dropped = 0
        self.notes: list[str] = []
        self.total_bytes: int | None = None
        self.since: datetime | None = None
        self.phase = "records"
        self._lock = threading.Lock()
        self._on_progress = on_progress
        # Asked before a backup commits: a run taken for dead must not make it look complete.
        self.holds_lease = holds_lease or (lambda: True)
        self._last_progress = 0.0

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self.counts[name] += amount
        self.progress()

    def fail(self, scope: str, key: str, message: str) -> None:
        """Record one failure; under FAST_FAIL, stop the run."""
        with self._lock:
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(RunError(scope, key, message))
            else:
                self.errors_dropped += 1
        if self.fast_fail:
            raise FastFail(f"stopped at the first error (FAST_FAIL): {scope} {key}: {message}")

    def fail_run(self, message: str) -> None:
        """Record what ended the run; it is always kept, even when the list is full."""
        with self._lock:
            if any(error.message == message for error in self.errors):
                return
            if len(self.errors) >= MAX_ERRORS:
                self.errors.pop()
                self.errors_dropped += 1
            self.errors.append(RunError("task", self.task_id, message))

    def progress(self, phase: str | None = None, *, force: bool = False) -> None:
        if phase is not None:
            self.phase = phase
        if self._on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_EVERY:
            return
        self._last_progress = now
        done = self.counts["records_written"] + self.counts["records_skipped"]
        self._on_progress(
            Progress(self.task_id, self.phase, done, self.counts["bytes_read"], self.total_bytes)
        )

    def frozen_counts(self) -> RunCounts:
        return RunCounts(**self.counts)


class _VerifiedChunks:
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


class _SmallBlobs:
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


class _BlobPump:
    """Runs blob copies on an executor with a bounded number of jobs in flight; on threads,
    small blobs go several to a job (see `_SmallBlobs`)."""

    def __init__(self, run: RunState, transfer: _BlobTransfer, limit: int) -> None:
        self.run = run
        self.transfer = transfer
        self.limit = max(1, limit)
        # Each job's blobs, and whether the job copies a batch (and so returns a list).
        self.pending: dict[Future[Any], tuple[list[str], bool]] = {}
        # Copies report here as they finish, in whatever order: waiting for the oldest would
        # leave the other workers idle behind one large blob, and `wait` over every pending
        # future costs more than a small blob's copy.
        self._finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self._small = _SmallBlobs()

    def add(self, sha256: str, size: int) -> None:
        """Copy the blob *sha256*, of *size* bytes as its record says, into the backup."""
        if self.transfer.reopen is not None:
            job, args = self.transfer.job(sha256)
            self._submit([sha256], False, job, *args)
        elif group := self._small.add(sha256, size):
            self._submit_group(group)

    def _submit_group(self, group: list[str]) -> None:
        copy = functools.partial(_copy_blob, self.transfer.source, self.transfer.writer)
        self._submit(group, True, _each, copy, group)

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
                self.run.fail("blob", key, _reason(outcome))
            else:
                read, written = outcome
                self.run.add(blobs_written=1, bytes_read=read, bytes_written=written)

    def drain(self) -> None:
        if group := self._small.take():
            self._submit_group(group)
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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RepoBackupError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class _SeenBlobs:
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


# --------------------------------------------------------------------------------------------
# Backup


def _scopes(source: Source, task: BackupTask, since: datetime | None) -> list[Scope]:
    scopes = [Scope()] if task.content.common_data else []
    if task.content.projects:
        with backend_errors("listing projects and repositories"):
            tree = select(
                task.content.projects,
                source.projects(since=since),
                lambda project: source.repositories(project, since=since),
            )
        for project, repos in tree.items():
            scopes.append(Scope(project))
            scopes.extend(Scope(project, repo) for repo in repos)
    return scopes


def _estimate(source: Source, scopes: list[Scope], since: datetime | None) -> int:
    """An upper bound of the bytes a backup writes: document lines plus blob sizes."""
    total = 0
    for scope in scopes:
        with backend_errors(f"estimating {scope}"):
            for collection in source.collections(scope):
                for record in source.records(scope, collection, since=since):
                    total += 256 + len(record.key) + record.size
    return total


def _copy_blob(source: Source, writer: BackupWriter, sha256: str) -> tuple[int, int]:
    """Copy one blob into the backup on a thread; return bytes read and written."""
    with backend_errors(f"opening blob {sha256}"):
        file = source.open_blob(sha256)
    with file:
        chunks = _VerifiedChunks(file, sha256, f"source blob {sha256}")
        written = writer.write_blob(sha256, chunks)
    return chunks.size, written


def _each(copy: Callable[[str], T], shas: list[str]) -> list[T | Exception]:
    """*copy* done for several blobs in turn, on one thread; for each, its result or error."""
    outcomes: list[T | Exception] = []
    for sha256 in shas:
        try:
            outcomes.append(copy(sha256))
        except Exception as exc:
            outcomes.append(exc)
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
            chunks = _VerifiedChunks(file, sha256, f"source blob {sha256}")
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(path)
        raise
    return size, size


class _BlobTransfer:
    """Decides where blob copies run: on the engine's executor as picklable jobs when the
    source can be reopened elsewhere and the backup is a folder, else on threads here."""

    def __init__(self, engine: Engine, source: Source, writer: BackupWriter, run: RunState):
        self.source = source
        self.writer = writer
        self._own: ThreadPoolExecutor | None = None
        reopen = source.reopener() if engine.executor is not None else None
        self.reopen = reopen if isinstance(writer, FolderWriter) else None
        if engine.executor is not None and self.reopen is not None:
            self.executor: Executor = engine.executor
        else:
            if engine.executor is not None:
                why = (
                    "the source cannot be reopened elsewhere"
                    if reopen is None
                    else ("a compressed backup is one stream")
                )
                run.notes.append(f"blobs moved on threads, not on the given executor: {why}")
            self._own = ThreadPoolExecutor(engine.max_workers, thread_name_prefix="repobackup-blob")
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


def default_since(
    engine: Engine, task: BackupTask, started: datetime
) -> tuple[datetime, str | None]:
    """The since time of an incremental backup and the backup it follows (DESIGN section 3)."""
    assert task.id is not None
    previous = next(
        (
            run
            for run in engine.tasks.runs(task.id)
            if run.state is TaskState.FINISHED and run.location and not run.errors
        ),
        None,
    )
    follows = _backup_name(previous.location) if previous and previous.location else None
    if task.content.increment_date is not None:
        return task.content.increment_date, follows
    if previous is not None:
        return previous.started, follows
    day_before = (started.astimezone(engine.tz) - timedelta(days=1)).date()
    return datetime.combine(day_before, datetime.min.time(), tzinfo=engine.tz), follows


def _backup_name(location: str) -> str:
    return posixpath.basename(location.rstrip("/")).removesuffix(".zip")


def run_backup(engine: Engine, task: BackupTask, run: RunState, started: datetime) -> str:
    """Back up what *task* selects; return the location of the complete backup."""
    source = engine.source
    since: datetime | None = None
    follows: str | None = None
    if task.content.increment:
        since, follows = default_since(engine, task, started)
    run.since = since
    scopes = _scopes(source, task, since)

    fs, task_dir = task_folder(task.store_location, task.name, engine.storage_options)
    stamp = started.astimezone(engine.tz)
    while True:
        name = f"{task.name}-{stamp.strftime(STAMP_FORMAT)}"
        suffix = ".zip" if task.content.compression else ""
        path = posixpath.join(task_dir, name + suffix)
        partial = posixpath.join(task_dir, f".{name}{suffix}.partial")
        taken = any(path_type(fs, p, f"checking {p}") is not None for p in (path, partial))
        if not taken:
            break
        stamp += timedelta(seconds=1)  # two runs in one second: the later one takes the next
    location = _join_location(task.store_location, f"{task.name}/{name}{suffix}")

    if task.backup_setting.space_cap_check:
        run.progress("estimate", force=True)
        needed = _estimate(source, scopes, since)
        run.total_bytes = needed
        available = free_space(fs, task_dir)
        if available is None:
            run.notes.append(
                f"free space at {task.store_location!r} cannot be known on this store; "
                f"the run needs up to {needed} bytes"
            )
        elif needed > available:
            raise InsufficientSpaceError(task.store_location, needed, available)

    writer: BackupWriter
    if task.content.compression:
        from .._archive.zip import ZipWriter

        writer = ZipWriter(fs, path, location, workers=engine.max_workers)
    else:
        writer = FolderWriter(fs, path, location)

    seen = _SeenBlobs()
    transfer = _BlobTransfer(engine, source, writer, run)
    pump = _BlobPump(run, transfer, engine.max_workers * 4)
    members: list[dict[str, Any]] = []
    tree: dict[str, list[str]] = {}
    try:
        run.progress("records", force=True)
        for scope in scopes:
            if scope.project_id is not None:
                repos = tree.setdefault(scope.project_id, [])
                if scope.repo_name is not None:
                    repos.append(scope.repo_name)
            with backend_errors(f"listing collections of {scope}"):
                collections = sorted(source.collections(scope))
            for collection in collections:
                member = record_member(scope, collection, compressed=writer.compressed)
                tally = {"tombstones": 0}
                lines = _backup_lines(
                    source,
                    scope,
                    collection,
                    since=since,
                    run=run,
                    seen=seen,
                    pump=pump,
                    tally=tally,
                )
                # An empty member stays: in an increment it says the collection had no changes.
                info = writer.write_records(member, lines)
                members.append(
                    {
                        "path": info.path,
                        "projectId": scope.project_id,
                        "repoName": scope.repo_name,
                        "collection": collection,
                        "records": info.records,
                        "tombstones": tally["tombstones"],
                        "size": info.size,
                        "sha256": info.sha256,
                    }
                )
        run.progress("blobs", force=True)
        pump.drain()
        run.progress("commit", force=True)
        failed_blobs = [e.key for e in run.errors if e.scope == "blob"]
        manifest = {
            "format": FORMAT,
            "generator": f"{_package} {_version()}",
            "taskId": task.id,
            "name": name,
            "taskName": task.name,
            "created": started.isoformat(),
            "completed": engine.now().isoformat(),
            "kind": "incremental" if since is not None else "full",
            "since": since.isoformat() if since is not None else None,
            "follows": follows if since is not None else None,
            "compression": task.content.compression,
            "commonData": task.content.common_data,
            "content": to_json(task.content),
            "projects": tree,
            "members": members,
            "blobs": {
                "count": run.counts["blobs_written"],
                "bytes": run.counts["bytes_read"],
                "failed": failed_blobs,
            },
        }
        if not run.holds_lease():
            raise RepoBackupError(
                "the run lost its claim on the task (taken for interrupted by another "
                "process); the backup was not committed"
            )
        writer.commit(manifest)
    except BaseException:
        pump.cancel()
        writer.abort()
        raise
    finally:
        transfer.shutdown()
        seen.close()
    return location


def _backup_lines(
    source: Source,
    scope: Scope,
    collection: str,
    *,
    since: datetime | None,
    run: RunState,
    seen: _SeenBlobs,
    pump: _BlobPump,
    tally: dict[str, int],
) -> Iterator[bytes]:
    with backend_errors(f"reading {collection} of {scope}"):
        records = source.records(scope, collection, since=since)
        for record in records:
            try:
                line = record_to_line(record)
            except (TypeError, ValueError) as exc:
                run.add(records_failed=1)
                run.fail("record", _record_key(record), f"document is not JSON: {exc}")
                continue
            if record.deleted:
                tally["tombstones"] += 1
            elif record.blob is not None:
                if seen.add(record.blob):
                    pump.add(record.blob, record.size)
                else:
                    run.add(blobs_reused=1)
            run.add(records_written=1)
            yield line


def _record_key(record: Record) -> str:
    parts = [p for p in (record.project_id, record.repo_name, record.collection) if p is not None]
    return "/".join([*parts, record.key])


def _join_location(store_location: str, tail: str) -> str:
    separator = "" if store_location.endswith(("/", "\\")) else "/"
    return f"{store_location}{separator}{tail}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_package)
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------
# Restore


def run_restore(engine: Engine, task: BackupTask, run: RunState) -> str:
    """Restore what *task* selects from the backup(s) at its store location."""
    target = engine.target
    if target is None:
        raise ValidationError("this engine has no target to restore into")
    chain = open_backup_chain(task.store_location, engine.storage_options)
    if len(chain) > 1:
        run.notes.append(
            "restored the chain " + " → ".join(_backup_name(r.location) for r in chain)
        )
    pool = ThreadPoolExecutor(engine.max_workers, thread_name_prefix="repobackup-restore")
    try:
        for reader in chain:
            _Restore(target, task, reader, run, pool).run()
    finally:
        pool.shutdown(wait=True)
        for reader in chain:
            reader.close()
    return chain[-1].location


def _manifest_tree(reader: BackupReader) -> dict[str, list[str]]:
    tree = reader.manifest.get("projects")
    if not isinstance(tree, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(r, str) for r in v)
        for k, v in tree.items()
    ):
        raise ArchiveError(f"{reader.location}: manifest.json has a malformed projects map")
    return tree


def _member_scope(reader: BackupReader, entry: Any, compressed: bool) -> tuple[Scope, str]:
    if not isinstance(entry, dict):
        raise ArchiveError(f"{reader.location}: a manifest member must be an object")
    project, repo, collection = (
        entry.get("projectId"),
        entry.get("repoName"),
        entry.get("collection"),
    )
    if not (
        isinstance(collection, str)
        and (project is None or isinstance(project, str))
        and (repo is None or isinstance(repo, str))
        and (project is not None or repo is None)
    ):
        raise ArchiveError(f"{reader.location}: malformed manifest member {entry!r:.200}")
    scope = Scope(project, repo)
    try:
        expected = record_member(scope, collection, compressed=compressed)
    except ValueError as exc:
        raise ArchiveError(f"{reader.location}: malformed manifest member: {exc}") from None
    if entry.get("path") != expected:
        raise ArchiveError(
            f"{reader.location}: manifest member {entry.get('path')!r} should be {expected!r}"
        )
    return scope, collection


def _open_member(reader: BackupReader, member: str) -> IO[bytes]:
    raw = reader.open(member)
    if member.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    return raw


def _restore_records(
    reader: BackupReader, member: str, scope: Scope, collection: str, run: RunState
) -> Iterator[Record]:
    with store_errors(f"reading {member}"), _open_member(reader, member) as raw:
        stream = io.BufferedReader(raw, CHUNK)  # type: ignore[type-var]
        for number, line in enumerate(stream, start=1):
            where = f"{member}:{number}"
            try:
                yield line_to_record(line, where, scope, collection)
            except ArchiveError as exc:
                run.add(records_failed=1)
                run.fail("record", where, exc.message)


def _batches(records: Iterable[Record]) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


class _Restore:
    """Restores one backup: records in batches, each batch's missing blobs first."""

    def __init__(
        self, target: Target, task: BackupTask, reader: BackupReader, run: RunState, pool: Executor
    ) -> None:
        self.target = target
        self.task = task
        self.reader = reader
        self.run_state = run
        self.pool = pool
        self.compressed = bool(reader.manifest.get("compression"))
        blobs = reader.manifest.get("blobs")
        failed = blobs.get("failed") if isinstance(blobs, dict) else None
        self.failed_blobs = {sha for sha in failed or () if isinstance(sha, str)}

    def run(self) -> None:
        tree = _manifest_tree(self.reader)
        content = self.task.content
        wanted = select(content.projects, tree, lambda p: tree[p]) if content.projects else {}
        run = self.run_state
        # Entries the reader refused (paths escaping the tree, links, duplicates) are never
        # read; they are reported under the error strategy.
        for member, message in self.reader.problems:
            run.fail("member", member, f"{self.reader.location}: {message}")
        for entry in self.reader.manifest["members"]:
            try:
                scope, collection = _member_scope(self.reader, entry, self.compressed)
            except ArchiveError as exc:
                where = entry.get("path") if isinstance(entry, dict) else entry
                run.fail("member", str(where), exc.message)
                continue
            if scope.project_id is None:
                if not content.common_data:
                    continue
            elif scope.project_id not in wanted or (
                scope.repo_name is not None and scope.repo_name not in wanted[scope.project_id]
            ):
                continue
            try:
                check_records_member(self.reader, entry)
            except ArchiveError as exc:
                records = entry.get("records")
                run.add(records_failed=records if isinstance(records, int) else 0)
                run.fail("member", entry["path"], exc.message)
                continue
            records = _restore_records(
                self.reader, entry["path"], scope, collection, self.run_state
            )
            for batch in _batches(records):
                self.batch(batch)

    def blob(self, sha256: str) -> None:
        reader = self.reader
        member, file = self._open_blob(sha256)
        with store_errors(f"reading {member}"), file:
            chunks = _VerifiedChunks(file, sha256, f"{reader.location}: {member}")
            with backend_errors(f"writing blob {sha256}"):
                written = self.target.write_blob(sha256, chunks)
        self.run_state.add(blobs_written=1, bytes_read=chunks.size, bytes_written=written)

    def _open_blob(self, sha256: str) -> tuple[str, IO[bytes]]:
        """The member holding the blob, opened. Whether a member exists is asked only when
        opening it fails: each question is a stat or a query of a zip's index, and a restore
        asks for every blob."""
        members = [blob_member(sha256, compressed=False)]
        if self.compressed:
            members.append(blob_member(sha256, compressed=True))
        for member in members:
            try:
                with store_errors(f"reading {member}"):
                    return member, _open_member(self.reader, member)
            except RepoBackupError:
                if self.reader.exists(member):
                    raise
        raise ArchiveError(f"blob {sha256} is missing from the backup")

    def batch(self, batch: list[Record]) -> None:
        run = self.run_state
        needed = sorted({r.blob for r in batch if r.blob is not None and not r.deleted})
        sizes = {r.blob: r.size for r in batch}
        small = _SmallBlobs()
        jobs: list[tuple[list[str], Future[list[Exception | None]]]] = []

        def submit(group: list[str]) -> None:
            jobs.append((group, self.pool.submit(_each, self.blob, group)))

        bad: set[str] = set()
        for sha in needed:
            if sha in self.failed_blobs:
                bad.add(sha)
                run.add(blobs_failed=1)
                run.fail(
                    "blob", sha, "the backup recorded this blob as failed; it was never stored"
                )
                continue
            with backend_errors(f"checking blob {sha}"):
                present = self.target.has_blob(sha)
            if present:
                run.add(blobs_reused=1)
                continue
            if group := small.add(sha, sizes[sha]):
                submit(group)
        if group := small.take():
            submit(group)
        for group, future in jobs:
            try:
                errors = future.result()
            except FastFail:
                raise
            except Exception as exc:
                errors = [exc] * len(group)
            for sha, error in zip(group, errors, strict=True):
                if error is not None:
                    bad.add(sha)
                    run.add(blobs_failed=1)
                    run.fail("blob", sha, _reason(error))
        keep = []
        for record in batch:
            if record.blob in bad and not record.deleted:
                run.add(records_failed=1)
                run.fail(
                    "record", _record_key(record), f"not restored: its blob {record.blob} failed"
                )
            else:
                keep.append(record)
        if not keep:
            return
        with backend_errors(f"writing {len(keep)} records"):
            outcomes = self.target.apply(keep, self.task.backup_setting.conflict_strategy)
        written = sum(1 for o in outcomes if o is Outcome.WRITTEN)
        run.add(records_written=written, records_skipped=len(outcomes) - written)
