"""Verification of a backup, folder or zip: every member, record line and blob checked.

`verify` streams everything once and returns a `VerifyReport` listing each problem by member.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import tzinfo
from typing import IO, Any

import attrs
import zstandard

from .._backends.protocols import Scope
from .._model.progress import Phase, Progress, ProgressMeter
from .._model.times import parse_datetime
from ..exceptions import ArchiveError, RepoBackupError, store_errors
from .bkrepo_reader import UNMARKED, BkrepoReader
from .catalog import entries, open_backup, open_backup_chain
from .layout import (
    BACKUP_NAME,
    CHUNK,
    SHA256,
    BackupReader,
    Overrun,
    blob_member,
    bounded,
    check_member_path,
    line_to_record,
    open_store,
    record_member,
)
from .layout import numbered_lines as limited_lines
from .manifest import MANIFEST, failed_records_of
from .problems import Bounded
from .sealing import is_key_member, sealing_of
from .store import retrying

__all__ = ["VerifyProblem", "VerifyReport", "blob_totals", "check_records_member", "verify"]

MAX_PROBLEMS = 1000
# A longer record line is an error, not a reason to run out of memory: 16 MiB is the largest
# document the repository server's database holds, and a restore applies the same limit.
MAX_LINE = 16 * 1024 * 1024
BLOB_MEMBER = re.compile(
    r"^blobs/(?P<a>[0-9a-f]{2})/(?P<b>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})(?P<zst>\.zst)?$"
)


@attrs.frozen
class VerifyProblem:
    """One thing wrong with a backup: the member it concerns, what is wrong, and which
    backup of a chain it is in."""

    member: str
    message: str
    backup: str = ""

    def __str__(self) -> str:
        return f"{self.backup}: {self.member}: {self.message}"


@attrs.frozen
class VerifyReport:
    """What `verify` found: ``ok`` when nothing is wrong, else every problem (up to a
    thousand; ``problems_dropped`` counts the rest), with what was checked. ``notes`` says
    what could not be checked: for a backup of the original server (bk-repo), that nothing
    marks it complete."""

    ok: bool
    location: str
    problems: tuple[VerifyProblem, ...] = ()
    problems_dropped: int = 0
    backups: tuple[str, ...] = ()
    members: int = 0
    records: int = 0
    blobs: int = 0
    notes: tuple[str, ...] = ()


def verify(
    location: str,
    storage_options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    max_workers: int = 4,
    zone: tzinfo | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> VerifyReport:
    """Check the backup at *location* without restoring it.

    *location* is a backup folder, a backup zip, or a task folder (then its newest complete
    backup and the backups it follows are checked, and newer backups that are incomplete or
    damaged are reported). Checks: the manifest is present and well formed; every member it
    lists is there with its size and sha256, every record line parses and the counts match;
    every blob a live record references is there (plain or ``.zst``) with the content its
    sha256 names; nothing else is in the backup. Everything is streamed once; memory stays
    flat. A store that cannot be read at all raises `StoreError`.

    A backup of the original server (bk-repo; *zone* is the zone of its offset-less times)
    is checked line by line and blob by blob: every line that does not parse, every entry
    refused, every blob that does not match its sha256 name or is missing is a problem. It
    has no completeness marker: a sound one is ``ok`` with a note saying so.

    *on_progress* receives `Progress` events (task id None): records and blobs checked and
    the blob bytes read, against the blobs and bytes the manifests count.
    """
    tally = _Tally(on_progress)
    try:
        chain = open_backup_chain(location, storage_options, zone=zone)
    except ArchiveError as exc:
        tally.problem(location, MANIFEST, exc.message)
        return tally.report(location, ())
    if isinstance(chain[-1], BkrepoReader):
        try:
            return _verify_bkrepo(location, chain[-1], tally)
        finally:
            chain[-1].close()
    tally.totals = blob_totals(reader.manifest for reader in chain)
    try:
        if chain[-1].location != location:
            _newer_backups(location, storage_options, chain[-1].location, tally)
        with ThreadPoolExecutor(
            max(1, max_workers), thread_name_prefix="repobackup-verify"
        ) as pool:
            for reader in chain:
                _BackupCheck(reader, tally, pool, max(1, max_workers) * 4).run()
    finally:
        for reader in chain:
            reader.close()
    return tally.report(location, tuple(reader.location for reader in chain))


def blob_totals(manifests: Iterable[Mapping[str, Any]]) -> tuple[int | None, int | None]:
    """The bytes and the number of blobs the backups of *manifests* hold, as the manifests
    count them (None, None when one does not say): what a restore or a verify reads."""
    size = count = 0
    for manifest in manifests:
        blobs = manifest.get("blobs")
        figures = [blobs.get(name) if isinstance(blobs, dict) else None for name in _TOTALS]
        counted = [n for n in figures if isinstance(n, int) and not isinstance(n, bool) and n >= 0]
        if len(counted) != len(_TOTALS):
            return None, None
        size, count = size + counted[0], count + counted[1]
    return size, count


_TOTALS = ("bytes", "count")


def _verify_bkrepo(location: str, reader: BkrepoReader, tally: _Tally) -> VerifyReport:
    found = reader.backup.verify()
    for problem in found.problems:
        if problem.kind != "unmarked":
            tally.problem(reader.location, problem.where, problem.message)
    if found.problems_dropped:
        tally.problem(reader.location, "*", f"{found.problems_dropped} more problems")
    tally.add(records=found.records, blobs=found.blobs)
    report = tally.report(location, (reader.location,))
    return attrs.evolve(report, notes=(f"{reader.location}: {UNMARKED}",))


def _newer_backups(
    location: str,
    storage_options: Mapping[str, Mapping[str, Any]] | None,
    chosen: str,
    tally: _Tally,
) -> None:
    """Report the backups of a task folder newer than the one a restore would use: each is
    incomplete or damaged, else it would have been chosen."""
    chosen_match = BACKUP_NAME.match(posixpath.basename(chosen.rstrip("/")))
    if chosen_match is None:
        return
    fs, path = open_store(location, storage_options)
    for entry in reversed(entries(fs, path)):
        if entry.stamp <= chosen_match["stamp"]:
            continue
        where = f"{location.rstrip('/')}/{entry.name}"
        try:
            open_backup(fs, entry.path, where).close()
        except ArchiveError as exc:
            tally.problem(
                where, MANIFEST, f"newer than the backup verified, and unusable: {exc.message}"
            )


class _Tally:
    """Problems and counts, shared by the checking threads, and the progress events."""

    def __init__(self, on_progress: Callable[[Progress], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._problems: Bounded[VerifyProblem] = Bounded(MAX_PROBLEMS)
        self.members = 0
        self.records = 0
        self.blobs = 0
        self.blob_bytes = 0
        self.phase = Phase.RECORDS
        self.totals: tuple[int | None, int | None] = (None, None)
        self._meter = ProgressMeter(on_progress)

    def problem(self, backup: str, member: str, message: str) -> None:
        with self._lock:
            self._problems.add(VerifyProblem(member, message, backup))

    def add(
        self, *, members: int = 0, records: int = 0, blobs: int = 0, blob_bytes: int = 0
    ) -> None:
        with self._lock:
            self.members += members
            self.records += records
            self.blobs += blobs
            self.blob_bytes += blob_bytes
        self.progress()

    def progress(self, phase: Phase | None = None) -> None:
        """A progress event (at once when *phase* begins, else at most every 0.25 s)."""
        if phase is not None:
            self.phase = phase
        if not self._meter.due(force=phase is not None):
            return
        with self._lock:
            records, blobs, done = self.records, self.blobs, self.blob_bytes
        size, count = self.totals
        self._meter.send(Progress(None, self.phase, records, done, size, blobs, count))

    def report(self, location: str, backups: tuple[str, ...]) -> VerifyReport:
        self.progress(Phase.DONE)
        return VerifyReport(
            ok=not self._problems and not self._problems.dropped,
            location=location,
            problems=tuple(self._problems),
            problems_dropped=self._problems.dropped,
            backups=backups,
            members=self.members,
            records=self.records,
            blobs=self.blobs,
        )


class _Refs:
    """The blobs live records reference, on disk in a temporary SQLite table so that memory
    stays flat with millions of them; used from one thread."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("")
        self._db.execute(
            "CREATE TABLE refs (sha BLOB PRIMARY KEY, size INT, origin TEXT, found INT)"
            " WITHOUT ROWID"
        )

    def add(self, sha256: str, size: int, origin: str) -> int | None:
        """Record a reference; the size an earlier reference gave when it differs."""
        key = bytes.fromhex(sha256)
        row = self._db.execute("SELECT size FROM refs WHERE sha = ?", (key,)).fetchone()
        if row is None:
            self._db.execute("INSERT INTO refs VALUES (?, ?, ?, 0)", (key, size, origin))
            return None
        return None if row[0] == size else int(row[0])

    def find(self, sha256: str) -> tuple[int, bool] | None:
        """The size referenced and whether a member was found already, or None."""
        row = self._db.execute(
            "SELECT size, found FROM refs WHERE sha = ?", (bytes.fromhex(sha256),)
        ).fetchone()
        return None if row is None else (int(row[0]), bool(row[1]))

    def mark_found(self, sha256: str) -> None:
        self._db.execute("UPDATE refs SET found = 1 WHERE sha = ?", (bytes.fromhex(sha256),))

    def missing(self) -> Iterator[tuple[str, str]]:
        """Each referenced blob no member holds, with the record line that references it."""
        last = b""
        while True:
            rows = self._db.execute(
                "SELECT sha, origin FROM refs WHERE found = 0 AND sha > ? ORDER BY sha LIMIT 1000",
                (last,),
            ).fetchall()
            if not rows:
                return
            for sha, origin in rows:
                last = sha
                yield sha.hex(), origin

    def close(self) -> None:
        self._db.close()


