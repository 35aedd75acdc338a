"""`run_restore`: one restore run, from a backup (or a chain of them) into the target.

Records go in batches, each batch's missing blobs first; nothing in the archive is trusted.
"""

from __future__ import annotations

import collections
import functools
import io
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import IO, Any

import attrs
import zstandard

from .._archive.bkrepo import BkrepoProblem
from .._archive.bkrepo_reader import BkrepoReader
from .._archive.catalog import open_backup, open_backup_chain
from .._archive.layout import CHUNK, BackupReader, line_to_record, record_member
from .._archive.manifest import failed_blobs_of, projects_of
from .._archive.sealing import Sealing, key_scope, sealing_of
from .._archive.store import ATTEMPTS, BASE, DEADLINE, MAX_DELAY, is_transient
from .._archive.verify import blob_totals, check_records_member, record_lines
from .._backends.protocols import Outcome, Record, Scope, Target
from .._model.select import select
from .._model.task import BackupContent, BackupTask
from ..exceptions import (
    ArchiveError,
    RepoBackupError,
    StoreError,
    ValidationError,
    backend_errors,
    store_errors,
)
from .backup import absent_ids, backup_name, file_of, record_key
from .blobs import SmallBlobs, reason
from .context import RunContext
from .jobs import BlobCodec, Here, RestoreJob, run_job
from .tally import ErrorScope, FastFail, RunState

__all__ = ["run_restore"]

BATCH = 500
IN_FLIGHT = 2  # batches whose blobs copy while the oldest one's records are written


def run_restore(context: RunContext, task: BackupTask, run: RunState) -> str:
    """Restore what *task* selects from the backup(s) at its store location."""
    target = context.target
    if target is None:
        raise ValidationError("this engine has no target to restore into")
    chain = open_backup_chain(task.store_location, context.storage_options, zone=context.tz)
    if len(chain) > 1:
        run.notes.append("restored the chain " + " → ".join(backup_name(r.location) for r in chain))
    remote = context.executor is not None
    reopen_target = getattr(target, "reopener", None) if remote else None
    target_opener = reopen_target() if callable(reopen_target) else None
    own = None
    if context.executor is not None and target_opener is not None:
        pool: Executor = context.executor
    else:
        if remote:
            run.notes.append(
                "blobs moved on threads, not on the given executor: "
                "the target cannot be reopened elsewhere"
            )
        pool = own = ThreadPoolExecutor(
            context.workers(chain[-1].fs if hasattr(chain[-1], "fs") else None),
            thread_name_prefix="repobackup-restore",
        )
    try:
        check_selection(task, chain, run)
        run.total_bytes, run.total_files = blob_totals(reader.manifest for reader in chain)
        for reader in chain:
            kind = _BkrepoRestore if isinstance(reader, BkrepoReader) else _Restore
            kind(
                target,
                task=task,
                reader=reader,
                run=run,
                pool=pool,
                openers=_openers(reader, target, target_opener),
            ).run()
    finally:
        if own is not None:
            own.shutdown(wait=True)
        for reader in chain:
            reader.close()
    return chain[-1].location


def check_selection(task: BackupTask, chain: list[BackupReader], run: RunState) -> None:
    """An error of the run for each id the task names that the backups do not hold, and a
    failed run when its selection matches nothing in them."""
    tree: dict[str, set[str]] = {}
    common = False
    for reader in chain:
        for project, repos in projects_of(reader.manifest, reader.location).items():
            tree.setdefault(project, set()).update(repos)
        common = common or any(
            isinstance(entry, dict) and entry.get("projectId") is None
            for entry in reader.manifest["members"]
        )
    entries = task.content.projects or ()
    absent_ids(entries, tree, lambda project: tree.get(project, ()), run)
    matched = bool(entries) and bool(select(entries, sorted(tree), lambda p: sorted(tree[p])))
    if not matched and not (task.content.common_data and common):
        raise RepoBackupError(
            f"nothing matched: the selection names no project or repository of the backup "
            f"at {chain[-1].location}"
            + (" and it holds no common data" if task.content.common_data else "")
            + "; nothing was restored"
        )


def _openers(reader: BackupReader, target: Target, target_opener: Any) -> tuple[Any, Any]:
    """How a job reaches the backup and the target: reopened where the executor runs it,
    or these very objects on threads here."""
    if target_opener is None or isinstance(reader, BkrepoReader):
        return Here(reader), Here(target)
    fs, path = getattr(reader, "fs", None), getattr(reader, "path", None)
    if fs is None or path is None:
        return Here(reader), Here(target)
    sealing = sealing_of(reader)
    if sealing is not None:
        return functools.partial(_open_sealed, fs, path, reader.location, sealing), target_opener
    return functools.partial(open_backup, fs, path, reader.location), target_opener


