"""The two forms of a bk-repo backup on a store: a ``<stamp>/`` folder, or a zip of it.

Both are read as one tree of entries named by ``/``-joined paths below ``<stamp>/``; every
entry name is checked, and entries that would escape the tree are refused, never read.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import sqlite3
import stat
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol, cast

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..exceptions import ArchiveError, store_errors

__all__ = [
    "STAMP",
    "BkrepoTree",
    "FolderTree",
    "ZipTree",
    "component_problem",
    "zip_stamp",
]

STAMP = re.compile(r"^\d{8}\.\d{6}$")
CHUNK = 1 << 20
PIECE = 256 * 1024  # what an entry is read and inflated by: four of them stay small
STORED, DEFLATED = 0, 8
FLAG_ENCRYPTED, FLAG_UTF8 = 0x1, 0x800
ZIP64_LIMIT, ZIP64_COUNT, ZIP64_EXTRA = 0xFFFFFFFF, 0xFFFF, 0x0001

LOCAL = struct.Struct("<IHHHHHIIIHH")
LOCAL_SIG = 0x04034B50
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
CENTRAL_SIG = 0x02014B50
END = struct.Struct("<IHHHHIIH")
END64 = struct.Struct("<IQHHIIQQQQ")
LOCATOR = struct.Struct("<IIQI")
EXTRA = struct.Struct("<HH")
_DRIVE = re.compile(r"^[A-Za-z]:")

Refuse = Callable[[str, str], None]
"""Called with an entry's name and why it is refused."""


class BkrepoTree(Protocol):
    """One bk-repo backup's entries, below its ``<stamp>/`` folder."""

    location: str
    stamp: str | None
    compressed: bool

    def children(self, folder: str) -> Iterator[tuple[str, bool]]:
        """Each ``(name, is_folder)`` directly in *folder* (``""`` is the top), by name."""
        ...

    def exists(self, entry: str) -> bool:
        """Whether *entry* is a file of the backup."""
        ...

    def open(self, entry: str) -> IO[bytes]:
        """The content of *entry*, decompressed and checked as it is read."""
        ...

    def close(self) -> None:
        """Release the backup."""
        ...


def component_problem(name: str) -> str | None:
    """Why *name* cannot be one component of an entry name, or None when it can."""
    if name in ("", ".", ".."):
        return f"component {name!r} escapes the tree or is empty"
    if "\\" in name or "/" in name:
        return f"component {name!r} holds a path separator (a backslash or slash)"
    if "\x00" in name or any(ord(c) < 32 for c in name):
        return f"component {name!r} holds control characters"
    return None


def _raw_problem(raw: str) -> str | None:
    """Why a zip entry name is hostile on its face (absolute, a drive, ``..``), if it is."""
    if raw.startswith(("/", "\\")):
        return "absolute path"
    if _DRIVE.match(raw):
        return "drive letter"
    if any(part == ".." for part in re.split(r"[/\\]", raw)):
        return "'..' component"
    return None


# --------------------------------------------------------------------------------------------
# Folder


class FolderTree:
    """A ``<stamp>/`` folder on any fsspec store; symbolic links are refused, not followed."""

    compressed = False

    def __init__(
        self, fs: fsspec.AbstractFileSystem, path: str, location: str, refuse: Refuse
    ) -> None:
        self.fs = fs
        self.path = path.rstrip("/")
        self.location = location
        base = posixpath.basename(self.path)
        self.stamp = base if STAMP.match(base) else None
        self._refuse = refuse

    def __repr__(self) -> str:
        return f"<FolderTree {self.location!r}>"

    def children(self, folder: str) -> Iterator[tuple[str, bool]]:
        where = posixpath.join(self.path, folder) if folder else self.path
        with store_errors(f"listing {self.location}/{folder}"):
            listing = self.fs.ls(where, detail=True)
        found = []
        for info in listing:
            name = posixpath.basename(str(info["name"]).rstrip("/"))
            entry = f"{folder}/{name}" if folder else name
            problem = component_problem(name)
            if problem is None and info.get("islink"):
                problem = "a symbolic link; backups hold none"
            if problem is not None:
                self._refuse(entry, problem)
                continue
            found.append((name, info.get("type") == "directory"))
        yield from sorted(found)

    def _full(self, entry: str) -> str:
        return posixpath.join(self.path, entry)

    def _inside(self, path: str, entry: str) -> None:
        """ArchiveError when a local *path* resolves outside the backup (a linked folder)."""
        root = os.path.realpath(self.path)
        if not os.path.realpath(path).startswith(root + os.sep):
            raise ArchiveError(f"{self.location}: {entry} resolves outside the backup")

    def exists(self, entry: str) -> bool:
        path = self._full(entry)
        with store_errors(f"reading {self.location}/{entry}"):
            if isinstance(self.fs, LocalFileSystem):
                try:
                    mode = os.lstat(path).st_mode
                except FileNotFoundError:
                    return False
                return stat.S_ISREG(mode)
            return bool(self.fs.isfile(path))

    def open(self, entry: str) -> IO[bytes]:
        path = self._full(entry)
        with store_errors(f"reading {self.location}/{entry}"):
            if isinstance(self.fs, LocalFileSystem):
                self._inside(path, entry)
                if os.path.islink(path):
                    raise ArchiveError(f"{self.location}: {entry} is a symbolic link")
                return open(path, "rb")
            return cast(IO[bytes], self.fs.open(path, "rb"))

    def close(self) -> None:
        return None


