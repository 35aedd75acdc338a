"""Key files: the master key wrapped by each passphrase (scrypt, AES-256-GCM), as JSON.

A folder of ``<id>.json`` key files opens with any one of their passphrases; adding,
changing or removing a passphrase rewrites key files only, never the data they protect.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from fsspec.implementations.local import LocalFileSystem

from ..exceptions import ArchiveError, DecryptionError, ValidationError, store_errors
from .crypto import KEY_SIZE, MasterKey

__all__ = [
    "KeyFile",
    "Passphrase",
    "ScryptParams",
    "add_passphrase",
    "change_passphrase",
    "create_keys",
    "list_keys",
    "open_key_files",
    "open_keys",
    "passphrase_bytes",
    "read_key_file",
    "remove_key",
    "wrap_master_key",
    "write_key_file",
]

Passphrase = str | bytes | Callable[[], str | bytes]

KEY_FILE_VERSION = 1
CIPHER = "AES-256-GCM"
SALT_SIZE = 32
NONCE_SIZE = 12
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_KEY_SET = re.compile(r"^[0-9a-f]{32}$")
# Bounds a hostile key file cannot push the KDF past: 256 MiB of memory, 16 lanes.
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_MAX_SCRYPT_P = 16


@attrs.frozen
class ScryptParams:
    """scrypt's cost parameters: *n* (a power of two), block size *r*, parallelism *p*."""

    n: int = 2**15
    r: int = 8
    p: int = 1

    def problem(self) -> str | None:
        """What is wrong with these parameters, or None when a reader may run them."""
        if self.n < 2 or self.n & (self.n - 1):
            return f"n must be a power of two >= 2, got {self.n}"
        if self.r < 1 or self.p < 1 or self.p > _MAX_SCRYPT_P:
            return f"r must be >= 1 and p 1..{_MAX_SCRYPT_P}, got r={self.r} p={self.p}"
        if 128 * self.n * self.r > _MAX_SCRYPT_MEMORY:
            return f"n={self.n} r={self.r} need more than {_MAX_SCRYPT_MEMORY} bytes"
        return None


