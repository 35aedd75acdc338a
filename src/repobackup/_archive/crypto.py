"""Encryption of backup members: the master key's subkeys, segmented AEAD streams, blob ids.

A member is a header then AES-256-GCM segments (age's STREAM construction), each bound to the
member's name and the backup's id; docs/format.md, "Encrypted backups", is the byte format.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import re
import struct
from typing import IO, TYPE_CHECKING

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..exceptions import DecryptionError, ValidationError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_SEGMENT_SIZE",
    "SEGMENT_SIZE",
    "TAG_SIZE",
    "MasterKey",
    "MemberReader",
    "MemberWriter",
    "associated_data",
    "blob_id",
    "stored_size",
]

MAGIC = b"RBKENC"
VERSION = 1
SEGMENT_SIZE = 64 * 1024
# A hostile header must not make a reader allocate without bound.
MAX_SEGMENT_SIZE = 16 * 1024 * 1024
SALT_SIZE = 16
TAG_SIZE = 16
KEY_SIZE = 32
_HEADER = struct.Struct(">6sBI16s")
HEADER_SIZE = _HEADER.size

# HKDF info strings: one per purpose, so no two uses ever share a key.
INFO_MEMBER = b"repobackup member encryption v1"
INFO_BLOB_ID = b"repobackup blob id v1"
INFO_KEY_SET = b"repobackup key set id v1"
INFO_PAYLOAD = b"repobackup member payload v1"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _hkdf(ikm: bytes, info: bytes, length: int = KEY_SIZE, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


@attrs.frozen(repr=False)
class MasterKey:
    """The 32 random bytes every other key of a key set derives from (never stored in clear)."""

    secret: bytes = attrs.field()
    # Derived once: a run names thousands of blobs and encrypts as many members.
    member_key: bytes = attrs.field(init=False, eq=False)
    blob_id_key: bytes = attrs.field(init=False, eq=False)
    key_set_id: str = attrs.field(init=False, eq=False)

    @secret.validator
    def _check(self, _attribute: object, value: bytes) -> None:
        if len(value) != KEY_SIZE:
            raise ValidationError(f"master key: must be {KEY_SIZE} bytes, got {len(value)}")

    def __attrs_post_init__(self) -> None:
        # member_key: member payload keys derive from it; blob_id_key: the HMAC key naming
        # blobs; key_set_id: a public id (32 hex digits) naming this master key.
        object.__setattr__(self, "member_key", _hkdf(self.secret, INFO_MEMBER))
        object.__setattr__(self, "blob_id_key", _hkdf(self.secret, INFO_BLOB_ID))
        object.__setattr__(self, "key_set_id", _hkdf(self.secret, INFO_KEY_SET, 16).hex())

    @classmethod
    def generate(cls) -> MasterKey:
        """A new random master key."""
        return cls(os.urandom(KEY_SIZE))

    def __repr__(self) -> str:
        return f"MasterKey(key_set_id={self.key_set_id!r})"


def blob_id(key: MasterKey, sha256: str) -> str:
    """The name a blob is stored under: HMAC-SHA256 of its raw sha256 digest, lowercase hex."""
    if not _SHA256.match(sha256):
        raise ValidationError(f"sha256: not 64 lowercase hex digits: {sha256!r}")
    return hmac.new(key.blob_id_key, bytes.fromhex(sha256), hashlib.sha256).hexdigest()


def stored_size(plain_size: int, segment_size: int = SEGMENT_SIZE) -> int:
    """How many bytes a member of *plain_size* bytes takes encrypted (header and tags)."""
    segments = max(1, -(-plain_size // segment_size))
    return HEADER_SIZE + plain_size + TAG_SIZE * segments


def associated_data(header: bytes, backup_id: str, name: str) -> bytes:
    """What each segment's tag covers besides its bytes: the header, the backup id, the name."""
    parts = [header]
    for text in (backup_id, name):
        raw = text.encode("utf-8")
        parts += [struct.pack(">I", len(raw)), raw]
    return b"".join(parts)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _payload_cipher(key: MasterKey, salt: bytes) -> AESGCM:
    return AESGCM(_hkdf(key.member_key, INFO_PAYLOAD, salt=salt))


