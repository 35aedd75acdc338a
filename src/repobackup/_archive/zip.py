"""The compressed form of a backup: one zip of stored members, written in a single stream.

`ZipWriter` spools each member and appends it whole; `ZipReader` indexes and checks a zip.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import sqlite3
import stat
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

from ..exceptions import ArchiveError, StoreError, store_errors
from .layout import (
    CHUNK,
    MANIFEST,
    SHA256,
    MemberInfo,
    blob_member,
    check_member_path,
    load_manifest,
)
from .retry import path_type, retrying

__all__ = ["ZipReader", "ZipWriter"]

LEVEL = 3  # zstd level: most of the gain of higher levels at a fraction of the time
SAMPLE = 64 * 1024  # the head of a blob compressed to tell whether the rest is worth it
WORTH = 0.9  # compress a blob only if its sample shrinks to this fraction or less
TINY = 32  # below this many bytes a zstd frame's own overhead eats any gain
SPOOL_BUDGET = 64 * 1024 * 1024  # memory all member spools of one writer may hold
SPOOL_MAX = 8 * 1024 * 1024  # memory one member spool may hold before it goes to disk
CENTRAL_MEMORY = 4 * 1024 * 1024
MAX_PROBLEMS = 100

ZIP64_LIMIT = 0xFFFFFFFF
ZIP64_COUNT = 0xFFFF
STORED = 0
FLAG_ENCRYPTED = 0x1
FLAG_DESCRIPTOR = 0x8
FLAG_UTF8 = 0x800
VERSION_ZIP64 = 45
VERSION_DEFAULT = 20
MADE_BY = (3 << 8) | VERSION_ZIP64  # Unix, so that unzip honours the file modes
FILE_MODE = (stat.S_IFREG | 0o644) << 16

LOCAL = struct.Struct("<IHHHHHIIIHH")
LOCAL_SIG = 0x04034B50
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
CENTRAL_SIG = 0x02014B50
END = struct.Struct("<IHHHHIIH")
END_SIG = 0x06054B50
END64 = struct.Struct("<IQHHIIQQQQ")
END64_SIG = 0x06064B50
LOCATOR = struct.Struct("<IIQI")
LOCATOR_SIG = 0x07064B50
EXTRA = struct.Struct("<HH")
ZIP64_EXTRA = 0x0001

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
    if _not_worth_trying(sample):
        return False
    head = sample[:SAMPLE]
    # A context is not safe to share between threads, and costly to make for every blob.
    probe: zstandard.ZstdCompressor | None = getattr(_probes, "value", None)
    if probe is None:
        probe = _probes.value = zstandard.ZstdCompressor(level=1)
    return len(probe.compress(head)) <= len(head) * WORTH


def _not_worth_trying(sample: bytes) -> bool:
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

    The zip appears whole or not at all: on a local disk it is written as
    ``.<name>.zip.partial`` beside its final name and renamed at commit; on an object store
    it is written to its final key, which a multipart upload only creates when the file is
    closed, and `abort` discards the upload.
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
    ) -> None:
        self.fs = fs
        self.location = location
        self._final = path
        self._local = isinstance(fs, LocalFileSystem)
        parent, base = posixpath.split(path)
        self._target = posixpath.join(parent, f".{base}.partial") if self._local else path
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
        with store_errors(f"creating {location}"):
            taken = path_type(fs, path, f"checking {path}") or path_type(
                fs, self._target, f"checking {self._target}"
            )
            if taken:
                raise FileExistsError(f"{location} already exists")
            retrying(f"creating {parent}", lambda: fs.makedirs(parent, exist_ok=True))
            self._out: IO[bytes] = retrying(
                f"opening {self._target}", lambda: fs.open(self._target, "wb")
            )
        # The central directory grows with the member count: it waits on disk past a size.
        self._central: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=CENTRAL_MEMORY
        )
        self._names = _NameSet()

    def __repr__(self) -> str:
        return f"<ZipWriter {self.location!r}>"

    def write_records(self, member: str, lines: Iterable[bytes]) -> MemberInfo:
        """Spool the lines of *member* (zstd-compressed when its name ends in ``.zst``) and
        append it; return its stored size, sha256 and record count."""
        check_member_path(member)
        self._reserve(member)
        try:
            with self._spool() as spool:
                sink = _Sink(spool, hashing=True)
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
                self._append(member, spool, sink)
        except BaseException:
            self._release(member)
            raise
        return MemberInfo(member, sink.size, sink.sha256, count)

    def write_blob(self, sha256: str, chunks: Iterable[bytes]) -> int:
        """Spool a blob, zstd-compressed unless its head shows it does not compress, and
        append it; return the bytes stored. Safe to call from many threads at once."""
        if not SHA256.match(sha256):
            raise ValueError(f"not a sha256 in lowercase hex: {sha256!r}")
        key = blob_member(sha256, compressed=False)
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
                sink = _Sink(spool, hashing=False)
                if whole:
                    # A small blob is at hand whole: compressing it once at the real level
                    # tells what it gains, at less cost than a probe and then the real pass.
                    data = bytes(head)
                    packed = b"" if _not_worth_trying(data) else self._compressor().compress(data)
                    compress = 0 < len(packed) <= len(data) * WORTH  # a frame is never empty
                    sink.write(packed if compress else data)
                elif compress := worth_compressing(bytes(head[:SAMPLE])):
                    compressor = self._compressor().compressobj()
                    sink.write(compressor.compress(head))
                    for chunk in stream:
                        sink.write(compressor.compress(chunk))
                    sink.write(compressor.flush())
                else:
                    sink.write(bytes(head))
                    for chunk in stream:
                        sink.write(chunk)
                self._append(blob_member(sha256, compressed=compress), spool, sink)
        except BaseException:
            self._release(key)
            raise
        return sink.size

    def commit(self, manifest: Mapping[str, Any]) -> None:
        """Append ``manifest.json`` and the central directory, then make the zip visible."""
        data = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
        self._reserve(MANIFEST)
        spool = io.BytesIO()
        sink = _Sink(spool, hashing=False)
        sink.write(data)
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
                    os.replace(self._target, self._final)
            except BaseException:
                self._broken = "committing it failed"
                raise
            self._committed = True
        self._cleanup()

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
                if path_type(self.fs, self._target, f"checking {self._target}"):
                    retrying(f"removing {self._target}", lambda: self.fs.rm(self._target))
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
        for close in (self._central.close, self._names.close):
            with contextlib.suppress(Exception):
                close()


# --------------------------------------------------------------------------------------------
# Reading


class _Entry:
    """Where one member's local header is and what the central directory says of it."""

    __slots__ = ("crc", "name", "offset", "size")

    def __init__(self, name: str, offset: int, size: int, crc: int) -> None:
        self.name = name
        self.offset = offset
        self.size = size
        self.crc = crc


