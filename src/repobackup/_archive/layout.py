"""The backup archive (format 1): member paths, the record line codec, writers and readers.

A backup is a folder, or a zip holding the same tree; ``manifest.json`` is written last and
its presence marks a complete backup. Nothing read from an archive is trusted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import IO, Any, Protocol, cast
from urllib.parse import quote, unquote

import attrs
import fsspec
from fsspec.implementations.local import LocalFileSystem

from .._backends.protocols import Record, Scope
from .._model.times import parse_datetime
from ..exceptions import ArchiveError, StoreError, store_errors
from .manifest import MANIFEST, Manifest, dump, parse_manifest, read_bounded
from .sealing import Sealing, seal_writer, unsealed
from .store import Store, partial_path, publish

__all__ = [
    "BackupReader",
    "BackupWriter",
    "Limited",
    "bounded",
    "Overrun",
    "MemberInfo",
    "blob_member",
    "decode_component",
    "encode_component",
    "line_to_record",
    "open_store",
    "record_member",
    "record_to_line",
]

CHUNK = 1 << 20
SHA256 = re.compile(r"^[0-9a-f]{64}$")
BACKUP_NAME = re.compile(r"^(?P<name>.+)-(?P<stamp>\d{8}\.\d{6})(?P<zip>\.zip)?$")
STAMP_FORMAT = "%Y%m%d.%H%M%S"

# Characters an id keeps as is in a path; everything else is percent-encoded.
_SAFE = "-_~@+=,."

# One encoder for every record line: json.dumps with options builds a new one per call.
_LINES = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# File systems limit one path component to 255 bytes. The longest name we add to an encoded
# id is a records member's suffix (".jsonl.zst") or a partial name's ".<12 hex>.partial"; an
# encoded id longer than this is stored as a prefix of it plus a hash of the whole id.
MAX_COMPONENT = 200
_HASHED = "~h-"  # "~" is kept as is by the encoding and starts no encoded id of ours
_HASH_HEX = 32
_PREFIX = MAX_COMPONENT - len(_HASHED) - _HASH_HEX - 1


def encode_component(value: str) -> str:
    """An id as one safe path component: percent-encoded, never empty, never ``.`` or ``..``,
    never longer than `MAX_COMPONENT` bytes.

    An id whose encoding is longer is stored as ``~h-<prefix>-<sha256 of the id, 32 hex>``
    (docs/format.md, "Long ids"): the full id is in the records and the manifest, never only
    in the path.
    """
    if not value:
        raise ValueError("an empty id cannot name a path component")
    encoded = quote(value, safe=_SAFE)
    # A leading dot would make "." and ".." (and hidden names); encode it.
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if encoded.startswith("~"):
        encoded = "%7E" + encoded[1:]  # keeps "~h-" for the hashed form alone
    if len(encoded) <= MAX_COMPONENT:
        return encoded
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    prefix = encoded[:_PREFIX]
    # Never cut a percent escape in two.
    cut = prefix.rfind("%", len(prefix) - 2)
    if cut != -1:
        prefix = prefix[:cut]
    return f"{_HASHED}{prefix}-{digest}"


def decode_component(component: str) -> str:
    """The id a path component names; ArchiveError unless it is exactly how we encode ids.
    A hashed long id cannot be decoded from its path: its records and manifest hold it."""
    if component.startswith(_HASHED):
        raise ArchiveError(f"path component {component!r} is a hashed long id")
    value = unquote(component, errors="strict")
    if not value or encode_component(value) != component:
        raise ArchiveError(f"unsafe or non-canonical path component {component!r}")
    return value


def scope_prefix(scope: Scope) -> str:
    """The folder of a scope inside the archive."""
    if scope.project_id is None:
        return "common"
    project = f"projects/{encode_component(scope.project_id)}"
    if scope.repo_name is None:
        return project
    return f"{project}/repos/{encode_component(scope.repo_name)}"


def record_member(scope: Scope, collection: str, *, compressed: bool) -> str:
    """The member holding the records of *collection* in *scope*."""
    suffix = ".jsonl.zst" if compressed else ".jsonl"
    return f"{scope_prefix(scope)}/{encode_component(collection)}{suffix}"


def blob_member(sha256: str, *, compressed: bool, sealing: Sealing | None = None) -> str:
    """The member holding a blob; *compressed* adds ``.zst``; an encrypted backup names it
    by its keyed id, never its sha256."""
    suffix = ".zst" if compressed else ""
    name = sealing.blob_name(sha256) if sealing is not None else sha256
    return f"blobs/{name[0:2]}/{name[2:4]}/{name}{suffix}"


def record_to_line(record: Record) -> bytes:
    """One JSON line for *record*; the document goes through verbatim."""
    data = {
        "collection": record.collection,
        "projectId": record.project_id,
        "repoName": record.repo_name,
        "key": record.key,
        "modified": record.modified.isoformat(),
        "deleted": record.deleted,
        "blob": record.blob,
        "size": record.size,
        "document": record.document,
    }
    return _LINES.encode(data).encode() + b"\n"


def line_to_record(line: bytes, where: str, scope: Scope, collection: str) -> Record:
    """Parse and check one line of a records member; ArchiveError naming *where* otherwise."""
    data = _json_object(line, f"{where}: malformed JSON line")
    problems = []
    key = data.get("key")
    if not isinstance(key, str):
        problems.append("key must be a string")
    document = data.get("document")
    if not isinstance(document, dict):
        problems.append("document must be an object")
    blob = data.get("blob")
    if blob is not None and not (isinstance(blob, str) and SHA256.match(blob)):
        problems.append("blob must be null or a sha256 in lowercase hex")
    size = data.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.append("size must be a non-negative integer")
    deleted = data.get("deleted")
    if not isinstance(deleted, bool):
        problems.append("deleted must be a boolean")
    modified: datetime | None = None
    try:
        modified = parse_datetime(str(data.get("modified")))
    except ValueError:
        problems.append("modified must be an ISO 8601 time")
    if (
        data.get("collection") != collection
        or data.get("projectId") != scope.project_id
        or data.get("repoName") != scope.repo_name
    ):
        problems.append("collection, projectId and repoName must match the member's path")
    if problems:
        raise ArchiveError(f"{where}: " + "; ".join(problems))
    assert modified is not None
    return Record(
        collection=collection,
        key=cast(str, key),  # the checks above leave no other type
        document=cast(dict[str, Any], document),
        modified=modified,
        project_id=scope.project_id,
        repo_name=scope.repo_name,
        blob=blob,
        size=cast(int, size),
        deleted=cast(bool, deleted),
    )


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """*raw* parsed as a JSON object; ArchiveError starting with *what* otherwise."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the interpreter's stack allows.
        raise ArchiveError(f"{what}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise ArchiveError(f"{what}: found {type(data).__name__}")
    return data


@attrs.frozen
class MemberInfo:
    """What a records member holds: path, stored size and sha256, record count."""

    path: str
    size: int
    sha256: str
    records: int


def open_store(
    location: str, storage_options: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of a store location, with the options for its protocol."""
    protocol = fsspec.utils.get_protocol(location)
    options = dict((storage_options or {}).get(protocol, {}))
    deadline = options.pop(DEADLINE_OPTION, None)
    if deadline is not None and not (
        isinstance(deadline, (int, float)) and not isinstance(deadline, bool) and deadline > 0
    ):
        raise StoreError(f"{DEADLINE_OPTION} of {protocol!r} must be a positive number of seconds")
    s3 = protocol in ("s3", "s3a")
    if s3:
        options = s3_options(options)
    with store_errors(f"opening store {location!r}"):
        fs, path = fsspec.core.url_to_fs(location, **options)
    if deadline is not None:
        # Read by every Store made on this filesystem (store.py, `deadline_of`).
        fs.repobackup_deadline = float(deadline)
    if s3 and isinstance(getattr(fs, "retries", None), int):
        # A class attribute in s3fs, not an option: set on the instance.
        fs.retries = S3_RETRIES
    return fs, path


#: The storage option (per protocol) giving the seconds one store operation may take,
#: retries included: ``storage_options={"s3": {"store_deadline": 30, ...}}``.
DEADLINE_OPTION = "store_deadline"

# s3fs retries each request 5 times and botocore each of those 5 more, with backoff: one
# PUT under an outage took 40 s. Ours rule instead (store.py): s3fs tries once, botocore
# once more after a short backoff.
S3_RETRIES = 1
S3_CONFIG: Mapping[str, Any] = {
    "retries": {"max_attempts": 2, "mode": "standard"},
    "connect_timeout": 10,
    "read_timeout": 30,
}


def s3_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """s3fs *options* with bounded retries and timeouts, unless they set their own."""
    merged = dict(options)
    config = dict(S3_CONFIG)
    config.update(merged.get("config_kwargs") or {})
    merged["config_kwargs"] = config
    return merged


def task_folder(
    store_location: str, name: str, storage_options: Mapping[str, Mapping[str, Any]] | None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the folder that holds the backups of task *name*."""
    fs, base = open_store(store_location, storage_options)
    return fs, posixpath.join(base.rstrip("/"), name)


def free_space(fs: fsspec.AbstractFileSystem, path: str) -> int | None:
    """Free bytes where *path* would be written, or None where that cannot be known."""
    return Store(fs).free_space(path)


class BackupWriter(Protocol):
    """Writes one backup; `commit` writes the manifest last and makes the backup visible."""

    location: str
    compressed: bool

    def write_records(self, member: str, lines: Iterable[bytes]) -> MemberInfo:
        """Write a records member from its lines (called from one thread at a time)."""
        ...

    def write_blob(self, sha256: str, chunks: Iterable[bytes]) -> int:
        """Write a blob member (thread-safe); return the bytes stored."""
        ...

    def commit(self, manifest: Manifest | Mapping[str, Any]) -> None:
        """Write the manifest, last, and move the backup into place."""
        ...

    def abort(self) -> None:
        """Remove whatever this backup wrote; never raises."""
        ...


class _HashingWriter:
    """Counts and hashes what goes through to a file."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)
        self.digest.update(data)


class FolderWriter:
    """A backup as a folder of plain members on any fsspec store.

    On a local disk the backup is written under a hidden temporary name and renamed into
    place at commit. Object stores have no rename: members are written in place and the
    manifest, written last, is what makes the backup complete.
    """

    compressed = False

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        path: str,
        location: str,
        *,
        sealing: Sealing | None = None,
    ) -> None:
        self.fs = fs
        self.location = location
        self.sealing = sealing
        self._final = path
        self._local = isinstance(fs, LocalFileSystem)
        self._root = partial_path(path) if self._local else path
        self._made: set[str] = set()
        self._lock = threading.Lock()
        self.store = Store(fs)
        with store_errors(f"creating {location!r}"):
            if self.store.exists(path):
                raise FileExistsError(f"{location} already exists")
            self.store.makedirs(self._root)
        if sealing is not None:
            from .sealing import write_key_copies

            write_key_copies(fs, self._root, sealing)

    def __repr__(self) -> str:
        return f"<FolderWriter {self.location!r}>"

    @property
    def root(self) -> str:
        """The folder members are written under (hidden until commit on a local disk)."""
        return self._root

    def _path_made(self, member: str) -> str:
        """The full path of *member*, its folder created once."""
        path = posixpath.join(self._root, member)
        folder = posixpath.dirname(path)
        with self._lock:
            if folder not in self._made:
                self.store.makedirs(folder)
                self._made.add(folder)
        return path

    @contextlib.contextmanager
    def _open(self, member: str) -> Iterator[IO[bytes]]:
        path = self._path_made(member)
        # Opening is retried; the writes that follow cannot be: a failed stream fails the run.
        with self.store.open(path, "wb") as raw, seal_writer(self.sealing, raw, member) as file:
            yield file

    def write_records(self, member: str, lines: Iterable[bytes]) -> MemberInfo:
        count = 0
        with store_errors(f"writing {member}"), self._open(member) as file:
            out = _HashingWriter(file)
            buffer = bytearray()
            for line in lines:
                buffer += line
                count += 1
                if len(buffer) >= CHUNK:
                    out.write(bytes(buffer))
                    buffer.clear()
            out.write(bytes(buffer))
        return MemberInfo(member, out.size, out.digest.hexdigest(), count)

    def blob_destination(self, sha256: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """Where a blob is written, its folder made: for a copy running in another process."""
        return self.fs, self._path_made(blob_member(sha256, compressed=False, sealing=self.sealing))

    def write_blob(self, sha256: str, chunks: Iterable[bytes]) -> int:
        member = blob_member(sha256, compressed=False, sealing=self.sealing)
        size = 0
        try:
            with store_errors(f"writing blob {sha256}"), self._open(member) as file:
                for chunk in chunks:
                    file.write(chunk)
                    size += len(chunk)
        except BaseException:
            self._remove(posixpath.join(self._root, member))
            raise
        return size

    def commit(self, manifest: Manifest | Mapping[str, Any]) -> None:
        data = manifest.dump() if isinstance(manifest, Manifest) else dump(manifest)
        with store_errors(f"committing {self.location!r}"):
            if self._local and not self.fs.isdir(self._root):
                # Removed under us (a run taken for dead was cleaned up): never let a
                # manifest alone make a backup look complete.
                raise FileNotFoundError(f"{self._root} was removed while the backup ran")
            if self._local:
                with self._open(MANIFEST) as file:
                    file.write(data)
                publish(self._root, self._final)
            else:
                self._commit_in_place(data)

    def _commit_in_place(self, data: bytes) -> None:
        """Write the manifest of a backup written in place: under a partial name, moved to
        ``manifest.json`` once whole, so that a write that fails (no space on close) never
        leaves a manifest, empty or cut short, even when removing what was written fails."""
        final = self._path_made(MANIFEST)
        partial = partial_path(final)
        try:
            # Sealed as manifest.json, the name it is read under once moved.
            with (
                self.store.open(partial, "wb") as raw,
                seal_writer(self.sealing, raw, MANIFEST) as file,
            ):
                file.write(data)
            self.store.move(partial, final)
        except BaseException:
            self._remove(partial)
            raise

    def abort(self) -> None:
        self._remove(self._root)

    def _remove(self, path: str) -> None:
        with contextlib.suppress(Exception):
            self.store.remove(path, recursive=True)


class BackupReader(Protocol):
    """Reads one complete backup; every path and hash is checked."""

    location: str
    manifest: dict[str, Any]

    @property
    def problems(self) -> Sequence[tuple[str, str]]:
        """(member, why) for every entry the reader refused to read (hostile, malformed)."""
        ...

    def members(self) -> Iterator[str]:
        """Every member path in the backup."""
        ...

    def exists(self, member: str) -> bool:
        """Whether *member* is in the backup."""
        ...

    def open(self, member: str) -> IO[bytes]:
        """The stored bytes of *member* (a ``.zst`` member is returned as stored)."""
        ...

    def close(self) -> None:
        """Release the backup."""
        ...


class FolderReader:
    """A backup folder on any fsspec store."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, location: str) -> None:
        self.fs = fs
        self.store = Store(fs)
        self.path = path.rstrip("/")
        self.location = location
        # A folder has no index to refuse entries from; its members are checked when read.
        self.problems: Sequence[tuple[str, str]] = ()
        self.sealing: Sealing | None = None
        self.manifest = load_manifest(self, location)

    def __repr__(self) -> str:
        return f"<FolderReader {self.location!r}>"

    def members(self) -> Iterator[str]:
        with store_errors(f"listing {self.location!r}"):
            found = self.store.find(self.path)
        yield from found

    def exists(self, member: str) -> bool:
        path = self._path(member)
        if self.store.local:
            try:
                os.close(_open_regular(self.path, member))
            except FileNotFoundError:
                return False
            except ArchiveError:
                return True  # there, but refused when opened
            except OSError as exc:
                raise StoreError(f"checking {path}: {exc.strerror or exc}") from None
            return True
        with store_errors(f"reading {member}"):
            return self.store.kind(path) == "file"

    def open(self, member: str) -> IO[bytes]:
        path = self._path(member)
        if self.store.local:
            try:
                fd = _open_regular(self.path, member)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError):
                    raise ArchiveError(f"{self.location}: {member} is missing") from None
                raise StoreError(f"reading {path}: {exc.strerror or exc}") from None
            return unsealed(self.sealing, open(fd, "rb", buffering=CHUNK), member)
        with store_errors(f"reading {member}"):
            return unsealed(self.sealing, self.store.open(path, "rb"), member)

    def _path(self, member: str) -> str:
        check_member_path(member)
        return posixpath.join(self.path, member)

    def close(self) -> None:
        return None


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def _open_regular(root: str, member: str) -> int:
    """A descriptor of *member* under the local folder *root*, opened without following any
    link on the way; ArchiveError for anything that is not a plain folder or regular file.

    Each folder is opened relative to the last with O_NOFOLLOW, so that neither a link as
    the member nor a link among its folders (``projects`` pointing outside) is followed; the
    file is opened non-blocking so that a FIFO cannot hang the open, and refused unless
    fstat says it is a regular file: nothing but a file is ever read.
    """
    parts = member.split("/")
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ArchiveError(f"{member}: {part} is a link or not a folder") from None
                raise
            os.close(fd)
            fd = inner
        flags = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
        try:
            file = os.open(parts[-1], flags, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ArchiveError(f"{member}: a symbolic link, refused") from None
            raise
    finally:
        os.close(fd)
    mode = os.fstat(file).st_mode
    if not stat.S_ISREG(mode):
        os.close(file)
        raise ArchiveError(f"{member}: not a regular file (a FIFO, device or folder), refused")
    os.set_blocking(file, True)
    return file


class Overrun(ArchiveError):
    """A member holds more bytes than its archive or record declares."""


class Limited(io.RawIOBase):
    """Reads through *file*, and raises ArchiveError (naming *what*) once more than *limit*
    bytes came: a member is never read past the size its archive or record declares."""

    def __init__(self, file: IO[bytes], limit: int, what: str) -> None:
        super().__init__()
        self.file = file
        self.limit = limit
        self.what = what
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return super().read(-1)  # to the end, a buffer at a time
        # The bytes as *file* gives them: the default read would copy them twice more, into
        # a buffer of its own and out again. Never more than one byte past the limit.
        want = min(size, self.limit + 1 - self.count)
        data = self.file.read(want) if want > 0 else b""
        self.count += len(data)
        if self.count > self.limit:
            raise Overrun(f"{self.what}: longer than the {self.limit} bytes declared")
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        return count

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        super().close()


def bounded(file: IO[bytes], limit: int, what: str) -> IO[bytes]:
    """*file*, read through `Limited`: Overrun once more than *limit* bytes came."""
    return cast(IO[bytes], Limited(file, limit, what))


def check_member_path(member: str) -> None:
    """ArchiveError unless *member* is a relative path that stays inside the backup."""
    if (
        not member
        or member.startswith(("/", "\\"))
        or "\\" in member
        or "\x00" in member
        or re.match(r"^[A-Za-z]:", member)
        or any(part in ("", ".", "..") for part in member.split("/"))
    ):
        raise ArchiveError(f"member path escapes the backup or is malformed: {member!r}")


def load_manifest(reader: BackupReader, location: str) -> dict[str, Any]:
    """Read and check the manifest; ArchiveError if the backup is not complete and valid."""
    if not reader.exists(MANIFEST):
        raise ArchiveError(f"{location}: no manifest.json, not a complete backup")
    from .sealing import open_sealing

    sealing = open_sealing(reader, location)
    if sealing is not None:
        reader.sealing = sealing  # type: ignore[attr-defined]  # both readers have it
    with reader.open(MANIFEST) as file:
        raw = read_bounded(file, location)
    return parse_manifest(raw, location, sealing=sealing)


def numbered_lines(stream: IO[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """The lines of *stream*, numbered from 1; None for one longer than *limit*, skipped
    without ever holding more than *limit* bytes of it."""
    number = 0
    while line := stream.readline(limit + 1):
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := stream.readline(CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, line