class MemberWriter(io.RawIOBase):
    """Encrypts one member into *raw* as it is written; `close` writes the last segment.

    The bytes written are the member's stored form before encryption: compress first (the
    zstd frame of a ``.zst`` member), then hand the compressed bytes here. Closing the
    writer does not close *raw*. Leaving a ``with`` block on an exception, `abort`, or
    dropping an unclosed writer writes no last segment, so the partial member never opens.
    """

    def __init__(
        self,
        raw: IO[bytes],
        key: MasterKey,
        *,
        backup_id: str,
        name: str,
        segment_size: int = SEGMENT_SIZE,
    ) -> None:
        super().__init__()
        self._buffer = bytearray()
        if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValidationError(f"segment size: must be 1..{MAX_SEGMENT_SIZE}")
        salt = os.urandom(SALT_SIZE)
        header = _HEADER.pack(MAGIC, VERSION, segment_size, salt)
        self._raw = raw
        self._aead = _payload_cipher(key, salt)
        self._ad = associated_data(header, backup_id, name)
        self._size = segment_size
        self._counter = 0
        raw.write(header)

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer, /) -> int:
        if self.closed:
            raise ValueError("write to a closed member writer")
        data = memoryview(b).cast("B")
        written, size = len(data), self._size
        # A segment is only known not to be the last once a byte beyond it has arrived,
        # so up to one whole segment stays buffered until more data or `close`.
        if self._buffer:
            take = min(len(data), size - len(self._buffer))
            self._buffer += data[:take]
            data = data[take:]
            if not data:
                return written
            self._seal(self._buffer, last=False)
            self._buffer.clear()
        while len(data) > size:
            self._seal(data[:size], last=False)
            data = data[size:]
        self._buffer += data
        return written

    def _seal(self, segment: bytearray | memoryview, *, last: bool) -> None:
        self._raw.write(self._aead.encrypt(_nonce(self._counter, last), segment, self._ad))
        self._counter += 1

    def close(self) -> None:
        """Write the last segment: only now is the member complete (and authentic)."""
        if not self.closed:
            self._seal(self._buffer, last=True)
            self._buffer.clear()
        super().close()

    def abort(self) -> None:
        """Stop without a last segment, so what was written reads as a cut member."""
        self._buffer.clear()
        super().close()

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        # A member whose input failed half-way must never look whole.
        if kind is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # io.IOBase would call close() here, sealing a member nobody finished.
        if not self.closed:
            self.abort()


class MemberReader(io.RawIOBase):
    """The decrypted bytes of one member read from *raw*, one segment in memory at a time.

    The member is authentic only once a read returns ``b""`` (its last segment checked).
    Raises `DecryptionError` at the first segment that fails authentication: a wrong key,
    name or backup id, a flipped byte, a cut, or segments out of order. Bytes already
    returned came from segments that passed; a consumer commits its output only after the
    reader reaches the end.
    """

    def __init__(self, raw: IO[bytes], key: MasterKey, *, backup_id: str, name: str) -> None:
        super().__init__()
        self._raw = raw
        self._name = name
        header = _read_exact(raw, HEADER_SIZE)
        if len(header) < HEADER_SIZE:
            raise DecryptionError(f"{name}: encrypted member is cut short in its header")
        magic, version, size, salt = _HEADER.unpack(header)
        if magic != MAGIC or version != VERSION:
            raise DecryptionError(f"{name}: not an encrypted member of format version {VERSION}")
        if not 1 <= size <= MAX_SEGMENT_SIZE:
            raise DecryptionError(f"{name}: encrypted member header has a bad segment size")
        self._aead = _payload_cipher(key, salt)
        self._ad = associated_data(header, backup_id, name)
        self._sealed = size + TAG_SIZE
        self._counter = 0
        self._plain = memoryview(b"")
        # The piece after the current one: only its absence marks the current one as last.
        self._next = _read_exact(raw, self._sealed)
        self._done = False
        self._failure: DecryptionError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        out = memoryview(buffer).cast("B")
        # After a failed segment every read fails: an end-of-file would pass for the end.
        if self._failure is not None:
            raise self._failure
        while not self._plain and not self._done:
            try:
                self._open_next()
            except DecryptionError as exc:
                self._failure = exc
                raise
        n = min(len(out), len(self._plain))
        out[:n] = self._plain[:n]
        self._plain = self._plain[n:]
        return n

    def _open_next(self) -> None:
        sealed = self._next
        self._next = _read_exact(self._raw, self._sealed) if len(sealed) == self._sealed else b""
        last = not self._next
        where = f"{self._name}: segment {self._counter}"
        if len(sealed) < TAG_SIZE:
            raise DecryptionError(f"{where} is cut short")
        if last and len(sealed) == TAG_SIZE and self._counter > 0:
            raise DecryptionError(f"{where}: an empty last segment after data")
        try:
            plain = self._aead.decrypt(_nonce(self._counter, last), sealed, self._ad)
        except InvalidTag:
            raise DecryptionError(
                f"{where} failed authentication: wrong key, member name or backup, "
                "or the member was altered, cut or reordered"
            ) from None
        self._counter += 1
        self._plain = memoryview(plain)
        self._done = last


def _read_exact(raw: IO[bytes], n: int) -> bytes:
    """Up to *n* bytes, fewer only at the end of *raw* (raw reads may return short)."""
    chunks = []
    while n > 0:
        chunk = raw.read(n)
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