@attrs.frozen
class KeyFile:
    """One passphrase's copy of a master key: the KDF parameters and the wrapped key."""

    id: str
    key_set: str
    created: datetime
    kdf: ScryptParams
    salt: bytes = attrs.field(repr=False)
    nonce: bytes = attrs.field(repr=False)
    wrapped: bytes = attrs.field(repr=False)

    @property
    def file_name(self) -> str:
        return f"{self.id}.json"

    def associated_data(self) -> bytes:
        """What the wrapped key's tag covers besides it: the key file's id and key set."""
        return f"repobackup key file v{KEY_FILE_VERSION} {self.id} {self.key_set}".encode()

    def to_json(self) -> bytes:
        """The key file's bytes: one JSON object, keys in a fixed order, a final newline."""
        b64 = base64.b64encode
        doc = {
            "version": KEY_FILE_VERSION,
            "id": self.id,
            "keySet": self.key_set,
            "created": self.created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "kdf": {
                "name": "scrypt",
                "n": self.kdf.n,
                "r": self.kdf.r,
                "p": self.kdf.p,
                "salt": b64(self.salt).decode(),
            },
            "cipher": CIPHER,
            "nonce": b64(self.nonce).decode(),
            "masterKey": b64(self.wrapped).decode(),
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> KeyFile:
        """Parse a key file; `ArchiveError` naming *where* and the field when it is malformed."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"{where}: key file is not JSON: {exc}") from None
        return _parse_key_file(doc, where)

    def unwrap(self, secret: bytes) -> MasterKey:
        """The master key, given the passphrase's bytes; `DecryptionError` when it is wrong."""
        kek = Scrypt(salt=self.salt, length=KEY_SIZE, n=self.kdf.n, r=self.kdf.r, p=self.kdf.p)
        try:
            master = AESGCM(kek.derive(secret)).decrypt(
                self.nonce, self.wrapped, self.associated_data()
            )
        except InvalidTag:
            raise DecryptionError(f"key {self.id}: wrong passphrase") from None
        key = MasterKey(master)
        if key.key_set_id != self.key_set:
            raise DecryptionError(f"key {self.id}: the key does not match its key set")
        return key


def _field(doc: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArchiveError(f"{where}: key file field {name!r} must be a {kind.__name__}")
    return value


def _b64(doc: Mapping[str, Any], name: str, size: int | None, where: str) -> bytes:
    text = _field(doc, name, str, where)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ArchiveError(f"{where}: key file field {name!r} is not base64") from None
    if size is not None and len(raw) != size:
        raise ArchiveError(f"{where}: key file field {name!r} must hold {size} bytes")
    return raw


def _parse_key_file(doc: object, where: str) -> KeyFile:
    if not isinstance(doc, dict):
        raise ArchiveError(f"{where}: key file must be a JSON object")
    if _field(doc, "version", int, where) != KEY_FILE_VERSION:
        raise ArchiveError(f"{where}: key file version {doc['version']} is not supported")
    if _field(doc, "cipher", str, where) != CIPHER:
        raise ArchiveError(f"{where}: key file cipher {doc['cipher']!r} is not supported")
    kdf = _field(doc, "kdf", dict, where)
    if _field(kdf, "name", str, where) != "scrypt":
        raise ArchiveError(f"{where}: key file KDF {kdf['name']!r} is not supported")
    params = ScryptParams(*(_field(kdf, k, int, where) for k in ("n", "r", "p")))
    if problem := params.problem():
        raise ArchiveError(f"{where}: key file scrypt parameters: {problem}")
    key_id, key_set = _field(doc, "id", str, where), _field(doc, "keySet", str, where)
    if not _KEY_ID.match(key_id) or not _KEY_SET.match(key_set):
        raise ArchiveError(f"{where}: key file id or keySet is not lowercase hex of its size")
    try:
        created = datetime.fromisoformat(_field(doc, "created", str, where))
    except ValueError:
        raise ArchiveError(f"{where}: key file field 'created' is not an ISO 8601 time") from None
    if created.tzinfo is None:
        raise ArchiveError(f"{where}: key file field 'created' has no UTC offset")
    return KeyFile(
        id=key_id,
        key_set=key_set,
        created=created,
        kdf=params,
        salt=_b64(kdf, "salt", SALT_SIZE, where),
        nonce=_b64(doc, "nonce", NONCE_SIZE, where),
        wrapped=_b64(doc, "masterKey", KEY_SIZE + 16, where),
    )


def passphrase_bytes(passphrase: Passphrase) -> bytes:
    """The passphrase as bytes (a str as UTF-8; a callable is called once)."""
    value = passphrase() if callable(passphrase) else passphrase
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes):
        raise ValidationError(f"passphrase: must be str or bytes, got {type(value).__name__}")
    if not value:
        raise ValidationError("passphrase: must not be empty")
    return value


def wrap_master_key(
    master: MasterKey,
    passphrase: Passphrase,
    *,
    kdf: ScryptParams | None = None,
    created: datetime | None = None,
) -> KeyFile:
    """A new key file (fresh id, salt and nonce) wrapping *master* under *passphrase*."""
    kdf = kdf or ScryptParams()
    if problem := kdf.problem():
        raise ValidationError(f"scrypt parameters: {problem}")
    secret = passphrase_bytes(passphrase)
    salt, nonce = os.urandom(SALT_SIZE), os.urandom(NONCE_SIZE)
    key_file = KeyFile(
        id=os.urandom(8).hex(),
        key_set=master.key_set_id,
        created=created or datetime.now(UTC),
        kdf=kdf,
        salt=salt,
        nonce=nonce,
        wrapped=b"",
    )
    kek = Scrypt(salt=salt, length=KEY_SIZE, n=kdf.n, r=kdf.r, p=kdf.p).derive(secret)
    wrapped = AESGCM(kek).encrypt(nonce, master.secret, key_file.associated_data())
    return attrs.evolve(key_file, wrapped=wrapped)


def open_key_files(
    key_files: Iterable[KeyFile], passphrase: Passphrase
) -> tuple[MasterKey, KeyFile]:
    """The master key of the first key file *passphrase* opens, and that key file."""
    secret = passphrase_bytes(passphrase)
    tried = 0
    for key_file in key_files:
        tried += 1
        try:
            return key_file.unwrap(secret), key_file
        except DecryptionError:
            continue
    if not tried:
        raise DecryptionError("no key files: this location holds no encryption keys")
    raise DecryptionError(f"wrong passphrase: it opens none of the {tried} key file(s)")


# Key files in a folder on a store (fsspec filesystem): a task folder's or a backup's keys/.


def write_key_file(fs: Any, keys_dir: str, key_file: KeyFile) -> None:
    """Write *key_file* as ``<keys_dir>/<id>.json`` (a copy keeps its id, so it is idempotent)."""
    path = posixpath.join(keys_dir, key_file.file_name)
    with store_errors(f"writing key file {path}"):
        fs.makedirs(keys_dir, exist_ok=True)
        fs.pipe_file(path, key_file.to_json())
        if isinstance(fs, LocalFileSystem):
            # Private like every backup file: only the owner reads a wrapped key.
            os.chmod(keys_dir, 0o700)
            os.chmod(path, 0o600)


def read_key_file(fs: Any, path: str) -> KeyFile:
    """Read and parse one key file."""
    with store_errors(f"reading key file {path}"):
        data = fs.cat_file(path)
    key_file = KeyFile.from_json(data, path)
    if posixpath.basename(path) != key_file.file_name:
        raise ArchiveError(f"{path}: key file name does not match its id {key_file.id}")
    return key_file


def list_keys(fs: Any, keys_dir: str) -> list[KeyFile]:
    """Every key file in *keys_dir*, oldest first (an absent folder holds none)."""
    with store_errors(f"listing key files in {keys_dir}"):
        if not fs.isdir(keys_dir):
            return []
        paths = [p for p in fs.ls(keys_dir, detail=False) if str(p).endswith(".json")]
    found = [read_key_file(fs, str(p)) for p in paths]
    return sorted(found, key=lambda k: (k.created, k.id))


def open_keys(fs: Any, keys_dir: str, passphrase: Passphrase) -> MasterKey:
    """The master key that *passphrase* opens among the key files of *keys_dir*."""
    return open_key_files(list_keys(fs, keys_dir), passphrase)[0]


def create_keys(
    fs: Any, keys_dir: str, passphrase: Passphrase, *, kdf: ScryptParams | None = None
) -> tuple[MasterKey, KeyFile]:
    """A new random master key and its first key file in *keys_dir* (which must hold none)."""
    if list_keys(fs, keys_dir):
        raise ValidationError(f"{keys_dir}: already holds key files; add a passphrase instead")
    master = MasterKey.generate()
    key_file = wrap_master_key(master, passphrase, kdf=kdf)
    write_key_file(fs, keys_dir, key_file)
    return master, key_file


def add_passphrase(
    fs: Any,
    keys_dir: str,
    passphrase: Passphrase,
    new_passphrase: Passphrase,
    *,
    kdf: ScryptParams | None = None,
) -> KeyFile:
    """A new key file for *new_passphrase*, wrapping the master key *passphrase* opens."""
    master, _ = open_key_files(list_keys(fs, keys_dir), passphrase)
    key_file = wrap_master_key(master, new_passphrase, kdf=kdf)
    write_key_file(fs, keys_dir, key_file)
    return key_file


def change_passphrase(
    fs: Any,
    keys_dir: str,
    passphrase: Passphrase,
    new_passphrase: Passphrase,
    *,
    kdf: ScryptParams | None = None,
) -> KeyFile:
    """Replace the key file *passphrase* opens by one for *new_passphrase* (written first)."""
    master, old = open_key_files(list_keys(fs, keys_dir), passphrase)
    key_file = wrap_master_key(master, new_passphrase, kdf=kdf or old.kdf)
    write_key_file(fs, keys_dir, key_file)
    path = posixpath.join(keys_dir, old.file_name)
    with store_errors(f"removing key file {path}"):
        fs.rm_file(path)
    return key_file


def remove_key(fs: Any, keys_dir: str, key_id: str, passphrase: Passphrase) -> None:
    """Remove key file *key_id*; *passphrase* must open another key file of the same key set.

    So a key set always keeps a passphrase that opens it: the last key file is never removed.
    """
    key_files = list_keys(fs, keys_dir)
    target = next((k for k in key_files if k.id == key_id), None)
    if target is None:
        raise ValidationError(f"key {key_id!r}: no such key file in {keys_dir}")
    others = [k for k in key_files if k.key_set == target.key_set and k.id != key_id]
    if not others:
        raise ValidationError(f"key {key_id}: it is the last key of its key set; refusing")
    try:
        open_key_files(others, passphrase)
    except DecryptionError:
        raise DecryptionError(
            f"key {key_id}: the passphrase must open one of the other keys of its key set"
        ) from None
    path = posixpath.join(keys_dir, target.file_name)
    with store_errors(f"removing key file {path}"):
        fs.rm_file(path)
