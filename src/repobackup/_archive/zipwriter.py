"""`ZipWriter`: the compressed form of a backup, one zip of stored members in one stream.

Each member is spooled (zstd on worker threads where worth it) and appended whole, in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import sqlite3
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import attrs
import fsspec
import zstandard
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile

from ..exceptions import StoreError, store_errors
from .layout import (
    CHUNK,
    SHA256,
    MemberInfo,
    blob_member,
    check_member_path,
)
from .manifest import MANIFEST, Manifest, dump
from .sealing import KEYS, Sealing, seal_writer
from .store import Store, partial_path, publish
from .zipformat import (
    CENTRAL,
    CENTRAL_SIG,
    END,
    END64,
    END64_SIG,
    END_SIG,
    EXTRA,
    FILE_MODE,
    FLAG_UTF8,
    LOCAL,
    LOCAL_SIG,
    LOCATOR,
    LOCATOR_SIG,
    MADE_BY,
    STORED,
    VERSION_DEFAULT,
    VERSION_ZIP64,
    ZIP64_COUNT,
    ZIP64_EXTRA,
    ZIP64_LIMIT,
)
from .zipscan import KeptMembers, scan_partial

__all__ = ["ZipWriter", "not_worth_trying", "worth_compressing"]

LEVEL = 3  # zstd level: most of the gain of higher levels at a fraction of the time
SAMPLE = 64 * 1024  # the head of a blob compressed to tell whether the rest is worth it
WORTH = 0.9  # compress a blob only if its sample shrinks to this fraction or less
TINY = 32  # below this many bytes a zstd frame's own overhead eats any gain
SPOOL_BUDGET = 64 * 1024 * 1024  # memory all member spools of one writer may hold
SPOOL_MAX = 8 * 1024 * 1024  # memory one member spool may hold before it goes to disk
CENTRAL_MEMORY = 4 * 1024 * 1024

# Formats that are compressed already; zstd would spend time for nothing on them.
_COMPRESSED_MAGIC = (
    b"PK\x03\x04",  # zip, jar, war, wheel, apk, nupkg, docx
    b"PK\x05\x06",  # empty zip
    b"\x1f\x8b",  # gzip, tgz
    b"\x28\xb5\x2f\xfd",  # zstd
    b"\xfd7zXZ\x00",  # xz
    b"BZh",  # bzip2
    b"7z\xbc\xaf\x27\x1c",  # 7z
    b"Rar!\x1a\x07",  # rar
    b"\x04\x22\x4d\x18",  # lz4
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # jpeg
    b"GIF87a",
    b"GIF89a",
    b"OggS",
    b"fLaC",
    b"ID3",  # mp3
)


_probes = threading.local()


def worth_compressing(sample: bytes) -> bool:
    """Whether content starting with *sample* is worth storing zstd-compressed.

    Known compressed formats are recognised by their magic bytes; anything else is judged by
    how much its sample shrinks at a fast level.
    """
    if not_worth_trying(sample):
        return False
    head = sample[:SAMPLE]
    # A context is not safe to share between threads, and costly to make for every blob.
    probe: zstandard.ZstdCompressor | None = getattr(_probes, "value", None)
    if probe is None:
        probe = _probes.value = zstandard.ZstdCompressor(level=1)
    return len(probe.compress(head)) <= len(head) * WORTH


def not_worth_trying(sample: bytes) -> bool:
    """Whether content starting with *sample* is too small or compressed already."""
    if len(sample) < TINY or sample.startswith(_COMPRESSED_MAGIC):
        return True
    return sample[4:8] == b"ftyp" or (sample[:4] == b"RIFF" and sample[8:12] == b"WEBP")


def _dos_stamp(moment: time.struct_time) -> tuple[int, int]:
    year = max(1980, min(2107, moment.tm_year))
    dos_time = (moment.tm_hour << 11) | (moment.tm_min << 5) | (moment.tm_sec // 2)
    dos_date = ((year - 1980) << 9) | (moment.tm_mon << 5) | moment.tm_mday
    return dos_time, dos_date


class _Sink:
    """What a member spool received: size, CRC-32 and (for records) sha256."""

    def __init__(self, spool: IO[bytes], *, hashing: bool) -> None:
        self.spool = spool
        self.size = 0
        self.crc = 0
        self._digest = hashlib.sha256() if hashing else None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.spool.write(data)
        self.size += len(data)
        self.crc = zlib.crc32(data, self.crc)
        if self._digest is not None:
            self._digest.update(data)

    @property
    def sha256(self) -> str:
        assert self._digest is not None
        return self._digest.hexdigest()


class _NameSet:
    """Member names on disk in a temporary SQLite table, so memory stays flat however many
    members a zip holds. The caller serialises access."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", check_same_thread=False)
        self._db.execute("CREATE TABLE names (name TEXT PRIMARY KEY) WITHOUT ROWID")

    def add(self, name: str) -> bool:
        """Add *name*; False when it was there already."""
        return self._db.execute("INSERT OR IGNORE INTO names VALUES (?)", (name,)).rowcount == 1

    def discard(self, name: str) -> None:
        self._db.execute("DELETE FROM names WHERE name = ?", (name,))

    def close(self) -> None:
        self._db.close()


