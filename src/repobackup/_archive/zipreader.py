"""`ZipReader`: indexes a backup zip and reads its members, trusting nothing in it.

Hostile entries (escaping paths, links, duplicates, encryption) are refused and listed.
"""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..exceptions import ArchiveError, store_errors
from .layout import (
    CHUNK,
    check_member_path,
    load_manifest,
)
from .manifest import MANIFEST
from .problems import Bounded
from .sealing import Sealing, unsealed
from .store import Store
from .zipformat import (
    CENTRAL,
    CENTRAL_SIG,
    END,
    END64,
    EXTRA,
    FLAG_ENCRYPTED,
    FLAG_UTF8,
    LOCAL,
    LOCAL_SIG,
    LOCATOR,
    STORED,
    ZIP64_COUNT,
    ZIP64_EXTRA,
    ZIP64_LIMIT,
)

__all__ = ["ZipReader"]

CENTRAL_MEMORY = 4 * 1024 * 1024
MAX_PROBLEMS = 100
# Off a local disk every read is a request whose latency dwarfs its bytes: members are read
# through a few shared blocks of this size (memory: BLOCKS_KEPT of them, plus one being
# fetched per reading thread).
BLOCK = 16 * 1024 * 1024
BLOCKS_KEPT = 2


class _Entry:
    """Where one member's local header is and what the central directory says of it."""

    __slots__ = ("crc", "name", "offset", "size")

    def __init__(self, name: str, offset: int, size: int, crc: int) -> None:
        self.name = name
        self.offset = offset
        self.size = size
        self.crc = crc


class ZipReader:
    """A backup zip on any fsspec store, read by ranges so that threads can share it: on a
    local disk with `os.pread`, elsewhere through shared blocks of `BLOCK` bytes (one request
    per block, not per chunk of each member).

    Opening indexes the central directory into a temporary SQLite table (memory stays flat
    with millions of members) and checks every entry. A structurally broken zip (truncated,
    corrupt central directory) is an ArchiveError naming the file. Hostile or unreadable
    entries (paths escaping the tree, symlinks, duplicate names, members that are not stored,
    encrypted members) are left out of the index and listed in `problems`, so that nothing
    ever reads them; a caller reports them under its error strategy.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, location: str) -> None:
        self.fs = fs
        self.store = Store(fs)
        self.path = path
        self.location = location
        self.sealing: Sealing | None = None
        self._problems: Bounded[tuple[str, str]] = Bounded(MAX_PROBLEMS)
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
        self._blocks: _Blocks | None = None
        try:
            self._index()
            if self._fd is None:
                self._blocks = _Blocks(self._read_block, self._data_end)
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
        head = self._data(entry.offset, want, member)
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
        return unsealed(self.sealing, io.BufferedReader(raw, CHUNK), member)

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
            return self.store.read_range(self.path, start, end, what=what)

    def _data(self, start: int, end: int, member: str) -> bytes:
        """Bytes *start* to *end* of the members' part of the zip: through the shared
        blocks off a local disk, else read as asked."""
        if self._blocks is None:
            return self._range(start, end, member)
        what = f"reading {member} of {self.location}"
        with store_errors(what):
            return self._blocks.read(start, end)

    def _read_block(self, start: int, end: int) -> bytes:
        return self.store.read_range(self.path, start, end, what=f"reading {self.location}")

    @property
    def problems(self) -> list[tuple[str, str]]:
        """The entries refused, each (member, why), at most `MAX_PROBLEMS` of them."""
        return self._problems.items

    @property
    def problems_dropped(self) -> int:
        """How many more entries were refused than `problems` holds."""
        return self._problems.dropped

    def _problem(self, member: str, message: str) -> None:
        self._problems.add((member, message))

    def _broken(self, what: str) -> ArchiveError:
        return ArchiveError(f"{self.location}: {what}: the zip is truncated or damaged")

    def _index(self) -> None:
        what = f"reading {self.location}"
        with store_errors(what):
            size = int(self.store.info(self.path, what=what).get("size") or 0)
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


class _Blocks:
    """The first *length* bytes of a file, read in aligned blocks of `BLOCK` bytes that the
    threads reading it share; the `BLOCKS_KEPT` used last stay. A block wanted by several
    threads at once is fetched once."""

    def __init__(self, fetch: Callable[[int, int], bytes], length: int) -> None:
        self._fetch = fetch
        self._length = length
        self._lock = threading.Lock()
        self._kept: OrderedDict[int, bytes] = OrderedDict()
        self._loading: dict[int, Future[bytes]] = {}

    def read(self, start: int, end: int) -> bytes:
        """Bytes *start* to *end* (fewer past the length)."""
        end = min(end, self._length)
        pieces = []
        while start < end:
            index = start // BLOCK
            block = self._block(index)
            at = start - index * BLOCK
            piece = block[at : at + end - start]
            if not piece:
                break  # the file is shorter than its directory says: the caller tells
            pieces.append(piece)
            start += len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _block(self, index: int) -> bytes:
        with self._lock:
            block = self._kept.get(index)
            if block is not None:
                self._kept.move_to_end(index)
                return block
            pending = self._loading.get(index)
            fetching = pending is None
            if pending is None:
                pending = self._loading[index] = Future()
        if not fetching:
            return pending.result()
        try:
            start = index * BLOCK
            block = self._fetch(start, min(self._length, start + BLOCK))
        except BaseException as exc:
            with self._lock:
                del self._loading[index]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._loading[index]
            self._kept[index] = block
            while len(self._kept) > BLOCKS_KEPT:
                self._kept.popitem(last=False)
        pending.set_result(block)
        return block


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
            data = self._reader._data(at, at + wanted, entry.name)
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
