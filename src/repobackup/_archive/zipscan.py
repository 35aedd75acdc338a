"""Scanning an interrupted zip backup's local headers for the blob members it completed.

A resumed zip backup keeps those members where they lie and appends after the last one.
"""

from __future__ import annotations

import re
import sqlite3
import struct
import zlib
from typing import IO

import attrs

from ..exceptions import ArchiveError
from .layout import CHUNK, check_member_path
from .zipformat import (
    EXTRA,
    FLAG_UTF8,
    LOCAL,
    LOCAL_SIG,
    STORED,
    VERSION_DEFAULT,
    VERSION_ZIP64,
    ZIP64_EXTRA,
    ZIP64_LIMIT,
)

__all__ = ["Kept", "KeptMembers", "scan_partial"]

# The blob members of a backup that is not encrypted: named by the sha256 of the content,
# filed under its first two pairs of hex digits.
_BLOB = re.compile(r"blobs/([0-9a-f]{2})/([0-9a-f]{2})/(\1\2[0-9a-f]{60})(?:\.zst)?")
_ZIP64_BODY = struct.Struct("<QQ")


@attrs.frozen
class Kept:
    """One complete blob member of an interrupted zip, as its local header describes it."""

    name: str
    crc: int
    size: int
    offset: int
    stamp: tuple[int, int]
    zip64: bool


class KeptMembers:
    """The kept members by sha256, on disk in a temporary SQLite table: memory stays flat
    with a million of them. The caller serialises access."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", check_same_thread=False)
        self._db.execute(
            "CREATE TABLE kept (sha BLOB PRIMARY KEY, name TEXT, crc INT, size INT, "
            "offset INT, time INT, date INT, zip64 INT) WITHOUT ROWID"
        )
        #: How many members were kept, and their stored bytes.
        self.count = 0
        self.bytes = 0

    def add(self, sha256: str, member: Kept) -> bool:
        """Keep *member*; False when a member of that blob is kept already."""
        row = (bytes.fromhex(sha256), member.name, member.crc, member.size, member.offset,
               *member.stamp, int(member.zip64))  # fmt: skip
        added = (
            self._db.execute(
                "INSERT OR IGNORE INTO kept VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row
            ).rowcount
            == 1
        )
        if added:
            self.count += 1
            self.bytes += member.size
        return added

    def take(self, sha256: str) -> Kept | None:
        """The kept member of the blob *sha256*, taken out of the table, or None."""
        key = bytes.fromhex(sha256)
        row = self._db.execute(
            "SELECT name, crc, size, offset, time, date, zip64 FROM kept WHERE sha = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        self._db.execute("DELETE FROM kept WHERE sha = ?", (key,))
        name, crc, size, offset, dos_time, dos_date, zip64 = row
        return Kept(name, crc, size, offset, (dos_time, dos_date), bool(zip64))

    def close(self) -> None:
        self._db.close()


def scan_partial(file: IO[bytes], length: int, kept: KeptMembers) -> tuple[int, str | None]:
    """Walk the local headers of an interrupted zip backup from its first byte, keeping in
    *kept* every blob member that is complete and whose bytes match its header's CRC-32.

    Return the offset just past the last kept member (where the zip may be cut and
    continued) and why the walk stopped before *length* bytes, or None when it did not.
    The walk stops at the first member that is cut short, inconsistent, not one a backup
    writes, a second copy of a blob, or a manifest (a commit had begun): nothing after it
    is trusted. Records members are walked over and never kept: the next run writes its own.
    """
    offset = end = 0
    while offset < length:
        try:
            name, crc, size, data_at, stamp, zip64 = _local_header(file, offset)
        except ArchiveError as exc:
            return end, exc.message
        data_end = data_at + size
        if data_end > length:
            return end, f"member {name} at byte {offset} is cut short"
        blob = _BLOB.fullmatch(name)
        if blob is not None:
            if _crc_of(file, size) != crc:
                return end, f"member {name} at byte {offset} does not match its CRC-32"
            if not kept.add(blob[3], Kept(name, crc, size, offset, stamp, zip64)):
                return end, f"member {name} at byte {offset} appears a second time"
            end = data_end
        elif _is_records(name):
            file.seek(size, 1)
        else:
            return end, f"member {name} at byte {offset} is not one a backup resumes from"
        offset = data_end
    return end, None


def _local_header(file: IO[bytes], offset: int) -> tuple[str, int, int, int, tuple[int, int], bool]:
    """Name, CRC-32, size, data offset, DOS stamp and zip64-ness of the member whose local
    header starts at *offset* (the file is positioned there), exactly as `ZipWriter`
    writes one; ArchiveError when it is cut short or is not."""
    fixed = file.read(LOCAL.size)
    if len(fixed) < LOCAL.size:
        raise ArchiveError(f"the local header at byte {offset} is cut short")
    sig, version, flags, method, dos_time, dos_date, crc, packed, size, name_len, extra_len = (
        LOCAL.unpack(fixed)
    )
    if sig != LOCAL_SIG or method != STORED or flags & ~FLAG_UTF8 or packed != size:
        raise ArchiveError(f"no local header of a stored member at byte {offset}")
    rest = file.read(name_len + extra_len)
    if len(rest) < name_len + extra_len:
        raise ArchiveError(f"the local header at byte {offset} is cut short")
    try:
        name = rest[:name_len].decode("utf-8" if flags & FLAG_UTF8 else "ascii")
    except UnicodeDecodeError:
        raise ArchiveError(f"the member name at byte {offset} is not valid") from None
    extra = rest[name_len:]
    zip64 = bool(extra)
    if not zip64 and (version != VERSION_DEFAULT or size == ZIP64_LIMIT):
        raise ArchiveError(f"the local header of {name} at byte {offset} is inconsistent")
    if zip64:
        if (
            len(extra) != EXTRA.size + _ZIP64_BODY.size
            or EXTRA.unpack_from(extra) != (ZIP64_EXTRA, _ZIP64_BODY.size)
            or version != VERSION_ZIP64
            or size != ZIP64_LIMIT
        ):
            raise ArchiveError(f"the local header of {name} at byte {offset} is inconsistent")
        size, packed = _ZIP64_BODY.unpack_from(extra, EXTRA.size)
        if packed != size:
            raise ArchiveError(f"the local header of {name} at byte {offset} is inconsistent")
    data_at = offset + LOCAL.size + name_len + extra_len
    return name, crc, size, data_at, (dos_time, dos_date), zip64


def _crc_of(file: IO[bytes], size: int) -> int:
    """The CRC-32 of the next *size* bytes of *file*, read in chunks."""
    crc = 0
    left = size
    while left > 0:
        block = file.read(min(CHUNK, left))
        if not block:
            return -1  # the file shrank meanwhile: never a match
        crc = zlib.crc32(block, crc)
        left -= len(block)
    return crc


def _is_records(name: str) -> bool:
    """Whether *name* is where a zip backup keeps a collection's records."""
    if not name.endswith(".jsonl.zst") or not name.startswith(("common/", "projects/")):
        return False
    try:
        check_member_path(name)
    except ArchiveError:
        return False
    return True