def _open_sealed(fs: Any, path: str, location: str, sealing: Sealing) -> BackupReader:
    """An encrypted backup reopened where a job runs, with the key this process opened
    (a worker holds no passphrase); its members are decrypted as they are opened."""
    with key_scope(sealing):
        return open_backup(fs, path, location)


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
    """The records of *member*. A read that fails transiently (a connection reset) is
    started again from the member's beginning, the lines already handed on skipped; one
    that outlasts the retries raises a StoreError for the caller to report."""
    done = 0
    started = time.monotonic()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with store_errors(f"reading {member}"), _open_member(reader, member) as raw:
                stream = io.BufferedReader(raw, CHUNK)  # type: ignore[type-var]
                for number, line in record_lines(stream):
                    if number <= done:
                        continue
                    done = number
                    yield from _record(line, f"{member}:{number}", scope, collection, run)
            return
        except StoreError as exc:
            spent = time.monotonic() - started
            if attempt == ATTEMPTS or spent >= DEADLINE or not is_transient(exc):
                raise
            time.sleep(random.uniform(0, min(MAX_DELAY, BASE * 2**attempt)))


def _record(
    line: bytes | None, where: str, scope: Scope, collection: str, run: RunState
) -> Iterator[Record]:
    try:
        if line is None:
            raise ArchiveError(f"{where}: line longer than the limit, not restored")
        yield line_to_record(line, where, scope, collection)
    except ArchiveError as exc:
        run.add(records_failed=1)
        run.fail(ErrorScope.RECORD, where, exc.message)


def _selected(scope: Scope, content: BackupContent, wanted: Mapping[str, Any]) -> bool:
    """Whether a scope of the backup is restored: common data when the task asks for it, a
    project or repository when the selection (*wanted*: project to repositories) names it."""
    if scope.project_id is None:
        return content.common_data
    if scope.project_id not in wanted:
        return False
    return scope.repo_name is None or scope.repo_name in wanted[scope.project_id]


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
        self,
        target: Target,
        *,
        task: BackupTask,
        reader: BackupReader,
        run: RunState,
        pool: Executor,
        openers: tuple[Any, Any],
    ) -> None:
        self.target = target
        self.task = task
        self.reader = reader
        self.run_state = run
        self.pool = pool
        self.compressed = bool(reader.manifest.get("compression"))
        self.failed_blobs = failed_blobs_of(reader.manifest)
        self.openers = openers
        self.codec = BlobCodec(compress=self.compressed, sealing=sealing_of(self.reader))
        self._pending: collections.deque[_Copying] = collections.deque()
        #: The blobs of the batches in flight, each with the batch that copies it.
        self._copying: dict[str, _Copying] = {}

    def run(self) -> None:
        tree = projects_of(self.reader.manifest, self.reader.location)
        content = self.task.content
        wanted = select(content.projects, tree, lambda p: tree[p]) if content.projects else {}
        run = self.run_state
        # Entries the reader refused (paths escaping the tree, links, duplicates) are never
        # read; they are reported under the error strategy.
        for member, message in self.reader.problems:
            run.fail(ErrorScope.MEMBER, member, f"{self.reader.location}: {message}")
        for entry in self.reader.manifest["members"]:
            try:
                scope, collection = _member_scope(self.reader, entry, self.compressed)
            except ArchiveError as exc:
                where = entry.get("path") if isinstance(entry, dict) else entry
                run.fail(ErrorScope.MEMBER, str(where), exc.message)
                continue
            if not _selected(scope, content, wanted):
                continue
            try:
                check_records_member(self.reader, entry)
            except RepoBackupError as exc:  # missing, unreadable, corrupt: this member only
                records = entry.get("records")
                run.add(records_failed=records if isinstance(records, int) else 0)
                run.fail(ErrorScope.MEMBER, entry["path"], exc.message)
                continue
            records = _restore_records(
                self.reader, entry["path"], scope, collection, self.run_state
            )
            try:
                for batch in _batches(records):
                    self.batch(batch)
            except StoreError as exc:  # the member could not be read whole, retries included
                run.fail(ErrorScope.MEMBER, entry["path"], exc.message)
        self.flush()

    def batch(self, batch: list[Record]) -> None:
        """Restore one batch of records: first the blobs the target lacks, then the records
        whose blobs are there. The batch's blobs are started before the previous batch is
        finished, so the workers copy while the records of the last one are written."""
        run = self.run_state
        for record in batch:
            if record.blob is not None and not record.deleted:
                run.note_blob(record.blob, file_of(record))
        self._pending.append(self._start_blobs(batch))
        while len(self._pending) > IN_FLIGHT:
            self._finish_oldest()

    def flush(self) -> None:
        """Finish every batch whose blobs are being copied, oldest first."""
        while self._pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        """Wait for the blobs of the oldest batch in flight, then write its records."""
        oldest = self._pending.popleft()
        self._write_records(oldest.batch, self._finish_blobs(oldest))

    def _write_records(self, batch: list[Record], bad: set[str]) -> None:
        run = self.run_state
        keep = []
        for record in batch:
            if record.blob in bad and not record.deleted:
                run.add(records_failed=1)
                run.fail(
                    ErrorScope.RECORD,
                    record_key(record),
                    f"not restored: its blob {record.blob} failed",
                )
            else:
                keep.append(record)
        if not keep:
            return
        with backend_errors(f"writing {len(keep)} records"):
            outcomes = self.target.apply(keep, self.task.backup_setting.conflict_strategy)
        written = sum(1 for o in outcomes if o is Outcome.WRITTEN)
        run.add(records_written=written, records_skipped=len(outcomes) - written)

    def _start_blobs(self, batch: list[Record]) -> _Copying:
        """Start copying the blobs of *batch* the target lacks; a blob an earlier batch is
        still copying is left to it."""
        run = self.run_state
        needed = sorted({r.blob for r in batch if r.blob is not None and not r.deleted})
        sizes = {r.blob: r.size for r in batch}
        copying = _Copying(batch)
        small = SmallBlobs(remote=not isinstance(self.pool, ThreadPoolExecutor))

        def submit(group: list[str]) -> None:
            shas = tuple((sha, sizes[sha]) for sha in group)
            job = RestoreJob(*self.openers, shas, self.codec, fast_fail=run.fast_fail)
            copying.jobs.append((group, self.pool.submit(run_job, job)))
            self._copying.update(dict.fromkeys(group, copying))

        for sha in needed:
            if sha in self.failed_blobs:
                copying.bad.add(sha)
                run.add(blobs_failed=1)
                run.fail(
                    ErrorScope.BLOB,
                    sha,
                    "the backup recorded this blob as failed; it was never stored",
                )
                continue
            if (owner := self._copying.get(sha)) is not None:
                copying.after.append((sha, owner))
                continue
            with backend_errors(f"checking blob {sha}"):
                present = self.target.has_blob(sha)
            if present:
                run.add(blobs_reused=1, bytes_reused=sizes[sha])
            elif group := small.add(sha, sizes[sha]):
                submit(group)
        if group := small.take():
            submit(group)
        return copying

    def _finish_blobs(self, copying: _Copying) -> set[str]:
        """Wait for the copies *copying* started; return the blobs of its batch that failed."""
        run = self.run_state
        for group, future in copying.jobs:
            try:
                outcomes = future.result()
            except FastFail:
                raise
            except Exception as exc:
                outcomes = [exc] * len(group)
            for sha, outcome in zip(group, outcomes, strict=True):
                if self._copying.get(sha) is copying:
                    del self._copying[sha]
                if isinstance(outcome, Exception):
                    copying.bad.add(sha)
                    run.add(blobs_failed=1)
                    run.fail(ErrorScope.BLOB, sha, reason(outcome))
                else:
                    run.add(blobs_written=1, bytes_read=outcome.read, bytes_written=outcome.written)
        # A blob an earlier batch copied: there now, as a blob found in the target is,
        # unless its copy failed (earlier batches are finished first).
        for sha, owner in copying.after:
            if sha in owner.bad:
                copying.bad.add(sha)
            else:
                run.add(blobs_reused=1)
        return copying.bad