class ZipReader:
    """A backup zip on any fsspec store, read by ranges so that threads can share it.

    Opening indexes the central directory into a temporary SQLite table (memory stays flat
    with millions of members) and checks every entry. A structurally broken zip (truncated,
    corrupt central directory) is an ArchiveError naming the file. Hostile or unreadable
    entries (paths escaping the tree, symlinks, duplicate names, members that are not stored,
    encrypted members) are left out of the index and listed in `problems`, so that nothing
    ever reads them; a caller reports them under its error strategy.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, location: str) -> None:
        self.fs = fs
        self.path = path
        self.location = location
        self.problems: list[tuple[str, str]] = []
        self.problems_dropped = 0
        self._lock = threading.Lock()
        # A local zip is read at offsets through one descriptor that threads share, not
        # opened, seeked and closed again for every range.
        self._fd: int | None = None
        if isinstance(fs, LocalFileSystem) and hasattr(os, "pread"):
            with store_errors(f"opening {location}"):
                self._fd = os.open(path, os.O_RDONLY)
        self._db = sqlite3.connect("", check_same_thread=False)
        # Rows go in unindexed and in batches; duplicates are found and the index built once
        # the whole directory is in.
        self._db.execute("CREATE TABLE members (name TEXT, offset INT, size INT, crc INT)")
        try:
            self._index()
            for member, message in self.problems:
                if member == MANIFEST:
                    raise ArchiveError(f"{location}: {message}")
            self.manifest: dict[str, Any] = load_manifest(self, location)
        except BaseException:
            self._db.close()
            self._close_fd()
            raise

    def __repr__(self) -> str:
        return f"<ZipReader {self.location!r}>"

    # BackupReader ------------------------------------------------------------------------

    def members(self) -> Iterator[str]:
        """Every indexed member, in the order they were written."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT rowid, name FROM members WHERE rowid > ? ORDER BY rowid LIMIT 1000",
                    (last,),
                ).fetchall()
            if not rows:
                return
            for rowid, name in rows:
                last = rowid
                yield name

    def exists(self, member: str) -> bool:
        """Whether *member* is in the zip (hostile entries never are)."""
        return self._entry(member) is not None

    def open(self, member: str) -> IO[bytes]:
        """The stored bytes of *member*; reading past its end checks its CRC-32."""
        entry = self._entry(member)
        if entry is None:
            raise ArchiveError(f"{self.location}: no member {member}")
        header_end = entry.offset + LOCAL.size
        want = min(
            self._data_end, header_end + len(entry.name.encode()) + 512 + min(entry.size, CHUNK)
        )
        head = self._range(entry.offset, want, member)
        if len(head) < LOCAL.size:
            raise ArchiveError(f"{self.location}: member {member}: local header is cut short")
        sig, _, flags, method, _, _, _, _, _, name_len, extra_len = LOCAL.unpack_from(head)
        start = entry.offset + LOCAL.size + name_len + extra_len
        name = head[LOCAL.size : LOCAL.size + name_len]
        if sig != LOCAL_SIG or method != STORED or flags & FLAG_ENCRYPTED:
            raise ArchiveError(f"{self.location}: member {member}: corrupt local header")
        if _decode_name(name, flags) != entry.name:
            raise ArchiveError(
                f"{self.location}: member {member}: local header names another member"
            )
        if start + entry.size > self._data_end:
            raise ArchiveError(f"{self.location}: member {member} runs into the central directory")
        prefix = head[start - entry.offset : start - entry.offset + entry.size]
        raw = _MemberStream(self, entry, start, prefix)
        return io.BufferedReader(raw, CHUNK)

    def close(self) -> None:
        """Release the index."""
        with self._lock:
            self._db.close()
        self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # Index -------------------------------------------------------------------------------

    def _entry(self, member: str) -> _Entry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT offset, size, crc FROM members WHERE name = ?", (member,)
            ).fetchone()
        return None if row is None else _Entry(member, *row)

    def _range(self, start: int, end: int, member: str) -> bytes:
        what = f"reading {member} of {self.location}"
        fd = self._fd
        if fd is not None:
            with store_errors(what):
                return os.pread(fd, max(0, end - start), start)
        with store_errors(what):
            data: bytes = retrying(what, lambda: self.fs.cat_file(self.path, start=start, end=end))
        return data

    def _problem(self, member: str, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((member, message))
        else:
            self.problems_dropped += 1

    def _broken(self, what: str) -> ArchiveError:
        return ArchiveError(f"{self.location}: {what}: the zip is truncated or damaged")

    def _index(self) -> None:
        what = f"reading {self.location}"
        with store_errors(what):
            size = int(retrying(what, lambda: self.fs.size(self.path)))
        count, cd_offset, cd_size, cd_end = self._end_record(size)
        if cd_offset + cd_size != cd_end:
            raise self._broken("the central directory is not where the end record says")
        self._data_end = cd_offset
        parsed = 0
        batch: list[tuple[str, int, int, int]] = []
        for fields, raw_name, extra in self._central_records(cd_offset, cd_end):
            parsed += 1
            row = self._index_entry(fields, raw_name, extra, cd_offset)
            if row is not None:
                batch.append(row)
            if len(batch) >= 1000:
                self._db.executemany("INSERT INTO members VALUES (?, ?, ?, ?)", batch)
                batch.clear()
        self._db.executemany("INSERT INTO members VALUES (?, ?, ?, ?)", batch)
        if parsed != count:
            raise self._broken(f"the end record counts {count} members, the directory {parsed}")
        dups = [
            name
            for (name,) in self._db.execute(
                "SELECT name FROM members GROUP BY name HAVING COUNT(*) > 1 ORDER BY MIN(rowid)"
            )
        ]
        for name in dups:
            self._db.execute("DELETE FROM members WHERE name = ?", (name,))
            self._problem(name, f"member {name} appears more than once: ambiguous, no copy is used")
        self._db.execute("CREATE UNIQUE INDEX members_name ON members (name)")

    def _end_record(self, size: int) -> tuple[int, int, int, int]:
        """Members, central directory offset and size, and where the directory must end."""
        tail_start = max(0, size - (END.size + 0xFFFF + LOCATOR.size))
        tail = self._range(tail_start, size, "the end record") if size else b""
        at = tail.rfind(b"PK\x05\x06")
        while at >= 0:
            if len(tail) - at >= END.size:
                fields = END.unpack_from(tail, at)
                if at + END.size + fields[7] == len(tail):
                    break
            at = tail.rfind(b"PK\x05\x06", 0, at)
        else:
            raise ArchiveError(
                f"{self.location}: not a complete zip (no end of central directory record): "
                "the zip is truncated or damaged"
            )
        _, disk, cd_disk, _, count, cd_size, cd_offset, _ = fields
        if disk or cd_disk:
            raise ArchiveError(f"{self.location}: multi-part zips are not supported")
        end_at = tail_start + at
        locator_at = at - LOCATOR.size
        if locator_at >= 0 and tail[locator_at : locator_at + 4] == b"PK\x06\x07":
            _, _, end64_at, disks = LOCATOR.unpack_from(tail, locator_at)
            if disks > 1 or end64_at > end_at - LOCATOR.size - END64.size:
                raise self._broken("the zip64 end record locator is invalid")
            record = self._range(end64_at, end64_at + END64.size, "the zip64 end record")
            if len(record) != END64.size or record[:4] != b"PK\x06\x06":
                raise self._broken("the zip64 end record is missing")
            _, _, _, _, disk, cd_disk, _, count, cd_size, cd_offset = END64.unpack(record)
            if disk or cd_disk:
                raise ArchiveError(f"{self.location}: multi-part zips are not supported")
            return count, cd_offset, cd_size, end64_at
        if count == ZIP64_COUNT or ZIP64_LIMIT in (cd_size, cd_offset):
            raise self._broken("the end record needs zip64 records that are missing")
        return count, cd_offset, cd_size, end_at

    def _central_records(
        self, start: int, end: int
    ) -> Iterator[tuple[tuple[int, ...], bytes, bytes]]:
        """Each central directory entry: its fixed fields, raw name and extra field."""
        buffer = b""
        at = 0  # where the next entry starts in the buffer
        fetched = start  # where the buffer ends in the zip
        while fetched - len(buffer) + at < end:
            if len(buffer) - at < CENTRAL.size:
                buffer, at, fetched = self._refill(buffer, at, fetched, end)
                if len(buffer) - at < CENTRAL.size:
                    raise self._broken("a central directory entry is cut short")
            fields = CENTRAL.unpack_from(buffer, at)
            if fields[0] != CENTRAL_SIG:
                position = fetched - len(buffer) + at
                raise self._broken(f"corrupt central directory entry at byte {position}")
            length = CENTRAL.size + fields[10] + fields[11] + fields[12]
            while len(buffer) - at < length and fetched < end:
                buffer, at, fetched = self._refill(buffer, at, fetched, end)
            if len(buffer) - at < length:
                raise self._broken("a central directory entry is cut short")
            name_at = at + CENTRAL.size
            extra_at = name_at + fields[10]
            yield fields, buffer[name_at:extra_at], buffer[extra_at : extra_at + fields[11]]
            at += length

    def _refill(self, buffer: bytes, at: int, fetched: int, end: int) -> tuple[bytes, int, int]:
        """The unread rest of *buffer* followed by the next piece of the directory."""
        upto = min(end, fetched + CHUNK)
        data = self._range(fetched, upto, "the central directory")
        if len(data) != upto - fetched:
            raise self._broken("the central directory is cut short")
        return buffer[at:] + data, 0, upto

    def _index_entry(
        self, fields: tuple[int, ...], raw_name: bytes, extra: bytes, data_end: int
    ) -> tuple[str, int, int, int] | None:
        """The index row of one central directory entry, or None (with a problem noted)."""
        flags, method = fields[3], fields[4]
        crc, packed_size, size = fields[7], fields[8], fields[9]
        external, offset = fields[15], fields[16]
        try:
            name = _decode_name(raw_name, flags)
        except UnicodeDecodeError:
            self._problem(repr(raw_name), "member name is not valid UTF-8")
            return None
        try:
            size, packed_size, offset = _zip64_values(extra, size, packed_size, offset)
        except ValueError as exc:
            self._problem(name, f"member {name!r}: {exc}")
            return None
        directory = name.endswith("/") and size == 0
        problem = _entry_problem(name, flags, method, external, directory)
        if problem is None and not directory:
            end = offset + LOCAL.size + len(raw_name) + size
            if packed_size != size or end > data_end:
                problem = f"member {name} has inconsistent sizes or offset"
        if problem is not None:
            self._problem(name, problem)
            return None
        if directory:
            return None  # a folder entry, as zip tools add; it holds nothing to read
        return name, offset, size, crc


def _entry_problem(
    name: str, flags: int, method: int, external: int, directory: bool
) -> str | None:
    """What makes a central directory entry unacceptable, if anything."""
    try:
        check_member_path(name[:-1] if directory else name)
    except ArchiveError as exc:
        return exc.message
    if stat.S_ISLNK(external >> 16):
        return f"member {name} is a symbolic link; backups hold none"
    if directory:
        return None
    if flags & FLAG_ENCRYPTED:
        return f"member {name} is encrypted; backups are never encrypted"
    if method != STORED:
        return (
            f"member {name} uses zip compression method {method}; backups keep every "
            "member STORED (method 0) and compress content with zstd inside"
        )
    return None


def _decode_name(raw: bytes, flags: int) -> str:
    # Without the UTF-8 flag a name is CP437 by the zip spec; ours are always ASCII.
    return raw.decode("utf-8") if flags & FLAG_UTF8 else raw.decode("cp437")


def _zip64_values(extra: bytes, size: int, packed_size: int, offset: int) -> tuple[int, int, int]:
    """Sizes and offset with the zip64 extra field applied where the fixed fields overflow."""
    at = 0
    while at + EXTRA.size <= len(extra):
        kind, length = EXTRA.unpack_from(extra, at)
        body = extra[at + EXTRA.size : at + EXTRA.size + length]
        if len(body) != length:
            raise ValueError("malformed extra field")
        if kind == ZIP64_EXTRA:
            values = iter(struct.unpack(f"<{length // 8}Q", body[: length // 8 * 8]))
            try:
                if size == ZIP64_LIMIT:
                    size = next(values)
                if packed_size == ZIP64_LIMIT:
                    packed_size = next(values)
                if offset == ZIP64_LIMIT:
                    offset = next(values)
            except StopIteration:
                raise ValueError("zip64 extra field is too short") from None
        at += EXTRA.size + length
    if ZIP64_LIMIT in (size, packed_size, offset):
        raise ValueError("needs a zip64 extra field that is missing")
    return size, packed_size, offset


class _MemberStream(io.RawIOBase):
    """The stored bytes of one member, fetched by range; a CRC-32 mismatch at the end raises."""

    def __init__(self, reader: ZipReader, entry: _Entry, start: int, prefix: bytes) -> None:
        super().__init__()
        self._reader = reader
        self._entry = entry
        self._start = start
        self._prefix = prefix
        self._position = 0
        self._crc = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        entry = self._entry
        wanted = min(len(buffer), entry.size - self._position)
        if wanted <= 0:
            self._check()
            return 0
        if self._position < len(self._prefix):
            data = self._prefix[self._position : self._position + wanted]
        else:
            at = self._start + self._position
            data = self._reader._range(at, at + wanted, entry.name)
            if not data:
                raise ArchiveError(
                    f"{self._reader.location}: member {entry.name} is cut short: "
                    "the zip is truncated"
                )
        count = len(data)
        buffer[:count] = data
        self._crc = zlib.crc32(data, self._crc)
        self._position += count
        if self._position == entry.size:
            self._check()
        return count

    def _check(self) -> None:
        if self._crc != self._entry.crc:
            raise ArchiveError(
                f"{self._reader.location}: member {self._entry.name} is corrupt "
                "(CRC-32 does not match the zip's directory)"
            )
