"""Blob jobs: the picklable work a run hands to its executor, and the codec every job calls.

A job carries references (sha256s, how to reopen the source, backup or target, where to
write), never blob bytes; running one twice writes the same content to the same place.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import posixpath
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, cast

import attrs
import zstandard
from fsspec.implementations.local import LocalFileSystem

from .._archive.layout import CHUNK, BackupReader, blob_member, bounded
from .._archive.sealing import Sealing, seal_writer
from .._archive.store import retrying_whole
from .._archive.zipwriter import LEVEL, SAMPLE, WORTH, not_worth_trying, worth_compressing
from ..exceptions import ArchiveError, RepoBackupError, backend_errors, store_errors

__all__ = [
    "BackupJob",
    "BlobCodec",
    "Here",
    "Packed",
    "RestoreJob",
    "Stored",
    "VerifiedChunks",
    "run_job",
]

#: A packed member up to this size comes back to the parent as bytes; larger ones spool.
INLINE = 256 * 1024


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


_compressors = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # A context is not safe to share between threads, and costly to make for every blob.
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_compressors, "value", None)
    if cache is None:
        cache = _compressors.value = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


@attrs.frozen
class BlobCodec:
    """How a blob's content becomes a member's content and back: the one transform every
    job calls, small and picklable: zstd when it pays, then encryption with *sealing*.

    `encode` returns whether the member holds compressed content (its name then ends in
    ``.zst``) and the compressed chunks; `seal` encrypts them for the member they go to (its
    name is bound into the encryption, so it comes after the ``.zst`` decision); `decode`
    undoes the compression from a member's name and file (a reader of an encrypted backup
    decrypts as it opens a member).
    """

    compress: bool = False
    level: int = LEVEL
    sealing: Sealing | None = None

    def member(self, sha256: str, transformed: bool) -> str:
        return blob_member(sha256, compressed=transformed, sealing=self.sealing)

    def seal(self, member: str, content: Iterator[bytes]) -> Iterator[bytes]:
        """*content* encrypted as member *member* when the backup is encrypted."""
        if self.sealing is None:
            return content
        return _sealed(self.sealing, member, content)

    def encode(self, chunks: Iterable[bytes]) -> tuple[bool, Iterator[bytes]]:
        stream = iter(chunks)
        if not self.compress:
            return False, stream
        head = bytearray()
        for chunk in stream:
            head += chunk
            if len(head) >= SAMPLE:
                break
        else:
            # A small blob is at hand whole: compressing it once at the real level tells
            # what it gains, at less cost than a probe and then the real pass.
            data = bytes(head)
            packed = b"" if not_worth_trying(data) else _compressor(self.level).compress(data)
            if 0 < len(packed) <= len(data) * WORTH:
                return True, iter([packed])
            return False, iter([data])
        if not worth_compressing(bytes(head[:SAMPLE])):
            return False, itertools.chain([bytes(head)], stream)
        return True, self._compressing(bytes(head), stream)

    def _compressing(self, head: bytes, stream: Iterator[bytes]) -> Iterator[bytes]:
        compressor = _compressor(self.level).compressobj(size=-1)
        yield compressor.compress(head)
        for chunk in stream:
            if out := compressor.compress(chunk):
                yield out
        yield compressor.flush()

    def decode(self, member: str, file: IO[bytes]) -> IO[bytes]:
        if member.endswith(".zst"):
            return zstandard.ZstdDecompressor().stream_reader(file, closefd=True)
        return file


class _Pieces:
    """The write end an encrypting stream writes into: the pieces are taken as they come."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.pieces.append(bytes(data))
        return len(data)

    def take(self) -> list[bytes]:
        pieces, self.pieces = self.pieces, []
        return pieces


def _sealed(sealing: Sealing, member: str, content: Iterator[bytes]) -> Iterator[bytes]:
    """*content* encrypted as member *member*, a segment at a time: sealed only at its end,
    so that a stream cut short (an error, a closed generator) is never sealed."""
    out = _Pieces()
    with seal_writer(sealing, out, member) as writer:
        for chunk in content:
            writer.write(chunk)
            yield from out.take()
    yield from out.take()


@attrs.frozen
class Here:
    """A reopener for threads of this process: the object itself, never pickled."""

    value: Any = attrs.field(eq=False)

    def __call__(self) -> Any:
        return self.value


_reopened: dict[Any, Any] = {}
_reopened_lock = threading.Lock()
_REOPENED_MAX = 8


def _reopen(reopen: Callable[[], Any]) -> Any:
    """What *reopen* opens, once per process: a worker runs many jobs of one run."""
    if isinstance(reopen, Here):
        return reopen.value
    key = repr(reopen)
    with _reopened_lock:
        value = _reopened.get(key)
        if value is None:
            if len(_reopened) >= _REOPENED_MAX:
                _reopened.pop(next(iter(_reopened)))
            value = _reopened[key] = reopen()
        return value