# --------------------------------------------------------------------------------------------
# Zip


class _Range:
    """Reads byte ranges of one file: by ``pread`` on a local disk, by range requests else."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, location: str) -> None:
        self.fs = fs
        self.path = path
        self.location = location
        self.fd: int | None = None
        with store_errors(f"opening {location}"):
            if isinstance(fs, LocalFileSystem) and hasattr(os, "pread"):
                self.fd = os.open(path, os.O_RDONLY)
            self.size = int(fs.size(path))

    def read(self, start: int, end: int) -> bytes:
        with store_errors(f"reading {self.location}"):
            if self.fd is not None:
                return os.pread(self.fd, max(0, end - start), start)
            return bytes(self.fs.cat_file(self.path, start=start, end=end))

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def _broken(location: str, what: str) -> ArchiveError:
    return ArchiveError(f"{location}: {what}: the zip is truncated or damaged")


def _end_record(source: _Range) -> tuple[int, int, int]:
    """Entries, central directory offset and size, from the (zip64) end records."""
    size = source.size
    tail_start = max(0, size - (END.size + 0xFFFF + LOCATOR.size))
    tail = source.read(tail_start, size)
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0 and not (
        len(tail) - at >= END.size and at + END.size + END.unpack_from(tail, at)[7] == len(tail)
    ):
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        raise _broken(source.location, "no end of central directory record")
    _, disk, cd_disk, _, count, cd_size, cd_offset, _ = END.unpack_from(tail, at)
    locator_at = at - LOCATOR.size
    if locator_at >= 0 and tail[locator_at : locator_at + 4] == b"PK\x06\x07":
        end64_at = LOCATOR.unpack_from(tail, locator_at)[2]
        record = source.read(end64_at, end64_at + END64.size)
        if len(record) != END64.size or record[:4] != b"PK\x06\x06":
            raise _broken(source.location, "the zip64 end record is missing")
        _, _, _, _, disk, cd_disk, _, count, cd_size, cd_offset = END64.unpack(record)
    elif count == ZIP64_COUNT or ZIP64_LIMIT in (cd_size, cd_offset):
        raise _broken(source.location, "the zip64 end records are missing")
    if disk or cd_disk:
        raise ArchiveError(f"{source.location}: multi-part zips are not supported")
    if cd_offset + cd_size > size:
        raise _broken(source.location, "the central directory lies past the end of the file")
    return count, cd_offset, cd_size


def _central_entries(
    source: _Range, start: int, end: int
) -> Iterator[tuple[tuple[int, ...], bytes, bytes]]:
    """Each central directory entry: fixed fields, raw name and extra field, streamed."""
    buffer, at, fetched = b"", 0, start
    while fetched - len(buffer) + at < end:
        if len(buffer) - at < CENTRAL.size + 0xFFFF * 3 and fetched < end:
            upto = min(end, fetched + CHUNK)
            buffer, at, fetched = buffer[at:] + source.read(fetched, upto), 0, upto
        if len(buffer) - at < CENTRAL.size:
            raise _broken(source.location, "a central directory entry is cut short")
        fields = CENTRAL.unpack_from(buffer, at)
        length = CENTRAL.size + fields[10] + fields[11] + fields[12]
        if fields[0] != CENTRAL_SIG or len(buffer) - at < length:
            raise _broken(source.location, "a central directory entry is corrupt")
        name_at = at + CENTRAL.size
        extra_at = name_at + fields[10]
        yield fields, buffer[name_at:extra_at], buffer[extra_at : extra_at + fields[11]]
        at += length


def _zip64(extra: bytes, size: int, packed: int, offset: int) -> tuple[int, int, int]:
    at = 0
    while at + EXTRA.size <= len(extra):
        kind, length = EXTRA.unpack_from(extra, at)
        body = extra[at + EXTRA.size : at + EXTRA.size + length]
        if kind == ZIP64_EXTRA:
            values = list(struct.unpack(f"<{len(body) // 8}Q", body[: len(body) // 8 * 8]))
            if size == ZIP64_LIMIT and values:
                size = values.pop(0)
            if packed == ZIP64_LIMIT and values:
                packed = values.pop(0)
            if offset == ZIP64_LIMIT and values:
                offset = values.pop(0)
        at += EXTRA.size + length
    if ZIP64_LIMIT in (size, packed, offset):
        raise ValueError("needs a zip64 extra field that is missing")
    return size, packed, offset


def _decode(raw: bytes, flags: int) -> str:
    if flags & FLAG_UTF8:
        return raw.decode("utf-8")
    try:
        return raw.decode("utf-8")  # the JDK writes UTF-8 names
    except UnicodeDecodeError:
        return raw.decode("cp437")


def zip_stamp(fs: fsspec.AbstractFileSystem, path: str, location: str) -> str | None:
    """The ``<stamp>`` the first entry of the zip at *path* starts with, or None; reads only
    the end records and the first directory entry."""
    source = _Range(fs, path, location)
    try:
        count, cd_offset, cd_size = _end_record(source)
        if not count:
            return None
        for fields, raw, _ in _central_entries(source, cd_offset, cd_offset + cd_size):
            name = _decode(raw, fields[3])
            match = re.match(r"^(\d{8}\.\d{6})[/\\]", name)
            return match[1] if match else None
        return None
    finally:
        source.close()


class ZipTree:
    """A zip of a ``<stamp>/`` folder (DEFLATE or stored, data descriptors, ``/`` or ``\\``).

    The central directory is indexed into a temporary SQLite database, so memory stays flat
    however many entries the zip holds; hostile entries are refused while indexing.
    """

    compressed = True

    def __init__(
        self, fs: fsspec.AbstractFileSystem, path: str, location: str, refuse: Refuse
    ) -> None:
        self.location = location
        self.stamp: str | None = None
        self._refuse = refuse
        self._lock = threading.Lock()
        self._source = _Range(fs, path, location)
        self._db = sqlite3.connect("", check_same_thread=False)
        self._db.executescript(
            "CREATE TABLE files (parent TEXT, name TEXT, offset INT, packed INT, size INT,"
            " crc INT, method INT);"
            "CREATE TABLE folders (parent TEXT, name TEXT, PRIMARY KEY (parent, name))"
            " WITHOUT ROWID;"
        )
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<ZipTree {self.location!r}>"

    def _index(self) -> None:
        count, cd_offset, cd_size = _end_record(self._source)
        parsed = 0
        rows: list[tuple[Any, ...]] = []
        for fields, raw, extra in _central_entries(self._source, cd_offset, cd_offset + cd_size):
            parsed += 1
            row = self._entry_row(fields, raw, extra, cd_offset)
            if row is not None:
                rows.append(row)
            if len(rows) >= 1000:
                self._insert(rows)
        self._insert(rows)
        if parsed != count:
            raise _broken(self.location, f"the end record counts {count} entries, found {parsed}")
        duplicates = self._db.execute(
            "SELECT parent, name FROM files GROUP BY parent, name HAVING COUNT(*) > 1"
        ).fetchall()
        for parent, name in duplicates:
            self._db.execute("DELETE FROM files WHERE parent = ? AND name = ?", (parent, name))
            entry = f"{parent}/{name}" if parent else name
            self._refuse(entry, "appears more than once: ambiguous, no copy is used")
        self._db.execute("CREATE UNIQUE INDEX files_entry ON files (parent, name)")

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            parts = row[0].split("/") if row[0] else []
            for depth in range(len(parts)):
                self._db.execute(
                    "INSERT OR IGNORE INTO folders VALUES (?, ?)",
                    ("/".join(parts[:depth]), parts[depth]),
                )
        self._db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        rows.clear()

    def _entry_row(
        self, fields: tuple[int, ...], raw: bytes, extra: bytes, data_end: int
    ) -> tuple[Any, ...] | None:
        """The index row of one directory entry, or None (the entry refused or a folder)."""
        flags, method, crc, packed, size = fields[3], fields[4], fields[7], fields[8], fields[9]
        try:
            name = _decode(raw, flags)
            size, packed, offset = _zip64(extra, size, packed, fields[16])
        except (UnicodeDecodeError, ValueError) as exc:
            self._refuse(repr(raw), f"unreadable entry: {exc}")
            return None
        parts, problem = self._parts(name)
        if problem is None and parts[-1] != "":
            if stat.S_ISLNK(fields[15] >> 16):
                problem = "a symbolic link; backups hold none"
            elif flags & FLAG_ENCRYPTED or method not in (STORED, DEFLATED):
                problem = f"encrypted or compressed with unsupported method {method}"
            elif offset + LOCAL.size + len(raw) + packed > data_end:
                problem = "its sizes or offset run past the data"
        if problem is not None:
            self._refuse(name, problem)
            return None
        if parts[-1] == "":
            return None  # a folder entry: nothing to read
        return ("/".join(parts[:-1]), parts[-1], offset, packed, size, crc, method)

    def _parts(self, name: str) -> tuple[list[str], str | None]:
        """The components of *name* below ``<stamp>/``, or why the name is refused."""
        problem = _raw_problem(name)
        if problem is not None:
            return [], problem
        match = re.match(r"^(\d{8}\.\d{6})([/\\])", name)
        if match is None:
            return [], "outside the backup's <stamp>/ folder"
        if self.stamp is None:
            self.stamp = match[1]
        if match[1] != self.stamp:
            return [], f"under another stamp than {self.stamp}"
        separator = match[2]
        parts = name[match.end() :].split(separator)
        folder = parts[-1] == ""
        for part in parts[:-1] if folder else parts:
            problem = component_problem(part)
            if problem is not None:
                return [], problem
        return parts, None

    def children(self, folder: str) -> Iterator[tuple[str, bool]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, 1 FROM folders WHERE parent = ? UNION ALL"
                " SELECT name, 0 FROM files WHERE parent = ? ORDER BY 1",
                (folder, folder),
            ).fetchall()
        for name, is_folder in rows:
            yield name, bool(is_folder)

    def _row(self, entry: str) -> tuple[int, int, int, int, int] | None:
        parent, _, name = entry.rpartition("/")
        with self._lock:
            row = self._db.execute(
                "SELECT offset, packed, size, crc, method FROM files WHERE parent = ? AND name = ?",
                (parent, name),
            ).fetchone()
        return cast("tuple[int, int, int, int, int] | None", row)

    def exists(self, entry: str) -> bool:
        return self._row(entry) is not None

    def open(self, entry: str) -> IO[bytes]:
        row = self._row(entry)
        if row is None:
            raise ArchiveError(f"{self.location}: no entry {entry}")
        offset, packed, size, crc, method = row
        head = self._source.read(offset, offset + LOCAL.size)
        if len(head) != LOCAL.size or LOCAL.unpack(head)[0] != LOCAL_SIG:
            raise _broken(self.location, f"entry {entry} has no local header")
        name_len, extra_len = LOCAL.unpack(head)[9:11]
        start = offset + LOCAL.size + name_len + extra_len
        stream = _EntryStream(self._source, f"{self.location}: entry {entry}")
        stream.begin(start, packed, size, crc, deflated=method == DEFLATED)
        return io.BufferedReader(stream, PIECE)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._source.close()


class _EntryStream(io.RawIOBase):
    """One entry's content, inflated as it is read; raises when its CRC-32 or size is wrong,
    and never inflates more than the size the directory gives (a zip bomb stops there)."""

    def __init__(self, source: _Range, what: str) -> None:
        super().__init__()
        self._source = source
        self._what = what
        self._pending = memoryview(b"")
        self._chunks: Iterator[bytes] = iter(())

    def begin(self, start: int, packed: int, size: int, crc: int, *, deflated: bool) -> None:
        self._chunks = self._content(start, packed, size, crc, deflated)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _packed(self, start: int, packed: int) -> Iterator[bytes]:
        at = 0
        while at < packed:
            data = self._source.read(start + at, start + min(packed, at + PIECE))
            if not data:
                raise ArchiveError(f"{self._what} is cut short: the zip is truncated")
            at += len(data)
            yield data

    def _content(
        self, start: int, packed: int, size: int, crc: int, deflated: bool
    ) -> Iterator[bytes]:
        produced = 0
        check = 0
        inflater = zlib.decompressobj(-15)
        try:
            for data in self._packed(start, packed):
                pieces = [data] if not deflated else _inflate(inflater, data)
                for piece in pieces:
                    produced += len(piece)
                    if produced > size:
                        raise ArchiveError(f"{self._what} inflates past its size {size}")
                    check = zlib.crc32(piece, check)
                    yield piece
        except zlib.error as exc:
            raise ArchiveError(f"{self._what} is not a valid DEFLATE stream: {exc}") from None
        if deflated and not inflater.eof:
            raise ArchiveError(f"{self._what}: its DEFLATE stream is cut short")
        if produced != size or check != crc:
            raise ArchiveError(
                f"{self._what} is corrupt (its size or CRC-32 does not match the zip's directory)"
            )


def _inflate(inflater: Any, data: bytes) -> Iterator[bytes]:
    """The bytes *data* inflates to, a chunk at a time."""
    while data and not inflater.eof:
        out = inflater.decompress(data, PIECE)
        data = inflater.unconsumed_tail
        if out:
            yield out