@attrs.frozen
class _Stored:
    """One stored member as the zip's headers describe it."""

    name: bytes
    crc: int
    size: int
    offset: int
    stamp: tuple[int, int]
    force_zip64: bool = False

    @property
    def flags(self) -> int:
        return 0 if self.name.isascii() else FLAG_UTF8

    @property
    def zip64(self) -> bool:
        return self.force_zip64 or self.size >= ZIP64_LIMIT

    def local_header(self) -> bytes:
        extra = b""
        size = self.size
        if self.zip64:
            extra = EXTRA.pack(ZIP64_EXTRA, 16) + struct.pack("<QQ", size, size)
            size = ZIP64_LIMIT
        version = VERSION_ZIP64 if self.zip64 else VERSION_DEFAULT
        fixed = LOCAL.pack(
            LOCAL_SIG,
            version,
            self.flags,
            STORED,
            *self.stamp,
            self.crc,
            size,
            size,
            len(self.name),
            len(extra),
        )
        return fixed + self.name + extra

    def central_entry(self) -> bytes:
        fields = b""
        size, offset = self.size, self.offset
        if self.zip64:
            fields += struct.pack("<QQ", size, size)
            size = ZIP64_LIMIT
        if offset >= ZIP64_LIMIT:
            fields += struct.pack("<Q", offset)
            offset = ZIP64_LIMIT
        extra = EXTRA.pack(ZIP64_EXTRA, len(fields)) + fields if fields else b""
        version = VERSION_ZIP64 if extra else VERSION_DEFAULT
        fixed = CENTRAL.pack(
            CENTRAL_SIG,
            MADE_BY,
            version,
            self.flags,
            STORED,
            *self.stamp,
            self.crc,
            size,
            size,
            len(self.name),
            len(extra),
            0,  # comment length
            0,  # disk
            0,  # internal attributes
            FILE_MODE,
            offset,
        )
        return fixed + self.name + extra


def _end_records(count: int, cd_offset: int, cd_size: int, force_zip64: bool) -> bytes:
    zip64 = (
        force_zip64 or count >= ZIP64_COUNT or cd_offset >= ZIP64_LIMIT or cd_size >= ZIP64_LIMIT
    )
    records = b""
    if zip64:
        end64_offset = cd_offset + cd_size
        records += END64.pack(
            END64_SIG,
            END64.size - 12,
            MADE_BY,
            VERSION_ZIP64,
            0,
            0,
            count,
            count,
            cd_size,
            cd_offset,
        )
        records += LOCATOR.pack(LOCATOR_SIG, 0, end64_offset, 1)
    records += END.pack(
        END_SIG,
        0,
        0,
        min(count, ZIP64_COUNT),
        min(count, ZIP64_COUNT),
        min(cd_size, ZIP64_LIMIT),
        min(cd_offset, ZIP64_LIMIT),
        0,
    )
    return records