@attrs.frozen
class Stored:
    """A blob job's outcome: bytes read, bytes written, and whether a leftover was reused."""

    sha256: str
    read: int
    written: int
    reused: bool = False


@attrs.frozen
class Packed:
    """A zip member made by a worker: the parent appends it (from `data` or the spool)."""

    sha256: str
    member: str
    crc: int
    size: int
    read: int
    data: bytes | None
    spool: str | None


@attrs.frozen
class BackupJob:
    """Copy blobs *shas* (with their recorded sizes) from the source into a backup.

    With *folder* (fs, root) each blob is written as a member under root; otherwise each
    becomes a `Packed` zip member, spooled under *spool* (fs, folder) when large. With
    *leftover* (fs, root), a blob found there with its size and sha256 is moved, not copied.
    """

    source: Callable[[], Any]
    shas: tuple[tuple[str, int], ...]
    codec: BlobCodec
    folder: tuple[Any, str] | None = None
    spool: tuple[Any, str] | None = None
    leftover: tuple[Any, str] | None = None
    fast_fail: bool = False


@attrs.frozen
class RestoreJob:
    """Copy blobs *shas* from a backup (opened by *backup*) into a target (*target*)."""

    backup: Callable[[], BackupReader]
    target: Callable[[], Any]
    shas: tuple[tuple[str, int], ...]
    codec: BlobCodec
    fast_fail: bool = False


def run_job(job: BackupJob | RestoreJob) -> list[Stored | Packed | Exception]:
    """Run *job* wherever the executor put it; one outcome or error per blob, in order.

    Under FAST_FAIL the first error ends the group: the blobs after it are not tried, so a
    run that stops never waits for a whole group of retries."""
    outcomes: list[Stored | Packed | Exception] = []
    for sha256, size in job.shas:
        if job.fast_fail and any(isinstance(o, Exception) for o in outcomes):
            outcomes.append(RepoBackupError("not copied: the run stopped at its first error"))
            continue
        try:
            if isinstance(job, RestoreJob):
                outcomes.append(_restore_one(job, sha256, size))
            else:
                outcomes.append(_backup_one(job, sha256, size))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _backup_one(job: BackupJob, sha256: str, size: int) -> Stored | Packed:
    # An encrypted backup never reuses a blob: its members are bound to their backup's id.
    if job.folder is not None and job.leftover is not None and job.codec.sealing is None:
        reused = _reuse(job.leftover, job.folder, sha256, size)
        if reused is not None:
            return reused
    # A write that fails transiently is copied again whole, from the source.
    return retrying_whole(f"writing blob {sha256}", lambda: _copy_one(job, sha256))


def _copy_one(job: BackupJob, sha256: str) -> Stored | Packed:
    source = _reopen(job.source)
    with backend_errors(f"opening blob {sha256}"):
        file = source.open_blob(sha256)
    with file:
        chunks = VerifiedChunks(file, sha256, f"source blob {sha256}")
        transformed, content = job.codec.encode(chunks)
        member = job.codec.member(sha256, transformed)
        content = job.codec.seal(member, content)
        if job.folder is not None:
            written = _write_member(job.folder, member, content)
            return Stored(sha256, chunks.size, written)
        assert job.spool is not None
        return _pack(job.spool, sha256, member, content, chunks)


_made: set[str] = set()
_MADE_MAX = 1 << 16


def _open_for_writing(fs: Any, path: str) -> IO[bytes]:
    """*path* opened to write, its folder made once per process; a local file through `io`,
    which costs a fraction of fsspec's wrapper for each of thousands of small files."""
    folder = posixpath.dirname(path)
    local = isinstance(fs, LocalFileSystem)
    if folder not in _made:
        if local:
            _make_local_folder(folder)
        else:
            fs.makedirs(folder, exist_ok=True)
        if len(_made) >= _MADE_MAX:
            _made.clear()
        _made.add(folder)
    if local:
        return open(os.open(path, _CREATE, PRIVATE_FILE), "wb")
    return cast(IO[bytes], fs.open(path, "wb"))


#: Modes of what a blob copy creates on a local disk: backups hold password hashes and
#: tokens, so they are the owner's alone from the start, whatever the umask.
PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _make_local_folder(folder: str) -> None:
    """*folder* and any missing parent made private. One mkdir in the usual case (a new
    leaf under a parent that is there), where os.makedirs first asks whether each parent
    exists, and makes the parents with the default mode."""
    try:
        os.mkdir(folder, PRIVATE_FOLDER)
    except FileExistsError:
        pass
    except FileNotFoundError:
        parent = os.path.dirname(folder)
        if not parent or parent == folder:
            raise
        _make_local_folder(parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, PRIVATE_FOLDER)


