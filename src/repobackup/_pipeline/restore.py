"""`run_restore`: one restore run, from a backup (or a chain of them) into the target.

Records go in batches, each batch's missing blobs first; nothing in the archive is trusted.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import IO, Any

import zstandard

from .._archive.catalog import open_backup_chain
from .._archive.layout import (
    CHUNK,
    BackupReader,
    blob_member,
    bounded,
    line_to_record,
    record_member,
)
from .._archive.manifest import failed_blobs_of, projects_of
from .._archive.store import ATTEMPTS, BASE, DEADLINE, MAX_DELAY, is_transient
from .._archive.verify import check_records_member, record_lines
from .._backends.protocols import Outcome, Record, Scope, Target
from .._model.select import select
from .._model.task import BackupTask
from ..exceptions import (
    ArchiveError,
    RepoBackupError,
    StoreError,
    ValidationError,
    backend_errors,
    store_errors,
)
from .backup import backup_name, record_key
from .blobs import SmallBlobs, VerifiedChunks, each, reason
from .context import RunContext
from .tally import ErrorScope, FastFail, RunState

__all__ = ["run_restore"]

BATCH = 500


def run_restore(context: RunContext, task: BackupTask, run: RunState) -> str:
    """Restore what *task* selects from the backup(s) at its store location."""
    target = context.target
    if target is None:
        raise ValidationError("this engine has no target to restore into")
    chain = open_backup_chain(task.store_location, context.storage_options)
    if len(chain) > 1:
        run.notes.append("restored the chain " + " → ".join(backup_name(r.location) for r in chain))
    pool = ThreadPoolExecutor(context.max_workers, thread_name_prefix="repobackup-restore")
    try:
        for reader in chain:
            _Restore(target, task, reader, run, pool).run()
    finally:
        pool.shutdown(wait=True)
        for reader in chain:
            reader.close()
    return chain[-1].location


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
        self.failed_blobs = failed_blobs_of(reader.manifest)
        self.sizes: dict[str, int] = {}

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
            if scope.project_id is None:
                if not content.common_data:
                    continue
            elif scope.project_id not in wanted or (
                scope.repo_name is not None and scope.repo_name not in wanted[scope.project_id]
            ):
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

    def blob(self, sha256: str) -> None:
        reader = self.reader
        member, opened = self._open_blob(sha256)
        # Never read past the size the record declares: a small member that inflates to
        # gigabytes stops one byte past it.
        file = bounded(opened, self.sizes.get(sha256, 0), f"{reader.location}: {member}")
        with store_errors(f"reading {member}"), file:
            chunks = VerifiedChunks(file, sha256, f"{reader.location}: {member}")
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
        """Restore one batch of records: first the blobs the target lacks, then the records
        whose blobs are there."""
        run = self.run_state
        bad = self._copy_blobs(batch)
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

    def _copy_blobs(self, batch: list[Record]) -> set[str]:
        """Copy the blobs of *batch* the target lacks; return those that failed."""
        run = self.run_state
        needed = sorted({r.blob for r in batch if r.blob is not None and not r.deleted})
        sizes = {r.blob: r.size for r in batch}
        self.sizes.update((sha, size) for sha, size in sizes.items() if sha is not None)
        small = SmallBlobs()
        jobs: list[tuple[list[str], Future[list[Exception | None]]]] = []

        def submit(group: list[str]) -> None:
            jobs.append((group, self.pool.submit(each, self.blob, group)))

        bad: set[str] = set()
        for sha in needed:
            if sha in self.failed_blobs:
                bad.add(sha)
                run.add(blobs_failed=1)
                run.fail(
                    ErrorScope.BLOB,
                    sha,
                    "the backup recorded this blob as failed; it was never stored",
                )
                continue
            with backend_errors(f"checking blob {sha}"):
                present = self.target.has_blob(sha)
            if present:
                run.add(blobs_reused=1)
            elif group := small.add(sha, sizes[sha]):
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
                    run.fail(ErrorScope.BLOB, sha, reason(error))
        return bad
