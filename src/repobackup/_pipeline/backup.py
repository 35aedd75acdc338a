"""`run_backup`: one backup run, from the task's selection to a committed backup.

Records stream through member by member; blobs go to the pump; the manifest is written last.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import attrs
from fsspec.implementations.local import LocalFileSystem

from .._archive.catalog import list_names
from .._archive.layout import (
    STAMP_FORMAT,
    BackupWriter,
    FolderWriter,
    free_space,
    record_member,
    record_to_line,
    task_folder,
)
from .._archive.manifest import FORMAT, BlobTally, Manifest, Member
from .._archive.retention import RESERVED
from .._archive.sealing import FORMAT_ENCRYPTED, Sealing, open_for_writing
from .._archive.store import parse_partial
from .._archive.zipwriter import ZipWriter
from .._backends.protocols import MeasuredSource, Record, Scope, ScopeSize, Source
from .._model.convert import to_json
from .._model.select import select
from .._model.task import BackupTask, ProjectContentInfo, TaskState
from .._version import __version__
from ..exceptions import InsufficientSpaceError, RepoBackupError, backend_errors
from .blobs import BlobPump, BlobTransfer, SeenBlobs
from .context import RunContext
from .jobs import PRIVATE_FILE, PRIVATE_FOLDER
from .resume import (
    adopt,
    discard_leftover,
    find_leftover,
    find_zip_leftover,
    keep_for_resume,
    prune,
    resume_zip,
)
from .tally import ErrorScope, Phase, RunState

__all__ = ["absent_ids", "backup_name", "default_since", "file_of", "record_key", "run_backup"]

_package = "repobackup"
LINE_OVERHEAD = 256  # bytes a record's line takes beside its key, in the space estimate
REMOTE_IN_FLIGHT = 8  # jobs in flight per worker on an executor of other processes


@attrs.frozen
class _Plan:
    """Where a backup goes and what it holds, decided before anything is written."""

    name: str
    path: str
    location: str
    task_dir: str
    fs: Any
    scopes: list[Scope]
    since: datetime | None
    follows: str | None


def _scopes(source: Source, task: BackupTask, since: datetime | None, run: RunState) -> list[Scope]:
    scopes = [Scope()] if task.content.common_data else []
    entries = task.content.projects
    if entries:
        with backend_errors("listing projects and repositories"):
            tree = select(
                entries,
                source.projects(since=since),
                lambda project: source.repositories(project, since=since),
            )
            # Absent ids are looked for in the whole repository: an increment lists only
            # what changed, and an unchanged project is not absent.
            absent_ids(entries, source.projects(), source.repositories, run)
        for project, repos in tree.items():
            scopes.append(Scope(project))
            scopes.extend(Scope(project, repo) for repo in repos)
    if not any(scope.project_id is not None for scope in scopes) and not _matched_anything(
        source, task
    ):
        raise RepoBackupError(
            "nothing matched: the selection names no project or repository of the "
            "repository"
            + (" and there is no common data" if task.content.common_data else "")
            + "; no backup was written"
        )
    return scopes


def absent_ids(
    entries: Iterable[ProjectContentInfo],
    projects: Iterable[str],
    repositories: Callable[[str], Iterable[str]],
    run: RunState,
) -> None:
    """Record an error of the run (under its error strategy) for every ``projectId`` and
    ``repoList`` entry that names a project or repository *projects* does not hold."""
    present = set(projects)
    for entry in entries:
        project = entry.project_id
        if project is None:
            continue
        if project not in present:
            run.fail(ErrorScope.PROJECT, project, f"project {project!r} does not exist")
            continue
        if entry.repo_list:
            repos = set(repositories(project))
            for repo in entry.repo_list:
                if repo not in repos:
                    run.fail(
                        ErrorScope.REPOSITORY,
                        f"{project}/{repo}",
                        f"repository {repo!r} of project {project!r} does not exist",
                    )


def _matched_anything(source: Source, task: BackupTask) -> bool:
    """Whether the task selects any project of the whole repository, or asks for common
    data and the repository holds some (an increment with no change is not empty)."""
    with backend_errors("listing projects and repositories"):
        if task.content.projects and select(
            task.content.projects, source.projects(), source.repositories
        ):
            return True
        if task.content.common_data:
            for collection in source.collections(Scope()):
                if next(iter(source.records(Scope(), collection)), None) is not None:
                    return True
    return False


def _estimate(source: Source, scopes: list[Scope], since: datetime | None, run: RunState) -> int:
    """An upper bound of the bytes a backup writes: document lines plus blob sizes. The
    files (records with a blob) and their bytes become the totals of the run's progress."""
    total = files = blob_bytes = 0
    for scope in scopes:
        with backend_errors(f"estimating {scope}"):
            size = _measure(source, scope, since, run)
        total += LINE_OVERHEAD * size.records + size.key_chars + size.blob_bytes
        files += size.blobs
        blob_bytes += size.blob_bytes
    run.total_files, run.total_bytes = files, blob_bytes
    return total