def _write_member(folder: tuple[Any, str], member: str, content: Iterator[bytes]) -> int:
    fs, root = folder
    path = posixpath.join(root, member)
    size = 0
    try:
        with store_errors(f"writing {member}"), _open_for_writing(fs, path) as out:
            for chunk in content:
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(path)
        raise
    return size


def _pack(
    spool: tuple[Any, str], sha256: str, member: str, content: Iterator[bytes], chunks: Any
) -> Packed:
    """A zip member's content with its CRC-32 and size: bytes when small, else a spool file
    (a name of its own each attempt, so that a job run twice never mixes two writes)."""
    crc = 0
    size = 0
    buffer = bytearray()
    fs, folder = spool
    out: IO[bytes] | None = None
    path = posixpath.join(folder, f"{sha256}.{uuid.uuid4().hex[:12]}")
    try:
        for piece in content:
            crc = zlib.crc32(piece, crc)
            size += len(piece)
            block = piece
            if out is None:
                buffer += piece
                if len(buffer) <= INLINE:
                    continue
                with store_errors(f"spooling {member}"):
                    out = _open_for_writing(fs, path)
                block = bytes(buffer)
                buffer.clear()
            with store_errors(f"spooling {member}"):
                out.write(block)
        if out is not None:
            with store_errors(f"spooling {member}"):
                out.close()
    except BaseException:
        if out is not None:
            with contextlib.suppress(Exception):
                out.close()
                fs.rm(path)
        raise
    if out is None:
        return Packed(sha256, member, crc, size, chunks.size, bytes(buffer), None)
    return Packed(sha256, member, crc, size, chunks.size, None, path)


def _reuse(
    leftover: tuple[Any, str], folder: tuple[Any, str], sha256: str, size: int
) -> Stored | None:
    """Move the blob an interrupted run stored into this backup (or keep it where it lies,
    in an adopted folder), after checking its size and sha256; None when it is not there
    whole."""
    old_fs, old_root = leftover
    fs, root = folder
    member = blob_member(sha256, compressed=False)
    old = posixpath.join(old_root, member)
    try:
        if not _whole(old_fs, old, sha256, size):
            return None
        new = posixpath.join(root, member)
        if new != old:
            if isinstance(fs, LocalFileSystem):
                _make_local_folder(posixpath.dirname(new))
            else:
                fs.makedirs(posixpath.dirname(new), exist_ok=True)
            fs.mv(old, new)
    except (OSError, RepoBackupError, ValueError):
        return None
    return Stored(sha256, size, 0, reused=True)


def _whole(fs: Any, path: str, sha256: str, size: int) -> bool:
    """Whether the file at *path* holds *size* bytes hashing to *sha256*."""
    local = isinstance(fs, LocalFileSystem)
    if not local and fs.info(path).get("size") != size:
        return False
    digest = hashlib.sha256()
    # Straight through `io` on a local disk: fsspec's info and file wrapper cost more than
    # checking a small blob does.
    with open(path, "rb") if local else fs.open(path, "rb") as file:
        if local and os.fstat(file.fileno()).st_size != size:
            return False
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == sha256


def _restore_one(job: RestoreJob, sha256: str, size: int) -> Stored:
    reader = _reopen(job.backup)
    target = _reopen(job.target)
    member, opened = _open_blob(reader, job.codec, sha256)
    # Never read past the size the record declares: a small member that inflates to
    # gigabytes stops one byte past it.
    file = bounded(opened, size, f"{reader.location}: {member}")
    with store_errors(f"reading {member}"), file:
        chunks = VerifiedChunks(file, sha256, f"{reader.location}: {member}")
        with backend_errors(f"writing blob {sha256}"):
            written = target.write_blob(sha256, chunks)
    return Stored(sha256, chunks.size, written)


def _open_blob(reader: BackupReader, codec: BlobCodec, sha256: str) -> tuple[str, IO[bytes]]:
    """The member holding the blob, opened. Whether a member exists is asked only when
    opening it fails: each question is a stat or a query of a zip's index."""
    own = getattr(reader, "blob_member", None)  # a reader that names its own blobs (bk-repo)
    if own is not None:
        members = [own(sha256)]
    else:
        members = [codec.member(sha256, False)]
        if codec.compress:
            members.append(codec.member(sha256, True))
    for member in members:
        try:
            with store_errors(f"reading {member}"):
                return member, codec.decode(member, reader.open(member))
        except RepoBackupError:
            if reader.exists(member):
                raise
    raise ArchiveError(f"blob {sha256} is missing from the backup")