class _HashingReader(io.RawIOBase):
    """Reads through a file, hashing and counting every byte on the way."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__()
        self.file = file
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.file.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        self.digest.update(data)
        self.size += count
        return count


def _decompressed(file: IO[bytes]) -> io.BufferedReader:
    # Every frame, as `zstd -d` reads them, so that nothing stored goes unchecked.
    reader = zstandard.ZstdDecompressor().stream_reader(
        file, read_across_frames=True, closefd=False
    )
    return io.BufferedReader(reader, CHUNK)


class _BackupCheck:
    """Checks one backup of a chain."""

    def __init__(
        self, reader: BackupReader, tally: _Tally, pool: ThreadPoolExecutor, limit: int
    ) -> None:
        self.reader = reader
        self.tally = tally
        self.pool = pool
        self.limit = limit
        self.pending: deque[Future[None]] = deque()
        self.refs = _Refs()
        self.failed: set[str] = set()
        # Blob members are named by their sha256, or in an encrypted backup by a keyed id.
        sealing = sealing_of(reader)
        self._name: Callable[[str], str] = sealing.blob_name if sealing else str
        self.blob_members = 0
        self.blob_bytes = 0
        self._lock = threading.Lock()

    def problem(self, member: str, message: str) -> None:
        self.tally.problem(self.reader.location, member, message)

    def run(self) -> None:
        try:
            self._run()
        finally:
            for future in self.pending:
                future.cancel()
            self.refs.close()

    def _check_blobs(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest's blobs object (empty when malformed); sets `failed`."""
        blobs = manifest.get("blobs")
        if not isinstance(blobs, dict):
            self.problem(MANIFEST, "blobs must be an object with count, bytes and failed")
            blobs = {}
        failed = blobs.get("failed", [])
        if not isinstance(failed, list) or not all(
            isinstance(sha, str) and SHA256.match(sha) for sha in failed
        ):
            self.problem(MANIFEST, "blobs.failed must be a list of sha256 in lowercase hex")
            failed = []
        self.failed = {self._name(sha) for sha in failed}
        return blobs

    def _run(self) -> None:
        reader = self.reader
        self.tally.progress(Phase.RECORDS)
        for member, message in getattr(reader, "problems", ()):
            self.problem(member, message)
        dropped = getattr(reader, "problems_dropped", 0)
        if dropped:
            self.problem("*", f"{dropped} more hostile or unreadable members")
        manifest = reader.manifest
        self.tally.add(members=1)
        compressed = manifest.get("compression")
        if not isinstance(compressed, bool):
            self.problem(MANIFEST, "compression must be true or false")
            compressed = bool(compressed)
        self._check_header(manifest)
        self._check_failed_records(manifest)
        blobs = self._check_blobs(manifest)
        tree = manifest.get("projects")
        if not isinstance(tree, dict):
            self.problem(MANIFEST, "projects must map project ids to lists of repository names")
            tree = {}
        listed: set[str] = set()
        for index, entry in enumerate(manifest["members"]):
            path = self._check_entry(index, entry, compressed, tree)
            if path is None:
                continue
            if path in listed:
                self.problem(path, "listed twice in the manifest")
                continue
            listed.add(path)
            self._check_records(entry, path)
        self.tally.progress(Phase.BLOBS)
        self._walk(listed, compressed)
        self._drain(0)
        for sha, origin in self.refs.missing():
            member = blob_member(sha, compressed=False)
            if sha in self.failed:
                self.problem(
                    member,
                    f"blob {sha} was recorded as failed at backup time: it was never stored "
                    f"(referenced by {origin})",
                )
            else:
                self.problem(member, f"blob {sha} is missing (referenced by {origin})")
        for name, value in (("count", self.blob_members), ("bytes", self.blob_bytes)):
            said = blobs.get(name)
            if said != value:
                self.problem(
                    MANIFEST, f"blobs.{name} says {said!r}, the backup's blobs hold {value}"
                )

    def _check_failed_records(self, manifest: Mapping[str, Any]) -> None:
        """Each record the backup could not write is a problem: it is missing."""
        for key in failed_records_of(manifest):
            self.problem(
                MANIFEST, f"record {key} failed at backup time: it is missing from this backup"
            )

    def _check_header(self, manifest: Mapping[str, Any]) -> None:
        for field in ("created", "completed"):
            try:
                parse_datetime(str(manifest.get(field)))
            except ValueError:
                self.problem(MANIFEST, f"{field} must be an ISO 8601 time")
        kind = manifest.get("kind")
        since = manifest.get("since")
        follows = manifest.get("follows")
        if kind == "full":
            if since is not None or follows is not None:
                self.problem(MANIFEST, "a full backup has neither since nor follows")
        elif kind == "incremental":
            try:
                parse_datetime(str(since))
            except ValueError:
                self.problem(MANIFEST, "an incremental backup needs since, an ISO 8601 time")
            if follows is not None and not isinstance(follows, str):
                self.problem(MANIFEST, "follows must be the name of a backup or null")
        else:
            self.problem(MANIFEST, f"kind must be 'full' or 'incremental', not {kind!r}")

    def _check_entry(
        self, index: int, entry: Any, compressed: bool, tree: Mapping[str, Any]
    ) -> str | None:
        """The member path a manifest entry names, if the entry is well formed."""
        where = f"members[{index}]"
        if not isinstance(entry, dict):
            self.problem(MANIFEST, f"{where} must be an object")
            return None
        project, repo, collection = (
            entry.get("projectId"),
            entry.get("repoName"),
            entry.get("collection"),
        )
        problems = []
        if not isinstance(collection, str) or not collection:
            problems.append("collection must be a non-empty string")
        if not (project is None or (isinstance(project, str) and project)):
            problems.append("projectId must be null or a non-empty string")
        if not (repo is None or (isinstance(repo, str) and repo)) or (
            project is None and repo is not None
        ):
            problems.append("repoName must be null, or a non-empty string with a projectId")
        for field in ("records", "tombstones", "size"):
            value = entry.get(field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{field} must be a non-negative integer")
        if not (isinstance(entry.get("sha256"), str) and SHA256.match(entry["sha256"])):
            problems.append("sha256 must be a sha256 in lowercase hex")
        if problems or not isinstance(collection, str):
            self.problem(MANIFEST, f"{where}: " + "; ".join(problems))
            return None
        scope = Scope(project, repo)
        expected = record_member(scope, collection, compressed=compressed)
        if entry.get("path") != expected:
            self.problem(MANIFEST, f"{where}: path {entry.get('path')!r} should be {expected!r}")
            return None
        if project is not None and (
            project not in tree or (repo is not None and repo not in (tree.get(project) or ()))
        ):
            self.problem(
                expected, "its project or repository is missing from the manifest's projects"
            )
        return expected

    def _check_records(self, entry: Mapping[str, Any], path: str) -> None:
        """Stream one records member: its hash, size, every line, and the blobs it references."""
        reader = self.reader
        try:
            present = reader.exists(path)
        except RepoBackupError as exc:
            self.problem(path, exc.message)
            return
        if not present:
            self.problem(path, "listed in the manifest but missing")
            return
        self.tally.add(members=1)
        scope = Scope(entry.get("projectId"), entry.get("repoName"))
        collection = entry["collection"]
        lines = tombstones = 0
        try:
            with store_errors(f"reading {path}"), reader.open(path) as raw:
                declared = entry["size"] if isinstance(entry.get("size"), int) else 0
                what = f"{path} does not match the manifest"
                hashing = _HashingReader(bounded(raw, declared, what))
                stored = io.BufferedReader(hashing, CHUNK)
                try:
                    stream = _decompressed(stored) if path.endswith(".zst") else stored
                    for number, line in record_lines(stream):
                        lines += 1
                        tombstones += self._check_line(
                            path, f"{path}:{number}", line, scope, collection
                        )
                except zstandard.ZstdError as exc:
                    self.problem(path, f"not a valid zstd stream: {exc}")
                # Read to the end so that the hash covers every stored byte.
                while stored.read(CHUNK):
                    pass
        except RepoBackupError as exc:
            self.problem(path, exc.message)
            return
        if hashing.digest.hexdigest() != entry["sha256"] or hashing.size != entry["size"]:
            self.problem(
                path,
                f"does not match the manifest: {hashing.size} bytes with sha256 "
                f"{hashing.digest.hexdigest()}, the manifest says {entry['size']} bytes with "
                f"sha256 {entry['sha256']}",
            )
        for field, counted in (("records", lines), ("tombstones", tombstones)):
            if entry[field] != counted:
                self.problem(
                    path, f"the manifest counts {entry[field]} {field}, the member holds {counted}"
                )

    def _check_line(
        self, path: str, where: str, line: bytes | None, scope: Scope, collection: str
    ) -> int:
        """Check one record line of *path*; 1 when it is a tombstone, else 0."""
        if line is None:
            self.problem(path, f"{where}: line longer than {MAX_LINE} bytes")
            return 0
        try:
            record = line_to_record(line, where, scope, collection)
        except ArchiveError as exc:
            self.problem(path, exc.message)
            return 0
        self.tally.add(records=1)
        if record.deleted:
            return 1
        if record.blob is not None:
            other = self.refs.add(self._name(record.blob), record.size, where)
            if other is not None:
                self.problem(
                    path,
                    f"{where}: blob {record.blob} has size {record.size} "
                    f"here and {other} in an earlier record",
                )
        return 0

    def _walk(self, listed: set[str], compressed: bool) -> None:
        """Every member of the backup: the listed ones, referenced blobs, and nothing else."""
        reader = self.reader
        with store_errors(f"listing {reader.location}"):
            members = reader.members()
            for member in members:
                if member == MANIFEST or member in listed:
                    continue
                if is_key_member(member) and sealing_of(self.reader) is not None:
                    continue  # the key file copies, stored in clear, listed nowhere
                match = BLOB_MEMBER.match(member)
                if match and match["sha"].startswith(match["a"] + match["b"]):
                    self._blob(member, match["sha"], bool(match["zst"]), compressed)
                    continue
                try:
                    check_member_path(member)
                except ArchiveError as exc:
                    self.problem(member, exc.message)
                    continue
                self.problem(member, "not in the manifest")

    def _blob(self, member: str, sha256: str, zst: bool, compressed: bool) -> None:
        if zst and not compressed:
            self.problem(member, "a compressed blob in an uncompressed backup: not in the manifest")
            return
        found = self.refs.find(sha256)
        if found is None:
            self.problem(member, f"blob {sha256} is referenced by no record: not in the manifest")
            return
        size, seen = found
        if seen:
            self.problem(member, f"a second copy of blob {sha256}")
            return
        self.refs.mark_found(sha256)
        self._drain(self.limit - 1)
        self.pending.append(self.pool.submit(self._check_blob, member, sha256, size, zst))

    def _drain(self, keep: int) -> None:
        while len(self.pending) > keep:
            self.pending.popleft().result()

    def _check_blob(self, member: str, sha256: str, size: int, zst: bool) -> None:
        digest = hashlib.sha256()
        length = 0
        try:
            with store_errors(f"reading {member}"), self.reader.open(member) as raw:
                content = bounded(
                    _decompressed(raw) if zst else raw, size, f"{self.reader.location}: {member}"
                )
                try:
                    while chunk := content.read(CHUNK):
                        digest.update(chunk)
                        length += len(chunk)
                except zstandard.ZstdError as exc:
                    self.problem(member, f"not a valid zstd stream: {exc}")
                    return
        except RepoBackupError as exc:
            self.problem(member, exc.message)
            return
        self.tally.add(members=1, blobs=1, blob_bytes=size)
        with self._lock:
            self.blob_members += 1
            # The size the records give: a blob of the wrong length is reported on its own.
            self.blob_bytes += size
        if self._name(digest.hexdigest()) != sha256:
            self.problem(member, f"content does not match its sha256 (got {digest.hexdigest()})")
        elif length != size:
            self.problem(member, f"holds {length} bytes, its records say {size}")


def record_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """Numbered lines; None for one longer than `MAX_LINE`, skipped without holding it."""
    return limited_lines(stream, MAX_LINE)


def check_records_member(reader: BackupReader, entry: Mapping[str, Any]) -> None:
    """ArchiveError unless the records member a manifest *entry* lists has the size, sha256
    and number of lines the entry gives; streams the member once.

    A restore calls this before it applies anything from the member, so that a member that
    disagrees with its manifest is reported, under the run's error strategy, and skipped.
    """
    path = entry.get("path")
    if not isinstance(path, str):
        raise ArchiveError(f"{reader.location}: a manifest member has no path")
    digest_size = (entry.get("sha256"), entry.get("size"))
    declared = entry.get("size")
    if not isinstance(declared, int) or isinstance(declared, bool) or declared < 0:
        raise ArchiveError(f"{reader.location}: member {path} has no valid size in the manifest")

    def scan() -> tuple[str, int, int, bytes]:
        # Raises the store's own exceptions, so that a reset stream is read again whole.
        lines, last = 0, b"\n"
        with reader.open(path) as raw:
            hashing = _HashingReader(bounded(raw, declared, f"{reader.location}: {path}"))
            stored = io.BufferedReader(hashing, CHUNK)
            content = _decompressed(stored) if path.endswith(".zst") else stored
            while chunk := content.read(CHUNK):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
            while stored.read(CHUNK):
                pass
        return hashing.digest.hexdigest(), hashing.size, lines, last

    try:
        with store_errors(f"reading {path}"):
            digest, size, lines, last = retrying(f"reading {path}", scan)
    except Overrun as exc:
        raise ArchiveError(f"{exc.message}: does not match the manifest") from None
    except zstandard.ZstdError as exc:
        raise ArchiveError(f"{reader.location}: {path} is not a valid zstd stream: {exc}") from None
    if last != b"\n":
        lines += 1  # a last line without its newline
    if (digest, size) != digest_size:
        raise ArchiveError(
            f"{reader.location}: member {path} does not match the manifest "
            f"(sha256 or size differs): corrupt or altered"
        )
    if lines != entry.get("records"):
        raise ArchiveError(
            f"{reader.location}: member {path} holds {lines} records, "
            f"the manifest counts {entry.get('records')!r}"
        )