def _measure(source: Source, scope: Scope, since: datetime | None, run: RunState) -> ScopeSize:
    run.check_cancelled()
    if isinstance(source, MeasuredSource):
        return source.measure(scope, since=since)
    records = blobs = key_chars = blob_bytes = 0
    for collection in source.collections(scope):
        for record in source.records(scope, collection, since=since):
            run.check_cancelled()
            records += 1
            key_chars += len(record.key)
            if record.blob is not None and not record.deleted:
                blobs += 1
                blob_bytes += record.size
    return ScopeSize(records, blobs, key_chars, blob_bytes)


def default_since(
    context: RunContext, task: BackupTask, started: datetime
) -> tuple[datetime, str | None]:
    """The since time of an incremental backup and the backup it follows (DESIGN section 3)."""
    assert task.id is not None
    previous = next(
        (
            run
            for run in context.history(task.id)
            if run.state is TaskState.FINISHED and run.location and not run.errors
        ),
        None,
    )
    follows = backup_name(previous.location) if previous and previous.location else None
    if task.content.increment_date is not None:
        return task.content.increment_date, follows
    if previous is not None:
        return previous.started, follows
    day_before = (started.astimezone(context.tz) - timedelta(days=1)).date()
    return datetime.combine(day_before, datetime.min.time(), tzinfo=context.tz), follows


def backup_name(location: str) -> str:
    """The backup's name (``<task>-<stamp>``) from its location, folder or zip."""
    return posixpath.basename(location.rstrip("/")).removesuffix(".zip")


def _plan(context: RunContext, task: BackupTask, run: RunState, started: datetime) -> _Plan:
    since: datetime | None = None
    follows: str | None = None
    if task.content.increment:
        since, follows = default_since(context, task, started)
    run.since = since
    scopes = _scopes(context.source, task, since, run)
    fs, task_dir = task_folder(task.store_location, task.name, context.storage_options)
    stamp = started.astimezone(context.tz)
    suffix = ".zip" if task.content.compression else ""
    local = isinstance(fs, LocalFileSystem)
    if local:
        # Backups hold password hashes and tokens: the task folder is the owner's alone
        # before anything is written in it, whatever the umask.
        os.makedirs(task_dir, exist_ok=True)
        os.chmod(task_dir, PRIVATE_FOLDER)
    # A name is taken by a backup, complete or not, and by another run's work in progress.
    listed = list_names(fs, task_dir)
    taken = set(listed) | {final for entry in listed if (final := parse_partial(entry))}
    while True:
        name = f"{task.name}-{stamp.strftime(STAMP_FORMAT)}"
        if name + suffix not in taken and (not local or _reserve(task_dir, name + suffix)):
            break
        stamp += timedelta(seconds=1)  # two runs in one second: the later one takes the next
    path = posixpath.join(task_dir, name + suffix)
    location = _join_location(task.store_location, f"{task.name}/{name}{suffix}")
    return _Plan(name, path, location, task_dir, fs, scopes, since, follows)


BLOBS = "blobs"  # the folder of a backup that `blob_member` puts every blob under


def reservation(task_dir: str, final: str) -> str:
    """The hidden file that holds the name *final* for one run of a local store."""
    return os.path.join(task_dir, f".{final}{RESERVED}")