@attrs.define
class _Copying:
    """A batch whose blobs are being copied: the jobs started, the blobs already failed,
    and those an earlier batch copies (with that batch)."""

    batch: list[Record]
    jobs: list[tuple[list[str], Future[list[Any]]]] = attrs.Factory(list)
    bad: set[str] = attrs.Factory(set)
    after: list[tuple[str, _Copying]] = attrs.Factory(list)


class _BkrepoRestore(_Restore):
    """Restores a backup of the original server: its scopes walked as the layout gives them,
    each blob hashed against its name on the way into the target, as ours are."""

    reader: BkrepoReader

    def run(self) -> None:
        backup = self.reader.backup
        self.reader.listen(self._problem)
        tree = backup.tree()
        content = self.task.content
        wanted = select(content.projects, tree, lambda p: tree[p]) if content.projects else {}
        for scope in backup.scopes():
            if not _selected(scope, content, wanted):
                continue
            for batch in _batches(backup.records(scope)):
                self.batch(batch)
        self.flush()

    def _problem(self, problem: BkrepoProblem) -> None:
        """Hostile entries and malformed lines are errors of the run (raising under
        FAST_FAIL); an entry the layout has no place for is only noted."""
        message = f"{self.reader.location}: {problem.message}"
        if problem.kind == "malformed":
            self.run_state.add(records_failed=1)
            self.run_state.fail(ErrorScope.RECORD, problem.where, message)
        elif problem.kind == "hostile":
            self.run_state.fail(ErrorScope.MEMBER, problem.entry, message)
        elif len(self.run_state.notes) < 100:
            where = f"{self.reader.location}: {problem.where}"
            self.run_state.notes.append(f"{where}: {problem.message}, not read")
