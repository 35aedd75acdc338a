"""Encryption wired into backups: the passphrase a run holds, a backup's key, member wrapping.

Writers wrap a member's write stream and readers its read stream through a `Sealing`; the
`cryptography` package is imported only when a backup is encrypted.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import posixpath
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

import attrs

from ..exceptions import DecryptionError, ValidationError

if TYPE_CHECKING:
    from .crypto import MasterKey
    from .keys import KeyFile

__all__ = [
    "CIPHER",
    "FORMAT_ENCRYPTED",
    "KEYS",
    "Passphrase",
    "Sealing",
    "check_manifest",
    "is_key_member",
    "key_scope",
    "open_for_writing",
    "open_sealing",
    "passphrase_scope",
    "seal_writer",
    "sealing_of",
    "unsealed",
    "write_key_copies",
]

Passphrase = str | bytes | Callable[[], str | bytes]

FORMAT_ENCRYPTED = 2
CIPHER = "AES-256-GCM"
KEYS = "keys"
_HINT = "encrypted backups need the 'cryptography' package: pip install 'repobackup[crypto]'"


@attrs.define
class _Keyring:
    """The passphrase of a scope, and the master keys it opened (scrypt is slow on purpose)."""

    passphrase: Passphrase | None
    opened: dict[str, MasterKey] = attrs.field(factory=dict)


_keyring: contextvars.ContextVar[_Keyring | None] = contextvars.ContextVar(
    "repobackup_keyring", default=None
)


@contextlib.contextmanager
def passphrase_scope(passphrase: Passphrase | None) -> Iterator[None]:
    """Runs, verifies and listings inside this block read and write with *passphrase*."""
    token = _keyring.set(_Keyring(passphrase))
    try:
        yield
    finally:
        _keyring.reset(token)


def _no_passphrase() -> str:
    raise DecryptionError("no passphrase here: only the key this scope was given opens backups")


@contextlib.contextmanager
def key_scope(sealing: Sealing) -> Iterator[None]:
    """Backups of *sealing*'s key set open inside this block with no passphrase: where a job
    runs, in a process that was handed the opened key rather than the passphrase."""
    keyring = _Keyring(_no_passphrase, {sealing.key.key_set_id: sealing.key})
    token = _keyring.set(keyring)
    try:
        yield
    finally:
        _keyring.reset(token)


def _crypto() -> tuple[Any, Any]:
    try:
        from . import crypto, keys
    except ImportError:
        raise ValidationError(_HINT) from None
    return crypto, keys


@attrs.frozen
class Sealing:
    """How one backup's members are encrypted: its master key and its id (the AAD's)."""

    key: MasterKey
    backup_id: str
    key_files: tuple[KeyFile, ...] = ()

    def writer(self, raw: Any, member: str) -> IO[bytes]:
        """A stream that encrypts into *raw* what member *member* holds; close seals it."""
        crypto, _ = _crypto()
        writer: IO[bytes] = crypto.MemberWriter(
            raw, self.key, backup_id=self.backup_id, name=member
        )
        return writer

    def reader(self, raw: IO[bytes], member: str) -> IO[bytes]:
        """The decrypted bytes of member *member* read from *raw* (authentic at its end)."""
        crypto, _ = _crypto()
        reader = crypto.MemberReader(raw, self.key, backup_id=self.backup_id, name=member)
        return io.BufferedReader(_Closing(reader, raw), 1 << 20)

    def blob_name(self, sha256: str) -> str:
        """The keyed id a blob of content *sha256* is stored under."""
        crypto, _ = _crypto()
        name: str = crypto.blob_id(self.key, sha256)
        return name

    def manifest_fields(self) -> dict[str, Any]:
        """What a format-2 manifest says of its encryption."""
        return {"keySet": self.key.key_set_id, "cipher": CIPHER}


class _Closing(io.RawIOBase):
    """A member reader that closes the raw stream under it too."""

    def __init__(self, reader: Any, raw: IO[bytes]) -> None:
        super().__init__()
        self._reader = reader
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count: int = self._reader.readinto(buffer)
        return count

    def close(self) -> None:
        if not self.closed:
            try:
                self._reader.close()
            finally:
                self._raw.close()
        super().close()


def sealing_of(reader_or_writer: object) -> Sealing | None:
    """The sealing of an opened backup (None: in clear, or a reader of another kind)."""
    sealing = getattr(reader_or_writer, "sealing", None)
    return sealing if isinstance(sealing, Sealing) else None


def is_key_member(member: str) -> bool:
    """Whether *member* is one of the key file copies, the members stored in clear."""
    return member.startswith(KEYS + "/")


def unsealed(sealing: Sealing | None, raw: IO[bytes], member: str) -> IO[bytes]:
    """*raw* decrypted when the backup is encrypted (key files are stored in clear)."""
    if sealing is None or is_key_member(member):
        return raw
    return sealing.reader(raw, member)


def seal_writer(sealing: Sealing | None, raw: Any, member: str) -> Any:
    """A context giving the stream member *member* is written to: *raw* itself, or an
    encrypting stream over it that seals on a clean exit and never on an exception."""
    if sealing is None:
        return contextlib.nullcontext(raw)
    return sealing.writer(raw, member)


def _need_passphrase(what: str, outcome: str) -> _Keyring:
    keyring = _keyring.get()
    if keyring is None or keyring.passphrase is None:
        raise DecryptionError(
            f"{what} and no passphrase was given (Engine(passphrase=...), "
            f"--password-file FILE or REPOBACKUP_PASSWORD): {outcome}"
        )
    return keyring


def open_for_writing(fs: Any, task_dir: str, backup_id: str) -> Sealing:
    """The sealing of a new backup of the task folder *task_dir*: its key set opened with the
    scope's passphrase, or created (with its first key file) when the folder has none."""
    keyring = _need_passphrase(
        f"the task encrypts its backups (in {task_dir})", "nothing was written"
    )
    _, keys = _crypto()
    keys_dir = posixpath.join(task_dir.rstrip("/"), KEYS)
    found = keys.list_keys(fs, keys_dir)
    if not found:
        master, key_file = keys.create_keys(fs, keys_dir, keyring.passphrase)
        found = [key_file]
    else:
        master = _open_cached(keyring, found)
    copies = tuple(k for k in found if k.key_set == master.key_set_id)
    keyring.opened[master.key_set_id] = master
    return Sealing(master, backup_id, copies)