def _reserve(task_dir: str, final: str) -> bool:
    """Take the name *final* in the local *task_dir* for this run, exclusively; False when
    another run holds it or has published it. The exclusive create is what makes two runs
    of one second take two names: listing alone races."""
    try:
        os.close(os.open(reservation(task_dir, final), os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        return False
    # A run that held the name publishes before it lets go: seen here if it did.
    if os.path.lexists(os.path.join(task_dir, final)):
        _release(task_dir, final)
        return False
    return True


def _release(task_dir: str, final: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(reservation(task_dir, final))


def _make_private(path: str) -> None:
    """Files 0600 and folders 0700 throughout the local backup at *path*. The blobs are
    created so by the copies that write them (see `jobs`): their thousands of files and
    folders are not walked again, which on a local disk costs about as much as copying
    them."""
    if os.path.isfile(path):
        os.chmod(path, PRIVATE_FILE)
        return
    os.chmod(path, PRIVATE_FOLDER)
    for folder, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(folder, name), PRIVATE_FOLDER)
        if folder == path and BLOBS in dirs:
            dirs.remove(BLOBS)
        for name in files:
            os.chmod(os.path.join(folder, name), PRIVATE_FILE)


def _check_space(context: RunContext, task: BackupTask, run: RunState, plan: _Plan) -> None:
    run.progress(Phase.ESTIMATE, force=True)
    needed = _estimate(context.source, plan.scopes, plan.since, run)
    available = free_space(plan.fs, plan.task_dir)
    if available is None:
        run.notes.append(
            f"free space at {task.store_location!r} cannot be known on this store; "
            f"the run needs up to {needed} bytes"
        )
    elif needed > available:
        raise InsufficientSpaceError(task.store_location, needed, available)


def run_backup(context: RunContext, task: BackupTask, run: RunState, started: datetime) -> str:
    """Back up what *task* selects; return the location of the complete backup."""
    plan = _plan(context, task, run, started)
    local = isinstance(plan.fs, LocalFileSystem)
    try:
        if task.backup_setting.space_cap_check:
            _check_space(context, task, run, plan)
        _write(context, task, run, plan, started)
        if local:
            _make_private(plan.path)
    finally:
        if local:
            _release(plan.task_dir, posixpath.basename(plan.path))
    return plan.location


def _write(
    context: RunContext, task: BackupTask, run: RunState, plan: _Plan, started: datetime
) -> None:
    sealing = (
        open_for_writing(plan.fs, plan.task_dir, plan.name) if task.content.encryption else None
    )
    writer, leftover, adopted = _open_writer(context, task, plan, sealing)
    seen = SeenBlobs()
    transfer = BlobTransfer(
        context,
        context.source,
        writer,
        run,
        workers=context.workers(plan.fs),
        leftover=(plan.fs, leftover) if leftover is not None else None,
    )
    # A job on another process or machine takes milliseconds to hand over and come back:
    # more in flight keep its workers busy meanwhile.
    in_flight = context.workers(plan.fs) * (4 if not transfer.remote else REMOTE_IN_FLIGHT)
    pump = BlobPump(run, transfer, in_flight)
    try:
        run.progress(Phase.RECORDS, force=True)
        tree, members = _write_members(
            context.source, plan=plan, writer=writer, run=run, seen=seen, pump=pump
        )
        run.progress(Phase.BLOBS, force=True)
        pump.drain()
        run.progress(Phase.COMMIT, force=True)
        if adopted and isinstance(writer, FolderWriter):
            prune(writer.root, seen.__contains__)
        manifest = _manifest(
            context,
            task=task,
            run=run,
            plan=plan,
            started=started,
            tree=tree,
            members=members,
            resumed=(pump.resumed, pump.resumed_bytes),
        )
        if sealing is not None:
            manifest = attrs.evolve(
                manifest, format=FORMAT_ENCRYPTED, encryption=sealing.manifest_fields()
            )
        if not run.holds_lease():
            raise RepoBackupError(
                "the run lost its claim on the task (taken for interrupted by another "
                "process); the backup was not committed"
            )
        writer.commit(manifest)
    except BaseException:
        pump.cancel()
        _abort(writer, plan, task)
        raise
    finally:
        transfer.shutdown()
        seen.close()
    if isinstance(writer, ZipWriter):
        run.notes.extend(writer.resume_notes)
    if leftover is not None:
        run.notes.append(
            f"resumed an interrupted run: {pump.resumed} blobs it had stored were checked "
            "and reused"
        )
        if not adopted:
            discard_leftover(plan.fs, leftover)


def _open_writer(
    context: RunContext, task: BackupTask, plan: _Plan, sealing: Sealing | None
) -> tuple[BackupWriter, str | None, bool]:
    """The backup's writer, the interrupted run's folder or zip it resumes from (if any),
    and whether it adopted it. An encrypted backup resumes from none: its members are
    bound to their own backup's id, so an interrupted run's blobs cannot be reused."""
    writer: BackupWriter
    leftover = None
    if not task.content.compression and sealing is None:
        leftover = find_leftover(plan.fs, plan.task_dir, task.name, not_named=plan.name)
    if task.content.compression:
        zipped = ZipWriter(
            plan.fs,
            plan.path,
            plan.location,
            workers=context.workers(plan.fs),
            sealing=sealing,
            resume_from=find_zip_leftover(plan.fs, plan.task_dir, task.name),
        )
        # A zip continued is this run's own partial now: nothing is left to discard.
        return zipped, zipped.resumed_from, zipped.resumed_from is not None
    writer = FolderWriter(plan.fs, plan.path, plan.location, sealing=sealing)
    adopted = leftover is not None and _adopt(writer, plan, leftover)
    if adopted:
        assert isinstance(writer, FolderWriter)
        leftover = writer.root
    return writer, leftover, adopted


def _adopt(writer: BackupWriter, plan: _Plan, leftover: str) -> bool:
    """Take the interrupted run's folder as this backup's (see `adopt`); False when it is
    reused blob by blob instead."""
    if not isinstance(writer, FolderWriter):
        return False
    try:
        return adopt(plan.fs, leftover, writer.root)
    except OSError:
        writer.store.makedirs(writer.root)
        return False


def _abort(writer: BackupWriter, plan: _Plan, task: BackupTask) -> None:
    """Discard a failed backup, keeping the blobs a folder backup stored for the next run
    to resume from (see `keep_for_resume`)."""
    # An encrypted backup is never resumed from (see `_open_writer`): nothing to keep.
    if isinstance(writer, ZipWriter):
        with contextlib.suppress(Exception):
            if writer.keep(resume_zip(plan.task_dir, task.name)):
                return
    if isinstance(writer, FolderWriter) and writer.sealing is None:
        with contextlib.suppress(Exception):
            if keep_for_resume(plan.fs, plan.task_dir, task.name, writer.root) is not None:
                return
    writer.abort()


def _write_members(
    source: Source,
    *,
    plan: _Plan,
    writer: BackupWriter,
    run: RunState,
    seen: SeenBlobs,
    pump: BlobPump,
) -> tuple[dict[str, list[str]], list[Member]]:
    """Write one records member per collection of each scope; return the project tree and
    the manifest's member entries."""
    members: list[Member] = []
    tree: dict[str, list[str]] = {}
    for scope in plan.scopes:
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
                since=plan.since,
                run=run,
                seen=seen,
                pump=pump,
                tally=tally,
            )
            # An empty member stays: in an increment it says the collection had no changes.
            info = writer.write_records(member, lines)
            members.append(
                Member(
                    path=info.path,
                    project_id=scope.project_id,
                    repo_name=scope.repo_name,
                    collection=collection,
                    records=info.records,
                    tombstones=tally["tombstones"],
                    size=info.size,
                    sha256=info.sha256,
                )
            )
    return tree, members


def _manifest(
    context: RunContext,
    *,
    task: BackupTask,
    run: RunState,
    plan: _Plan,
    started: datetime,
    tree: dict[str, list[str]],
    members: list[Member],
    resumed: tuple[int, int] = (0, 0),
) -> Manifest:
    since = plan.since
    return Manifest(
        format=FORMAT,
        generator=f"{_package} {__version__}",
        task_id=task.id,
        name=plan.name,
        task_name=task.name,
        created=started.isoformat(),
        completed=context.now().isoformat(),
        kind="incremental" if since is not None else "full",
        since=since.isoformat() if since is not None else None,
        follows=plan.follows if since is not None else None,
        compression=task.content.compression,
        common_data=task.content.common_data,
        content=to_json(task.content),
        projects=tree,
        members=tuple(members),
        blobs=BlobTally(
            count=run.counts.blobs_written + resumed[0],
            bytes=run.counts.bytes_read + resumed[1],
            failed=tuple(run.failed_blobs()),
        ),
        failed_records=tuple(run.failed_records()),
    )


def _backup_lines(
    source: Source,
    scope: Scope,
    collection: str,
    *,
    since: datetime | None,
    run: RunState,
    seen: SeenBlobs,
    pump: BlobPump,
    tally: dict[str, int],
) -> Iterator[bytes]:
    with backend_errors(f"reading {collection} of {scope}"):
        records = source.records(scope, collection, since=since)
        for record in records:
            try:
                line = record_to_line(record)
            except (TypeError, ValueError) as exc:
                run.add(records_failed=1)
                run.fail(ErrorScope.RECORD, record_key(record), f"document is not JSON: {exc}")
                continue
            if record.deleted:
                tally["tombstones"] += 1
            elif record.blob is not None:
                if seen.add(record.blob):
                    run.note_blob(record.blob, file_of(record))
                    pump.add(record.blob, record.size)
                else:
                    run.add(blobs_reused=1, bytes_reused=record.size)
            run.add(records_written=1)
            yield line


def record_key(record: Record) -> str:
    """How an error names a record: project, repository, collection and key."""
    parts = [p for p in (record.project_id, record.repo_name, record.collection) if p is not None]
    return "/".join([*parts, record.key])


def file_of(record: Record) -> str:
    """How an error names the file a record stands for: project, repository and its full
    path (or key), as ``project/repo/path``."""
    parts = [p for p in (record.project_id, record.repo_name) if p is not None]
    head = "/".join(parts)
    if not head:
        return record.key
    return head + (record.key if record.key.startswith("/") else f"/{record.key}")


def _join_location(store_location: str, tail: str) -> str:
    separator = "" if store_location.endswith(("/", "\\")) else "/"
    return f"{store_location}{separator}{tail}"