class ZipWriter:
    """A backup as one zip of stored members, written in a single pass to any fsspec store.

    Members cannot interleave in a zip, yet records stream from the main thread while blobs
    arrive from worker threads. So each member is compressed into its own spool (memory up to
    a threshold, then a temporary file) by the thread that produces it, and appended to the
    zip whole, under a lock held only for the copy. Knowing a member's size and CRC-32 before
    its local header is written keeps the zip readable by streaming readers and lets it go to
    write-only streams (s3fs): no seek is ever needed.

    The zip appears whole or not at all: it is written as ``.<name>.zip.<token>.partial``
    (unique to the run) beside its final name and given that name at commit (an exclusive
    rename on a local disk, a move elsewhere), never replacing another; `abort` discards
    an unfinished upload and removes the partial.

    On a local disk a writer may continue the partial zip an interrupted run left
    (*resume_from*): its complete blob members stay where they lie, each listed in this
    zip's directory once `reuse` is asked for it, and the file is appended to after the
    last one; `keep` leaves an unfinished zip for such a run instead of removing it.
    """

    compressed = True

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        path: str,
        location: str,
        *,
        workers: int = 4,
        level: int = LEVEL,
        force_zip64: bool = False,
        sealing: Sealing | None = None,
        resume_from: str | None = None,
    ) -> None:
        self.fs = fs
        self.location = location
        self.sealing = sealing
        self._final = path
        #: The zip's final path on *fs* (workers spool members beside it).
        self.final_path = path
        self._local = isinstance(fs, LocalFileSystem)
        parent = posixpath.dirname(path)
        # Every store writes under a partial name first: a store that writes in place would
        # otherwise hold a truncated zip under its final name when a close fails.
        self._target = partial_path(path)
        self._level = level
        self._force_zip64 = force_zip64
        # Every worker and the records stream may hold a spool at once.
        self._spool_memory = max(256 * 1024, min(SPOOL_MAX, SPOOL_BUDGET // (max(1, workers) + 1)))
        self._stamp = _dos_stamp(time.localtime())
        self._lock = threading.Lock()
        self._offset = 0
        self._count = 0
        self._broken: str | None = None
        self._committed = False
        self._compressors = threading.local()
        self.store = Store(fs)
        self._kept: KeptMembers | None = None
        #: The interrupted run's partial zip this one continues, or None.
        self.resumed_from: str | None = None
        #: What resuming found: the blob members kept and why the rest was dropped.
        self.resume_notes: list[str] = []
        with store_errors(f"creating {location}"):
            if self.store.exists(path):
                raise FileExistsError(f"{location} already exists")
            self.store.makedirs(parent)
            out = None
            if resume_from is not None and self._local and sealing is None:
                out = self._resume(resume_from)
            elif resume_from is not None and self._local:
                # Encrypted members are bound to their own backup: none can be kept.
                with contextlib.suppress(OSError):
                    os.remove(resume_from)
                self.resume_notes.append(
                    "an interrupted run's zip cannot be continued by an encrypted backup; removed"
                )
            self._out: IO[bytes] = out if out is not None else self.store.open(self._target, "wb")
        # The central directory grows with the member count: it waits on disk past a size.
        self._central: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=CENTRAL_MEMORY
        )
        self._names = _NameSet()
        for key_file in sealing.key_files if sealing is not None else ():
            # The key file copies are the members stored in clear (docs/format.md).
            self._plain_member(f"{KEYS}/{key_file.file_name}", key_file.to_json())

    def _resume(self, partial: str) -> IO[bytes] | None:
        """Continue the interrupted run's local *partial* zip as this one's: keep its
        complete blob members where they lie, cut it after the last, and append from there
        (see `scan_partial`). None, with the partial removed, when it keeps nothing."""
        kept = KeptMembers()
        out = None
        try:
            with open(partial, "rb", buffering=CHUNK) as file:
                end, why = scan_partial(file, os.fstat(file.fileno()).st_size, kept)
            if kept.count:
                os.rename(partial, self._target)  # this run's partial now: nothing copied
                out = open(self._target, "r+b")  # noqa: SIM115 (closed at commit or abort)
                out.truncate(end)
                out.seek(end)
        except OSError:
            kept.count = 0
            if out is not None:
                out.close()
        if not kept.count:
            kept.close()
            with contextlib.suppress(OSError):
                os.remove(partial)
            self.resume_notes.append(
                "an interrupted run's zip held no complete blob member to keep; removed"
            )
            return None
        self._kept, self._offset, self.resumed_from = kept, end, partial
        self.resume_notes.append(
            f"an interrupted run's zip held {kept.count} complete blob members "
            f"({kept.bytes} bytes, CRC-32 checked); kept in place"
            + (f"; the rest was dropped: {why}" if why else "")
        )
        return out

    def reuse(self, sha256: str) -> bool:
        """Whether the blob *sha256* is a member the interrupted run this zip resumes had
        completed: then it is this backup's member where it lies, and nothing is written.
        Only blobs this run asks for are listed in its central directory."""
        kept = self._kept
        if kept is None or not SHA256.match(sha256):
            return False
        with self._lock:
            self._check_open()
            found = kept.take(sha256)
            if found is None or not self._names.add(found.name):
                return False
            stored = _Stored(
                found.name.encode(), found.crc, found.size, found.offset, found.stamp, found.zip64
            )
            self._central.write(stored.central_entry())
            self._count += 1
        return True

    def keep(self, path: str) -> bool:
        """Instead of `abort`: close the unfinished local zip as it is and move it to
        *path*, for the next run to resume from; False (nothing done) when it cannot be:
        committed, encrypted or not on a local disk."""
        with self._lock:
            if self._committed or not self._local or self.sealing is not None:
                return False
            self._broken = "the backup was aborted"
        try:
            self._out.close()
            os.replace(self._target, path)
        except OSError:
            return False
        finally:
            self._cleanup()
        return True

    def _plain_member(self, member: str, data: bytes) -> None:
        self._reserve(member)
        spool = io.BytesIO()
        sink = _Sink(spool, hashing=False)
        sink.write(data)
        self._append(member, spool, sink)

    def __repr__(self) -> str:
        return f"<ZipWriter {self.location!r}>"

    def write_records(self, member: str, lines: Iterable[bytes]) -> MemberInfo:
        """Spool the lines of *member* (zstd-compressed when its name ends in ``.zst``) and
        append it; return its stored size, sha256 and record count."""
        check_member_path(member)
        self._reserve(member)
        try:
            with self._spool() as spool:
                stored = _Sink(spool, hashing=False)
                with seal_writer(self.sealing, stored, member) as sealed:
                    sink = _Sink(sealed, hashing=True)
                    count = self._records_into(sink, member, lines)
                self._append(member, spool, stored)
        except BaseException:
            self._release(member)
            raise
        return MemberInfo(member, sink.size, sink.sha256, count)

    def _records_into(self, sink: _Sink, member: str, lines: Iterable[bytes]) -> int:
        """Write *lines* into *sink*, zstd-compressed for a ``.zst`` member; their count."""
        compressor = self._compressor().compressobj() if member.endswith(".zst") else None
        count = 0
        buffer = bytearray()
        for line in lines:
            buffer += line
            count += 1
            if len(buffer) >= CHUNK:
                sink.write(compressor.compress(buffer) if compressor else bytes(buffer))
                buffer.clear()
        sink.write(compressor.compress(buffer) if compressor else bytes(buffer))
        if compressor is not None:
            sink.write(compressor.flush())
        return count

    def write_blob(self, sha256: str, chunks: Iterable[bytes]) -> int:
        """Spool a blob, zstd-compressed unless its head shows it does not compress, and
        append it; return the bytes stored. Safe to call from many threads at once."""
        if not SHA256.match(sha256):
            raise ValueError(f"not a sha256 in lowercase hex: {sha256!r}")
        key = blob_member(sha256, compressed=False, sealing=self.sealing)
        self._reserve(key)
        try:
            with self._spool() as spool:
                stream = iter(chunks)
                head = bytearray()
                whole = True
                for chunk in stream:
                    head += chunk
                    if len(head) >= SAMPLE:
                        whole = False
                        break
                compress, pieces = self._blob_pieces(head, stream, whole)
                member = blob_member(sha256, compressed=compress, sealing=self.sealing)
                sink = _Sink(spool, hashing=False)
                with seal_writer(self.sealing, sink, member) as out:
                    for piece in pieces:
                        out.write(piece)
                self._append(member, spool, sink)
        except BaseException:
            self._release(key)
            raise
        return sink.size

    def _blob_pieces(
        self, head: bytearray, stream: Iterator[bytes], whole: bool
    ) -> tuple[bool, Iterator[bytes]]:
        """Whether a blob is stored compressed, and the pieces of its stored form."""
        if whole:
            # A small blob is at hand whole: compressing it once at the real level
            # tells what it gains, at less cost than a probe and then the real pass.
            data = bytes(head)
            packed = b"" if not_worth_trying(data) else self._compressor().compress(data)
            compress = 0 < len(packed) <= len(data) * WORTH  # a frame is never empty
            return compress, iter([packed if compress else data])
        if worth_compressing(bytes(head[:SAMPLE])):
            compressor = self._compressor().compressobj()

            def packed_pieces() -> Iterator[bytes]:
                yield compressor.compress(head)
                for chunk in stream:
                    yield compressor.compress(chunk)
                yield compressor.flush()

            return True, packed_pieces()

        def plain_pieces() -> Iterator[bytes]:
            yield bytes(head)
            yield from stream

        return False, plain_pieces()

    def append_member(self, member: str, crc: int, size: int, content: IO[bytes]) -> None:
        """Append a member made elsewhere (a worker compressed it), its CRC-32 and size
        known: the bytes of *content* are copied as they are."""
        check_member_path(member)
        self._reserve(member)
        sink = _Sink(content, hashing=False)
        sink.crc, sink.size = crc, size
        try:
            self._append(member, content, sink)
        except BaseException:
            self._release(member)
            raise

    def commit(self, manifest: Manifest | Mapping[str, Any]) -> None:
        """Append ``manifest.json`` and the central directory, then make the zip visible."""
        data = manifest.dump() if isinstance(manifest, Manifest) else dump(manifest)
        self._reserve(MANIFEST)
        spool = io.BytesIO()
        sink = _Sink(spool, hashing=False)
        with seal_writer(self.sealing, sink, MANIFEST) as out:
            out.write(data)
        self._append(MANIFEST, spool, sink)
        with self._lock, store_errors(f"committing {self.location}"):
            self._check_open()
            cd_offset = self._offset
            self._central.seek(0)
            try:
                while block := self._central.read(CHUNK):
                    self._write(block)
                self._write(
                    _end_records(
                        self._count, cd_offset, self._offset - cd_offset, self._force_zip64
                    )
                )
                if self._local:
                    self._out.flush()
                    os.fsync(self._out.fileno())
                self._out.close()
                if self._local:
                    publish(self._target, self._final)
                else:
                    self._publish_remote()
            except BaseException:
                self._broken = "committing it failed"
                raise
            self._committed = True
        self._cleanup()

    def _publish_remote(self) -> None:
        """Give the closed partial zip its final name on a store without exclusive renames;
        another backup of that name appearing meanwhile is never replaced."""
        if self.store.exists(self._final):
            raise FileExistsError(f"{self.location} already exists")
        self.store.move(self._target, self._final)

    def abort(self) -> None:
        """Remove or discard whatever this zip wrote; never raises."""
        with self._lock:
            if self._committed:
                return
            self._broken = "the backup was aborted"
        try:
            out = self._out
            if isinstance(out, AbstractBufferedFile):
                # Abort the multipart upload, then mark the file closed so that neither
                # close() nor the garbage collector uploads what is buffered.
                out.discard()
                out.closed = True
            else:
                out.close()
            self.store.remove(self._target)
        except Exception:
            pass
        self._cleanup()

    # ----------------------------------------------------------------------------------------

    def _spool(self) -> IO[bytes]:
        return tempfile.SpooledTemporaryFile(max_size=self._spool_memory)

    def _compressor(self) -> zstandard.ZstdCompressor:
        # A compression context is not safe to share between threads; one per thread is.
        compressor: zstandard.ZstdCompressor | None = getattr(self._compressors, "value", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self._level)
            self._compressors.value = compressor
        return compressor

    def _reserve(self, member: str) -> None:
        with self._lock:
            self._check_open()
            if not self._names.add(member):
                raise ValueError(f"{member} is already in {self.location}")

    def _release(self, member: str) -> None:
        with self._lock:
            if self._broken is None:
                self._names.discard(member)

    def _check_open(self) -> None:
        if self._committed:
            raise StoreError(f"{self.location}: the backup is committed already")
        if self._broken is not None:
            raise StoreError(f"{self.location}: {self._broken}; nothing more can be written")

    def _append(self, member: str, spool: IO[bytes], sink: _Sink) -> None:
        spool.seek(0)
        with self._lock:
            self._check_open()
            stored = _Stored(
                member.encode(), sink.crc, sink.size, self._offset, self._stamp, self._force_zip64
            )
            try:
                with store_errors(f"writing {member} into {self.location}"):
                    self._write(stored.local_header())
                    while block := spool.read(CHUNK):
                        self._write(block)
                    self._central.write(stored.central_entry())
            except BaseException as exc:
                # A stream cannot be rewound to drop half a member: the whole zip is lost.
                cause = exc.__cause__ or exc
                self._broken = (
                    f"writing {member} failed midway ({type(cause).__name__}: {cause}); "
                    "a stream cannot be resumed"
                )
                raise
            self._count += 1

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _cleanup(self) -> None:
        kept = self._kept.close if self._kept is not None else None
        for close in (self._central.close, self._names.close, kept):
            if close is None:
                continue
            with contextlib.suppress(Exception):
                close()


# --------------------------------------------------------------------------------------------
# Reading