def _open_cached(keyring: _Keyring, key_files: list[KeyFile]) -> MasterKey:
    for key_file in key_files:
        if key_file.key_set in keyring.opened:
            return keyring.opened[key_file.key_set]
    _, keys = _crypto()
    assert keyring.passphrase is not None
    master: MasterKey = keys.open_key_files(key_files, keyring.passphrase)[0]
    keyring.opened[master.key_set_id] = master
    return master


def _open_for_reading(
    location: str, backup_id: str, key_files: Callable[[], list[KeyFile]]
) -> Sealing:
    """The sealing of an encrypted backup, opened with the scope's passphrase from the key
    files *key_files* gives (the backup's copies, then its task folder's)."""
    keyring = _need_passphrase(
        f"backup {location} is encrypted", "its contents could not be read or checked"
    )
    found = key_files()
    if not found:
        raise DecryptionError(f"{location}: an encrypted backup with no key files")
    return Sealing(_open_cached(keyring, found), backup_id)


def _parse_key_file(data: bytes, where: str) -> KeyFile:
    _, keys = _crypto()
    key_file: KeyFile = keys.KeyFile.from_json(data, where)
    return key_file


def write_key_copies(fs: Any, root: str, sealing: Sealing) -> None:
    """The key files *sealing* was opened from, copied into the backup folder *root*."""
    _, keys = _crypto()
    for key_file in sealing.key_files:
        keys.write_key_file(fs, posixpath.join(root, KEYS), key_file)


def _list_key_files(fs: Any, keys_dir: str) -> list[KeyFile]:
    _, keys = _crypto()
    found: list[KeyFile] = keys.list_keys(fs, keys_dir)
    return found


def _looks_encrypted(head: bytes) -> bool:
    """Whether a member starting with *head* is an encrypted member (docs/format.md's magic)."""
    return head.startswith(b"RBKENC")


_KEY_FILE_LIMIT = 64 * 1024


def open_sealing(reader: Any, location: str) -> Sealing | None:
    """The sealing of the backup *reader* reads, or None when its manifest is in clear."""
    with reader.open("manifest.json") as file:
        head = file.read(8)
    if not _looks_encrypted(head):
        return None
    backup_id = posixpath.basename(location.rstrip("/")).removesuffix(".zip")

    def key_files() -> list[KeyFile]:
        found = _key_copies(reader)
        # Beside its task folder, a passphrase added since the backup opens it too.
        task_keys = posixpath.join(posixpath.dirname(str(reader.path).rstrip("/")), KEYS)
        with contextlib.suppress(Exception):
            found += _list_key_files(reader.fs, task_keys)
        return found

    return _open_for_reading(location, backup_id, key_files)


def _key_copies(reader: Any) -> list[KeyFile]:
    # A folder's keys/ is listed on its own; a zip's index is in hand already.
    if not str(reader.path).endswith(".zip"):
        return _list_key_files(reader.fs, posixpath.join(reader.path, KEYS))
    found = []
    for member in reader.members():
        if is_key_member(member):
            with reader.open(member) as file:
                found.append(_parse_key_file(file.read(_KEY_FILE_LIMIT), member))
    return found


def check_manifest(manifest: dict[str, Any], location: str, sealing: Sealing) -> None:
    """DecryptionError unless a decrypted manifest belongs to the backup and key it was
    opened with (a manifest moved from another backup already fails its tags)."""
    encryption = manifest.get("encryption")
    if not isinstance(encryption, dict) or encryption.get("keySet") != sealing.key.key_set_id:
        raise DecryptionError(f"{location}: manifest.json names another key set")
    if manifest.get("name") != sealing.backup_id:
        raise DecryptionError(f"{location}: manifest.json belongs to another backup")
